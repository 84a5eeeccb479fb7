"""Changes to a KB: what one is (`Change`), the files `kgqa-kb action=add|delete` reads (S（M） TAB P
TAB O per line; a delete may leave out O), and the change log of a KB folder (DIR/changes.tsv: the
op TAB the same fields), read and written here. `where` finds the line of a key in any of these
files (or a Knowledge.txt) for a message.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kgqa.data.kgclue import TAB, LineReader, join_tsv, split_tsv
from kgqa.data.triples import Key, Triple, split_subject
from kgqa.errors import DataError

CHANGES = "changes.tsv"  # a KB folder's change log
OPS = ("add", "delete")


@dataclass(frozen=True)
class Change:
    """One entry of a KB's change log: add a triple, delete a triple, or delete a key (obj None)."""

    op: str  # "add" | "delete"
    key: Key
    obj: str | None = None


CHANGE_FIELDS = {"add": (3,), "delete": (2, 3)}  # S（M） TAB P TAB O; a delete may leave out O (every object)


def read_changes(path: Path, op: str, on_bad_line: str = "error") -> list[Change]:
    """Change lines from a TSV: S（M） TAB P TAB O to add; to delete, also S（M） TAB P (every object of the key)."""
    lines = LineReader(path, on_bad_line, f"triples to {op}", hint="")
    return [parse_change(op, fields) for lineno, line in lines
            if (fields := lines.fields(lineno, line, CHANGE_FIELDS[op]))]


def read_change_log(path: Path, on_bad_line: str = "error") -> list[Change]:
    """The folder's changes.tsv (add|delete TAB the fields of a change line), as format_change writes it."""
    lines, changes = LineReader(path, on_bad_line, "changes", empty_ok=True, hint=""), []
    for lineno, line in lines:
        op, _, rest = line.partition(TAB)
        if op not in OPS:
            lines.bad(lineno, f"not a change line (add|delete TAB S TAB P [TAB O]): {line[:80]!r}")
        elif fields := lines.fields(lineno, rest, CHANGE_FIELDS[op]):
            changes.append(parse_change(op, fields))
    return changes


def parse_change(op: str, fields: list[str]) -> Change:
    if len(fields) == 3:
        t = Triple.parse(*fields)
        return Change(op, t.key, t.obj)
    subject, meaning = split_subject(fields[0].strip())
    return Change(op, Key(subject, fields[1].strip(), meaning))


def format_change(c: Change) -> str:
    return join_tsv([c.op, c.key.full_subject, c.key.predicate] + ([c.obj] if c.obj is not None else []))


def line_of(path: Path, key: Key) -> int | None:
    """The first line with this key of a triples file (S（M） TAB P TAB O) or a change log (the same
    after the op): for messages about a key. None if no line has it, or the file is unreadable."""
    try:
        for lineno, line in LineReader(path, on_bad_line="skip", empty_ok=True):
            fields = split_tsv(line)
            fields = fields[1:] if path.name == CHANGES else fields
            if len(fields) >= 2 and Triple.parse(fields[0], fields[1], "").key == key:
                return lineno
    except (OSError, DataError):
        return None
    return None


def where(key: Key, *paths: Path | None) -> str:
    """`path:line` of the first of `paths` with a line of this key; else the first path, or "the KB"."""
    for path in filter(None, paths):
        line = line_of(path, key)
        if line:
            return f"{path}:{line}"
    return str(next(filter(None, paths), "the KB"))
