"""The knowledge base: keys (S, P, M) mapped to their objects, in file order.

Built by the sources of config `kb=` (kgqa/kb/sources.py). A KB folder saved by kgqa-kb
replays its change log with `updated` (kgqa/kb/folder.py).
"""
from __future__ import annotations

import json
from array import array
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kgqa.data.triples import Key, Triple
from kgqa.kb.changes import Change
from kgqa.kb.strings import STRING, ItemView, Strings, as_strings, code_points
from kgqa.errors import DataError
from kgqa.saved import REBUILD, load_array, read_header, write_header

FIELDS = ("subject", "predicate", "meaning")
FORMAT = "kgqa-kb-v3"  # v3: the string tables and the objects as Arrow IPC files
ARRAYS = ("columns", "key_objects")
META = "kb.json"
STRING_FILES = ("subjects.arrow", "predicates.arrow", "meanings.arrow", "objects.arrow")
FILES = [f"{name}.npy" for name in ARRAYS] + list(STRING_FILES)


class KnowledgeBase:
    """Keys sorted for a deterministic id per key (its rank); each key keeps every distinct object.

    Stored as columns, not as Python objects per triple, so that KgCLUE's 20M-triple KB fits in
    a few GB: the distinct subjects, predicates and meanings are sorted string tables, a key is
    three indices into them (`columns`), and the objects are one Arrow string array (kgqa/kb/strings.py).

    An updated KB (`updated`) keeps every id: a new key gets the next one, and a key left without
    objects keeps its id but is no longer in the KB, so a trie over the old ids stays valid. The
    changes live beside the columns (new keys, and the objects of every changed key).
    """

    read_back = False  # True when the KB is what its Knowledge.txt reads as (a reader's, or a saved one)

    def __init__(self, triples: Iterable[Triple]):
        lookups: list[dict[str, int]] = [{}, {}, {}, {}]  # string -> index, in first-seen order
        seen = [array("i"), array("i"), array("i"), array("i")]
        for t in triples:
            for lookup, column, text in zip(lookups, seen, (t.key.subject, t.key.predicate, t.key.meaning, t.obj)):
                column.append(lookup.setdefault(text, len(lookup)))
        strings = [as_strings(list(lookup)) for lookup in lookups]
        del lookups
        self._build(strings, [np.frombuffer(column, dtype=np.int32) for column in seen])

    @classmethod
    def from_arrays(cls, strings: list[pa.Array], indices: list[np.ndarray]) -> "KnowledgeBase":
        """The KB of the triples (strings[f][indices[f][t]] for f in subject, predicate, meaning, object):
        per field its distinct strings in any order (those no triple uses are left out), per triple the
        index of each field's string."""
        kb = cls.__new__(cls)
        kb._build([as_strings(a) for a in strings], indices)
        return kb

    def _build(self, strings: list[pa.Array], indices: list[np.ndarray]) -> None:
        ranked, self.tables = [], []
        for table, index in zip(strings[:3], indices[:3]):  # index by rank, so keys sort as their strings do
            used = np.zeros(len(table), dtype=bool)
            used[index] = True
            if not used.all():  # strings no triple uses are no part of the tables
                table, index = table.filter(used), (np.cumsum(used, dtype=np.int32) - 1)[index]
            order = pc.array_sort_indices(table).to_numpy()  # UTF-8 byte order: str's code-point order
            rank = np.empty(len(table), dtype=np.int32)
            rank[order] = np.arange(len(table), dtype=np.int32)
            self.tables.append(Strings(table.take(order)))
            ranked.append(rank[index])
        order = key_order(ranked, [len(t) for t in self.tables])
        sorted_columns = np.stack([c[order] for c in ranked]) if len(order) else np.zeros((3, 0), dtype=np.int32)
        del ranked
        first = np.ones(len(order), dtype=bool)
        first[1:] = (sorted_columns[:, 1:] != sorted_columns[:, :-1]).any(0)
        self.columns = sorted_columns[:, first]  # [3, keys]
        del sorted_columns
        key_of = np.cumsum(first) - 1
        objects = indices[3][order].astype(np.int64)
        kept = np.ones(len(order), dtype=bool)  # an object repeated under its key is kept once
        shared = np.flatnonzero(~(first & np.append(first[1:], True)))  # the rows of keys with 2+ objects
        _, firsts = np.unique(key_of[shared] * max(len(strings[3]), 1) + objects[shared], return_index=True)
        kept[shared] = False
        kept[shared[firsts]] = True
        self.object_strings = Strings(strings[3].take(objects[kept]))  # key by key, each key's in file order
        self.key_objects = np.zeros(self.columns.shape[1] + 1, dtype=np.int64)  # key i: objects key_objects[i:i+2]
        np.cumsum(np.bincount(key_of[kept], minlength=self.columns.shape[1]), out=self.key_objects[1:])
        self._index()

    def _index(self) -> None:
        self.added: list[Key] = []  # keys new since the columns, ids after theirs
        self.added_index: dict[Key, int] = {}
        self.changed: dict[int, list[str]] = {}  # the objects of every key a change touched
        self.keys, self.objects = KeyColumn(self), ObjectColumn(self)
        self._entities: tuple[list[Strings], np.ndarray, np.ndarray] | None = None
        self._characters: dict[bool, list[str]] = {}  # characters(added), found once per KB

    # --- files: the columns as they are, so loading a big KB is mapping, not parsing ------
    def save(self, folder: str | Path, source: dict | None = None) -> None:
        """The key columns as .npy arrays, the string tables and the objects as Arrow IPC files (one column
        each; pandas, polars and duckdb read them too); `source` (e.g. the size and time of the Knowledge.txt
        they were read from) is kept in the small kb.json, with every file's size and CRC-32
        (kgqa/saved.py). Written into a fresh folder, which the caller swaps in."""
        if self.added or self.changed:
            raise ValueError("only a KB without changes is saved as columns (merge the changes first)")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in ARRAYS:
            np.save(folder / f"{name}.npy", getattr(self, name), allow_pickle=False)
        for name, strings in zip(STRING_FILES, [*self.tables, self.object_strings]):
            save_strings(folder / name, strings.array)
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
        kb.columns, kb.key_objects = (load_array(folder / f"{name}.npy", REBUILD, ndim=ndim)
                                      for name, ndim in zip(ARRAYS, (2, 1)))
        *kb.tables, kb.object_strings = (Strings(load_strings(folder / name, REBUILD)) for name in STRING_FILES)
        n = meta.get("keys")
        for name, fits in kb.fits(n if isinstance(n, int) else -1).items():
            if not fits:
                raise DataError(f"{folder / name}: does not fit the saved KB's other files (a partial write?); {REBUILD}")
        kb.read_back = True
        kb._index()
        return kb

    def fits(self, n: int) -> dict[str, bool]:
        """Per file of a saved KB of `n` keys, whether it fits the files before it."""
        keys_ok = self.columns.shape == (3, n) and len(self.key_objects) == n + 1
        fits = {"columns.npy": self.columns.shape == (3, n), "key_objects.npy": keys_ok}
        for name, table, column in zip(STRING_FILES, self.tables, self.columns):
            fits[name] = len(table) > int(column.max(initial=-1))
        fits[STRING_FILES[3]] = keys_ok and int(self.key_objects[-1]) == len(self.object_strings)
        return fits

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
        s, p, m = (table.find(text) for table, text in zip(self.tables, (key.subject, key.predicate, key.meaning)))
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
        kb.keys, kb.objects, kb._entities, kb._characters = KeyColumn(kb), ObjectColumn(kb), None, {}
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

    def field_indices(self) -> tuple[list[Strings], np.ndarray]:
        """Per field, its strings (the table, then those only added keys use) and [3, len(self)] indices of
        every key's fields into them: keys as numbers, for whole-KB work without a Python object per key."""
        tables, columns = list(self.tables), np.zeros((3, len(self)), dtype=np.int64)
        columns[:, : self.num_base] = self.columns
        for f, table in enumerate(self.tables):
            extra: dict[str, int] = {}
            for i, key in enumerate(self.added, self.num_base):
                text = getattr(key, FIELDS[f])
                index = table.find(text)
                if index is None:
                    index = extra.setdefault(text, len(table) + len(extra))
                columns[f, i] = index
            if extra:
                tables[f] = Strings(pa.concat_arrays([table.array, as_strings(list(extra))]))
        return tables, columns

    def characters(self, added: bool = True) -> list[str]:
        """The distinct characters of every subject, predicate and meaning (`strings`; without the added keys'
        when not `added`), sorted: what a character vocabulary is built from, found with numpy rather than a
        Python call per string, once per KB (a run's checks and its loss vocabulary both ask)."""
        added = added and bool(self.added)  # without added keys both are the same
        if added not in self._characters:
            self._characters[added] = self._find_characters(added)
        return list(self._characters[added])

    def _find_characters(self, added: bool) -> list[str]:
        keys = self.added if added else []
        arrays = [table.array for table in self.tables] + [as_strings([s for key in keys for s in
                                                                       (key.subject, key.predicate, key.meaning)])]
        seen = np.zeros(0x110000, dtype=bool)  # per code point: marked, not sorted (np.unique would sort them all)
        for strings in arrays:
            seen[code_points(strings)[0]] = True
        return [chr(c) for c in np.flatnonzero(seen).tolist()]

    def entities(self) -> tuple[list[Strings], np.ndarray, np.ndarray]:
        """The field strings, the live keys' [3, n] field indices, and each subject name's count of meanings:
        found once per KB (a change makes another KB: `updated`), for its statistics and its homonyms (seconds
        each on 20M keys)."""
        if self._entities is None:
            self._entities = self._count_entities()
        return self._entities

    def _count_entities(self) -> tuple[list[Strings], np.ndarray, np.ndarray]:
        """A subject's keys without a meaning are one entity (marked, not sorted); its distinct meanings are
        the others (np.unique of the (subject, meaning) pairs of the keys that have one: a quarter of them)."""
        tables, columns = self.field_indices()
        live = columns[:, self.object_counts() > 0]
        no_meaning = self.tables[2].find("")  # its index in the extended table too (the base part comes first)
        plain = live[2] == no_meaning if no_meaning is not None else np.zeros(live.shape[1], dtype=bool)
        width = int(live[2].max(initial=0)) + 1
        pairs = np.unique(live[0, ~plain] * width + live[2, ~plain])  # (subject, meaning) pairs
        without_meaning = np.zeros(len(tables[0]), dtype=np.int64)
        without_meaning[live[0, plain]] = 1
        return tables, live, np.bincount(pairs // width, minlength=len(tables[0])) + without_meaning

    def homonym_subjects(self) -> set[str]:
        """The subject names that two or more meanings share: a question naming one must also say which."""
        tables, _, meanings_per_name = self.entities()
        return {tables[0].item(i) for i in np.flatnonzero(meanings_per_name > 1).tolist()}

    def stats(self) -> dict[str, float]:
        _, (subject, predicate, _), meanings_per_name = self.entities()
        n_keys, n_entities = len(subject), int(meanings_per_name.sum())
        return {
            "triples": int(self.object_counts().sum()),
            "keys": n_keys,
            "subjects": int(np.count_nonzero(meanings_per_name)),
            "entities": n_entities,
            "predicates": int(np.count_nonzero(np.bincount(predicate))),
            "keys_per_entity": round(n_keys / max(n_entities, 1), 2),
            "homonym_names": int((meanings_per_name > 1).sum()),
        }


def key_order(columns: list[np.ndarray], sizes: list[int]) -> np.ndarray:
    """The stable order of rows by their columns (subject, predicate, meaning ranks), so each key's objects
    keep file order: one sort of the ranks packed into an int64 when they fit (63 bits), else np.lexsort."""
    bits = [max(int(size - 1).bit_length(), 1) for size in sizes]
    if sum(bits) > 63:
        return np.lexsort(columns[::-1])
    packed = np.zeros(len(columns[0]), dtype=np.int64)
    for column, width in zip(columns, bits):
        packed = (packed << width) | column
    return np.argsort(packed, kind="stable")


class Column(ItemView):
    """A list-like view of one thing per key id, each made when asked for (compares like a list)."""

    def __init__(self, kb: KnowledgeBase):
        self.kb = kb

    def __len__(self) -> int:
        return len(self.kb)


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
        return [kb.object_strings.item(j) for j in range(kb.key_objects[i], kb.key_objects[i + 1])]


def save_strings(path: Path, array: pa.Array) -> None:
    """A large_string array as an Arrow IPC file of one column named after the file (subjects.arrow: subject)."""
    table = pa.table({path.stem.removesuffix("s"): array})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def load_strings(path: Path, fix: str) -> pa.Array:
    """An array saved with save_strings, memory-mapped (the strings are not copied), or a DataError naming the file."""
    try:
        table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: not a readable Arrow IPC file ({e}); {fix}") from None
    column = path.stem.removesuffix("s")
    if table.column_names != [column] or table.schema.types[0] != STRING or table.column(0).null_count:
        raise DataError(f"{path}: not one {column} column of strings ({table.schema}); {fix}")
    chunks = table.column(0).chunks
    return chunks[0] if len(chunks) == 1 else pa.concat_arrays(chunks) if chunks else pa.array([], type=STRING)
