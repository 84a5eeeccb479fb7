"""report.png: test EM per configuration with error bars over seeds, one panel per decode rule; val EM
per epoch, mean and a band (± std) over seeds, one line per configuration."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from kgqa.files import atomic_output
from kgqa.report.tables import GroupedTable, mean_std


def plot(table: GroupedTable, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    configurations = list(dict.fromkeys(g.configuration for g in table.groups))
    labels = {c: ", ".join(f"{k}={v}" for k, v in c) or "all runs" for c in configurations}
    stage = "test" if "test" in table.stages else "val"
    panels = len(table.rules)
    height = max(2.5, 0.45 * len(configurations) + 1.5)
    fig = plt.figure(figsize=(max(8.0, 2.2 + 3.0 * panels), height + 4.0), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[height, 4.0])
    axes = np.atleast_1d(top.subplots(1, panels, sharey=True, sharex=True))
    cells = {(g.configuration, g.rule): g for g in table.groups}
    y = np.arange(len(configurations))
    for ax, rule in zip(axes, table.rules):
        stats = [mean_std(cells[(c, rule)].values(stage, "em")) if (c, rule) in cells else (None, None)
                 for c in configurations]
        means = [m if m is not None else np.nan for m, _ in stats]
        errors = [s or 0.0 for _, s in stats]
        ax.barh(y, means, xerr=errors, capsize=3, color="tab:blue", alpha=0.8)
        for yi, m in zip(y, means):
            if not np.isnan(m):
                ax.text(0.01, yi, f"{m:.3f}", va="center", color="white", fontsize=8)
        ax.set_title(rule or "(the run's rule)", fontsize=10)
        ax.set_xlim(0, 1.04)
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0", ".25", ".5", ".75", "1"])
        ax.set_xlabel(f"{stage} EM")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, [labels[c] for c in configurations], fontsize=9)
    axes[0].invert_yaxis()
    top.suptitle(f"{stage} EM, mean ± std over seeds ({table.constants_line() or 'all factors vary'})", fontsize=10)

    curves = bottom.subplots()
    for c in configurations:
        runs = {e.run: e.history for g in table.groups if g.configuration == c for e in g.evaluations if e.history}
        by_epoch: dict[int, list[float]] = {}
        for history in runs.values():
            for h in history:
                if "val/em" in h:
                    by_epoch.setdefault(int(h["epoch"]), []).append(h["val/em"])
        if not by_epoch:
            continue
        epochs = sorted(by_epoch)
        mean = np.array([np.mean(by_epoch[e]) for e in epochs])
        std = np.array([np.std(by_epoch[e], ddof=1) if len(by_epoch[e]) > 1 else 0.0 for e in epochs])
        line, = curves.plot(epochs, mean, marker="o", label=f"{labels[c]} (n={len(runs)})")
        curves.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    curves.xaxis.set_major_locator(MaxNLocator(integer=True))
    curves.set_title("val EM per epoch, mean and ± std band over seeds", fontsize=10)
    curves.set_xlabel("epoch")
    curves.set_ylabel("val EM (the run's own rule)")
    curves.grid(alpha=0.3)
    if curves.lines:
        curves.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        curves.text(0.5, 0.5, "no per-epoch history (kgqa-eval runs or a folder of records)", ha="center",
                    transform=curves.transAxes)
    with atomic_output(out, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return out
