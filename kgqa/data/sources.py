"""Where questions and KB triples come from, as Hydra-instantiable objects.

Data sources (`data=`) give the QA splits and their gold triples; KB sources (`kb=`)
turn a data source into a KnowledgeBase.
"""
from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path

from kgqa.data.kb import KnowledgeBase
from kgqa.data.kgclue import QAExample, read_knowledge, read_qa
from kgqa.data.synth import synth_kb
from kgqa.data.toy import make_toy
from kgqa.data.triples import Triple

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


class KgclueSource:
    """KgCLUE splits from a folder (train.json, dev.json, test_public.json by default)."""

    def __init__(self, root: str, files: dict[str, str], on_bad_line: str = "error", limit: int | None = None):
        self.root, self.files, self.on_bad_line, self.limit = Path(root), dict(files), on_bad_line, limit
        missing = [f for f in self.files.values() if not (self.root / f).is_file()]
        if missing:
            raise FileNotFoundError(f"KgCLUE data not found in {self.root}: missing {missing} (set data.root=...)")

    @cached_property
    def splits(self) -> dict[str, list[QAExample]]:
        out = {}
        for split in SPLITS:
            examples = read_qa(self.root / self.files[split], self.on_bad_line)
            out[split] = examples[: self.limit] if self.limit else examples
        return out

    def gold_triples(self) -> list[Triple]:
        """Every answer triple of the labelled splits (all of them: test subjects never occur in train)."""
        return [e.triple for split in SPLITS for e in read_qa(self.root / self.files[split], self.on_bad_line)]

    def synth_triples(self, seed: int, **options) -> list[Triple]:
        return synth_kb(self.gold_triples(), seed=seed, **options)


class ToySource:
    """The embedded synthetic dataset: runs anywhere, no files needed."""

    def __init__(self, seed: int = 0, **options):
        self._toy = make_toy(seed=seed, **options)

    @property
    def splits(self) -> dict[str, list[QAExample]]:
        return self._toy.splits

    def gold_triples(self) -> list[Triple]:
        return [e.triple for split in SPLITS for e in self._toy.splits[split]]

    def synth_triples(self, seed: int, **options) -> list[Triple]:
        """The toy KB already holds its own distractors."""
        return self._toy.triples


class GoldKB:
    def build(self, data) -> KnowledgeBase:
        return KnowledgeBase(data.gold_triples())


class SynthKB:
    def __init__(self, seed: int = 0, **options):
        self.seed, self.options = seed, options

    def build(self, data) -> KnowledgeBase:
        return KnowledgeBase(data.synth_triples(self.seed, **self.options))


class FileKB:
    """A real KgCLUE Knowledge.txt (subject TAB predicate TAB object; .gz accepted)."""

    def __init__(self, path: str, on_bad_line: str = "error"):
        self.path, self.on_bad_line = Path(path), on_bad_line

    def build(self, data) -> KnowledgeBase:
        if not self.path.is_file():
            raise FileNotFoundError(f"KB file not found: {self.path} (set kb.path=...)")
        kb = KnowledgeBase(read_knowledge(self.path, self.on_bad_line))
        unanswerable = sum(e.triple.key not in kb for split in SPLITS for e in data.splits[split])
        if unanswerable:
            log.warning("%d labelled questions have a gold key that is not in %s", unanswerable, self.path)
        return kb
