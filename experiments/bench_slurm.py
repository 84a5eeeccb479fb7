"""Wall time of a 2-run toy sweep through Slurm ÷ the same sweep run locally (issue 27; goal ≤ 1.3×), and
from a requeue's signal to the requeued job training again, with the steps trained twice (goal: none).

Both sweeps are the user's command in a subprocess (`kgqa-train -m ... target=spm,smp`), timed from start to
exit: locally Hydra's basic launcher runs the runs one after another with the machine's cores; through Slurm
(experiments/slurm/local_cluster.sh, started if needed) each run is a job of the preset (1 CPU), side by side
where the node has the cores. The requeue: a one-run toy sweep through Slurm, signalled (`scancel
--signal=USR1`, the preset's time-limit signal, and `scontrol requeue`, Slurm's SIGTERM) a few steps into its
second epoch; the run's step record (steps.jsonl) times the first step the next attempt logs. Prints one JSON
object (the best of --repeats for the ratio).

    python experiments/bench_slurm.py                 # the toy set as the main command trains it
    python experiments/bench_slurm.py --epochs 2 --entities 300    # a small, short one: start-up dominates
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "slurm" / "local_cluster.sh"


def sweep(folder: Path, overrides: list[str]) -> float:
    env = os.environ | {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "kgqa.cli.train", "-m", "target=spm,smp", *overrides,
                    f"hydra.sweep.dir={folder}"], cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def training_rows(record: Path) -> list[dict]:
    """The step record's training rows, read while the run appends to it (a last line not ended yet is left)."""
    lines = record.read_text().split("\n")[:-1] if record.is_file() else []
    return [row for row in map(json.loads, lines) if "train/loss" in row.get("metrics", {})]


def requeue(folder: Path, slurm: list[str], toy: list[str], signal: list[str]) -> dict:
    """Seconds from the signal to the next attempt's first logged step (its row in the step record), and the
    steps trained twice: those the first attempt logged from the step the next one resumed at."""
    env = os.environ | {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    cmd = [sys.executable, "-m", "kgqa.cli.train", "-m", *slurm, "target=spm", *toy, "trainer.log_every_n_steps=1",
           f"hydra.sweep.dir={folder}"]
    record = folder / "0" / "steps.jsonl"
    with subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        while len(rows := training_rows(record)) < 15:  # into the second epoch (12 batches an epoch)
            time.sleep(0.05)
        (job,) = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
        first_file = record.stat().st_ino  # the next attempt rewrites the record, cut at its checkpoint
        sent = time.time()
        subprocess.run([*signal, job], check=True)
        while record.stat().st_ino == first_file and proc.poll() is None:
            logged_first = rows[-1]["step"]
            time.sleep(0.05)
            rows = training_rows(record)
        proc.wait()
    log = next((folder / ".submitit").glob("*/*_0_log.err")).read_text()
    resumed_at = int(re.search(r"kgqa: (?:requeued Slurm job|Slurm ends job) .*? at step (\d+):", log)[1])
    (again,) = [row for row in training_rows(record) if row["step"] == resumed_at]
    return {"signal": " ".join(signal), "seconds_to_training": round(again["time"] - sent, 1),
            "resumed_at_step": resumed_at, "steps_trained_twice": max(0, logged_first + 1 - resumed_at)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, help="trainer.max_epochs (default: the toy's)")
    parser.add_argument("--entities", type=int, help="the toy's +data.source.n_entities (default: its own)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    partition = subprocess.run(["bash", str(SCRIPT), "up"], check=True, capture_output=True,
                               text=True).stdout.split()[-1]
    os.environ.setdefault("SLURM_CONF", str(Path(os.environ.get("KGQA_SLURM_DIR", "/tmp/kgqa-slurm")) / "slurm.conf"))
    toy = [*([f"trainer.max_epochs={args.epochs}"] if args.epochs else []),
           *([f"+data.source.n_entities={args.entities}"] if args.entities else [])]
    small = ["+data.source.n_entities=300", "trainer.max_epochs=3"]  # 12 batches an epoch
    slurm = ["hydra/launcher=slurm", "trainer=cpu", f"hydra.launcher.partition={partition}"]
    times: dict[str, list[float]] = {"local": [], "slurm": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            times["local"].append(sweep(Path(tmp) / f"local{i}", toy))
            times["slurm"].append(sweep(Path(tmp) / f"slurm{i}", slurm + toy))
        requeues = [requeue(Path(tmp) / f"requeue-{name}", slurm, small, signal)
                    for name, signal in (("usr1", ["scancel", "--signal=USR1"]), ("sigterm", ["scontrol", "requeue"]))]
    best = {k: min(v) for k, v in times.items()}
    print(json.dumps({"epochs": args.epochs, "entities": args.entities, "runs": 2,
                      "cores": len(os.sched_getaffinity(0)), "seconds": times,
                      "ratio_slurm_over_local": round(best["slurm"] / best["local"], 3), "requeues": requeues},
                     indent=1))


if __name__ == "__main__":
    main()
