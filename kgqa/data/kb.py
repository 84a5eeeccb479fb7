"""The knowledge base: keys (S, P, M) mapped to their objects, in file order.

Sources (config `kb=`): `file` (a real Knowledge.txt), `gold` (the answer triples
of the labelled splits), `synth` (gold plus generated distractors, see synth.py).
A KB folder saved by kgqa-kb replays its change log with `updated` (kgqa/kbfolder.py).
"""
from __future__ import annotations

import json
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from kgqa.data.triples import Key, Triple
from kgqa.errors import DataError
from kgqa.saved import REBUILD, load_array, read_header, read_json, write_header

FIELDS = ("subject", "predicate", "meaning")
FORMAT = "kgqa-kb-v2"  # v2: kb.json lists each file's size and CRC-32
ARRAYS = ("columns", "key_objects", "object_offsets")
META, TABLES, OBJECTS = "kb.json", "tables.json", "objects.txt"
FILES = [f"{name}.npy" for name in ARRAYS] + [OBJECTS, TABLES]


@dataclass(frozen=True)
class Change:
    """One entry of a KB's change log: add a triple, delete a triple, or delete a key (obj None)."""

    op: str  # "add" | "delete"
    key: Key
    obj: str | None = None


class KnowledgeBase:
    """Keys sorted for a deterministic id per key (its rank); each key keeps every distinct object.

    Stored as columns, not as Python objects per triple, so that KgCLUE's 20M-triple KB fits in
    a few GB: the distinct subjects, predicates and meanings are sorted string tables, a key is
    three indices into them (`columns`), and the objects are one string cut by offsets.

    An updated KB (`updated`) keeps every id: a new key gets the next one, and a key left without
    objects keeps its id but is no longer in the KB, so a trie over the old ids stays valid. The
    changes live beside the columns (new keys, and the objects of every changed key).
    """

    def __init__(self, triples: Iterable[Triple]):
        lookups: list[dict[str, int]] = [{}, {}, {}]  # string -> index, in first-seen order
        seen = [array("i"), array("i"), array("i")]
        objects: list[str] = []
        for t in triples:
            for lookup, column, text in zip(lookups, seen, (t.key.subject, t.key.predicate, t.key.meaning)):
                column.append(lookup.setdefault(text, len(lookup)))
            objects.append(t.obj)
        self.tables: list[list[str]] = []
        ranked = []
        for lookup, column in zip(lookups, seen):  # index by rank, so keys sort as their strings do
            strings = list(lookup)
            order = sorted(range(len(strings)), key=strings.__getitem__)
            rank = np.empty(len(strings), dtype=np.int32)
            rank[order] = np.arange(len(strings), dtype=np.int32)
            self.tables.append([strings[i] for i in order])
            ranked.append(rank[np.frombuffer(column, dtype=np.int32)])
        del lookups, seen
        order = np.lexsort(ranked[::-1])  # by subject, predicate, meaning; stable, so objects keep file order
        sorted_columns = np.stack([c[order] for c in ranked]) if len(order) else np.zeros((3, 0), dtype=np.int32)
        first = np.ones(len(order), dtype=bool)
        first[1:] = (sorted_columns[:, 1:] != sorted_columns[:, :-1]).any(0)
        self.columns = sorted_columns[:, first]  # [3, keys]
        key_of = np.cumsum(first) - 1
        kept = np.ones(len(order), dtype=bool)  # an object repeated under its key is kept once
        starts = np.flatnonzero(first)
        sizes = np.diff(np.append(starts, len(order)))
        for start, size in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist()):
            distinct: set[str] = set()
            for j in range(start, start + size):
                text = objects[order[j]]
                kept[j] = text not in distinct
                distinct.add(text)
        kept_objects = [objects[i] for i in order[kept].tolist()]
        del objects
        self.object_text = "".join(kept_objects)
        self.object_offsets = np.zeros(len(kept_objects) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, kept_objects), dtype=np.int64, count=len(kept_objects)), out=self.object_offsets[1:])
        self.key_objects = np.zeros(self.columns.shape[1] + 1, dtype=np.int64)  # key i: objects key_objects[i:i+2]
        np.cumsum(np.bincount(key_of[kept], minlength=self.columns.shape[1]), out=self.key_objects[1:])
        self._index()

    def _index(self) -> None:
        self.lookups = [{s: i for i, s in enumerate(table)} for table in self.tables]
        self.added: list[Key] = []  # keys new since the columns, ids after theirs
        self.added_index: dict[Key, int] = {}
        self.changed: dict[int, list[str]] = {}  # the objects of every key a change touched
        self.keys, self.objects = KeyColumn(self), ObjectColumn(self)

    # --- files: the columns as they are, so loading a big KB is reading, not parsing ------
    def save(self, folder: str | Path, source: dict | None = None) -> None:
        """The columns as .npy arrays, the string tables as JSON, the objects as one UTF-8 text; `source`
        (e.g. the size and time of the Knowledge.txt they were read from) is kept in the small kb.json,
        with every file's size and CRC-32 (kgqa/saved.py). Written into a fresh folder, which the caller swaps in."""
        if self.added or self.changed:
            raise ValueError("only a KB without changes is saved as columns (merge the changes first)")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in ARRAYS:
            np.save(folder / f"{name}.npy", getattr(self, name), allow_pickle=False)
        (folder / OBJECTS).write_bytes(self.object_text.encode("utf-8"))
        (folder / TABLES).write_text(json.dumps(dict(zip(FIELDS, self.tables)), ensure_ascii=False), encoding="utf-8")
        write_header(folder, META, {"format": FORMAT, "keys": self.num_base, "source": source})

    @staticmethod
    def saved_source(folder: str | Path) -> dict | None:
        """The `source` a saved KB was written with; None if the folder holds none (or not readably:
        then the KB is read from its source, and nothing wrong comes of the damage)."""
        meta = Path(folder) / META
        try:
            header = json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
        return header.get("source") if isinstance(header, dict) else None

    @classmethod
    def load(cls, folder: str | Path) -> "KnowledgeBase":
        """A KB saved with `save`; the key columns are memory-mapped. A DataError names the file that
        is missing, damaged or does not fit the others."""
        folder = Path(folder)
        meta = read_header(folder, META, FORMAT, FILES, "kgqa KB", REBUILD)
        kb = cls.__new__(cls)
        tables = read_json(folder / TABLES, REBUILD)
        if not (isinstance(tables, dict) and all(isinstance(tables.get(f), list) for f in FIELDS)
                and all(isinstance(s, str) for f in FIELDS for s in tables[f])):
            raise DataError(f"{folder / TABLES}: not the KB's string tables ({', '.join(FIELDS)}); {REBUILD}")
        kb.tables = [tables[f] for f in FIELDS]
        kb.columns, kb.key_objects, kb.object_offsets = (
            load_array(folder / f"{name}.npy", REBUILD, ndim=ndim) for name, ndim in zip(ARRAYS, (2, 1, 1)))
        try:
            kb.object_text = (folder / OBJECTS).read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{folder / OBJECTS}: not UTF-8 text ({e}); {REBUILD}") from None
        n = meta.get("keys")
        for name, fits in kb.fits(n if isinstance(n, int) else -1).items():
            if not fits:
                raise DataError(f"{folder / name}: does not fit the saved KB's other files (a partial write?); {REBUILD}")
        kb._index()
        return kb

    def fits(self, n: int) -> dict[str, bool]:
        """Per file of a saved KB of `n` keys, whether it fits the files before it."""
        keys_ok = self.columns.shape == (3, n) and len(self.key_objects) == n + 1
        offsets_ok = keys_ok and len(self.object_offsets) == int(self.key_objects[-1]) + 1
        return {
            "columns.npy": self.columns.shape == (3, n),
            "key_objects.npy": keys_ok,
            "object_offsets.npy": offsets_ok,
            OBJECTS: offsets_ok and int(self.object_offsets[-1]) == len(self.object_text),
            TABLES: all(len(t) > int(c.max(initial=-1)) for t, c in zip(self.tables, self.columns)),
        }

    @property
    def num_base(self) -> int:
        """Keys in the columns (sorted); ids from here on are keys added by `updated`."""
        return self.columns.shape[1]

    def __len__(self) -> int:
        """The number of key ids, deleted keys included."""
        return self.num_base + len(self.added)

    def find(self, key: Key) -> int | None:
        """The key's id, deleted or not; None if it never was a key."""
        if key in self.added_index:
            return self.added_index[key]
        s, p, m = (lookup.get(text) for lookup, text in zip(self.lookups, (key.subject, key.predicate, key.meaning)))
        if s is None or p is None or m is None:
            return None
        lo, hi = np.searchsorted(self.columns[0], np.array([s, s + 1], dtype=self.columns.dtype))  # the subject's keys
        match = np.flatnonzero((self.columns[1, lo:hi] == p) & (self.columns[2, lo:hi] == m))
        return int(lo + match[0]) if len(match) else None

    def __contains__(self, key: Key) -> bool:
        i = self.find(key)
        return i is not None and bool(self.objects[i])

    def key_id(self, key: Key) -> int:
        i = self.find(key)
        if i is None or not self.objects[i]:
            raise KeyError(key)
        return i

    def object_counts(self) -> np.ndarray:
        """[len(self)] how many objects each key has (0: not in the KB)."""
        counts = np.concatenate([np.diff(self.key_objects), np.zeros(len(self.added), dtype=np.int64)])
        for i, objs in self.changed.items():
            counts[i] = len(objs)
        return counts

    def live_mask(self) -> np.ndarray:
        """[len(self)] True for the keys in the KB (with at least one object)."""
        return self.object_counts() > 0

    def live_ids(self) -> list[int]:
        """Ids of the keys in the KB (with at least one object)."""
        return np.flatnonzero(self.live_mask()).tolist()

    def answer(self, key_id: int) -> str:
        """The reference answers with the first object in file order; the rest stay in `objects`."""
        return self.objects[key_id][0]

    def updated(self, changes: Iterable[Change]) -> "KnowledgeBase":
        """This KB after the changes, in order, with the ids kept (see the class); the columns are shared."""
        kb = KnowledgeBase.__new__(KnowledgeBase)
        kb.__dict__.update(self.__dict__)
        kb.added, kb.added_index, kb.changed = list(self.added), dict(self.added_index), dict(self.changed)
        kb.keys, kb.objects = KeyColumn(kb), ObjectColumn(kb)
        for change in changes:
            i = kb.find(change.key)
            if change.op == "add":
                if i is None:
                    i = kb.added_index[change.key] = len(kb)
                    kb.added.append(change.key)
                    kb.changed[i] = []
                if change.obj not in kb.objects[i]:
                    kb.changed[i] = kb.objects[i] + [change.obj]
            elif i is not None:
                kb.changed[i] = [] if change.obj is None else [o for o in kb.objects[i] if o != change.obj]
        return kb

    def triples(self) -> Iterable[Triple]:
        for key, objs in zip(self.keys, self.objects):
            for o in objs:
                yield Triple(key, o)

    def strings(self) -> Iterable[str]:
        """Every subject, predicate and meaning, deleted keys' too (once per column, then those of added keys):
        what a vocabulary must cover."""
        for table in self.tables:
            yield from table
        for key in self.added:
            yield from (key.subject, key.predicate, key.meaning)

    def field_indices(self) -> tuple[list[list[str]], np.ndarray]:
        """Per field, its strings (the table, then those only added keys use) and [3, len(self)] indices of
        every key's fields into them: keys as numbers, for whole-KB work without a Python object per key."""
        tables, columns = [list(t) for t in self.tables], np.zeros((3, len(self)), dtype=np.int64)
        columns[:, : self.num_base] = self.columns
        for f, (table, lookup) in enumerate(zip(tables, self.lookups)):
            extra: dict[str, int] = {}
            for i, key in enumerate(self.added, self.num_base):
                text = getattr(key, FIELDS[f])
                index = lookup.get(text)
                if index is None:
                    index = extra.setdefault(text, len(table) + len(extra))
                columns[f, i] = index
            table += list(extra)
        return tables, columns

    def stats(self) -> dict[str, float]:
        _, columns = self.field_indices()
        counts = self.object_counts()
        subject, predicate, meaning = columns[:, counts > 0]
        width = int(meaning.max(initial=0)) + 1
        entities = np.unique(subject * width + meaning)  # (subject, meaning) pairs
        meanings_per_name = np.bincount(entities // width)
        n_keys = len(subject)
        return {
            "triples": int(counts.sum()),
            "keys": n_keys,
            "subjects": len(np.unique(subject)),
            "entities": len(entities),
            "predicates": len(np.unique(predicate)),
            "keys_per_entity": round(n_keys / max(len(entities), 1), 2),
            "homonym_names": int((meanings_per_name > 1).sum()),
        }


class Column(Sequence):
    """A list-like view of one thing per key id, each made when asked for (compares like a list)."""

    def __init__(self, kb: KnowledgeBase):
        self.kb = kb

    def __len__(self) -> int:
        return len(self.kb)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.item(j) for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self.item(i % len(self))

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and len(self) == len(other) and all(a == b for a, b in zip(self, other))

    def item(self, i: int):
        raise NotImplementedError


class KeyColumn(Column):
    """kb.keys[i]: the Key of id i."""

    def item(self, i: int) -> Key:
        kb = self.kb
        if i >= kb.num_base:
            return kb.added[i - kb.num_base]
        return Key(*(table[index] for table, index in zip(kb.tables, kb.columns[:, i].tolist())))


class ObjectColumn(Column):
    """kb.objects[i]: the objects of key i, in file order (a new list each time; empty once deleted)."""

    def item(self, i: int) -> list[str]:
        kb = self.kb
        if i in kb.changed:
            return list(kb.changed[i])
        cuts = kb.object_offsets[kb.key_objects[i] : kb.key_objects[i + 1] + 1].tolist()
        return [kb.object_text[a:b] for a, b in zip(cuts, cuts[1:])]
