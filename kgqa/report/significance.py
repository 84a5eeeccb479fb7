"""Is a difference in EM real? A paired bootstrap interval and McNemar's test over the same questions.

Two groups of runs (two configurations, or two rules, each over seeds) are compared by pairing their
runs by seed (seeds only one group has are left out; with no seed in common the sorted seeds are
paired in order). The difference is the mean over the pairs of EM(A) − EM(B) on the questions every
run answered. The bootstrap resamples questions (the same draw for every pair, the questions being
the shared unit), so the interval says how much the difference could move with another sample of
questions for these trained models; the spread over seeds is the std column of the tables. McNemar
pools the discordant (seed, question) pairs of all pairs into one exact binomial test; with several
seeds the pooled pairs share questions, so read its p-value as optimistic.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from kgqa.errors import DataError
from kgqa.report.collect import Evaluation, read_questions

log = logging.getLogger("kgqa.report")
CHUNK = 1000  # bootstrap resamples drawn at a time (memory: CHUNK x questions indices)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: under "no difference" the discordant pairs split as
    Binomial(n, 1/2), n = only_a + only_b; p = min(1, 2·P(X ≤ min(only_a, only_b)))."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1))
    return min(1.0, 2 * tail / 2**n)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = 10_000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
    """(difference, low, high): mean EM(a) − EM(b) and its percentile interval. `a`, `b`: pairs ×
    questions arrays of 0/1; each resample draws the questions with replacement from a seeded
    numpy Generator, one row of `len(questions)` indices per resample."""
    per_question = (np.asarray(a, dtype=float) - np.asarray(b, dtype=float)).mean(axis=0)
    rng = np.random.default_rng(seed)
    n = len(per_question)
    stats = np.concatenate([per_question[rng.integers(0, n, size=(min(CHUNK, resamples - done), n))].mean(axis=1)
                            for done in range(0, resamples, CHUNK)])
    low, high = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(per_question.mean()), float(low), float(high)


def pair_by_seed(group_a: list[Evaluation], group_b: list[Evaluation]) -> list[tuple[Evaluation, Evaluation]]:
    by_seed_a, by_seed_b = ({e.seed: e for e in g} for g in (group_a, group_b))
    common = [s for s in by_seed_a if s in by_seed_b]
    if not common:
        return list(zip(*(sorted(g, key=lambda e: str(e.seed)) for g in (group_a, group_b))))
    if len(common) < max(len(by_seed_a), len(by_seed_b)):
        log.warning("seeds in only one group are left out of the comparison (common: %s)", common)
    return [(by_seed_a[s], by_seed_b[s]) for s in common]


@dataclass
class Comparison:
    em_a: float
    em_b: float
    difference: float
    low: float
    high: float
    only_a: int  # (pair, question)s A got right and B wrong
    only_b: int
    p_value: float
    questions: int
    pairs: int

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0


def correct_matrices(pairs: list[tuple[Evaluation, Evaluation]]) -> tuple[np.ndarray, np.ndarray]:
    """pairs × questions arrays of 0/1 over the questions every run of the pairs answered."""
    read = [(read_questions(a), read_questions(b)) for a, b in pairs]
    ids = set.intersection(*(set(x) for pair in read for x in pair))
    if not ids:
        raise DataError(f"{pairs[0][0].run} and {pairs[0][1].run} share no question ids")
    if any(len(x) != len(ids) for pair in read for x in pair):
        log.warning("the runs answered different questions: comparing on the %d they share", len(ids))
    order = sorted(ids, key=str)
    return tuple(np.array([[x[i] for i in order] for x in side], dtype=float) for side in zip(*read))


def compare(group_a: list[Evaluation], group_b: list[Evaluation], resamples: int = 10_000, seed: int = 0,
            level: float = 0.95) -> Comparison:
    pairs = pair_by_seed(group_a, group_b)
    a, b = correct_matrices(pairs)
    difference, low, high = paired_bootstrap(a, b, resamples, seed, level)
    only_a, only_b = int((a > b).sum()), int((b > a).sum())
    return Comparison(float(a.mean()), float(b.mean()), difference, low, high, only_a, only_b,
                      mcnemar_exact(only_a, only_b), a.shape[1], len(pairs))
