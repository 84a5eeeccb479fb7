"""A KB folder as `kgqa-kb out=DIR` writes it, and the changes made to it since.

    DIR/Knowledge.txt   the base triples (S（M） TAB P TAB O)
    DIR/vocab.json      the character vocabulary the tries were encoded with
    DIR/kb/             the base KB as columns (KnowledgeBase.save: .npy indices, Arrow IPC string
                        tables and objects), so loading it maps arrays instead of parsing
                        Knowledge.txt; used only while Knowledge.txt is the file they were
                        written from (its size and time are kept with them)
    DIR/trie-<order>/   the key trie of the base KB for a target order (values: base key ids)
    DIR/tries/<order>-<tokenizer digest>/
                        the key trie of the base KB for another tokenizer (a model's that did not build
                        the folder) or an order without a trie-<order>/, kept by the first run that
                        needed it (trie/, and for.json: the tokenizer and order it encodes, the stamp of
                        the Knowledge.txt it was built from); a merge or a rebuild removes them all
    DIR/changes.tsv     what `kgqa-kb action=add|delete` recorded since, in order:
                        add TAB S（M） TAB P TAB O | delete TAB S（M） TAB P [TAB O] (kgqa/kb/changes.py)
    DIR/.lock           the folder's lock (see below)

Loading replays the changes on the base KB (new keys get new ids after the base ones) and puts
an overlay of the changed keys over each saved trie, so a change needs no retraining and no
rebuild, and the next decode sees it. `merge` folds the changes into Knowledge.txt and the tries.
A tokenizer whose vocabulary does not begin with vocab.json (or an order without its trie) gets a trie
of its own, built once and kept in DIR/tries/, under the same overlay.
As a KB source (`kb=folder kb.path=DIR`, the KbSource of kgqa/kb/sources.py), `build` gives the
KB, `tokenizer` the saved vocabulary and `keyspace` the saved trie under that overlay.

One writer at a time, and no reader sees half a change: every read-modify-write (build, add,
delete, merge) holds the folder's lock throughout, and loading holds it while it reads the base
KB, the changes, the vocabulary and every trie together. Readers hold it only that long: the
arrays are memory-mapped, and a map stays valid after a merge swaps the files (the old ones live
on until unmapped). Every file is written aside and renamed (kgqa/files.py), every key checked
against the tries before the first file is written, and a damaged file is a DataError naming it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from filelock import FileLock

from kgqa.data.tokenizer import CharTokenizer, Tokenizer, encode_key
from kgqa.errors import ConfigError, DataError
from kgqa.files import atomic_output, swap_in_folder, write_bytes, write_text
from kgqa.kb.arrow_reader import read_knowledge_kb
from kgqa.kb.changes import CHANGES, OPS, Change, format_change, read_change_log, read_changes, where
from kgqa.kb.columns import KnowledgeBase
from kgqa.kb.keyspace import KeySpace, KeyTooLong, show
from kgqa.kb.knowledge_txt import as_read_back, knowledge_text
from kgqa.kb.sources import KbSource
from kgqa.trie import MAX_LENGTH, OverlayTrie, Trie

log = logging.getLogger(__name__)
KNOWLEDGE, VOCAB, COLUMNS, LOCK, TRIES = "Knowledge.txt", "vocab.json", "kb", ".lock", "tries"
KEPT_FOR = "for.json"  # what a kept trie of DIR/tries/ encodes, and for which Knowledge.txt
REWRITE = ("write the folder again: kgqa-kb kb=file kb.path=DIR/Knowledge.txt out=NEWDIR (after action=merge, "
           "which keeps changes.tsv), or from the KB's source")


def folder_lock(path: Path) -> FileLock:
    """The folder's lock: flock on DIR/.lock, one instance per folder and process, so taking it again
    in the same thread nests instead of waiting on itself. Readers take it too (a plain lock, not a
    shared one: they hold it only while they map the files). The lock file is never removed, so two
    processes can never lock two different files of one name."""
    return FileLock(path.resolve() / LOCK, is_singleton=True, preserve_lock_file=True)


@dataclass(frozen=True)
class Loaded:
    """What one load read of a folder, all of it under the lock: one state of the folder."""

    tokenizer: CharTokenizer
    base: KnowledgeBase
    kb: KnowledgeBase
    tries: dict[str, Trie]
    knowledge: dict  # knowledge_stamp of the Knowledge.txt that `base` is: the tries kept in DIR/tries/ for it


class KbFolder(KbSource):
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / KNOWLEDGE).is_file() or not (self.path / VOCAB).is_file():
            raise DataError(f"{self.path}: not a KB folder (no {KNOWLEDGE} and {VOCAB}); write one with kgqa-kb out=DIR")

    @property
    def lock(self) -> FileLock:
        return folder_lock(self.path)

    @classmethod
    def create(cls, path: str | Path, kb: KnowledgeBase, tokenizer: CharTokenizer, orders: Sequence[str],
               source: Path | None = None) -> "KbFolder":
        """Write a KB, its vocabulary and its tries; the tries' values are the ids of the KB as read back.
        Every key is checked before the first file is written; `source` (the file the KB was read
        from) is named with the line of a key that cannot be written."""
        path = Path(path)
        base = as_read_back(kb)
        tries = tries_of(base, tokenizer, orders, source)
        path.mkdir(parents=True, exist_ok=True)
        with folder_lock(path):
            fresh_vocab = path / f".{VOCAB}.tmp"
            tokenizer.save(fresh_vocab)
            os.replace(fresh_vocab, path / VOCAB)
            write_base(path, base, tries)
            (path / CHANGES).unlink(missing_ok=True)
        return cls(path)

    @property
    def orders(self) -> list[str]:
        return saved_orders(self.path)

    # --- loading: everything at once, under the lock --------------------------------------
    @cached_property
    def loaded(self) -> Loaded:
        with self.lock:
            tokenizer = self.read_vocab()
            base = self.read_base()
            try:
                changes = self.changes()
            except UnicodeDecodeError as e:
                raise DataError(f"{self.path / CHANGES}: not UTF-8 text ({e}); fix or remove it (it holds the "
                                f"changes since the last merge)") from None
            tries = {order: Trie.load(self.path / f"trie-{order}") for order in self.orders}
            knowledge = knowledge_stamp(self.path)
        return Loaded(tokenizer, base, base.updated(changes), tries, knowledge)

    def forget(self) -> None:
        """Drop what was loaded: the next use reads the folder again (a writer does, once it holds the lock)."""
        self.__dict__.pop("loaded", None)

    def read_vocab(self) -> CharTokenizer:
        path = self.path / VOCAB
        try:
            tokenizer = CharTokenizer.load(path)
            if all(isinstance(c, str) for c in tokenizer.vocab):
                return tokenizer
            raise ValueError("a vocabulary entry is not a string")
        except (ValueError, KeyError, TypeError, AttributeError) as e:  # JSON and UTF-8 errors are ValueErrors
            raise DataError(f"{path}: not a kgqa character vocabulary ({type(e).__name__}: {e}); {REWRITE}") from None

    def read_base(self) -> KnowledgeBase:
        """The KB of Knowledge.txt: its saved columns when they were written from this very file, else the file read."""
        columns = self.path / COLUMNS
        if KnowledgeBase.saved_source(columns) == knowledge_stamp(self.path):
            return KnowledgeBase.load(columns)
        if columns.exists():
            log.info("%s changed since %s/ was written: reading it (kgqa-kb action=merge writes them again)", KNOWLEDGE, columns)
        try:
            return read_knowledge_kb(self.path / KNOWLEDGE)
        except UnicodeDecodeError as e:
            raise DataError(f"{self.path / KNOWLEDGE}: not UTF-8 text ({e}); restore it, or write the folder again "
                            f"from the KB's source (kgqa-kb out=DIR)") from None

    @property
    def saved_tokenizer(self) -> CharTokenizer:
        return self.loaded.tokenizer

    @property
    def base(self) -> KnowledgeBase:
        return self.loaded.base

    def changes(self) -> list[Change]:
        path = self.path / CHANGES
        return read_change_log(path) if path.is_file() else []

    @property
    def kb(self) -> KnowledgeBase:
        """The base KB with the recorded changes replayed."""
        return self.loaded.kb

    # --- as a KB source ------------------------------------------------------------------
    def build(self, data=None) -> KnowledgeBase:
        return self.kb

    def tokenizer(self, texts: Iterable[str] = ()) -> CharTokenizer:
        """The saved vocabulary with the new characters of `texts` appended: the saved ids, so the saved tries, stay valid."""
        vocab = self.saved_tokenizer.vocab
        known = set(vocab)
        return CharTokenizer(vocab + sorted({c for t in texts for c in t} - known))

    def keyspace(self, kb: KnowledgeBase, tokenizer: Tokenizer, order: str) -> KeySpace:
        """The trie of `order` under an overlay of the changed keys: the saved one when the tokenizer extends
        the saved vocabulary, else the one kept in DIR/tries/ for this tokenizer and order (built and kept
        by the first run that asks)."""
        saved, n_base = self.loaded.tries.get(order), len(self.base)
        vocab = getattr(tokenizer, "vocab", None)
        if saved is not None and vocab is not None and vocab[: len(self.saved_tokenizer.vocab)] == self.saved_tokenizer.vocab:
            if not holds_keys(saved, n_base, lambda i: encode_key(tokenizer, kb.keys[i], order)):
                raise DataError(f"{self.path}/trie-{order} does not hold the keys of {self.path / KNOWLEDGE} under "
                                f"{self.path / VOCAB} (changed or damaged since it was written): rebuild it "
                                f"(kgqa-kb action=merge kb_dir={self.path})")
            return self.overlaid(kb, tokenizer, order, saved, self.path / f"trie-{order}")
        path, kept = self.kept_trie(tokenizer, order)
        live = kb.live_mask()
        if kept.num_keys < n_base and (live[n_base:].any() or not live[:n_base].all()):
            reason = "keys this tokenizer cannot tell apart, and changes an overlay cannot place among them"
        else:
            try:
                return self.overlaid(kb, tokenizer, order, kept, path / "trie")
            except DataError as e:  # an added key this tokenizer cannot tell from another
                reason = str(e)
        log.info("%s: building the %s trie (%s)", self.path, order, reason)
        return KeySpace(kb, tokenizer, order)

    def overlaid(self, kb: KnowledgeBase, tokenizer: Tokenizer, order: str, base: Trie, saved: Path) -> KeySpace:
        """`base`, the trie of the base KB saved at `saved`, under an overlay of the keys added and deleted since."""
        n_base, live = len(self.base), kb.live_mask()
        added, deleted = (np.flatnonzero(live[n_base:]) + n_base).tolist(), np.flatnonzero(~live[:n_base]).tolist()
        if not added and not deleted:
            return KeySpace(kb, tokenizer, order, base)
        encode = lambda i: encode_key(tokenizer, kb.keys[i], order)  # noqa: E731
        try:
            trie = OverlayTrie.over(base, [encode(i) for i in added], added, [encode(i) for i in deleted])
        except (ValueError, KeyError) as e:
            raise DataError(f"{self.path / CHANGES}: the changes do not fit {saved} ({e}); fix the file, or "
                            f"rebuild (kgqa-kb action=merge kb_dir={self.path})") from None
        return KeySpace(kb, tokenizer, order, trie)

    def kept_trie(self, tokenizer: Tokenizer, order: str) -> tuple[Path, Trie]:
        """The trie of the base KB kept in DIR/tries/ for this tokenizer and order, loaded under the lock when
        it was built from the Knowledge.txt loaded; else built here (outside the lock: a minute at 20M keys)
        and kept, written aside and swapped in under the lock, unless the folder was merged or rebuilt since
        it was loaded. Two runs that build it at once each swap in a whole one."""
        kept_for = {"order": order, "tokenizer": tokenizer_digest(tokenizer, order), "knowledge": self.loaded.knowledge}
        path = self.path / TRIES / f"{order}-{kept_for['tokenizer'][:16]}"
        with self.lock:
            try:
                if read_kept_for(path) == kept_for:
                    trie = Trie.load(path / "trie")
                    n = len(self.base)
                    if trie.num_keys == n and not holds_keys(trie, n, lambda i: encode_key(tokenizer, self.base.keys[i], order)):
                        raise DataError(f"{path}/trie does not hold the keys of {self.path / KNOWLEDGE} (damaged)")
                    log.info("%s: loaded the %s trie kept for this tokenizer", path, order)
                    return path, trie
            except DataError as e:  # damaged: built and kept again
                log.warning("%s; building it again", e)
        log.info("%s: building the %s trie for this tokenizer (no saved trie for this KB and tokenizer); it is kept "
                 "in %s for the next run", self.path, order, path)
        trie = KeySpace(self.base, tokenizer, order).trie

        def write(fresh: Path) -> None:
            trie.save(fresh / "trie")
            write_text(fresh / KEPT_FOR, json.dumps(kept_for, ensure_ascii=False))

        with self.lock:
            if knowledge_stamp(self.path) == self.loaded.knowledge:
                swap_in_folder(path, write)
        return path, trie

    # --- changes -------------------------------------------------------------------------
    def record(self, op: str, triples_file: str | Path) -> dict:
        """Append the changes of a TSV to the log, after checking every saved trie takes them; under the
        lock from reading the folder to writing the log, so no other change comes in between."""
        if op not in OPS:
            raise ConfigError(f"action={op}: not a change; choose one of {OPS}")
        triples_file = Path(triples_file)
        try:
            changes = read_changes(triples_file, op)
        except UnicodeDecodeError as e:
            raise DataError(f"{triples_file}: not UTF-8 text ({e})") from None
        with self.lock:
            self.forget()
            before, vocab = self.kb, set(self.saved_tokenizer.vocab)
            after = before.updated(changes)
            for order in self.orders:
                self.check_new_keys(before, after, order, triples_file)
                self.keyspace(after, self.saved_tokenizer, order)
            log_path = self.path / CHANGES
            logged = log_path.read_bytes() if log_path.is_file() else b""
            write_bytes(log_path, logged + "".join(map(format_change, changes)).encode("utf-8"))
            self.forget()
        added = {c.key for c in changes if c.op == "add"}
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

    def check_new_keys(self, before: KnowledgeBase, after: KnowledgeBase, order: str, triples_file: Path) -> None:
        """A DataError naming the line of `triples_file` with a key new in `after` that is too long for
        the `order` trie, or that encodes (under vocab.json) like another added key."""
        tokenizer, n_base = self.saved_tokenizer, len(self.base)
        live = after.live_mask()
        encodings = {tuple(encode_key(tokenizer, after.keys[i], order)): i  # the keys added before, still live
                     for i in (np.flatnonzero(live[n_base : len(before)]) + n_base).tolist()}
        for i in (np.flatnonzero(live[len(before) :]) + len(before)).tolist():
            key = after.keys[i]
            tokens = encode_key(tokenizer, key, order)
            if len(tokens) > MAX_LENGTH:
                raise DataError(f"{where(key, triples_file)}: {KeyTooLong(key, len(tokens), order)}")
            other = encodings.setdefault(tuple(tokens), i)  # (a base key has no [UNK]: vocab.json is made from them)
            if other != i:
                other_key = after.keys[other]
                raise DataError(f"{where(key, triples_file)}: the key {show(key)} encodes like the key {show(other_key)} "
                                f"({where(other_key, triples_file, self.path / CHANGES, self.path / KNOWLEDGE)}) under "
                                f"{self.path / VOCAB}, whose missing characters read as [UNK]: change the key, or write "
                                f"the folder again with a vocabulary that holds them")

    def merge(self) -> dict:
        """Fold the changes into Knowledge.txt and rebuild its columns and tries (same vocabulary); ids are
        renumbered. Under the lock throughout; every key is checked before the first file is written.

        The log goes last: if this stops half-way, the tries no longer match and say so, and running it
        again is safe (replaying the log on the merged KB changes nothing)."""
        with self.lock:
            self.forget()
            base = as_read_back(self.kb)
            write_base(self.path, base, tries_of(base, self.saved_tokenizer, self.orders, self.path / KNOWLEDGE,
                                                 self.path / CHANGES))
            (self.path / CHANGES).unlink(missing_ok=True)
            self.forget()
        return base.stats()


def knowledge_stamp(path: Path) -> dict:
    """The size and time of a folder's Knowledge.txt: kept with its columns, which serve while it is the same."""
    stat = (path / KNOWLEDGE).stat()
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def tokenizer_digest(tokenizer: Tokenizer, order: str) -> str:
    """SHA-256 of what decides a key's tokens: the tokenizer's state (its vocabulary; a pretrained one's
    fingerprint and added characters, not the folder it was read from), its [SEP] and [UNK], and the order."""
    state = {k: v for k, v in tokenizer.state().items() if k != "pretrained"}
    what = [order, tokenizer.sep_id, getattr(tokenizer, "unk_id", None), state]
    return hashlib.sha256(json.dumps(what, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()


def read_kept_for(path: Path) -> dict | None:
    """The for.json of a kept trie (None if there is none); a damaged one is a DataError."""
    try:
        return json.loads((path / KEPT_FOR).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path / KEPT_FOR}: not readable JSON ({e})") from None


def saved_orders(path: Path) -> list[str]:
    return sorted(p.name.removeprefix("trie-") for p in path.glob("trie-*") if p.is_dir() and "." not in p.name)


def tries_of(base: KnowledgeBase, tokenizer: Tokenizer, orders: Iterable[str], *sources: Path | None) -> dict[str, Trie]:
    """The trie of each order over `base`, built before anything is written; a key too long is a DataError
    naming the line of the first of `sources` (the files the KB was read from) that has it."""
    try:
        return {order: KeySpace(base, tokenizer, order).trie for order in orders}
    except KeyTooLong as e:
        raise DataError(f"{where(e.key, *sources)}: {e}") from None


def write_base(path: Path, base: KnowledgeBase, tries: dict[str, Trie]) -> None:
    """A folder's Knowledge.txt, its columns and the tries of `tries`' orders (the others go), each written
    aside and swapped in. Knowledge.txt goes first: if this stops half-way, the columns are not used (their
    source stamp differs) and the tries no longer match and say so."""
    with atomic_output(path / KNOWLEDGE, "wb") as f:
        f.writelines(knowledge_text(base))
    swap_in_folder(path / COLUMNS, lambda fresh: base.save(fresh, knowledge_stamp(path)))
    for order, trie in tries.items():
        swap_in_folder(path / f"trie-{order}", trie.save)
    for order in set(saved_orders(path)) - set(tries):
        shutil.rmtree(path / f"trie-{order}")
    shutil.rmtree(path / TRIES, ignore_errors=True)  # tries of the KB before


def holds_keys(trie: Trie, n: int, encode) -> bool:
    """Whether a saved trie holds `n` keys and a sample of them as `encode(id)` gives them, each at a
    leaf of its own id (a damaged or foreign trie fails here, or in reading its arrays). Walked from
    the root: finding a key by its id would sort all the trie's values first (seconds at 20M keys)."""
    try:
        ids = sample_ids(n)
        states, _ = trie.walk_all([encode(i) for i in ids])
        leaves = states[states >= 0]
        return (trie.num_keys == n and len(leaves) == len(ids) and bool(trie.is_leaf(leaves).all())
                and all(trie.values_under(int(s)).tolist() == [i] for s, i in zip(leaves, ids)))
    except (KeyError, IndexError, ValueError):
        return False


def sample_ids(n: int, count: int = 64) -> list[int]:
    """A few key ids, first and last included: enough to catch a trie saved for another KB."""
    return sorted(set(random.Random(n).sample(range(n), min(n, count))) | ({0, n - 1} if n else set()))
