"""The reranker over the final beam (issue 26) on a trained run, side by side with the beam's own order.

    python experiments/bench_rerank.py --run RUN --out experiments/results/rerank.json [--data-root DIR]

The reranker is trained as `kgqa-train rerank=beam` trains it after its fit (kgqa.rerank.rerank_after_fit:
the run's best model, its own rule, its whole beams over --questions of its training questions; conf/rerank/
beam.yaml's settings unless given), so a finished run needs no retraining to be measured. Then val and test
are decoded with each rule of --lookaheads, in the beam's order and reranked, and the run's metrics are
reported for each (em, em_s, em_p, em_homonym, oracle: the gold key anywhere in the beam). Writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import lightning as L
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from kgqa.build import restore
from kgqa.checkpoints import resolve_checkpoint
from kgqa.cli import CONFIG_DIR
from kgqa.console import quiet_console
from kgqa.rerank import RERANKER_FILE, rerank_after_fit

REPORTED = ("em", "em_s", "em_p", "em_homonym", "oracle")


def rule(name: str):
    """conf/lookahead/<name>.yaml as kgqa-train composes it (none: no rule)."""
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        found = compose(config_name="train", overrides=[f"lookahead={name}"]).get("lookahead")
    return OmegaConf.to_container(found, resolve=True) if found else None


def decoded(trainer: L.Trainer, module, dm, tag: str, lookahead) -> dict[str, float]:
    module.use_decoding(dm, tag, lookahead)
    out: dict[str, float] = {}
    for evaluate in (trainer.validate, trainer.test):
        (result,) = evaluate(module, dm, verbose=False)
        out |= {k.replace(f"/{tag}/", "/"): round(float(v), 4) for k, v in result.items()
                if k.rsplit("/", 1)[-1] in REPORTED}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data-root", type=Path, default=None, help="where the run's data lives now, if it moved")
    parser.add_argument("--work", type=Path, default=None, help="where the reranker and the decodes' files go")
    parser.add_argument("--lookaheads", nargs="+", default=["none", "copy_lcs_bonus"])
    parser.add_argument("--rerank", nargs="*", default=[], help="overrides of conf/rerank/beam.yaml, e.g. epochs=3")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    quiet_console()
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        settings = compose(config_name="train", overrides=["rerank=beam", *[f"rerank.{o}" for o in args.rerank]]).rerank
    saved = OmegaConf.load(args.run / "run_config.yaml")
    cfg = OmegaConf.create({"decode": saved.decode, "data": {"root": str(args.data_root) if args.data_root else None}})
    cfg, dm, module = restore(str(args.run), cfg)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_rerank-"))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=work)  # wrong answers, calibration: there
    rules = {name: rule(name) for name in args.lookaheads}
    results: dict[str, dict] = {"beam_order": {}, "reranked": {}}
    for name, lookahead in rules.items():
        results["beam_order"][name] = decoded(trainer, module, dm, name, lookahead)
    start = time.perf_counter()
    module.reranker = rerank_after_fit(module, dm, OmegaConf.to_container(settings),
                                       str(resolve_checkpoint(str(args.run))), module.hparams.get("lookahead"),
                                       work / RERANKER_FILE, "cpu", args.seed)
    train_seconds = round(time.perf_counter() - start, 1)
    for name, lookahead in rules.items():
        results["reranked"][name] = decoded(trainer, module, dm, name, lookahead)
    out = {"run": str(args.run), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores", "threads": os.environ.get("OMP_NUM_THREADS"),
           "rerank": OmegaConf.to_container(settings), "train_seconds": train_seconds, **results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{'':28} {'val em':>8} {'test em':>8} {'oracle':>8} {'homonym':>8}")
    for order in ("beam_order", "reranked"):
        for name, r in results[order].items():
            print(f"{order + ' ' + name:28} {r.get('val/em')!s:>8} {r.get('test/em')!s:>8} "
                  f"{r.get('test/oracle')!s:>8} {r.get('test/em_homonym')!s:>8}")
    print(f"reranker trained in {train_seconds} s; wrote {args.out}")


if __name__ == "__main__":
    main()
