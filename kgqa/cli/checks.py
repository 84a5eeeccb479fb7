"""Configuration values checked at the entry points, before any work: a value that cannot work
is a ConfigError naming the key, what it holds and what it may hold."""
from __future__ import annotations

from numbers import Real
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from kgqa.data.triples import TARGET_ORDERS
from kgqa.errors import ConfigError
from kgqa.model import ARCHITECTURES
from kgqa.trusted import CONF, walk

Check = Callable[[Any], bool]

EXAMPLES = {  # what a required value looks like, for the message when it is missing
    "ckpt": "ckpt=outputs/<run dir> (a run directory or a .ckpt file)",
    "out": "out=DIR (the folder kgqa-pretrain writes the pre-trained model to)",
    "kb.path": "kb.path=/data/Knowledge.txt (kb=file) or kb.path=DIR (kb=folder, a folder written by kgqa-kb out=DIR)",
}


def integer(low: int | None = None, high: int | None = None) -> tuple[Check, str]:
    bounds = f" from {low}" * (low is not None) + f" to {high}" * (high is not None)
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and (low is None or v >= low)
            and (high is None or v <= high)), f"an integer{bounds}"


def number(low: float, high: float, high_open: bool = False) -> tuple[Check, str]:
    return (lambda v: isinstance(v, Real) and not isinstance(v, bool) and low <= v and (v < high if high_open else v <= high),
            f"a number in [{low}, {high}{')' if high_open else ']'}")


def one_of(*choices: Any) -> tuple[Check, str]:
    return (lambda v: v in choices), f"one of {', '.join(map(str, choices))}"


def optional(check: tuple[Check, str]) -> tuple[Check, str]:
    return (lambda v: v is None or check[0](v)), f"null or {check[1]}"


POSITIVE = integer(1)
RULES: dict[str, tuple[Check, str]] = {
    "target": one_of(*TARGET_ORDERS),
    "split": one_of("val", "test"),
    "seed": integer(),
    "decode.beam": POSITIVE,
    "decode.num_return": POSITIVE,
    "decode.min_confidence": number(0.0, 1.0),
    "decode.renormalise": one_of(True, False),
    "data.on_bad_line": one_of("error", "skip"),
    "data.batch_size": POSITIVE,
    "data.eval_batch_size": POSITIVE,
    "data.max_question_len": POSITIVE,
    "data.batches_per_bucket": POSITIVE,
    "data.num_workers": integer(0),
    "data.source.limit": optional(POSITIVE),
    "backbone.arch": one_of(*ARCHITECTURES),
    "model.copy": one_of(True, False),
    "optim.lr": number(0.0, float("inf")),
    "optim.weight_decay": number(0.0, float("inf")),
    "scheduler.warmup": number(0.0, 1.0),
    "loss.label_smoothing": number(0.0, 1.0, high_open=True),
    "loss.trie_loss": number(0.0, 1.0),
    "loss.data_vocabulary": one_of(True, False),
    "loss.sequence_loss": number(0.0, float("inf")),
    "loss.candidates": POSITIVE,
    "trainer.max_epochs": integer(-1),
    "trainer.max_steps": integer(-1),
    "mask_rate": number(0.01, 0.9),
    "max_len": integer(3),
    "batch_size": POSITIVE,
}


def group_choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def check_config(cfg: DictConfig) -> None:
    """Every checked key the config has, its required values, and the names it lists."""
    missing = sorted(where for where, _, value in walk(OmegaConf.to_container(cfg, resolve=False)) if value == "???")
    if missing:
        raise ConfigError("missing required value(s): " + "; ".join(EXAMPLES.get(k, f"{k}=...") for k in missing))
    for key, (ok, expected) in RULES.items():
        value = OmegaConf.select(cfg, key, default="<absent>")
        if value != "<absent>" and not ok(value):
            raise ConfigError(f"{key}={value!r} is not valid: expected {expected}")
    beam, num_return = OmegaConf.select(cfg, "decode.beam"), OmegaConf.select(cfg, "decode.num_return")
    if beam is not None and num_return is not None and num_return > beam:
        raise ConfigError(f"decode.num_return={num_return} exceeds decode.beam={beam}: at most beam answers per question")
    rules = OmegaConf.select(cfg, "ablation_lookaheads")
    if rules is not None:
        known = group_choices("lookahead")
        unknown = [r for r in ([rules] if isinstance(rules, str) else rules) if r not in known]
        if unknown or isinstance(rules, str):
            raise ConfigError(f"ablation_lookaheads={OmegaConf.to_container(rules) if OmegaConf.is_config(rules) else rules!r}: "
                              f"expected a list of lookahead choices ({', '.join(known)})")
