"""Triples, subject/meaning split and target orders.

A KgCLUE subject may carry its meaning (disambiguation) in trailing full-width
parentheses: "牛郎织女（中国著名民间故事）" is S="牛郎织女", M="中国著名民间故事".
The model generates the key (S, P, M) in a configurable order; the KB maps a key to
its objects.
"""
from __future__ import annotations

from dataclasses import dataclass

OPEN, CLOSE = "（", "）"
TARGET_ORDERS = {"spm": ("subject", "predicate", "meaning"), "smp": ("subject", "meaning", "predicate")}


def order_fields(order: str) -> tuple[str, str, str]:
    try:
        return TARGET_ORDERS[order]
    except KeyError:
        raise ValueError(f"unknown target order {order!r}; choose one of {sorted(TARGET_ORDERS)}") from None


def split_subject(raw: str) -> tuple[str, str]:
    """Split "S（M）" into (S, M), matching the trailing parenthesis so M may nest them."""
    if not raw.endswith(CLOSE):
        return raw, ""
    depth = 0
    for i in range(len(raw) - 1, -1, -1):
        depth += {CLOSE: 1, OPEN: -1}.get(raw[i], 0)
        if depth == 0:
            return (raw[:i], raw[i + 1 : -1]) if 0 < i < len(raw) - 2 else (raw, "")  # "（）" is no meaning
    return raw, ""  # unbalanced: the parentheses belong to the name


def join_subject(subject: str, meaning: str) -> str:
    return f"{subject}{OPEN}{meaning}{CLOSE}" if meaning else subject


def normalise_object(obj: str) -> str:
    """Collapse whitespace as the reference code does (' '.join(o.split()))."""
    return " ".join(obj.split())


@dataclass(frozen=True, order=True)
class Key:
    """What the model generates: a KB key. Several objects can share one key."""

    subject: str
    predicate: str
    meaning: str = ""

    def parts(self, order: str) -> tuple[str, str, str]:
        return tuple(getattr(self, f) for f in order_fields(order))

    @classmethod
    def from_parts(cls, parts: tuple[str, str, str], order: str) -> "Key":
        return cls(**dict(zip(order_fields(order), parts)))

    @property
    def full_subject(self) -> str:
        return join_subject(self.subject, self.meaning)


@dataclass(frozen=True)
class Triple:
    key: Key
    obj: str

    @classmethod
    def parse(cls, subject: str, predicate: str, obj: str) -> "Triple":
        s, m = split_subject(subject.strip())
        return cls(Key(s, predicate.strip(), m), normalise_object(obj))

    def answer(self) -> str:
        """The KgCLUE answer string "S（M） ||| P ||| O"."""
        return f"{self.key.full_subject} ||| {self.key.predicate} ||| {self.obj}"
