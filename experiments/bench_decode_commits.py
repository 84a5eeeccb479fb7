"""bench_decode.py on two commits side by side: the same answers, at the same speed?

Each commit's own experiments/bench_decode.py runs against its own kgqa (extracted with git
archive), project decoder only, on the same trained weights (--model-dir, trained once), in
alternating rounds (before, after, before, after, ...) so that both meet the same load on a
shared machine. Every answer of the project decoder (key id and log-prob per question, per
setting) is recorded from each run's `run_project`, a function both commits' scripts have.

    python experiments/bench_decode_commits.py --before b92b194 --rounds 3 --out experiments/results/x.json

Prints one row per setting (size, beam, look-ahead): q/s before and after (median over rounds),
their ratio, and whether every answer is the same; the JSON holds every run.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import io
import tarfile
import tempfile
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parents[1]

# Runs inside a checkout: load its bench_decode.py as a module, record what run_project returns, run main().
RECORDER = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("bench_decode", "experiments/bench_decode.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
recorded, timed = [], bench.run_project
def run_project(*args, **kwargs):
    answers, seconds = timed(*args, **kwargs)
    recorded.append(answers)
    return answers, seconds
bench.run_project = run_project
answers_file, sys.argv = sys.argv[1], ["experiments/bench_decode.py", *sys.argv[2:]]
bench.main()
open(answers_file, "w").write(json.dumps(recorded))
"""


def checkout(rev: str, folder: Path) -> Path:
    """The tree of `rev` (or the working tree for "WORKTREE") under `folder`."""
    if rev == "WORKTREE":
        return REPO
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True).stdout
    folder.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def run(tree: Path, bench_args: list[str], out: Path, answers: Path) -> dict:
    env = os.environ | {"PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", RECORDER, str(answers), *bench_args, "--out", str(out)],
                   cwd=tree, env=env, check=True)
    (result,) = out.glob("bench_decode-*.json")
    return json.loads(result.read_text()) | {"answers": json.loads(answers.read_text())}


def commits_parser(description: str) -> argparse.ArgumentParser:
    """What every side-by-side script takes: the two commits and the rounds to alternate them in."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="a commit")
    parser.add_argument("--after", default="WORKTREE", help="a commit, or WORKTREE (this checkout as it is)")
    parser.add_argument("--rounds", type=int, default=3)
    return parser


def main() -> None:
    parser = commits_parser(__doc__)
    parser.add_argument("--model-dir", default="/tmp/bench_models")
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "kgclue"))
    parser.add_argument("--bench-args", default="--sizes tiny small --beams 1 3 --threads 1 --by-length --repeats 1",
                        help="passed to both commits' bench_decode.py (with --skip-reference, --model-dir, --root)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    bench_args = [*args.bench_args.split(), "--skip-reference", "--model-dir", args.model_dir, "--root", args.root]
    work = Path(tempfile.mkdtemp(prefix="bench_commits-"))
    trees = {side: checkout(rev, work / side) for side, rev in (("before", args.before), ("after", args.after))}
    runs = {"before": [], "after": []}
    for r in range(args.rounds):
        for side in ("before", "after"):
            folder = work / f"{side}-{r}"
            folder.mkdir()
            runs[side].append(run(trees[side], bench_args, folder, folder / "answers.json"))
            print(f"round {r} {side}: done", flush=True)

    rows = []
    first = {side: runs[side][0] for side in runs}
    for i, row in enumerate(first["before"]["results"]):
        qps = {side: median(run["results"][i]["project_qps"] for run in runs[side]) for side in runs}
        setting = {k: row[k] for k in ("size", "beam", "lookahead", "questions")}
        assert all(run["results"][i][k] == v for side in runs for run in runs[side] for k, v in setting.items())
        rows.append(setting | {"qps_before": qps["before"], "qps_after": qps["after"], "after_over_before": qps["after"] / qps["before"]})
    # answers: run_project's calls in order (a warm-up, then one per setting and repeat) in every run
    calls = [run["answers"] for side in runs for run in runs[side]]
    same_keys = all(len(c) == len(calls[0]) and all([k for k, _ in a] == [k for k, _ in b] for a, b in zip(c, calls[0]))
                    for c in calls)
    worst = max(abs(x[1] - y[1]) for c in calls for a, b in zip(c, calls[0]) for x, y in zip(a, b))
    report = {"command": "python experiments/bench_decode_commits.py " + " ".join(sys.argv[1:]),
              "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "before": args.before, "after": args.after, "device": first["after"]["device"], "rows": rows,
              "same_keys_in_every_run": same_keys, "largest_log_prob_difference": worst,
              "decodes_compared": sum(len(a) for a in calls[0]), "runs": {side: [
                  {k: v for k, v in run.items() if k != "answers"} for run in runs[side]] for side in runs}}
    Path(args.out).write_text(json.dumps(report, indent=1))
    print("\n| size | beam | look-ahead | q/s before | q/s after | after / before |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['size']} | {r['beam']} | {r['lookahead']} | {r['qps_before']:.1f} | {r['qps_after']:.1f} | "
              f"{r['after_over_before']:.2f} |")
    print(f"\nsame key for every question in every run: {same_keys}; largest log-prob difference {worst:.2e} "
          f"({report['decodes_compared']} decodes per run); wrote {args.out}")


if __name__ == "__main__":
    main()
