"""The knowledge base: keys (S, P, M) mapped to their objects, in file order.

Sources (config `kb=`): `file` (a real Knowledge.txt), `gold` (the answer triples
of the labelled splits), `synth` (gold plus generated distractors, see synth.py).
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable

from kgqa.data.triples import Key, Triple


class KnowledgeBase:
    """Keys sorted for a deterministic id per key; each key keeps every distinct object."""

    def __init__(self, triples: Iterable[Triple]):
        objects: dict[Key, list[str]] = {}
        for t in triples:
            objs = objects.setdefault(t.key, [])
            if t.obj not in objs:
                objs.append(t.obj)
        self.keys: list[Key] = sorted(objects)
        self.objects: list[list[str]] = [objects[k] for k in self.keys]
        self._index = {k: i for i, k in enumerate(self.keys)}

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: Key) -> bool:
        return key in self._index

    def key_id(self, key: Key) -> int:
        return self._index[key]

    def answer(self, key_id: int) -> str:
        """The reference answers with the first object in file order; the rest stay in `objects`."""
        return self.objects[key_id][0]

    def triples(self) -> Iterable[Triple]:
        for key, objs in zip(self.keys, self.objects):
            for o in objs:
                yield Triple(key, o)

    def stats(self) -> dict[str, float]:
        subjects = Counter(k.subject for k in self.keys)
        entities = Counter((k.subject, k.meaning) for k in self.keys)
        meanings_per_name = Counter(s for s, _ in entities)
        return {
            "triples": sum(len(o) for o in self.objects),
            "keys": len(self.keys),
            "subjects": len(subjects),
            "entities": len(entities),
            "predicates": len({k.predicate for k in self.keys}),
            "keys_per_entity": round(len(self.keys) / max(len(entities), 1), 2),
            "homonym_names": sum(1 for n in meanings_per_name.values() if n > 1),
        }
