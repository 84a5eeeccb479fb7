"""Configuration values checked at the entry points, before any work: a value that cannot work
is a ConfigError naming the key, what it holds and what it may hold."""
from __future__ import annotations

import difflib
import inspect
import sys
from numbers import Real
from typing import Any, Callable

from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from kgqa.data import DATAMODULE_KEYS
from kgqa.data.triples import TARGET_ORDERS
from kgqa.errors import ConfigError
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


def architecture() -> tuple[Check, str]:
    """One of the backbones kgqa.model builds (imported, with torch and transformers, only to check one)."""
    from kgqa.model import ARCHITECTURES

    return one_of(*ARCHITECTURES)


POSITIVE = integer(1)
Rule = tuple[Check, str]
RULES: dict[str, Rule | Callable[[], Rule]] = {  # a function: the rule made when the key is there to check
    "target": one_of(*TARGET_ORDERS),
    "split": one_of("val", "test"),
    "seed": integer(),
    "decode.beam": POSITIVE,
    "decode.num_return": POSITIVE,
    "decode.min_confidence": number(0.0, 1.0),
    "decode.renormalise": one_of(True, False),
    "data.on_bad_line": one_of("error", "skip"),
    "data.module.batch_size": POSITIVE,
    "data.module.eval_batch_size": POSITIVE,
    "data.module.max_question_len": POSITIVE,
    "data.module.batches_per_bucket": POSITIVE,
    "data.module.num_workers": integer(0),
    "data.source.limit": optional(POSITIVE),
    "backbone.arch": architecture,
    "model.copy": one_of(True, False),
    "optim.lr": number(0.0, float("inf")),
    "optim.weight_decay": number(0.0, float("inf")),
    "scheduler.warmup": number(0.0, 1.0),
    "loss.label_smoothing": number(0.0, 1.0, high_open=True),
    "loss.trie_loss": number(0.0, 1.0),
    "loss.data_vocabulary": one_of(True, False),
    "loss.sequence_loss": number(0.0, float("inf")),
    "loss.candidates": POSITIVE,
    "exposure.replace": number(0.0, 1.0),
    "exposure.replace_with": one_of("sibling", "model"),
    "exposure.ramp": one_of(True, False),
    "exposure.rdrop": number(0.0, float("inf")),
    "exposure.teaforn": number(0.0, float("inf")),
    "exposure.teaforn_steps": integer(2),
    "exposure.teaforn_through": one_of(True, False),
    "trainer.max_epochs": integer(-1),
    "trainer.max_steps": integer(-1),
    "mask_rate": number(0.01, 0.9),
    "max_len": integer(3),
    "batch_size": POSITIVE,
}


def group_choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


RENAMED_KEYS = {"data_root": "data.root"}  # old name -> the one name all entry points share


def renamed_keys(cfg: DictConfig) -> None:
    """A value given under an old key's name moves to its new one, with one line saying so."""
    for old, new in RENAMED_KEYS.items():
        value = OmegaConf.select(cfg, old, default=None)
        if value is not None and old in cfg:
            print(f"kgqa: {old}= is deprecated, use {new}= (taken as {new}={value})", file=sys.stderr)
            OmegaConf.update(cfg, new, value, merge=False)
            cfg[old] = None


MOVED_KEYS = {f"data.{k}": f"data.module.{k}" for k in DATAMODULE_KEYS}  # old place -> the data module's node


def moved_keys(argv: list[str]) -> list[str]:
    """The command line with each key of MOVED_KEYS under its new place (data.batch_size=64 still works), one
    line saying so for each."""
    def moved(arg: str) -> str:
        key, sep, value = arg.partition("=")
        prefix = key[: len(key) - len(key.lstrip("+~"))]
        new = MOVED_KEYS.get(key.lstrip("+~"))
        if new is None or arg.startswith("-"):
            return arg
        print(f"kgqa: {key.lstrip('+~')}= is deprecated, use {new}= (taken as {new}{sep}{value})", file=sys.stderr)
        return f"{prefix}{new}{sep}{value}"
    return [moved(arg) for arg in argv]


def nearest(key: str, keys: list[str]) -> str:
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.5) or sorted(k for k in keys if "." not in k)
    return ", ".join(close)


def config_keys(node) -> list[str]:
    return [where for where, _, _ in walk(OmegaConf.to_container(node, resolve=False)) if "[" not in where]


