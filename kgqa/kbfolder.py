"""A KB folder as `kgqa-kb out=DIR` writes it, and the changes made to it since.

    DIR/Knowledge.txt   the base triples (S（M） TAB P TAB O)
    DIR/vocab.json      the character vocabulary the tries were encoded with
    DIR/kb/             the base KB as columns (KnowledgeBase.save), so loading it reads arrays
                        instead of parsing Knowledge.txt; used only while Knowledge.txt is the
                        file they were written from (its size and time are kept with them)
    DIR/trie-<order>/   the key trie of the base KB for a target order (values: base key ids)
    DIR/changes.tsv     what `kgqa-kb action=add|delete` recorded since, in order:
                        add TAB S（M） TAB P TAB O | delete TAB S（M） TAB P [TAB O]

Loading replays the changes on the base KB (new keys get new ids after the base ones) and puts
an overlay of the changed keys over each saved trie, so a change needs no retraining and no
rebuild, and the next decode sees it. `merge` folds the changes into Knowledge.txt and the tries.
As a KB source (`kb=folder kb.path=DIR`), `build` gives the KB and `keyspace` the saved trie.
"""
from __future__ import annotations

import logging
import os
import random
import shutil
from functools import cached_property
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from kgqa.data.kb import Change, KnowledgeBase
from kgqa.data.kgclue import LineReader, read_knowledge
from kgqa.data.tokenizer import CharTokenizer, Tokenizer, encode_key
from kgqa.data.triples import Key, Triple, split_subject
from kgqa.errors import DataError
from kgqa.keyspace import KeySpace
from kgqa.trie import OverlayTrie, Trie

log = logging.getLogger(__name__)
KNOWLEDGE, VOCAB, CHANGES, COLUMNS = "Knowledge.txt", "vocab.json", "changes.tsv", "kb"
OPS = ("add", "delete")


