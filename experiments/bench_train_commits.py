"""Training throughput of two commits side by side: samples/s before and after a change to the model code.

This checkout's experiments/bench_train.py runs with each commit's kgqa (package and conf/, extracted
with git archive) first on the PYTHONPATH, in alternating rounds (before, after, before, ...) so both
meet the same load on a shared machine. One setting per call (--sizes, --set); bucketed batches only.

    python experiments/bench_train_commits.py --before 3b551ba --after d842d2c --rounds 3 --steps 60 \\
        --set model.copy=true loss.trie_loss=1.0 --out experiments/results/bench_train_commits-x.json

Prints samples/s per round and side, and the ratio after/before of the medians; the JSON holds every run.
"""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median

from bench_decode_commits import checkout, commits_parser

HERE = Path(__file__).resolve().parent


def run(tree: Path, args, out: Path) -> dict:
    env = os.environ | {"PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(args.threads)}
    subprocess.run([sys.executable, str(HERE / "bench_train.py"), "--sizes", args.size, "--batching", "bucketed",
                    "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
                    "--out", str(out), "--set", *args.set], cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
    (result,) = out.glob("bench_train-*.json")
    return json.loads(result.read_text())["rows"][0]


def main() -> None:
    parser = commits_parser(__doc__)
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", nargs="*", default=[], help="train overrides of the setting (model.copy=true ...)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_train_commits-"))
    trees = {side: checkout(rev, work / side) for side, rev in (("before", args.before), ("after", args.after))}
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for r in range(args.rounds):
        for side in runs:
            folder = work / f"{side}-{r}"
            folder.mkdir()
            runs[side].append(run(trees[side], args, folder))
            print(f"round {r} {side}: {runs[side][-1]['samples_per_s']:.1f} samples/s", flush=True)
    medians = {side: median(row["samples_per_s"] for row in rows) for side, rows in runs.items()}
    ratio = medians["after"] / medians["before"]
    print(f"median samples/s before {medians['before']:.1f}, after {medians['after']:.1f}: after/before {ratio:.2f}")
    Path(args.out).write_text(json.dumps({"date": f"{datetime.datetime.now():%Y-%m-%d %H:%M}", "before": args.before,
                                          "after": args.after, "size": args.size, "overrides": args.set,
                                          "threads": args.threads, "medians": medians, "ratio": ratio, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