def quoting_non_ascii(argv: list[str]) -> list[str]:
    """argv with each key=value that Hydra's grammar cannot read only for its non-ASCII characters (a path
    such as out=/data/知识 kb; Hydra reads them inside quotes only) given as key='value'."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()

    def readable(arg: str) -> bool:
        try:
            parser.parse_overrides([arg])
            return True
        except Exception:
            return False

    def quoted(arg: str) -> str:
        key, sep, value = arg.partition("=")
        if not sep or arg.startswith("-") or value.isascii() or readable(arg):
            return arg
        fixed = key + "='" + value.replace("'", "\\'") + "'"
        return fixed if readable(fixed) else arg
    return [quoted(arg) for arg in argv]


def check_command_line(config_name: str, argv: list[str]) -> None:
    """The keys and group choices the command line sets, checked against the config they set before Hydra
    composes it: an unknown key or choice is a ConfigError naming the nearest valid ones (Hydra's own
    message spans lines: "Could not override ... Key 'x' is not in struct"). Anything this check cannot
    read (Hydra's flags, a syntax error) is left to Hydra."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args, _ = get_args_parser().parse_known_args(argv)
    if any((args.help, args.hydra_help, args.cfg, args.info, args.shell_completion, args.config_name,
            args.config_path, args.config_dir)):
        return
    try:
        overrides = [o for o in OverridesParser.create().parse_overrides(args.overrides)
                     if not o.is_hydra_override() and o.package is None]
    except Exception:  # Hydra names the syntax error
        return
    entry = f"kgqa-{config_name}"
    groups = [o for o in overrides if (CONF / o.key_or_group).is_dir()]
    group_lines = []
    for o in groups:
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        known = group_choices(o.key_or_group)
        unknown = [v for v in values if v not in known and v != "null"] if not o.is_delete() else []
        if unknown:
            raise ConfigError(f"{o.key_or_group}={unknown[0]} is not a choice of {o.key_or_group}: nearest "
                              f"{nearest(unknown[0], known)} (all: {', '.join(known)})")
        prefix = "~" if o.is_delete() else "++" if o.is_force_add() else "+" if o.is_add() else ""
        group_lines.append(f"{prefix}{o.key_or_group}" + ("" if o.is_delete() else f"={values[0]}"))
    with initialize_config_dir(str(CONF), version_base="1.3"):
        try:
            cfg = compose(config_name, overrides=group_lines, return_hydra_config=True)
        except Exception:  # a group this config has not (named below), or what Hydra names itself
            cfg = None
        chosen = set((cfg or compose(config_name, return_hydra_config=True)).hydra.runtime.choices)
    for o in groups:
        if not (o.is_add() or o.is_force_add() or o.is_delete()) and o.key_or_group not in chosen:
            raise ConfigError(f"{o.key_or_group}=...: {entry} has no {o.key_or_group} group "
                              f"(its groups: {', '.join(sorted(g for g in chosen if not g.startswith('hydra')))})")
    if cfg is None:
        return
    del cfg.hydra
    keys = config_keys(cfg)
    added = [o.key_or_group for o in overrides if o.is_add() or o.is_force_add()]
    for o in overrides:
        key = o.key_or_group
        if o in groups or o.is_delete() or o.is_force_add():
            continue
        if o.is_add():
            if key in keys:
                raise ConfigError(f"+{key}=...: {key} is already a setting of {entry}; write {key}=VALUE")
        elif key not in keys and not any(key.startswith(a + ".") for a in added):
            raise ConfigError(f"{key} is not a setting of {entry}: nearest {nearest(key, keys)}")


def check_trainer(cfg: DictConfig) -> None:
    """trainer.* keys the Trainer takes, and an accelerator this machine has: before any set-up, not as
    Hydra's "Error in call to target" once the data and model are built."""
    node = cfg.get("trainer")
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return
    try:
        parameters = inspect.signature(get_class(node._target_).__init__).parameters
    except Exception:  # not a class this check can read: instantiate names the problem
        return
    unknown = [k for k in node if not str(k).startswith("_") and k not in parameters]
    if unknown:
        raise ConfigError(f"trainer.{unknown[0]} is not a setting of {node._target_}: nearest "
                          f"{nearest(unknown[0], [p for p in parameters if p != 'self'])}")
    accelerator, devices = node.get("accelerator"), node.get("devices")
    if accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.accelerator={accelerator} (trainer=gpu or ddp): this machine has no CUDA GPU "
                              "(torch.cuda.is_available() is False); use trainer=cpu or trainer=ddp_cpu")
        if isinstance(devices, int) and devices > torch.cuda.device_count():
            raise ConfigError(f"trainer.devices={devices}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")


def check_config(cfg: DictConfig) -> None:
    """Every checked key the config has, its required values, the names it lists, the trainer's settings."""
    missing = sorted(where for where, _, value in walk(OmegaConf.to_container(cfg, resolve=False)) if value == "???")
    if missing:
        raise ConfigError("missing required value(s): " + "; ".join(EXAMPLES.get(k, f"{k}=...") for k in missing))
    for key, rule in RULES.items():
        value = OmegaConf.select(cfg, key, default="<absent>")
        if value == "<absent>":
            continue
        ok, expected = rule() if callable(rule) else rule
        if not ok(value):
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
    check_trainer(cfg)