def write_knowledge(path: Path, triples: Iterable[Triple]) -> None:
    """Knowledge.txt, written next to its place and renamed: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for t in triples:
            f.write(f"{t.key.full_subject}\t{t.key.predicate}\t{t.obj}\n")
    os.replace(tmp, path)


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
        op, _, rest = line.partition("\t")
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
    return "\t".join([c.op, c.key.full_subject, c.key.predicate] + ([c.obj] if c.obj is not None else [])) + "\n"


class KbFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / KNOWLEDGE).is_file() or not (self.path / VOCAB).is_file():
            raise FileNotFoundError(f"{self.path}: not a KB folder (no {KNOWLEDGE} and {VOCAB}; write one with kgqa-kb out=DIR)")

    @classmethod
    def create(cls, path: str | Path, kb: KnowledgeBase, tokenizer: CharTokenizer, orders: Sequence[str]) -> "KbFolder":
        """Write a KB, its vocabulary and its tries; the tries' values are the ids of the KB as read back."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        write_knowledge(path / KNOWLEDGE, kb.triples())
        tokenizer.save(path / VOCAB)
        (path / CHANGES).unlink(missing_ok=True)
        folder = cls(path)
        folder.save_base(orders)
        return folder

    def save_base(self, orders: Iterable[str]) -> None:
        """The base KB's columns and each order's trie, written from Knowledge.txt as read back."""
        self.swap_in(self.path / COLUMNS, lambda fresh: self.base.save(fresh, self.knowledge_stamp()))
        for order in orders:
            self.swap_in(self.path / f"trie-{order}", KeySpace(self.base, self.saved_tokenizer, order).trie.save)

    @staticmethod
    def swap_in(target: Path, write) -> None:
        """write(folder) into a new folder, then swap it in: a reader never sees half of one."""
        fresh, stale = target.with_name(target.name + ".new"), target.with_name(target.name + ".old")
        shutil.rmtree(fresh, ignore_errors=True)
        write(fresh)
        if target.exists():
            target.rename(stale)
        fresh.rename(target)
        shutil.rmtree(stale, ignore_errors=True)

    def knowledge_stamp(self) -> dict:
        stat = (self.path / KNOWLEDGE).stat()
        return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}

    @property
    def orders(self) -> list[str]:
        return sorted(p.name.removeprefix("trie-") for p in self.path.glob("trie-*") if p.is_dir() and "." not in p.name)

    @cached_property
    def saved_tokenizer(self) -> CharTokenizer:
        return CharTokenizer.load(self.path / VOCAB)

    @cached_property
    def base(self) -> KnowledgeBase:
        """The KB of Knowledge.txt: its saved columns when they were written from this very file, else the file read."""
        columns = self.path / COLUMNS
        if KnowledgeBase.saved_source(columns) == self.knowledge_stamp():
            return KnowledgeBase.load(columns)
        if columns.exists():
            log.info("%s changed since %s/ was written: reading it (kgqa-kb action=merge writes them again)", KNOWLEDGE, columns)
        return KnowledgeBase(read_knowledge(self.path / KNOWLEDGE))

    def changes(self) -> list[Change]:
        path = self.path / CHANGES
        return read_change_log(path) if path.is_file() else []

    @cached_property
    def kb(self) -> KnowledgeBase:
        """The base KB with the recorded changes replayed."""
        return self.base.updated(self.changes())

    # --- as a KB source ------------------------------------------------------------------
    def build(self, data=None) -> KnowledgeBase:
        return self.kb

    def tokenizer(self, texts: Iterable[str] = ()) -> CharTokenizer:
        """The saved vocabulary with the new characters of `texts` appended: the saved ids, so the saved tries, stay valid."""
        vocab = self.saved_tokenizer.vocab
        known = set(vocab)
        return CharTokenizer(vocab + sorted({c for t in texts for c in t} - known))

    def keyspace(self, kb: KnowledgeBase, tokenizer: Tokenizer, order: str) -> KeySpace:
        """The saved trie of `order` under an overlay of the changed keys; built from `kb` when the
        trie is missing or the tokenizer does not extend the saved vocabulary."""
        saved = self.path / f"trie-{order}"
        vocab = getattr(tokenizer, "vocab", None)
        if not saved.is_dir() or vocab is None or vocab[: len(self.saved_tokenizer.vocab)] != self.saved_tokenizer.vocab:
            log.info("%s: building the %s trie (no saved trie for this KB and tokenizer)", self.path, order)
            return KeySpace(kb, tokenizer, order)
        base = Trie.load(saved)
        n_base = len(self.base)
        encode = lambda i: encode_key(tokenizer, kb.keys[i], order)  # noqa: E731
        if base.num_keys != n_base or any(base.sequence(i).tolist() != encode(i) for i in sample_ids(n_base)):
            raise ValueError(f"{saved} does not hold the keys of this KB ({self.path / KNOWLEDGE} plus changes): "
                             f"rebuild it (kgqa-kb action=merge kb_dir={self.path})")
        live = kb.live_mask()
        added, deleted = (np.flatnonzero(live[n_base:]) + n_base).tolist(), np.flatnonzero(~live[:n_base]).tolist()
        if not added and not deleted:
            return KeySpace(kb, tokenizer, order, base)
        trie = OverlayTrie.over(base, [encode(i) for i in added], added, [encode(i) for i in deleted])
        return KeySpace(kb, tokenizer, order, trie)

    # --- changes -------------------------------------------------------------------------
    def record(self, op: str, triples_file: str | Path) -> dict:
        """Append the changes of a TSV to the log, after checking every saved trie takes them."""
        if op not in OPS:
            raise ValueError(f"unknown change {op!r}; choose one of {OPS}")
        changes = read_changes(Path(triples_file), op)
        before = self.kb
        after = before.updated(changes)
        try:
            for order in self.orders:  # a key the tries cannot tell from another raises here, before it is recorded
                self.keyspace(after, self.saved_tokenizer, order)
        except (ValueError, KeyError) as e:
            raise DataError(f"{triples_file}: {e}") from e
        with open(self.path / CHANGES, "a", encoding="utf-8") as f:
            f.writelines(format_change(c) for c in changes)
        self.__dict__.pop("kb", None)
        vocab, added = set(self.saved_tokenizer.vocab), {c.key for c in changes if c.op == "add"}
        after_live = after.live_mask()
        summary = {
            "changes": len(changes),
            "new_keys": int(after_live[len(before) :].sum()),
            "keys_deleted": int((before.live_mask() & ~after_live[: len(before)]).sum()),
            "deletions_not_found": sum(1 for c in changes if c.op == "delete" and c.key not in before and c.key not in added),
            "chars_not_in_vocab": sorted({ch for c in changes for s in (c.key.subject, c.key.predicate, c.key.meaning)
                                          for ch in s if ch not in vocab}),
        }
        if summary["chars_not_in_vocab"]:
            log.warning("characters not in %s encode as [UNK]: %s", VOCAB, "".join(summary["chars_not_in_vocab"]))
        return summary

    def merge(self) -> dict:
        """Fold the changes into Knowledge.txt and rebuild its columns and tries (same vocabulary); ids are renumbered.

        The log goes last: if this stops half-way, the tries no longer match and say so, and running it
        again is safe (replaying the log on the merged KB changes nothing)."""
        orders = self.orders
        write_knowledge(self.path / KNOWLEDGE, self.kb.triples())
        for stale in ("base", "kb"):
            self.__dict__.pop(stale, None)
        self.save_base(orders)
        (self.path / CHANGES).unlink(missing_ok=True)
        return self.base.stats()


def sample_ids(n: int, count: int = 64) -> list[int]:
    """A few key ids, first and last included: enough to catch a trie saved for another KB."""
    return sorted(set(random.Random(n).sample(range(n), min(n, count))) | ({0, n - 1} if n else set()))
