"""Turn a results record (experiments/results/ablation_*.json) back into a folder of runs for kgqa-report.

    python experiments/records_to_runs.py experiments/results/ablation_cpu_tiny_grid.json /tmp/grid
    kgqa-report /tmp/grid

The records keep each run's metrics under "runs", named "<backbone>-<target>-seed<k>" or
"<target>-seed<k>", and the settings shared by all runs at the top. Each run becomes
<out>/<number>-<name>/metrics.json (numbered in the record's order) with those settings and the ones
in its name as factors; metrics without a rule in their name were decoded with the rule the runs were
trained with (--trained-rule, "none" in experiment=article_ablation). The records hold no
per-question results, so no significance.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from kgqa.report import write_run_metrics

SHARED = {"preset": "size", "backbone": "backbone", "kb": "kb", "epochs": "epochs", "optim.trie_loss": "trie_loss",
          "beam": "beam"}  # record field -> factor
IN_NAME = {"roformer": "backbone", "bert": "backbone", "spm": "target", "smp": "target"}


def factors_of(name: str, shared: dict, trained_rule: str) -> dict:
    factors = dict(shared)
    for part in name.split("-"):
        if part.startswith("seed") and part[4:].isdigit():
            factors["seed"] = int(part[4:])
        elif part in IN_NAME:
            factors[IN_NAME[part]] = part
        else:
            raise SystemExit(f"{name}: cannot read {part!r} as a factor (known: {', '.join(IN_NAME)}, seed<k>)")
    return factors | {"lookahead": trained_rule}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("record", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--trained-rule", default="none", help="the look-ahead of metrics without a rule in their name")
    args = parser.parse_args()
    record = json.loads(args.record.read_text())
    shared = {factor: record[field] for field, factor in SHARED.items() if field in record}
    for i, (name, metrics) in enumerate(record["runs"].items()):  # numbered: the report keeps the record's order
        write_run_metrics(args.out / f"{i:02d}-{name}", factors_of(name, shared, args.trained_rule), metrics, name=name,
                          record=str(args.record))
    print(f"{len(record['runs'])} runs written under {args.out}")


if __name__ == "__main__":
    main()
