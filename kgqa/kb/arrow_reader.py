"""A Knowledge.txt read into a KnowledgeBase by Arrow: the KB of `KnowledgeBase(read_knowledge(path))`
(same keys, ids and objects), without a Python call per line.

pyarrow's CSV reader splits the file into three string columns; each column is dictionary-encoded
and only its distinct strings are cleaned as Triple.parse cleans a line's fields (trimmed by
Python's own whitespace, the subject split off its trailing （meaning）, the object's whitespace
runs collapsed), then KnowledgeBase.from_arrays sorts and groups them with numpy.

What this path cannot place exactly goes to the line-by-line reader (knowledge_txt.read_knowledge), which
names the file and line: a bad line when bad lines are errors, bytes Arrow would split or read
differently (CR, NUL, text that is not UTF-8), gzip trouble, or a file without one valid triple. Bad lines skipped (on_bad_line=skip) are counted here, as that reader counts them.
"""
from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as csv

from kgqa.data.kgclue import BOM, TAB, LineReader
from kgqa.kb.columns import KnowledgeBase
from kgqa.kb.knowledge_txt import read_knowledge
from kgqa.kb.strings import STRING
from kgqa.data.triples import CLOSE, OPEN, split_subject

log = logging.getLogger(__name__)
# what str.strip and str.split remove: every c in map(chr, range(0x110000)) with c.isspace() (a test checks)
WHITESPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
WHITESPACE_RUN = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in WHITESPACE) + "]+"
SUBJECT_MEANING = f"^(?P<subject>.+){OPEN}(?P<meaning>[^{OPEN}{CLOSE}]+){CLOSE}$"  # split_subject's common case
NOT_FOR_ARROW = (b"\r", b"\0")  # a line end to Arrow; bytes the line reader reports
BOM_CHAR = BOM.decode("utf-8")  # the line reader drops one at the start of a line
FIELDS = ("subject", "predicate", "object")


class NeedsLineReader(Exception):
    """Why this file is read line by line instead."""


def read_knowledge_kb(path: str | Path, on_bad_line: str = "error") -> KnowledgeBase:
    """The KB of a Knowledge.txt (.gz too), as KnowledgeBase(read_knowledge(path, on_bad_line)) gives it."""
    lines = LineReader(path, on_bad_line, "triples")
    try:
        scan(lines)
        kb = read_with_arrow(lines)
    except (NeedsLineReader, pa.ArrowException) as e:
        log.info("%s: read line by line (%s)", path, e)
        kb = KnowledgeBase(read_knowledge(path, on_bad_line))
    kb.read_back = True
    return kb


def scan(lines: LineReader) -> None:
    """Check the file holds none of NOT_FOR_ARROW and its gzip data (if any) is whole, a chunk at a time."""
    try:
        with lines.open() as f:
            if f.peek(6)[:6] == BOM * 2:  # Arrow drops the first itself, and the reader here the next
                raise NeedsLineReader("it starts with two byte-order marks")
            while chunk := f.read(1 << 24):
                found = next((b for b in NOT_FOR_ARROW if b in chunk), None)
                if found is not None:
                    raise NeedsLineReader(f"it holds {found!r}")
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise NeedsLineReader(f"gzip trouble: {e}") from None


