"""report.png: test EM per configuration with error bars over seeds, one panel per decode rule; val EM
per epoch, mean and a band (± std) over seeds, one line per configuration (when runs kept a history)."""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from kgqa.files import atomic_output
from kgqa.report.tables import MARK, GroupedTable, mean_std

LABEL_WIDTH = 48


def val_curves(table: GroupedTable) -> dict[tuple, tuple[list[int], list[list[float]], int]]:
    """Configuration -> (epochs, val EM of each run at each epoch, runs), from the runs' histories."""
    curves = {}
    for c in dict.fromkeys(g.configuration for g in table.groups):
        runs = {e.run: e.history for g in table.groups if g.configuration == c for e in g.evaluations if e.history}
        by_epoch: dict[int, list[float]] = {}
        for history in runs.values():
            for h in history:
                if "val/em" in h:
                    by_epoch.setdefault(int(h["epoch"]), []).append(h["val/em"])
        if by_epoch:
            epochs = sorted(by_epoch)
            curves[c] = (epochs, [by_epoch[e] for e in epochs], len(runs))
    return curves


def plot(table: GroupedTable, out: Path) -> Path:
    import matplotlib.pyplot as plt

    fig = figure(table)
    with atomic_output(out, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return out


def figure(table: GroupedTable):
    """The report's figure (a matplotlib Figure, not yet saved)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    configurations = list(dict.fromkeys(g.configuration for g in table.groups))
    # a configuration's label wrapped at LABEL_WIDTH characters: with many varying factors an unwrapped one
    # outgrows the figure and is cut off at its left edge
    labels = {c: textwrap.fill(", ".join(f"{k}={v}" for k, v in c), LABEL_WIDTH) or "all runs" for c in configurations}
    lines = max(label.count("\n") + 1 for label in labels.values())
    stage = "test" if "test" in table.stages else "val"
    curves = val_curves(table)
    panels = len(table.rules)
    height = max(2.5, (0.3 + 0.15 * lines) * len(configurations) + 1.5)
    curve_height = max(4.0, 0.18 * lines * len(curves) + 1.0)  # the legend lists every configuration
    fig = plt.figure(figsize=(max(8.0, 2.2 + 3.0 * panels) + 0.07 * LABEL_WIDTH, height + (curve_height if curves else 0.0)),
                     layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[height, curve_height]) if curves else (fig, None)
    axes = np.atleast_1d(top.subplots(1, panels, sharey=True, sharex=True))
    cells = {(g.configuration, g.rule): g for g in table.groups}
    y = np.arange(len(configurations))
    for ax, rule in zip(axes, table.rules):
        groups = [cells.get((c, rule)) for c in configurations]
        stats = [mean_std(g.values(stage, "em")) if g else (None, None) for g in groups]
        means = [m if m is not None else np.nan for m, _ in stats]
        errors = [s or 0.0 for _, s in stats]
        ax.barh(y, means, xerr=errors, capsize=3, color="tab:blue", alpha=0.8)
        for yi, m, err, g in zip(y, means, errors, groups):
            if not np.isnan(m):
                text = table.marked(g, f"{m:.3f}") if stage == "test" else f"{m:.3f}"
                inside = m + err > 0.6  # a long bar holds its label; a short one has it beyond its error bar
                ax.text(0.02 if inside else m + err + 0.02, yi, text, va="center", fontsize=8,
                        color="white" if inside else "black")
        ax.set_title(rule or "(the run's rule)", fontsize=10)
        ax.set_xlim(0, 1.04)
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0", ".25", ".5", ".75", "1"])
        ax.set_xlabel(f"{stage} EM")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, [labels[c] for c in configurations], fontsize=9)
    axes[0].invert_yaxis()
    title = f"{stage} EM, mean ± std over seeds ({table.constants_line() or 'all factors vary'})"
    if table.baseline is not None:
        title += f"\n{MARK}: test EM differs from the baseline beyond the 95 % paired bootstrap interval"
    top.suptitle(textwrap.fill(title, width=int(fig.get_figwidth() * 10), replace_whitespace=False), fontsize=10)

    if curves:
        ax = bottom.subplots()
        for c, (epochs, values, runs) in curves.items():
            mean = np.array([np.mean(v) for v in values])
            std = np.array([np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in values])
            line, = ax.plot(epochs, mean, marker="o", label=f"{labels[c]} (n={runs})")
            ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(title="val EM per epoch, mean and ± std band over seeds", xlabel="epoch",
               ylabel="val EM (the run's rule)")
        ax.title.set_fontsize(10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig
