"""LightningDataModule: QA splits, the KB, the tokenizer and the key trie, built once."""
from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from kgqa.data.kb import KnowledgeBase
from kgqa.data.kgclue import QAExample
from kgqa.data.tokenizer import CharTokenizer, PretrainedTokenizer, Tokenizer, encode_key, encode_question
from kgqa.keyspace import KeySpace

log = logging.getLogger(__name__)


def build_tokenizer(pretrained: str | None, train: list[QAExample], kb: KnowledgeBase) -> Tokenizer:
    if pretrained:
        return PretrainedTokenizer(pretrained)
    kb_strings = (s for k in kb.keys for s in (k.subject, k.predicate, k.meaning))
    return CharTokenizer.build([e.question for e in train] + list(kb_strings))


class KgqaDataModule(L.LightningDataModule):
    def __init__(self, source, kb_source, target: str = "spm", batch_size: int = 32, eval_batch_size: int = 64,
                 max_question_len: int = 64, num_workers: int = 0, pretrained: str | None = None,
                 tokenizer: Tokenizer | None = None):
        """`tokenizer` is given when restoring a trained model (its saved vocabulary)."""
        super().__init__()
        self.source, self.kb_source, self.target = source, kb_source, target
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.max_question_len, self.pretrained = max_question_len, pretrained
        self.tokenizer = tokenizer
        self.kb: KnowledgeBase | None = None
        self.keyspace: KeySpace | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.keyspace is not None:
            return
        self.splits = self.source.splits
        self.kb = self.kb_source.build(self.source)
        log.info("KB: %s", self.kb.stats())
        if self.tokenizer is None:
            self.tokenizer = build_tokenizer(self.pretrained, self.splits["train"], self.kb)
        self.keyspace = KeySpace(self.kb, self.tokenizer, self.target)

    # --- checkpoint: the tokenizer travels with the weights ---------------------------
    def state_dict(self) -> dict[str, Any]:
        if isinstance(self.tokenizer, CharTokenizer):
            return {"vocab": list(self.tokenizer.vocab)}
        return {"pretrained": self.pretrained}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if isinstance(self.tokenizer, CharTokenizer) and state.get("vocab") != self.tokenizer.vocab:
            raise ValueError("the checkpoint's vocabulary differs from this data module's tokenizer")

    # --- batches ---------------------------------------------------------------------
    def encode_pair(self, example: QAExample) -> tuple[list[int], list[int]]:
        return encode_question(self.tokenizer, example.question, self.max_question_len), encode_key(self.tokenizer, example.triple.key, self.target)

    def collate(self, examples: list[QAExample]) -> dict[str, Any]:
        """Teacher-forcing tensors (dynamic padding) plus the raw examples for decoding."""
        pairs = [self.encode_pair(e) for e in examples]
        width = max(len(q) + len(t) for q, t in pairs)
        ids = torch.full((len(pairs), width), self.tokenizer.pad_id, dtype=torch.long)
        segments = torch.zeros_like(ids)
        valid = torch.zeros_like(ids, dtype=torch.bool)
        for i, (q, t) in enumerate(pairs):
            ids[i, : len(q) + len(t)] = torch.tensor(q + t)
            segments[i, len(q) : len(q) + len(t)] = 1
            valid[i, : len(q) + len(t)] = True
        return {"input_ids": ids, "segment_ids": segments, "valid": valid, "examples": examples}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(self.splits[split], batch_size=self.batch_size if shuffle else self.eval_batch_size,
                          shuffle=shuffle, collate_fn=self.collate, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
