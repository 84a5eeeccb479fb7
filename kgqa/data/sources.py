"""Where questions come from, as Hydra-instantiable objects.

Data sources (`data=`) give the QA splits, their gold triples and synthetic KB triples; the KB
sources (`kb=`, kgqa/kb/sources.py) turn a data source into a KnowledgeBase.
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path

from kgqa.data.kgclue import QAExample, read_qa
from kgqa.data.synth import synth_kb
from kgqa.data.toy import ToyData, make_toy
from kgqa.data.triples import Triple
from kgqa.errors import ConfigError

SPLITS = ("train", "val", "test")


class KgclueSource:
    """KgCLUE splits from a folder (train.json, dev.json, test_public.json by default).

    Nothing is read or checked when Hydra builds it (Hydra would wrap our one-line errors in its
    own), but when the data module is set up: before any training, each file read once."""

    def __init__(self, root: str, files: dict[str, str], on_bad_line: str = "error", limit: int | None = None):
        self.root, self.files, self.on_bad_line, self.limit = Path(root), dict(files), on_bad_line, limit

    @cached_property
    def examples(self) -> dict[str, list[QAExample]]:
        """Every question of each split; an empty split (or one left empty by skipped lines) is a DataError."""
        missing = [f for f in self.files.values() if not (self.root / f).is_file()]
        if missing:
            raise FileNotFoundError(f"KgCLUE data not found in {self.root}: missing {missing} (set data.root=...)")
        if self.limit is not None and not (type(self.limit) is int and self.limit >= 1):
            raise ConfigError(f"data.source.limit={self.limit}: give a positive number of questions per split, "
                              "or null for all")
        return {split: read_qa(self.root / self.files[split], self.on_bad_line) for split in SPLITS}

    @cached_property
    def splits(self) -> dict[str, list[QAExample]]:
        return {split: examples[: self.limit] for split, examples in self.examples.items()}

    def gold_triples(self) -> list[Triple]:
        """Every answer triple of the labelled splits (all of them: test subjects never occur in train)."""
        return [e.triple for split in SPLITS for e in self.examples[split]]

    def synth_triples(self, seed: int, **options) -> list[Triple]:
        return synth_kb(self.gold_triples(), seed=seed, **options)


class ToySource:
    """The embedded synthetic dataset: runs anywhere, no files needed."""

    def __init__(self, seed: int = 0, **options):
        self.seed, self.options = seed, options

    @cached_property
    def _toy(self) -> ToyData:
        """Generated when the data module is set up (as KgclueSource reads its files); too few entities
        can leave a split without questions, which is a ConfigError then."""
        toy = make_toy(seed=self.seed, **self.options)
        empty = [split for split in SPLITS if not toy.splits[split]]
        if empty:
            raise ConfigError(f"the toy data ({self.options}) has no {' or '.join(empty)} questions: "
                              "raise data.source.n_entities")
        return toy

    @property
    def splits(self) -> dict[str, list[QAExample]]:
        return self._toy.splits

    def gold_triples(self) -> list[Triple]:
        return [e.triple for split in SPLITS for e in self._toy.splits[split]]

    def synth_triples(self, seed: int, **options) -> list[Triple]:
        """The toy KB already holds its own distractors."""
        return self._toy.triples

