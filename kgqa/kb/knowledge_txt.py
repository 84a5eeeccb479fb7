"""Knowledge.txt, the KB as text (S（M） TAB P TAB O per line; .gz accepted): read line by line
(`read_knowledge`, which names the file and line of a bad one; kgqa/kb/arrow_reader.py reads it
faster and falls back to this), and written (`knowledge_line`, `knowledge_text`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kgqa.data.kgclue import TAB, LineReader, join_tsv, split_tsv
from kgqa.data.triples import CLOSE, OPEN, Triple
from kgqa.kb.columns import KnowledgeBase
from kgqa.kb.strings import STRING, parts


def read_knowledge(path: str | Path, on_bad_line: str = "error") -> Iterator[Triple]:
    """Stream a Knowledge.txt (subject TAB predicate TAB object per line; .gz accepted)."""
    lines = LineReader(path, on_bad_line, "triples")
    for lineno, line in lines:
        if fields := lines.fields(lineno, line, (3,)):
            yield Triple.parse(*fields)


def knowledge_line(t: Triple) -> str:
    return join_tsv([t.key.full_subject, t.key.predicate, t.obj])


def as_read_back(kb: KnowledgeBase) -> KnowledgeBase:
    """The KB that Knowledge.txt written from `kb` will read as (subjects split, objects normalised
    as read_knowledge does), built before the file is written: its ids are the ids the tries store.
    A KB read from a Knowledge.txt (or saved from one) already is, without changes: reading is a fixed point."""
    if kb.read_back and not kb.added and not kb.changed:
        return kb
    return KnowledgeBase(Triple.parse(*split_tsv(knowledge_line(t).rstrip("\n"))) for t in kb.triples())


def knowledge_text(kb: KnowledgeBase, keys_at_a_time: int = 1 << 20) -> Iterator[memoryview]:
    """The lines of Knowledge.txt (knowledge_line per triple, keys in id order) of a KB without changes, as
    UTF-8 bytes a chunk of keys at a time: each line's pieces joined by one Arrow call, not a Python call per line."""
    tables = [table.array for table in kb.tables]
    open_, close_tab, tab, newline, nothing = (pa.scalar(text, type=STRING)
                                               for text in (OPEN, CLOSE + TAB, TAB, "\n", ""))
    for a in range(0, kb.num_base, keys_at_a_time):
        b = min(a + keys_at_a_time, kb.num_base)
        per_object = np.repeat(np.arange(a, b), np.diff(kb.key_objects[a : b + 1]))  # the key of each line
        s, p, m = (table.take(column[per_object]) for table, column in zip(tables, kb.columns))
        first, last = int(kb.key_objects[a]), int(kb.key_objects[b])
        objects = kb.object_strings.array.slice(first, last - first)
        no_meaning = pc.equal(m, nothing)  # S TAB P TAB O, or S（M） TAB P TAB O
        lines = pc.binary_join_element_wise(s, pc.if_else(no_meaning, nothing, open_), m,
                                            pc.if_else(no_meaning, tab, close_tab), p, tab, objects, newline, nothing)
        offsets, data = parts(lines)
        yield memoryview(data[offsets[0] : offsets[-1]])
