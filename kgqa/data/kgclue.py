"""Readers for KgCLUE files: QA splits (JSON lines) and the knowledge base (TSV).

Every bad line raises a DataError naming the file and line; with
on_bad_line="skip" it is counted and logged instead, never dropped silently.
"""
from __future__ import annotations

import gzip
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from kgqa.data.triples import Triple
from kgqa.errors import DataError

log = logging.getLogger(__name__)
ANSWER_SEP = " ||| "


@dataclass(frozen=True)
class QAExample:
    id: int | str
    question: str
    triple: Triple | None  # None for unlabelled splits (test.json)


class _LineGuard:
    """Raises or counts bad lines according to on_bad_line ("error" | "skip")."""

    def __init__(self, path: Path, on_bad_line: str):
        if on_bad_line not in ("error", "skip"):
            raise ValueError(f"on_bad_line must be 'error' or 'skip', not {on_bad_line!r}")
        self.path, self.on_bad_line, self.skipped = path, on_bad_line, 0

    def bad(self, lineno: int, why: str) -> None:
        if self.on_bad_line == "error":
            raise DataError(f"{self.path}:{lineno}: {why} (set data.on_bad_line=skip to skip such lines)")
        self.skipped += 1

    def report(self) -> None:
        if self.skipped:
            log.warning("%s: skipped %d bad line(s)", self.path, self.skipped)


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def parse_answer(answer: str) -> Triple:
    parts = answer.split(ANSWER_SEP) if isinstance(answer, str) else []
    if len(parts) != 3 or not all(p.strip() for p in parts):
        raise ValueError(f"answer must be 'S ||| P ||| O' with three non-empty parts, got {answer!r}")
    return Triple.parse(*parts)


def read_qa(path: str | Path, on_bad_line: str = "error", labelled: bool = True) -> list[QAExample]:
    """Read a KgCLUE QA split. labelled=False accepts lines without "answer" (test.json)."""
    path = Path(path)
    guard, examples = _LineGuard(path, on_bad_line), []
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or not isinstance(row.get("question"), str):
                    raise ValueError("missing field 'question'")
                if labelled and "answer" not in row:
                    raise ValueError("missing field 'answer'")
                triple = parse_answer(row["answer"]) if "answer" in row else None
            except (json.JSONDecodeError, ValueError) as e:
                guard.bad(lineno, f"not a KgCLUE QA line: {e}")
                continue
            examples.append(QAExample(row.get("id", lineno - 1), row["question"], triple))
    guard.report()
    return examples


def read_knowledge(path: str | Path, on_bad_line: str = "error") -> Iterator[Triple]:
    """Stream a Knowledge.txt (subject TAB predicate TAB object per line; .gz accepted)."""
    path = Path(path)
    guard = _LineGuard(path, on_bad_line)
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) != 3 or not all(x.strip() for x in fields):
                guard.bad(lineno, f"expected 3 non-empty tab-separated fields, got {len(fields)}: {line[:80]!r}")
                continue
            yield Triple.parse(*fields)
    guard.report()
