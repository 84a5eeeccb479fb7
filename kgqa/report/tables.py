"""Runs read as an ablation: grouped by every factor that varies except the seed, mean ± std over
seeds, each decode rule beside the others; factors constant across the folder printed once."""
from __future__ import annotations

import csv
import io
import statistics
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from kgqa.errors import ConfigError
from kgqa.report.collect import METRICS, STAGES, Evaluation
from kgqa.report.significance import Comparison


@dataclass
class Group:
    """The runs of one configuration decoded with one rule, over seeds."""

    configuration: tuple[tuple[str, Any], ...]  # the varying factors only
    rule: str
    evaluations: list[Evaluation]

    def stage(self, stage: str) -> list[Evaluation]:
        return [e for e in self.evaluations if e.stage == stage]

    @property
    def n(self) -> int:
        return len({e.seed for e in self.evaluations})

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.configuration) or "all runs"

    def values(self, stage: str, metric: str) -> list[float]:
        return [e.metrics[metric] for e in self.stage(stage) if metric in e.metrics]


def factor_values(evaluations: list[Evaluation]) -> dict[str, list]:
    """Each configuration factor (in the order first seen) and its distinct values."""
    keys = list(dict.fromkeys(k for e in evaluations for k, _ in e.configuration))
    values = {k: [] for k in keys}
    for e in evaluations:
        conf = dict(e.configuration)
        for k in keys:
            if conf.get(k) not in values[k]:
                values[k].append(conf.get(k))
    return values


def group(evaluations: list[Evaluation]) -> tuple[dict[str, Any], list[Group]]:
    """(factors constant over all runs, groups): configurations in the order first seen, and within
    each the rules in the order first seen over all runs."""
    values = factor_values(evaluations)
    constants = {k: v[0] for k, v in values.items() if len(v) == 1}
    varying = [k for k in values if k not in constants]
    groups: dict[tuple, Group] = {}
    for e in evaluations:
        conf = dict(e.configuration)
        configuration = tuple((k, conf.get(k)) for k in varying)
        groups.setdefault((configuration, e.rule), Group(configuration, e.rule, [])).evaluations.append(e)
    configurations = list(dict.fromkeys(g.configuration for g in groups.values()))
    rules = list(dict.fromkeys(g.rule for g in groups.values()))
    order = sorted(groups.values(), key=lambda g: (configurations.index(g.configuration), rules.index(g.rule)))
    return constants, order


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n − 1); std None for a single run."""
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def shown(value: Any) -> str:
    """A factor's value; "–" for a run that has no such factor (a run of another sweep or version)."""
    return "–" if value is None else str(value)


def cell(values: list[float], digits: int = 3) -> str:
    mean, std = mean_std(values)
    if mean is None:
        return ""
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def matches(group_: Group, selector: dict[str, str]) -> bool:
    fields = {k: str(v) for k, v in group_.configuration} | {"rule": group_.rule}
    return all(fields.get(k) == v for k, v in selector.items())


def find_group(groups: list[Group], selector: dict[str, str]) -> Group:
    found = [g for g in groups if matches(g, selector)]
    if len(found) != 1:
        rows = "; ".join(f"{g.label}, rule={g.rule}" for g in groups)
        wanted = ",".join(f"{k}={v}" for k, v in selector.items())
        raise ConfigError(f"--baseline {wanted} matches {len(found)} rows, not one; the rows: {rows}")
    return found[0]


MARK = "*"


class GroupedTable:
    """One row per (configuration, rule): n and mean ± std of each metric on val and test."""

    def __init__(self, evaluations: list[Evaluation], baseline: Group | None = None,
                 comparisons: dict[int, Comparison] | None = None):
        self.constants, self.groups = group(evaluations)
        self.factors = list(dict.fromkeys(k for g in self.groups for k, _ in g.configuration))
        self.rules = list(dict.fromkeys(g.rule for g in self.groups))
        self.stages = [s for s in STAGES if any(g.stage(s) for g in self.groups)]
        self.metrics = [m for m in METRICS if any(g.values(s, m) for g in self.groups for s in self.stages)]
        self.baseline, self.comparisons = baseline, comparisons or {}

    def header(self) -> list[str]:
        return [*self.factors, "rule", "n", *(f"{s}/{m}" for s in self.stages for m in self.metrics)]

    def marked(self, g: Group, text: str) -> str:
        if g is self.baseline:
            return f"{text} (baseline)"
        c = self.comparisons.get(id(g))
        return f"{text} {MARK}" if c is not None and c.significant else text

    def rows(self) -> list[list[str]]:
        rows = []
        for g in self.groups:
            cells = [cell(g.values(s, m)) for s in self.stages for m in self.metrics]
            if "test" in self.stages and "em" in self.metrics:
                i = self.stages.index("test") * len(self.metrics) + self.metrics.index("em")
                cells[i] = self.marked(g, cells[i])
            rows.append([*(shown(v) for _, v in g.configuration), g.rule, str(g.n), *cells])
        return rows

    def by_rule(self) -> tuple[list[str], list[list[str]]]:
        """The ablation view: configurations as rows, rules as columns, cells "val EM / test EM"."""
        configurations = list(dict.fromkeys(g.configuration for g in self.groups))
        cells = {(g.configuration, g.rule): g for g in self.groups}
        rows = []
        for conf in configurations:
            row = [shown(v) for _, v in conf]
            for rule in self.rules:
                g = cells.get((conf, rule))
                text = " / ".join(cell(g.values(s, "em")) for s in self.stages) if g else ""
                row.append(self.marked(g, text) if g else text)
            rows.append(row)
        return [*self.factors, *self.rules], rows

    def constants_line(self) -> str:
        return "constant: " + ", ".join(f"{k}={v}" for k, v in self.constants.items()) if self.constants else ""

    def legend(self) -> str:
        if self.baseline is None:
            return ""
        return (f"{MARK} test EM differs from the baseline ({self.baseline.label}, rule={self.baseline.rule}) "
                "outside the 95 % paired bootstrap interval")

    def markdown(self) -> str:
        parts = [self.constants_line(), f"Mean ± std over seeds (n runs per row), {' and '.join(self.stages)}:",
                 markdown_table(self.header(), self.rows())]
        if len(self.rules) > 1:
            parts += [f"EM by decode rule ({' / '.join(self.stages)}), mean ± std over seeds:",
                      markdown_table(*self.by_rule())]
        parts.append(self.legend())
        return "\n\n".join(p for p in parts if p) + "\n"

    def csv(self) -> str:
        """Numbers, not text: each metric's mean and std in two columns."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow([*self.factors, "rule", "n", *(f"{s}/{m}{x}" for s in self.stages for m in self.metrics
                                                       for x in ("", "_std")),
                         *(["significant_vs_baseline"] if self.baseline else [])])
        for g in self.groups:
            numbers = [x for s in self.stages for m in self.metrics for x in mean_std(g.values(s, m))]
            c = self.comparisons.get(id(g))
            extra = [("" if c is None else c.significant)] if self.baseline else []
            writer.writerow([*(v for _, v in g.configuration), g.rule, g.n,
                             *("" if x is None else f"{x:.6g}" for x in numbers), *extra])
        return out.getvalue()

    def print(self, console: Console, title: str) -> None:
        for header, rows, name in [(self.header(), self.rows(), title),
                                   *([(*self.by_rule(), "EM by decode rule")] if len(self.rules) > 1 else [])]:
            table = Table(*header, title=name, caption=self.constants_line() if name == title else None)
            for row in rows:
                table.add_row(*row)
            console.print(table)
        if self.legend():
            console.print(self.legend())


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
