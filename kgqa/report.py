"""Comparing runs without W&B: each run writes metrics.json; a sweep or a folder of runs
becomes one table (printed, Markdown, CSV) and a chart.

kgqa-report <sweep or runs dir>
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

METRICS_FILE = "metrics.json"
COLUMNS = ("em", "f1", "emf1")


def write_run_metrics(run_dir: Path, factors: dict, metrics: dict[str, float], **extra: Any) -> None:
    (run_dir / METRICS_FILE).write_text(json.dumps({"factors": dict(factors), "metrics": metrics, **extra}, indent=1, ensure_ascii=False))


def collect(root: Path) -> list[dict]:
    runs = []
    for path in sorted(root.rglob(METRICS_FILE)):
        run = json.loads(path.read_text())
        run["dir"] = str(path.parent.relative_to(root)) or "."
        runs.append(run)
    return runs


def table_rows(runs: list[dict]) -> list[dict]:
    """One row per run and decode variant (the run's own rule, then each ablation rule)."""
    rows = []
    for run in runs:
        m = run["metrics"]
        tags = sorted({k.split("/")[1] for k in m if k.count("/") == 2})
        for tag in [""] + tags:
            infix = f"{tag}/" if tag else ""
            if not any(f"{s}/{infix}emf1" in m for s in ("val", "test")):
                continue
            factors = dict(run["factors"]) | ({"lookahead": tag} if tag else {})
            row = {"run": run.get("name", run["dir"]), **factors}
            for stage in ("val", "test"):
                row.update({f"{stage}/{c}": m.get(f"{stage}/{infix}{c}") for c in COLUMNS})
            rows.append(row)
    return rows


def write_summary(root: Path, rows: list[dict], console: Console | None = None) -> None:
    if not rows:
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else ("" if v is None else str(v))  # noqa: E731
    with open(root / "summary.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k)) for k in keys) + " |" for r in rows]
    (root / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    table = Table(*keys, title=f"{root}")
    for r in rows:
        table.add_row(*(fmt(r.get(k)) for k in keys))
    (console or Console(width=220)).print(table)


def plot(root: Path, runs: list[dict], rows: list[dict]) -> Path:
    """Test EMF1 by configuration, and val EM per epoch for each run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (bars, curves) = plt.subplots(1, 2, figsize=(14, 5))
    labels = [f"{r['run']} {r.get('lookahead', '')}".strip() for r in rows]
    bars.barh(labels, [r.get("test/emf1") or 0.0 for r in rows])
    bars.set_xlabel("test EMF1")
    bars.set_xlim(0, 1)
    for run in runs:
        history = run.get("history") or []
        if history:
            curves.plot([h["epoch"] for h in history], [h.get("val/em", 0.0) for h in history], marker="o", label=run["dir"])
    curves.set_xlabel("epoch")
    curves.set_ylabel("val EM")
    if curves.lines:
        curves.legend(fontsize="small")
    fig.tight_layout()
    out = root / "report.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def report(root: Path) -> list[dict]:
    runs = collect(root)
    if not runs:
        raise SystemExit(f"kgqa-report: no {METRICS_FILE} under {root}")
    rows = table_rows(runs)
    write_summary(root, rows)
    print(f"wrote {root / 'summary.md'}, {root / 'summary.csv'} and {plot(root, runs, rows)}")
    return rows


class SweepSummary(Callback):
    """Hydra callback: when a multirun ends, tabulate its runs in the sweep directory."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        root = Path(config.hydra.sweep.dir)
        runs = collect(root)
        write_summary(root, table_rows(runs))


def main() -> None:
    parser = argparse.ArgumentParser(prog="kgqa-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="a sweep directory or any folder of runs")
    report(parser.parse_args().root)


if __name__ == "__main__":
    main()
