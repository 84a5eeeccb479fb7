"""The official KgCLUE metric: EM and LCS-F1 for S, P, O and the whole triple.

Strings are normalised by lower-casing and collapsing whitespace. F1(a, b) =
2·LCS(a, b) / (len a + len b), 0 when both are empty. The headline score is
EMF1 = 0.5·EM_O + 0.5·F1_O. Sums are torchmetrics states, so ranks add up exactly.
"""
from __future__ import annotations

import torch
from rapidfuzz.distance import LCSseq
from torchmetrics import Metric

from kgqa.data.triples import Triple

FIELDS = ("s", "p", "o", "triple")


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def lcs_f1(a: str, b: str) -> float:
    a, b = normalise(a), normalise(b)
    if not a and not b:
        return 0.0
    return 2.0 * LCSseq.similarity(a, b) / (len(a) + len(b))


def exact_match(a: str, b: str) -> float:
    return float(normalise(a) == normalise(b))


def triple_fields(t: Triple) -> dict[str, str]:
    return {"s": t.key.full_subject, "p": t.key.predicate, "o": t.obj, "triple": t.answer()}


class KgclueMetric(Metric):
    """Accumulates per-field EM/F1 sums over (predicted, gold) triple pairs."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for f in FIELDS:
            self.add_state(f"em_{f}", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"f1_{f}", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("homonyms", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("em_homonym", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("in_beam", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predicted: list[Triple], gold: list[Triple], homonym: list[bool] | None = None,
               in_beam: list[bool] | None = None) -> None:
        """`homonym`: per question, whether its gold subject has two or more meanings in the KB (em_homonym);
        `in_beam`: whether the gold key is among the final beam's keys (oracle: the headroom over the first)."""
        for p, g in zip(predicted, gold, strict=True):
            pf, gf = triple_fields(p), triple_fields(g)
            for f in FIELDS:
                setattr(self, f"em_{f}", getattr(self, f"em_{f}") + exact_match(pf[f], gf[f]))
                setattr(self, f"f1_{f}", getattr(self, f"f1_{f}") + lcs_f1(pf[f], gf[f]))
        for p, g, h in zip(predicted, gold, homonym or [], strict=False):
            if h:
                self.homonyms += 1
                self.em_homonym += exact_match(p.obj, g.obj)
        self.in_beam += sum(in_beam or [])
        self.count += len(gold)

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.count.clamp(min=1)
        out = {}
        for f in FIELDS:
            suffix = "" if f == "o" else f"_{f}"  # em / f1 are the official object scores
            out[f"em{suffix}"] = getattr(self, f"em_{f}") / n
            out[f"f1{suffix}"] = getattr(self, f"f1_{f}") / n
        out["emf1"] = 0.5 * out["em"] + 0.5 * out["f1"]
        out["em_homonym"] = self.em_homonym / self.homonyms.clamp(min=1)  # 0 when no question has a homonym
        out["oracle"] = self.in_beam.double() / n
        return out
