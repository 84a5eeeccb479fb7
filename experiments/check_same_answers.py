"""Same answers before and after a decoding refactor: every toy val/test question, decoded with each
conf/lookahead rule at beams 1 and 3 through the public Answerer API by a seeded, randomly
initialised tiny UniLM, written as (key id, log-prob) per question to a JSON file.

    python experiments/check_same_answers.py before.json   # on the old commit
    python experiments/check_same_answers.py after.json    # on the new one
    python experiments/check_same_answers.py --compare before.json after.json

It instantiates the rules itself (not through kgqa.decoding.answerer.rules_from_config) so that
the same script runs on commits from before that factory.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from kgqa.model import UniLM, build_backbone
from kgqa.build import build_datamodule

try:  # the Answerer's home after issue 12, and before it
    from kgqa.decoding.answerer import Answerer
except ImportError:
    from kgqa.answerer import Answerer

REPO = Path(__file__).resolve().parents[1]
RULES = sorted(p.stem for p in (REPO / "conf" / "lookahead").glob("*.yaml"))


def decode_all() -> dict:
    torch.set_num_threads(1)
    out = {}
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[])
        dm = build_datamodule(cfg)
        dm.setup()
        torch.manual_seed(0)
        options = OmegaConf.to_container(cfg.backbone)
        options.pop("pretrained")
        # a larger init than 0.02 makes a random model's choices peaked and question dependent
        model = UniLM(build_backbone(options.pop("arch"), dm.tokenizer.vocab_size, initializer_range=0.3, **options))
        model.eval()
        questions = [e.question for split in ("val", "test") for e in dm.splits[split]]
        for rule in RULES:
            lookahead = compose(config_name="train", overrides=[f"lookahead={rule}"]).get("lookahead")
            out[f"{rule}/composed"] = OmegaConf.to_container(lookahead, resolve=True) if lookahead is not None else None
            for beam in (1, 3):
                rules = instantiate(lookahead, _convert_="all") if lookahead else []  # runs on the old commit too
                rules = rules if isinstance(rules, list) else [rules]
                answerer = Answerer(dm.keyspace, dm.tokenizer, rules, beam=beam, num_return=beam,
                                    max_question_len=dm.max_question_len, batch_size=dm.eval_batch_size)
                answers = answerer(model, questions)
                out[f"{rule}/beam{beam}"] = [[[dm.kb.key_id(a.triple.key), math.log(a.confidence)] for a in per_q]
                                             for per_q in answers]
                print(rule, beam, len(answers), file=sys.stderr, flush=True)
    return out


def compare(before: dict, after: dict) -> int:
    assert before.keys() == after.keys(), (before.keys() ^ after.keys())
    worst, differ, total = 0.0, 0, 0
    for name in before:
        if name.endswith("/composed"):
            assert before[name] == after[name], name
            continue
        for b, a in zip(before[name], after[name], strict=True):
            total += 1
            differ += [k for k, _ in b] != [k for k, _ in a]
            worst = max([worst] + [abs(x[1] - y[1]) for x, y in zip(b, a)])
    print(f"{total} decodes over {len(before) // 3} rules x beams 1, 3: {differ} differ in their keys; "
          f"largest log-prob difference {worst:.2e}; composed lookahead configs identical")
    return int(differ > 0 or worst > 1e-6)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+")
    parser.add_argument("--compare", action="store_true")
    args = parser.parse_args()
    if args.compare:
        sys.exit(compare(*(json.loads(Path(f).read_text()) for f in args.files)))
    Path(args.files[0]).write_text(json.dumps(decode_all()))
