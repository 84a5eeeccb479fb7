"""Corrections: a question and the key that answers it, for fixing a wrong answer without retraining.

A corrections file is JSON lines, one correction a line, in KgCLUE's own format (a KgCLUE split with its
answers is a corrections file):

    {"question": "刘晓华主要讲什么课？", "answer": "刘晓华（教授） ||| 主讲课程 ||| 数学", "wrong": ["刘晓华（教授） ||| 主要成就 ||| …"]}

`answer` names the right key (S（M） ||| P, the object optional), or the line gives "subject", "predicate"
and optionally "meaning"; `wrong` (optional) lists keys that must not be given for it. Every key is checked
against the KB when the file is read: a malformed line, a key the KB never had, two different answers for
one question (after `normalise_question`) are one error naming file and line, or with on_bad_line="skip"
a count in the log. A file whose keys the KB mostly lacks was made for another KB and is refused even then.

`CorrectionFile` edits such a file live (add, remove, list) under a lock, each change written aside and
renamed, as a KB folder's changes are; a KB folder keeps its own at DIR/corrections.jsonl.
"""
from __future__ import annotations

import json
import logging
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from filelock import FileLock

from kgqa.data.kgclue import LineReader
from kgqa.data.triples import Key, Triple, split_subject
from kgqa.errors import DataError
from kgqa.files import write_text
from kgqa.kb.columns import KnowledgeBase
from kgqa.kb.folder import KNOWLEDGE, folder_lock

log = logging.getLogger(__name__)
FOLDER_FILE = "corrections.jsonl"  # a KB folder's own corrections


def normalise_question(question: str) -> str:
    """What two phrasings of one question share: NFKC (full-width → ASCII), case folded, no spaces,
    punctuation or control characters ("刘晓华主要讲什么课？" and "刘晓华 主要讲什么课?" are one)."""
    text = unicodedata.normalize("NFKC", question).casefold()
    return "".join(c for c in text if unicodedata.category(c)[0] not in "PZC")


@dataclass(frozen=True)
class Correction:
    question: str
    key: Key
    wrong: tuple[Key, ...] = ()

    def as_json(self) -> dict:
        line = {"question": self.question, "answer": key_text(self.key)}
        return line | ({"wrong": [key_text(k) for k in self.wrong]} if self.wrong else {})


def key_text(key: Key) -> str:
    return f"{key.full_subject} ||| {key.predicate}"


def parse_key(value) -> Key:
    """A key from "S（M） ||| P [||| O]"; a ValueError says why not."""
    if not isinstance(value, str) or value.count("|||") not in (1, 2):
        raise ValueError(f"a key is 'S（M） ||| P' or 'S（M） ||| P ||| O', not {value!r}")
    subject, predicate = (part.strip() for part in value.split("|||")[:2])
    if not subject or not predicate:
        raise ValueError(f"a key needs a subject and a predicate: {value!r}")
    return Triple.parse(subject, predicate, "").key


def parse_correction(line: str) -> Correction:
    """One line of a corrections file; a ValueError says what is wrong with it."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(record, dict) or not isinstance(record.get("question"), str) or not record["question"].strip():
        raise ValueError("needs a non-empty \"question\"")
    if "answer" in record:
        key = parse_key(record["answer"])
    elif isinstance(record.get("subject"), str) and isinstance(record.get("predicate"), str):
        subject, meaning = split_subject(record["subject"].strip())
        key = Key(subject, record["predicate"].strip(), str(record.get("meaning", meaning)).strip())
    else:
        raise ValueError("needs \"answer\" (S（M） ||| P [||| O]) or \"subject\" and \"predicate\"")
    wrong = record.get("wrong", [])
    if not isinstance(wrong, list):
        raise ValueError("\"wrong\" is a list of keys")
    return Correction(record["question"].strip(), key, tuple(parse_key(k) for k in wrong))


def read_corrections(path: str | Path, kb: KnowledgeBase, on_bad_line: str = "error") -> list[Correction]:
    """The corrections of a file, every key checked against `kb` (see the module)."""
    lines = LineReader(path, on_bad_line, "corrections", empty_ok=True)
    by_question: dict[str, tuple[int, Correction]] = {}
    missing = total = 0
    for lineno, line in lines:
        total += 1
        try:
            c = parse_correction(line)
        except ValueError as e:
            lines.bad(lineno, str(e))
            continue
        absent = [k for k in (c.key, *c.wrong) if kb.find(k) is None]
        if absent:
            missing += c.key in absent
            lines.bad(lineno, f"the KB has no key {key_text(absent[0])}")
            continue
        seen = by_question.get(normalise_question(c.question))
        if seen and seen[1].key != c.key:
            lines.bad(lineno, f"another answer for the question of line {seen[0]} ({key_text(seen[1].key)})")
            continue
        by_question[normalise_question(c.question)] = (lineno, c)
    if total and missing * 2 > total:
        raise DataError(f"{path}: {missing} of its {total} corrections name keys this KB never had: "
                        f"it was made for another KB")
    return [c for _, c in by_question.values()]


def corrections_file(path: str | Path) -> Path:
    """A corrections file, or a KB folder's own one."""
    path = Path(path)
    return path / FOLDER_FILE if path.is_dir() else path


class CorrectionFile:
    """A corrections file edited live: each add or remove reads the file, changes it and writes it
    aside and renames it, all under its lock (DIR/.lock for a KB folder's, FILE.lock beside any other),
    so two writers at once lose nothing and a reader never sees half a file."""

    def __init__(self, path: str | Path):
        self.path = corrections_file(path)
        in_folder = self.path.name == FOLDER_FILE and (self.path.parent / KNOWLEDGE).is_file()
        self.lock = folder_lock(self.path.parent) if in_folder else FileLock(f"{self.path}.lock", is_singleton=True)

    def read(self, kb: KnowledgeBase, on_bad_line: str = "error") -> list[Correction]:
        with self.lock:
            return read_corrections(self.path, kb, on_bad_line) if self.path.exists() else []

    def add(self, kb: KnowledgeBase, corrections: Iterable[Correction]) -> int:
        """Add (or replace: the same question) corrections whose keys `kb` holds; the count added."""
        new = list(corrections)
        for c in new:
            absent = [k for k in (c.key, *c.wrong) if kb.find(k) is None]
            if absent:
                raise DataError(f"{self.path}: cannot add the correction of {c.question!r}: the KB has no key "
                                f"{key_text(absent[0])}")
        with self.lock:
            kept = {normalise_question(c.question): c for c in self._read_kept()}
            kept |= {normalise_question(c.question): c for c in new}
            self._write(kept.values())
        return len(new)

    def remove(self, questions: Iterable[str]) -> int:
        """Remove the corrections of these questions (after normalisation); the count removed."""
        gone = {normalise_question(q) for q in questions}
        with self.lock:
            kept = self._read_kept()
            left = [c for c in kept if normalise_question(c.question) not in gone]
            self._write(left)
        return len(kept) - len(left)

    def _read_kept(self) -> list[Correction]:
        """The file as this class wrote it, its keys checked when they were added (not again: an edit costs
        a read and a write of the file, not a KB lookup per line)."""
        if not self.path.exists():
            return []
        lines = LineReader(self.path, what="corrections", empty_ok=True, hint="")
        kept = []
        for lineno, line in lines:
            try:
                kept.append(parse_correction(line))
            except ValueError as e:
                lines.bad(lineno, str(e))
        return kept

    def _write(self, corrections: Iterable[Correction]) -> None:
        write_text(self.path, "".join(json.dumps(c.as_json(), ensure_ascii=False) + "\n" for c in corrections))