def read_with_arrow(lines: LineReader) -> KnowledgeBase:
    bad_rows = []  # rows without 3 fields that are not blank lines

    def other_width(row) -> str:
        # Arrow decodes a row before it calls this: one that is not UTF-8 stops the read with an ArrowInvalid
        # instead (pytest shows the UnicodeDecodeError as "ignored"), and the file is read line by line, which
        # names the line
        if row.text.removeprefix(BOM_CHAR).strip():
            bad_rows.append(row.number)
        return "skip"

    source = pa.input_stream(str(lines.path), compression="gzip" if lines.path.suffix == ".gz" else None)
    table = csv.read_csv(
        source,
        read_options=csv.ReadOptions(column_names=list(FIELDS), block_size=1 << 26),
        parse_options=csv.ParseOptions(delimiter=TAB, quote_char=False, escape_char=False, newlines_in_values=False,
                                       ignore_empty_lines=True, invalid_row_handler=other_width),
        convert_options=csv.ConvertOptions(column_types=dict.fromkeys(FIELDS, STRING), strings_can_be_null=False,
                                           quoted_strings_can_be_null=False))
    raw = [encode(table.column(name)) for name in FIELDS]  # per field: each row's index, the distinct strings
    del table
    line_starts = raw[0][1]
    line_starts = pc.if_else(pc.starts_with(line_starts, BOM_CHAR), pc.utf8_slice_codeunits(line_starts, 1), line_starts)
    subjects = pc.utf8_trim(line_starts, WHITESPACE)
    cleaned = [subjects, pc.utf8_trim(raw[1][1], WHITESPACE), normalise_objects(raw[2][1])]
    blank = [pc.equal(strings, "").to_numpy(zero_copy_only=False)[codes] for strings, (codes, _) in zip(cleaned, raw)]
    keep = ~(blank[0] | blank[1] | blank[2])
    lines.skipped = int((~keep & ~(blank[0] & blank[1] & blank[2])).sum()) + len(bad_rows)  # blank lines aside
    del blank
    if lines.skipped and lines.on_bad_line == "error":
        raise NeedsLineReader("a bad line")
    if not keep.any():
        raise NeedsLineReader("no valid triple")
    lines.log_skipped()
    rows = np.flatnonzero(keep)
    del keep
    fields = [*split_subjects(subjects), cleaned[1], cleaned[2]]  # subject, meaning, predicate, object
    raw_field = (0, 0, 1, 2)
    strings, indices = [], []
    for f in (0, 2, 1, 3):  # as the KB's fields: subject, predicate, meaning, object
        codes, distinct_strings = encode(fields[f])
        strings.append(distinct_strings)
        indices.append(codes[raw[raw_field[f]][0][rows]])
    return KnowledgeBase.from_arrays(strings, indices)


def encode(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Per value the index of its string among the distinct strings, and those."""
    encoded = pc.dictionary_encode(values)
    if isinstance(encoded, pa.Array):
        return encoded.indices.to_numpy(zero_copy_only=False), encoded.dictionary
    if not encoded.num_chunks:
        return np.zeros(0, dtype=np.int32), pa.array([], type=STRING)
    last = encoded.chunks[-1].dictionary
    if any(chunk.dictionary.buffers() != last.buffers() for chunk in encoded.chunks):  # else one shared dictionary
        encoded = encoded.unify_dictionaries()
    codes = np.concatenate([chunk.indices.to_numpy(zero_copy_only=False) for chunk in encoded.chunks])
    return codes, encoded.chunks[-1].dictionary


def normalise_objects(objects: pa.Array) -> pa.Array:
    """normalise_object of each: whitespace runs as one space, none at the ends."""
    return pc.utf8_trim(pc.replace_substring_regex(objects, WHITESPACE_RUN, " "), " ")


def split_subjects(subjects: pa.Array) -> tuple[pa.Array, pa.Array]:
    """split_subject of each trimmed subject: a regex for most, split_subject itself for the subjects it
    leaves that end in a full-width parenthesis (nested or unbalanced ones)."""
    found = pc.extract_regex(subjects, SUBJECT_MEANING)
    matched = found.is_valid()
    subject = pc.if_else(matched, found.field("subject"), subjects)
    meaning = pc.if_else(matched, found.field("meaning"), pa.scalar("", type=STRING))
    rest = pc.and_(pc.ends_with(subjects, CLOSE), pc.invert(matched))
    if pc.any(rest).as_py():
        split = [split_subject(text) for text in subjects.filter(rest).to_pylist()]
        subject = pc.replace_with_mask(subject, rest, pa.array([s for s, _ in split], type=STRING))
        meaning = pc.replace_with_mask(meaning, rest, pa.array([m for _, m in split], type=STRING))
    return subject, meaning
