"""Is a confidence worth trusting? Reliability bins, ECE and coverage vs accuracy by threshold.

Each answer's confidence is the probability of its key under the constraint (and look-ahead);
an answer is correct when its object matches the gold one (the official EM).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kgqa.files import atomic_output, write_text

THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def reliability(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> list[dict]:
    """Equal-width confidence bins: count, mean confidence and accuracy of each."""
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    return [{"lo": b / n_bins, "hi": (b + 1) / n_bins, "count": int((bins == b).sum()),
             "confidence": float(confidence[bins == b].mean()) if (bins == b).any() else None,
             "accuracy": float(correct[bins == b].mean()) if (bins == b).any() else None} for b in range(n_bins)]


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> float:
    n = len(confidence)
    return sum(b["count"] / n * abs(b["confidence"] - b["accuracy"]) for b in reliability(confidence, correct, n_bins) if b["count"])


def coverage_table(confidence: np.ndarray, correct: np.ndarray, thresholds=THRESHOLDS) -> list[dict]:
    """What a user gets with decode.min_confidence=t: the share answered and the accuracy of those answers."""
    rows = []
    for t in thresholds:
        answered = confidence >= t
        rows.append({"min_confidence": t, "answered": float(answered.mean()),
                     "accuracy": float(correct[answered].mean()) if answered.any() else None})
    return rows


def write_calibration(scored: list[tuple[float, bool]], path: Path) -> dict:
    """JSON (ECE, bins, coverage table) and a reliability diagram beside it."""
    confidence = np.array([c for c, _ in scored], dtype=float)
    correct = np.array([ok for _, ok in scored], dtype=float)
    report = {"n": len(scored), "ece": expected_calibration_error(confidence, correct),
              "bins": reliability(confidence, correct), "coverage": coverage_table(confidence, correct)}
    write_text(path, json.dumps(report, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    used = [b for b in report["bins"] if b["count"]]
    ax.bar([(b["lo"] + b["hi"]) / 2 for b in used], [b["accuracy"] for b in used], width=0.09, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=f"ECE {report['ece']:.3f} (n={len(scored)})")
    ax.legend()
    with atomic_output(path.with_suffix(".png"), "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return report
