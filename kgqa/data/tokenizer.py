"""Tokenizers: a character vocabulary for from-scratch backbones, or a pretrained one.

The character vocabulary covers the training questions and every KB string, so no
KB character is [UNK] (a failure the article names). Keys are encoded as
part1 [SEP] part2 [SEP] part3 [SEP] in the configured target order.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Protocol

from kgqa.data.triples import Key

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


class Tokenizer(Protocol):
    pad_id: int
    cls_id: int
    sep_id: int
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...
    def save(self, path: str | Path) -> None: ...


class CharTokenizer:
    def __init__(self, vocab: list[str]):
        if tuple(vocab[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"a character vocabulary starts with {SPECIAL_TOKENS}")
        self.vocab = list(vocab)
        self._ids = {c: i for i, c in enumerate(self.vocab)}
        self.pad_id, self.unk_id, self.cls_id, self.sep_id = range(len(SPECIAL_TOKENS))

    @classmethod
    def build(cls, texts: Iterable[str]) -> "CharTokenizer":
        chars = sorted({c for t in texts for c in t})
        return cls(list(SPECIAL_TOKENS) + chars)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        return [self._ids.get(c, self.unk_id) for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.vocab[i] for i in ids if i >= len(SPECIAL_TOKENS))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"type": "char", "vocab": self.vocab}, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "CharTokenizer":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("type") != "char":
            raise ValueError(f"{path}: not a kgqa character vocabulary")
        return cls(data["vocab"])


class PretrainedTokenizer:
    """A transformers tokenizer (the pretrained backbone's own), without special tokens per part."""

    def __init__(self, name_or_path: str):
        from transformers import AutoTokenizer

        self.hf = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=False)
        self.pad_id, self.cls_id, self.sep_id = self.hf.pad_token_id, self.hf.cls_token_id, self.hf.sep_token_id
        self.vocab_size = len(self.hf)

    def encode(self, text: str) -> list[int]:
        return self.hf(text, add_special_tokens=False)["input_ids"]

    def save(self, path: str | Path) -> None:
        self.hf.save_pretrained(str(path))


def encode_key(tokenizer: Tokenizer, key: Key, order: str) -> list[int]:
    ids: list[int] = []
    for part in key.parts(order):
        ids += tokenizer.encode(part) + [tokenizer.sep_id]
    return ids


def encode_question(tokenizer: Tokenizer, question: str, max_len: int) -> list[int]:
    """[CLS] question [SEP], the question cut to max_len tokens."""
    return [tokenizer.cls_id] + tokenizer.encode(question)[:max_len] + [tokenizer.sep_id]
