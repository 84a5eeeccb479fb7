"""Issue 24's table: the toy main command from config and through backbone.pretrained= a folder laid out like
the article's RoFormer-Sim-FT (RoFormerForCausalLM, random weights, tokenizer_config.json naming RoFormerTokenizer,
a char vocab.txt of KgCLUE's characters that lacks 张王李赵刘陈), at tiny's shape and at width 64, over seeds.

    python experiments/bench_pretrained_path.py --out experiments/results/pretrained_path.json [--seeds 0 1 2]

The data_vocabulary=false rows (the loss over the whole pretrained vocabulary, as before the fix) run --ablation-seeds.

Each run is `kgqa-train data=toy backbone=roformer trainer.max_epochs=10 logger=csv seed=S ...` in a subprocess.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from transformers import RoFormerConfig, RoFormerForCausalLM

ROOT = Path(__file__).resolve().parents[1]
LACKING = set("张王李赵刘陈")
WIDTH_64 = ["backbone.hidden_size=64", "backbone.intermediate_size=128"]


def article_like_folder(folder: Path, kgclue: Path, width: int) -> int:
    """The folder a user would make: KgCLUE's question and answer characters (less LACKING), 5,417 at most."""
    chars = set()
    for split in ("train.json", "dev.json", "test_public.json"):
        for line in (kgclue / split).read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            chars |= set(row["question"]) | set(row["answer"])
    vocab = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(c for c in chars - LACKING if not c.isspace()))[:5417]
    config = RoFormerConfig(vocab_size=len(vocab), embedding_size=width, hidden_size=width, num_hidden_layers=2,
                            num_attention_heads=4, intermediate_size=2 * width, type_vocab_size=2, pad_token_id=0,
                            is_decoder=True)
    RoFormerForCausalLM(config).save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "RoFormerTokenizer",
                                                              "do_lower_case": True}))
    return len(vocab)


def train(run_dir: Path, seed: int, overrides: list[str]) -> float:
    cmd = [sys.executable, "-m", "kgqa.cli.train", "data=toy", "backbone=roformer", "trainer.max_epochs=10",
           "logger=csv", f"seed={seed}", f"hydra.run.dir={run_dir}", *overrides]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=os.environ | {"WANDB_MODE": "offline"})
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return float(re.search(r"^test/em: ([0-9.]+)$", proc.stdout, re.M).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ablation-seeds", type=int, nargs="+", default=[0], help="for the data_vocabulary=false rows")
    parser.add_argument("--only", default="", help="run the rows whose name holds this text (others kept from --out)")
    parser.add_argument("--kgclue", type=Path, default=ROOT.parent / "shared" / "kgclue")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pretrained_path-"))
    folders = {w: work / f"folder{w}" for w in (128, 64)}
    sizes = {w: article_like_folder(f, args.kgclue, w) for w, f in folders.items()}
    rows = {"from config, width 128": [], f"folder ({sizes[128]} tokens), width 128": [],
            f"folder ({sizes[128]} tokens), width 128, loss.data_vocabulary=false": [],
            "from config, width 64": WIDTH_64, f"folder ({sizes[64]} tokens), width 64": [],
            f"folder ({sizes[64]} tokens), width 64, loss.data_vocabulary=false": []}
    overrides = {name: ([f"backbone.pretrained={folders[64 if 'width 64' in name else 128]}"] if "folder" in name
                        else list(extra)) + (["loss.data_vocabulary=false"] if "false" in name else [])
                 for name, extra in rows.items()}
    results = json.loads(args.out.read_text())["test_em_by_seed"] if args.only and args.out.exists() else {}
    for name, extra in overrides.items():
        if args.only not in name:
            continue
        seeds = args.ablation_seeds if "false" in name else args.seeds
        results[name] = {seed: train(work / f"run{len(results)}-{seed}", seed, extra) for seed in seeds}
        ems = list(results[name].values())
        print(f"| {name} | {' / '.join(f'{e:.3f}' for e in ems)} | {sum(ems) / len(ems):.3f} |", flush=True)
        args.out.write_text(json.dumps({"test_em_by_seed": results}, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
