"""Comparing runs as an ablation is read: each run writes metrics.json and its per-question results;
a sweep or any folder of runs becomes one grouped table (mean ± std over seeds, each decode rule
beside the others; printed, Markdown, CSV), a chart, and paired significance tests.

    kgqa-report <folder of runs> [--baseline target=spm,rule=none]
    kgqa-report <folder> --compare RUN_OR_GROUP RUN_OR_GROUP

collect (metrics.json -> evaluations) -> tables (groups, mean ± std) -> significance -> plot.
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from rich.console import Console

from kgqa.errors import ConfigError, DataError
from kgqa.files import write_text
from kgqa.report.collect import METRICS_FILE, Evaluation, collect, evaluations, write_run_metrics
from kgqa.report.plot import plot
from kgqa.report.significance import Comparison, compare
from kgqa.report.tables import GroupedTable, find_group

log = logging.getLogger("kgqa.report")
__all__ = ["METRICS_FILE", "collect", "compare", "report", "select", "write_run_metrics", "SweepSummary", "main"]


def parse_selector(text: str) -> dict[str, str]:
    """"target=spm,rule=none" -> {"target": "spm", "rule": "none"}; a part without "=" is a run folder:
    "outputs/x,rule=none" -> {"run": "outputs/x", "rule": "none"}."""
    return dict(part.split("=", 1) if "=" in part else ("run", part) for part in text.split(","))


def selector_text(selector: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in selector.items())


def select(found: list[Evaluation], selector: dict[str, str], root: Path, stage: str) -> list[Evaluation]:
    """The evaluations on `stage` of one configuration and rule that the selector picks out."""
    def fields(e: Evaluation) -> dict[str, str]:
        return {k: str(v) for k, v in e.configuration} | {"rule": e.rule, "seed": str(e.seed), "run": e.run}

    if "run" in selector:  # a path as typed (relative to the cwd) or relative to the root
        path = Path(selector["run"])
        selector = selector | {"run": os.path.relpath(path, root) if path.exists() else str(path)}
    chosen = [e for e in found if e.stage == stage and all(fields(e).get(k) == v for k, v in selector.items())]
    kinds = {(e.configuration, e.rule) for e in chosen}
    if len(kinds) != 1:
        options = sorted({f"rule={e.rule}" for e in chosen}) if chosen else ["nothing"]
        raise ConfigError(f"{selector_text(selector)} selects {len(kinds)} configurations or rules on {stage}, not one "
                          f"({', '.join(options)}): add key=value to narrow it")
    return chosen


def significance_vs(table: GroupedTable, baseline: dict[str, str] | None, resamples: int,
                    seed: int) -> dict[int, Comparison]:
    """Each row's test-EM comparison with the baseline row (rows without per-question files are skipped)."""
    if baseline is None:
        return {}
    table.baseline = find_group(table.groups, baseline)
    comparisons, missing = {}, []
    for g in table.groups:
        if g is not table.baseline and g.stage("test") and table.baseline.stage("test"):
            try:
                comparisons[id(g)] = compare(g.stage("test"), table.baseline.stage("test"), resamples, seed)
            except FileNotFoundError as e:
                missing.append(str(e))
    if missing:
        log.warning("no significance for %d row(s) without per-question results (runs from before they were "
                    "written?), e.g. %s", len(missing), missing[0])
    table.comparisons = comparisons
    return comparisons


def grouped(root: Path, baseline: dict[str, str] | None = None, resamples: int = 10_000, seed: int = 0) -> GroupedTable:
    found = evaluations(collect(root))
    if not found:
        raise DataError(f"no readable {METRICS_FILE} under {root}")
    table = GroupedTable(found)
    significance_vs(table, baseline, resamples, seed)
    return table


def write_summary(root: Path, table: GroupedTable, console: Console | None = None) -> None:
    write_text(root / "summary.md", table.markdown())
    write_text(root / "summary.csv", table.csv())
    table.print(console or Console(width=220), str(root))


