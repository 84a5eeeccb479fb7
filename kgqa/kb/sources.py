"""The sources behind `kb=`: each turns a data source (kgqa/data/sources.py) into a KnowledgeBase.

Every one is a KbSource, the one interface the data module uses (it checks no types): `build` gives
the KB; `tokenizer` a saved vocabulary, or None to build one from the data; `keyspace` the decoder's
view of the KB's keys. `gold`, `synth` and `file` are here; `folder` is KbFolder (kgqa/kb/folder.py),
whose vocabulary, trie and overlay are saved.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

from kgqa.data.sources import SPLITS
from kgqa.data.tokenizer import CharTokenizer, Tokenizer
from kgqa.kb.arrow_reader import read_knowledge_kb
from kgqa.kb.columns import KnowledgeBase
from kgqa.kb.keyspace import KeySpace

log = logging.getLogger(__name__)


class KbSource:
    """What every `kb=` option gives the data module."""

    def build(self, data) -> KnowledgeBase:
        """The KB, from the data source `data` (its splits and gold triples) or from files."""
        raise NotImplementedError

    def tokenizer(self, texts: Iterable[str] = ()) -> CharTokenizer | None:
        """A saved vocabulary extended by the characters of `texts`; None: the data module builds one."""
        return None

    def keyspace(self, kb: KnowledgeBase, tokenizer: Tokenizer, order: str) -> KeySpace:
        """The KB's keys as token sequences in a trie: built from `kb` unless the source saved one."""
        return KeySpace(kb, tokenizer, order)


class GoldKB(KbSource):
    def build(self, data) -> KnowledgeBase:
        return KnowledgeBase(data.gold_triples())


class SynthKB(KbSource):
    def __init__(self, seed: int = 0, **options):
        self.seed, self.options = seed, options

    def build(self, data) -> KnowledgeBase:
        return KnowledgeBase(data.synth_triples(self.seed, **self.options))


class FileKB(KbSource):
    """A real KgCLUE Knowledge.txt (subject TAB predicate TAB object; .gz accepted)."""

    def __init__(self, path: str, on_bad_line: str = "error"):
        self.path, self.on_bad_line = Path(path), on_bad_line

    def build(self, data) -> KnowledgeBase:
        if not self.path.is_file():
            raise FileNotFoundError(f"KB file not found: {self.path} (set kb.path=...)")
        kb = read_knowledge_kb(self.path, self.on_bad_line)
        unanswerable = sum(e.triple.key not in kb for split in SPLITS for e in data.splits[split])
        if unanswerable:
            log.warning("%d labelled questions have a gold key that is not in %s", unanswerable, self.path)
        return kb
