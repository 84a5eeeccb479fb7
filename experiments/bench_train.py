"""Training throughput: samples/s of teacher-forced training on KgCLUE train (kb=synth).

A real `kgqa-train` setup (the train config composed by Hydra, the project's data module,
module and Lightning Trainer), fitted for a fixed number of steps without validation; the
clock starts after `--warmup` steps. Side by side in one process, for each size:

- bucketed: the data module's length-bucketed batches (data.module.batches_per_bucket=50);
- shuffled: plain shuffled batches (data.module.batches_per_bucket=1), each padded to its longest pair.

The ratio is the gain of bucketing (less padding). Writes experiments/results/bench_train-<date>-<device>.json.

    python experiments/bench_train.py                                   # CPU: tiny and small, batch 32
    python experiments/bench_train.py --sizes small --trainer gpu --batch-size 256 --steps 600
    python experiments/bench_train.py --sizes tiny --batching bucketed --set model.copy=true loss.trie_loss=1.0
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from kgqa.cli import CONFIG_DIR
from kgqa.build import build_datamodule, build_module, build_trainer

REPO = Path(__file__).resolve().parents[1]


class Throughput(L.Callback):
    """Samples and seconds of the training steps after the first `warmup` (allocation, compilation)."""

    def __init__(self, warmup: int):
        self.warmup, self.samples, self.tokens, self.start, self.seconds = warmup, 0, 0, None, 0.0

    def _sync(self, trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            self._sync(trainer)
            self.start = time.perf_counter()
        if self.start is not None:
            self.samples += len(batch["examples"])
            self.tokens += int(batch["input_ids"].numel())

    def on_train_end(self, trainer, module) -> None:
        self._sync(trainer)
        self.seconds = time.perf_counter() - self.start


def config(overrides: list[str]):
    """The train config as kgqa-train composes it (Hydra's runtime values included), resolved."""
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]  # its own sweep values stay unresolved outside a multirun
        return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))


def measure(size: str, bucketed: bool, args, work: Path) -> dict:
    cfg = config(["data=kgclue", f"data.root={args.root}", f"size={size}", f"trainer={args.trainer}", "logger=csv",
                  f"data.module.batch_size={args.batch_size}", f"data.module.batches_per_bucket={50 if bucketed else 1}",
                  f"data.module.num_workers={args.num_workers}", f"backbone={args.backbone}", f"output_dir={work}", *args.set])
    dm = build_datamodule(cfg)
    dm.setup()
    module = build_module(cfg, dm.tokenizer.vocab_size)
    meter = Throughput(args.warmup)
    trainer = build_trainer(cfg, callbacks=[meter], max_steps=args.warmup + args.steps, limit_val_batches=0,
                            num_sanity_val_steps=0, enable_checkpointing=False)
    trainer.fit(module, dm)
    return {"size": size, "backbone": args.backbone, "batching": "bucketed" if bucketed else "shuffled",
            "batch_size": args.batch_size, "precision": str(cfg.trainer.precision),
            "attention": module.model.backbone.config._attn_implementation,
            "overrides": args.set, "steps": args.steps, "seconds": meter.seconds, "samples_per_s": meter.samples / meter.seconds,
            "padded_tokens_per_sample": meter.tokens / meter.samples, "load_average": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "kgclue"))
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small"])
    parser.add_argument("--backbone", default="roformer", help="roformer (eager attention) or bert (SDPA)")
    parser.add_argument("--trainer", default="cpu", help="a conf/trainer preset: cpu, or gpu (bf16-mixed)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=200, help="timed steps")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    parser.add_argument("--num-workers", type=int, default=0, help="data loader processes (collation off the main one)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--batching", choices=["both", "bucketed", "shuffled"], default="both")
    parser.add_argument("--set", nargs="*", default=[], help="more train overrides (model.copy=true ...)")
    parser.add_argument("--out", default=str(REPO / "experiments" / "results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    L.seed_everything(0, verbose=False)

    rows = []
    with tempfile.TemporaryDirectory() as work:
        for size in args.sizes:
            for bucketed in {"both": (True, False), "bucketed": (True,), "shuffled": (False,)}[args.batching]:
                rows.append(measure(size, bucketed, args, Path(work)))
                print(json.dumps(rows[-1]))
    print("\n| size | batching | samples/s | padded tokens / sample | bucketed ÷ shuffled |\n| --- | --- | --- | --- | --- |")
    shuffled = {r["size"]: r["samples_per_s"] for r in rows if r["batching"] == "shuffled"}
    for row in rows:
        both = row["batching"] == "bucketed" and row["size"] in shuffled
        ratio = f"{row['samples_per_s'] / shuffled[row['size']]:.2f}×" if both else ""
        print(f"| {row['size']} | {row['batching']} | {row['samples_per_s']:.0f} | {row['padded_tokens_per_sample']:.1f} | {ratio} |")
    device = torch.cuda.get_device_name() if args.trainer != "cpu" and torch.cuda.is_available() else "cpu"
    out = Path(args.out) / f"bench_train-{datetime.datetime.now():%Y%m%d-%H%M%S}-{'gpu' if device != 'cpu' else 'cpu'}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": device, "threads": args.threads, "torch": torch.__version__, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