def report(root: Path, baseline: dict[str, str] | None = None, resamples: int = 10_000, seed: int = 0) -> GroupedTable:
    table = grouped(root, baseline, resamples, seed)
    write_summary(root, table)
    print(f"wrote {root / 'summary.md'}, {root / 'summary.csv'} and {plot(table, root / 'report.png')}")
    return table


def print_comparison(a: str, b: str, c: Comparison, stage: str, resamples: int, seed: int) -> None:
    print(f"A: {a}  {stage} EM {c.em_a:.4f}\nB: {b}  {stage} EM {c.em_b:.4f}")
    print(f"{c.pairs} run pair(s) by seed, {c.questions} questions each")
    print(f"EM difference A - B: {c.difference:+.4f}, 95 % CI [{c.low:+.4f}, {c.high:+.4f}] "
          f"(paired bootstrap over questions, {resamples} resamples, seed {seed})")
    print(f"McNemar exact (binomial on discordant pairs): A right/B wrong {c.only_a}, A wrong/B right {c.only_b}, "
          f"p = {c.p_value:.4g}")


class SweepSummary(Callback):
    """Hydra callback: when a multirun ends, tabulate its runs in the sweep directory; the runs that failed
    follow the table (summary.md, and one line each: the run, its error line, its log), and the command
    ends with status 1. The same command again runs only those (kgqa.cli.sweep_runs)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from kgqa.cli.sweep_runs import FINISHED, failures

        root = Path(config.hydra.sweep.dir)
        for earlier in sorted(p.parent for p in root.glob(f"*/{FINISHED}") if p.stat().st_mtime < self.started):
            print(f"skipped: {earlier.name}: finished in an earlier launch of this sweep ({FINISHED})")
        found, failed = evaluations(collect(root)), failures(root)
        lines = [f"failed: {run.name} ({info['name']}): {info['error']} (log: {info['log']})" for run, info in failed]
        if found:
            write_summary(root, GroupedTable(found))
        if failed:
            table = (root / "summary.md").read_text(encoding="utf-8") if found else ""
            write_text(root / "summary.md", table + "\n## Failed runs\n\n" + "".join(f"- {line}\n" for line in lines))
            print("\n".join(lines))
            raise SystemExit(f"kgqa: {len(failed)} run(s) of the sweep failed; run the same command again "
                             f"(hydra.sweep.dir={root}) to run only the runs that did not finish")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kgqa-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, nargs="?", help="a sweep directory or any folder of runs "
                        "(default: the folder holding both --compare runs, else the current one)")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"),
                        help="two runs or groups: key=value,... over factors, rule, seed and run "
                             "(a bare folder is run=folder)")
    parser.add_argument("--baseline", help="key=value,... picking one row: mark rows whose test EM differs from it")
    parser.add_argument("--stage", default="test", choices=("val", "test"), help="split compared by --compare")
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap's generator")
    args = parser.parse_args(argv)
    try:
        run(args)
    except (ConfigError, DataError, FileNotFoundError) as e:
        raise SystemExit(f"kgqa-report: {e}") from None


def run(args: argparse.Namespace) -> None:
    baseline = parse_selector(args.baseline) if args.baseline else None
    if not args.compare:
        report(args.root or Path("."), baseline, args.resamples, args.seed)
        return
    selectors = [parse_selector(x) for x in args.compare]
    root = args.root
    if root is None:
        paths = [Path(s["run"]) for s in selectors if "run" in s]
        root = Path(os.path.commonpath([p.resolve() for p in paths])) if len(paths) == 2 else Path(".")
    found = evaluations(collect(root))
    a, b = (select(found, s, root, args.stage) for s in selectors)
    c = compare(a, b, args.resamples, args.seed)
    print_comparison(*args.compare, c, args.stage, args.resamples, args.seed)
