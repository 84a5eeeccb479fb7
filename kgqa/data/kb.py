"""The knowledge base: keys (S, P, M) mapped to their objects, in file order.

Sources (config `kb=`): `file` (a real Knowledge.txt), `gold` (the answer triples
of the labelled splits), `synth` (gold plus generated distractors, see synth.py).
A KB folder saved by kgqa-kb replays its change log with `updated` (kgqa/kbfolder.py).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from kgqa.data.triples import Key, Triple


@dataclass(frozen=True)
class Change:
    """One entry of a KB's change log: add a triple, delete a triple, or delete a key (obj None)."""

    op: str  # "add" | "delete"
    key: Key
    obj: str | None = None


class KnowledgeBase:
    """Keys sorted for a deterministic id per key; each key keeps every distinct object.

    An updated KB (`updated`) keeps every id: a new key gets the next one, and a key left without
    objects keeps its id but is no longer in the KB, so a trie over the old ids stays valid.
    """

    def __init__(self, triples: Iterable[Triple]):
        objects: dict[Key, list[str]] = {}
        for t in triples:
            objs = objects.setdefault(t.key, [])
            if t.obj not in objs:
                objs.append(t.obj)
        keys = sorted(objects)
        self._set(keys, [objects[k] for k in keys])

    def _set(self, keys: list[Key], objects: list[list[str]]) -> None:
        self.keys, self.objects = keys, objects
        self._index = {k: i for i, k in enumerate(keys)}

    def __len__(self) -> int:
        """The number of key ids, deleted keys included."""
        return len(self.keys)

    def __contains__(self, key: Key) -> bool:
        i = self._index.get(key)
        return i is not None and bool(self.objects[i])

    def key_id(self, key: Key) -> int:
        if key not in self:
            raise KeyError(key)
        return self._index[key]

    def live_ids(self) -> list[int]:
        """Ids of the keys in the KB (with at least one object)."""
        return [i for i, objs in enumerate(self.objects) if objs]

    def answer(self, key_id: int) -> str:
        """The reference answers with the first object in file order; the rest stay in `objects`."""
        return self.objects[key_id][0]

    def updated(self, changes: Iterable[Change]) -> "KnowledgeBase":
        """This KB after the changes, in order, with the ids kept (see the class)."""
        keys, objects, index = list(self.keys), [list(o) for o in self.objects], dict(self._index)
        for change in changes:
            i = index.get(change.key)
            if change.op == "add":
                if i is None:
                    i = index[change.key] = len(keys)
                    keys.append(change.key)
                    objects.append([])
                if change.obj not in objects[i]:
                    objects[i].append(change.obj)
            elif i is not None:
                objects[i] = [] if change.obj is None else [o for o in objects[i] if o != change.obj]
        kb = KnowledgeBase.__new__(KnowledgeBase)
        kb._set(keys, objects)
        return kb

    def triples(self) -> Iterable[Triple]:
        for key, objs in zip(self.keys, self.objects):
            for o in objs:
                yield Triple(key, o)

    def stats(self) -> dict[str, float]:
        keys = [self.keys[i] for i in self.live_ids()]
        subjects = Counter(k.subject for k in keys)
        entities = Counter((k.subject, k.meaning) for k in keys)
        meanings_per_name = Counter(s for s, _ in entities)
        return {
            "triples": sum(len(o) for o in self.objects),
            "keys": len(keys),
            "subjects": len(subjects),
            "entities": len(entities),
            "predicates": len({k.predicate for k in keys}),
            "keys_per_entity": round(len(keys) / max(len(entities), 1), 2),
            "homonym_names": sum(1 for n in meanings_per_name.values() if n > 1),
        }
