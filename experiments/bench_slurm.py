"""Wall time of a 2-run toy sweep through Slurm ÷ the same sweep run locally (issue 27; goal ≤ 1.3×).

Both are the user's command in a subprocess (`kgqa-train -m ... target=spm,smp`), timed from start to exit:
locally Hydra's basic launcher runs the runs one after another with the machine's cores; through Slurm
(experiments/slurm/local_cluster.sh, started if needed) each run is a job of the preset (1 CPU), side by side
where the node has the cores. Prints one JSON object (the best of --repeats for the ratio).

    python experiments/bench_slurm.py                 # 2 epochs of the small toy set
    python experiments/bench_slurm.py --epochs 5 --repeats 2
"""
from __future__ import annotations

import argparse
import json
import os
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    partition = subprocess.run(["bash", str(SCRIPT), "up"], check=True, capture_output=True,
                               text=True).stdout.split()[-1]
    os.environ.setdefault("SLURM_CONF", str(Path(os.environ.get("KGQA_SLURM_DIR", "/tmp/kgqa-slurm")) / "slurm.conf"))
    toy = [f"trainer.max_epochs={args.epochs}", "+data.source.n_entities=300"]
    slurm = ["hydra/launcher=slurm", "trainer=cpu", f"hydra.launcher.partition={partition}"]
    times: dict[str, list[float]] = {"local": [], "slurm": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            times["local"].append(sweep(Path(tmp) / f"local{i}", toy))
            times["slurm"].append(sweep(Path(tmp) / f"slurm{i}", slurm + toy))
    best = {k: min(v) for k, v in times.items()}
    print(json.dumps({"epochs": args.epochs, "runs": 2, "cores": len(os.sched_getaffinity(0)), "seconds": times,
                      "ratio_slurm_over_local": round(best["slurm"] / best["local"], 3)}, indent=1))


if __name__ == "__main__":
    main()
