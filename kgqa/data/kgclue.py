"""Readers for KgCLUE files: the one line reader of user files, and the QA splits (JSON lines).

Every user text file is read by one LineReader (plain or gzip, UTF-8 decoded line by line).
Every TSV line (Knowledge.txt, the KB's change files: kgqa/kb/) is split by `split_tsv` and
checked by the reader's `fields`, and every one written is joined by `join_tsv`. A bad line
raises a DataError naming the file and line; with on_bad_line="skip" it is counted and logged
instead, never dropped silently. A file without a single valid line is a DataError too (an empty
KB or split would only fail later).
"""
from __future__ import annotations

import gzip
import json
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator

from kgqa.data.triples import Triple
from kgqa.errors import ConfigError, DataError

log = logging.getLogger(__name__)
ANSWER_SEP = " ||| "
BOM, GZIP_MAGIC, UTF16_BOMS = b"\xef\xbb\xbf", b"\x1f\x8b", (b"\xff\xfe", b"\xfe\xff")
SKIP_HINT = " (set data.on_bad_line=skip to skip such lines)"
TAB = "\t"


def split_tsv(line: str) -> list[str]:
    """The fields of a TSV line without its line end."""
    return line.split(TAB)


def join_tsv(fields: Iterable[str]) -> str:
    """A TSV line with its line end, as split_tsv reads it back (fields hold no tab and no line end)."""
    return TAB.join(fields) + "\n"


@dataclass(frozen=True)
class QAExample:
    id: int | str
    question: str
    triple: Triple | None  # None for unlabelled splits (test.json)


class LineReader:
    """The non-blank lines of a user's text file as (line number, text without its line end).

    A file named .gz must be gzip, any other must not; lines end at LF (CRLF too); a UTF-8 byte-order
    mark at the start of a line is dropped (a file, or files concatenated). Each line is decoded on
    its own, so a line that is not UTF-8 text (or holds a NUL byte) is reported with its number, like
    a line the caller finds bad (`bad`, `fields`): a DataError, or with on_bad_line="skip" one more
    skipped line, the count logged once at the end. `what` names the records in the messages;
    `empty_ok` lets a file hold none (a change log); `hint` is "" where no command offers a skip.
    """

    def __init__(self, path: str | Path, on_bad_line: str = "error", what: str = "lines", empty_ok: bool = False,
                 hint: str = SKIP_HINT):
        if on_bad_line not in ("error", "skip"):
            raise ConfigError(f"on_bad_line must be 'error' or 'skip', not {on_bad_line!r}")
        self.path, self.on_bad_line, self.what, self.empty_ok, self.hint = Path(path), on_bad_line, what, empty_ok, hint
        self.skipped = 0

    def bad(self, lineno: int, why: str) -> None:
        if self.on_bad_line == "error":
            raise DataError(f"{self.path}:{lineno}: {why}{self.hint}")
        self.skipped += 1

    def fields(self, lineno: int, line: str, counts: tuple[int, ...]) -> list[str] | None:
        """The tab-separated fields of a line when there are `counts` of them, none blank; else None (a bad line)."""
        fields = split_tsv(line)
        if len(fields) in counts and "" not in map(str.strip, fields):
            return fields
        blank = f", field {[f.strip() for f in fields].index('') + 1} blank" if len(fields) in counts else ""
        need = " or ".join(map(str, counts))
        self.bad(lineno, f"expected {need} non-empty tab-separated fields, got {len(fields)}{blank}: {line[:80]!r}")
        return None

    def __iter__(self) -> Iterator[tuple[int, str]]:
        lineno = non_blank = 0
        with self.open() as f:
            try:
                for lineno, raw in enumerate(f, 1):
                    if raw.startswith(BOM):
                        raw = raw[len(BOM):]
                    try:
                        line = raw.decode("utf-8").rstrip("\r\n")
                    except UnicodeDecodeError as e:
                        non_blank += 1
                        self.bad(lineno, f"not UTF-8 text (byte {raw[e.start]:#04x} at byte {e.start + 1} of the line)")
                        continue
                    if not line.strip():
                        continue
                    non_blank += 1
                    if "\0" in line:
                        self.bad(lineno, f"not text: a NUL byte at column {line.index(chr(0)) + 1}")
                        continue
                    yield lineno, line
            except (EOFError, zlib.error, gzip.BadGzipFile) as e:
                where = f"after line {lineno}" if lineno else "before its first line"
                raise DataError(f"{self.path}: truncated or corrupt gzip data {where} ({e})") from None
        self.log_skipped()
        if non_blank == self.skipped and not self.empty_ok:
            if self.skipped:
                raise DataError(f"{self.path}: no valid {self.what}: "
                                f"all {self.skipped} non-blank line(s) were bad and skipped")
            raise DataError(f"{self.path}: empty: no {self.what}" + (" (only blank lines)" if lineno else ""))

    def log_skipped(self) -> None:
        if self.skipped:
            log.warning("%s: skipped %d bad line(s)", self.path, self.skipped)

    def open(self) -> IO[bytes]:
        """The file's bytes, uncompressed; a file-level problem (wrong compression, UTF-16) is a DataError."""
        try:
            with open(self.path, "rb") as f:
                head = f.read(2)
        except FileNotFoundError:
            raise  # the entry points report it as it is
        except OSError as e:
            raise DataError(f"{self.path}: cannot read it: {e.strerror or e}") from None
        gz = self.path.suffix == ".gz"
        if gz and head and head != GZIP_MAGIC:
            raise DataError(f"{self.path}: named .gz but not gzip data (it starts with {head!r})")
        if not gz and head == GZIP_MAGIC:
            raise DataError(f"{self.path}: gzip data in a file not named .gz: rename it to {self.path.name}.gz")
        if head in UTF16_BOMS:
            raise DataError(f"{self.path}: UTF-16 text: save it as UTF-8")
        return gzip.open(self.path, "rb") if gz else open(self.path, "rb")


def parse_answer(answer: str) -> Triple:
    parts = answer.split(ANSWER_SEP) if isinstance(answer, str) else []
    if len(parts) != 3 or not all(p.strip() for p in parts):
        raise ValueError(f"answer must be 'S ||| P ||| O' with three non-empty parts, got {answer!r}")
    return Triple.parse(*parts)


def parse_qa(line: str, lineno: int, labelled: bool) -> QAExample:
    """One JSON line; a ValueError says what is wrong with it."""
    try:
        row = json.loads(line)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if not isinstance(row, dict) or not isinstance(row.get("question"), str):
        raise ValueError("missing field 'question'")
    if labelled and "answer" not in row:
        raise ValueError("missing field 'answer'")
    for field in ("question", "answer", "id"):
        if isinstance(row.get(field), str) and not row[field].isascii():
            try:
                row[field].encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"field {field!r} has a \\u escape that is no character (a lone surrogate)") from None
    triple = parse_answer(row["answer"]) if "answer" in row else None
    return QAExample(row.get("id", lineno - 1), row["question"], triple)


def read_qa(path: str | Path, on_bad_line: str = "error", labelled: bool = True) -> list[QAExample]:
    """Read a KgCLUE QA split. labelled=False accepts lines without "answer" (test.json)."""
    lines, examples = LineReader(path, on_bad_line, "questions"), []
    for lineno, line in lines:
        try:
            examples.append(parse_qa(line, lineno, labelled))
        except ValueError as e:  # json.JSONDecodeError included
            lines.bad(lineno, f"not a KgCLUE QA line: {e}")
    return examples

