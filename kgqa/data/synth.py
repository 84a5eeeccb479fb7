"""The `kb=synth` source: gold answer triples plus generated distractors.

Without the real 20.5M-triple KB almost every gold subject carries a single predicate, so a KB
built from gold alone makes the predicate choice trivial under constrained decoding. synth_kb adds
the confusions the real KB has (same-entity look-alike predicates, homonyms, prefix-sharing
subjects), drawn only from real material of the gold triples. The recipe, its parameters and its
measured statistics are described once, in experiments/SYNTH_RECIPE.md.
"""
from __future__ import annotations

import random
from typing import Iterable

from kgqa.data.triples import Key, Triple


def _unique(items: Iterable[str]) -> list[str]:
    """Distinct items in first-seen order (dict keeps insertion order, unlike a set)."""
    return list(dict.fromkeys(items))


class _Pools:
    """Real material from gold, indexed once: predicates, their objects, meanings."""

    def __init__(self, gold: list[Triple]):
        self.predicates = _unique(t.key.predicate for t in gold)
        self.meanings = _unique(t.key.meaning for t in gold if t.key.meaning)
        self.subjects = _unique(t.key.subject for t in gold)
        self.all_objects = _unique(t.obj for t in gold)
        self.objects: dict[str, list[str]] = {}
        for t in gold:
            objs = self.objects.setdefault(t.key.predicate, [])
            if t.obj not in objs:
                objs.append(t.obj)
        rank = {p: i for i, p in enumerate(self.predicates)}
        by_char: dict[str, list[str]] = {}
        for p in self.predicates:
            for c in _unique(p):
                by_char.setdefault(c, []).append(p)
        # Predicates sharing at least one character, in pool order.
        self.confusable = {
            p: sorted(_unique(q for c in _unique(p) for q in by_char[c] if q != p), key=rank.__getitem__)
            for p in self.predicates
        }

    def object_for(self, rng: random.Random, predicate: str, avoid: str | None = None) -> str:
        candidates = [o for o in self.objects.get(predicate, []) if o != avoid]
        return rng.choice(candidates or self.all_objects)


def synth_kb(
    gold: list[Triple],
    seed: int = 0,
    predicates_per_entity: int = 6,
    confusable_share: float = 0.5,
    homonym_rate: float = 0.5,
    prefix_subject_rate: float = 0.3,
) -> list[Triple]:
    """Gold triples (first, in order) followed by distractors; see the module docstring."""
    rng = random.Random(seed)
    pools = _Pools(gold)
    taken = {t.key for t in gold}  # membership only, never iterated
    out = list(gold)

    def add(key: Key, obj: str) -> None:
        if key not in taken:
            taken.add(key)
            out.append(Triple(key, obj))

    def random_predicates(k: int, exclude: list[str]) -> list[str]:
        chosen: list[str] = []
        while len(chosen) < k and len(chosen) + len(exclude) < len(pools.predicates):
            p = rng.choice(pools.predicates)
            if p not in chosen and p not in exclude:
                chosen.append(p)
        return chosen

    # entity -> {gold predicate: its first gold object}, in gold order
    entities: dict[tuple[str, str], dict[str, str]] = {}
    for t in gold:
        entities.setdefault((t.key.subject, t.key.meaning), {}).setdefault(t.key.predicate, t.obj)

    for (subject, meaning), gold_objects in entities.items():
        gold_preds = list(gold_objects)
        main_pred = gold_preds[0]
        n_extra = max(predicates_per_entity - len(gold_preds), 0)
        n_confusable = round(n_extra * confusable_share)
        lookalikes = _unique(q for p in gold_preds for q in pools.confusable[p] if q not in gold_preds)
        extra = rng.sample(lookalikes, min(n_confusable, len(lookalikes)))
        extra += random_predicates(n_extra - len(extra), gold_preds + extra)
        for p in extra:
            add(Key(subject, p, meaning), pools.object_for(rng, p))

        if meaning and rng.random() < homonym_rate:
            for _ in range(rng.randint(1, 2)):
                other = "" if rng.random() < 0.2 else rng.choice(pools.meanings)
                if other == meaning:
                    continue
                preds = random_predicates(2, [main_pred])
                if rng.random() < 0.5:
                    preds.insert(0, main_pred)
                for p in preds:
                    add(Key(subject, p, other), pools.object_for(rng, p, avoid=gold_objects.get(p)))

        if rng.random() < prefix_subject_rate:
            if len(subject) >= 3 and rng.random() < 0.3:
                prefixed = subject[:-1]
            else:
                donor = rng.choice(pools.subjects)
                prefixed = subject + donor[: rng.randint(1, 2)]
            for p in [main_pred] + random_predicates(1, [main_pred]):
                add(Key(prefixed, p, ""), pools.object_for(rng, p))
    return out

