"""Tokenizers: a character vocabulary for from-scratch backbones, or a pretrained one read one
character per token.

Either covers the training questions and every KB string, so no KB character is [UNK] (a failure
the article names): the character vocabulary is built from them, the pretrained one gets the
characters it lacks added. Keys are encoded as part1 [SEP] part2 [SEP] part3 [SEP] in the
configured target order.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Iterable, Protocol

from kgqa.data.triples import Key
from kgqa.errors import ConfigError

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


class Tokenizer(Protocol):
    pad_id: int
    cls_id: int
    sep_id: int
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...
    def missing(self, texts: Iterable[str]) -> list[str]: ...
    def state(self) -> dict: ...
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

    def missing(self, texts: Iterable[str]) -> list[str]:
        """The characters of `texts` this vocabulary would read as [UNK], sorted."""
        return sorted({c for t in texts for c in t} - self._ids.keys())

    def state(self) -> dict:
        """What a checkpoint keeps (kgqa.checkpoints.tokenizer_from_state reads it back)."""
        return {"vocab": list(self.vocab)}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"type": "char", "vocab": self.vocab}, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "CharTokenizer":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("type") != "char":
            raise ValueError(f"{path}: not a kgqa character vocabulary")
        return cls(data["vocab"])


def load_hub_tokenizer(name_or_path: str):
    """The tokenizer a pretrained folder (or hub name) names, or its vocab.txt read by BertTokenizer when
    that class needs a package that is not installed: the RoFormer ports name RoFormerTokenizer, whose
    jieba word segmentation (rjieba) kgqa never uses, since it reads the vocabulary one character a token."""
    from transformers import AutoTokenizer, BertTokenizer

    try:
        try:
            return AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=False)
        except ImportError as e:
            log.info("%s: %s; reading its vocab.txt with BertTokenizer", name_or_path, str(e).split(".")[0])
            return BertTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"backbone.pretrained={name_or_path}: no tokenizer could be read there "
                          f"({type(e).__name__}: {str(e)[:200]})") from None


def fingerprint(ids: dict[str, int], lower_case: bool) -> str:
    """Tells one pretrained vocabulary (and its casing) from another."""
    text = json.dumps([lower_case, sorted(ids.items(), key=lambda item: item[1])], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class PretrainedTokenizer:
    """A pretrained backbone's vocabulary, read one character per token.

    The encoding is kgqa's own, not the folder's tokenizer's: each character (lower-cased when that
    tokenizer lower-cases, as the article does) is one token, never a WordPiece `##` piece or a jieba
    word. So a key spells the same inside a question and alone (subject copy and the look-ahead compare
    those tokens), and every key part splits where encode_key puts its [SEP]. Characters the vocabulary
    lacks are `added` after it, with the next ids (build_tokenizer adds the KB's and the training
    questions': no [UNK]); the model's embeddings grow to match (kgqa.model.build_backbone)."""

    def __init__(self, name_or_path: str, added: Iterable[str] = ()):
        hf = load_hub_tokenizer(name_or_path)
        self.name_or_path = name_or_path
        self.lower_case = bool(getattr(hf, "do_lower_case", False))
        self._ids = dict(hf.get_vocab())
        self.fingerprint = fingerprint(self._ids, self.lower_case)  # a checkpoint's added ids follow this vocabulary
        self.base_size = max(self._ids.values()) + 1
        self.pad_id, self.unk_id = hf.pad_token_id, hf.unk_token_id
        self.cls_id, self.sep_id = hf.cls_token_id, hf.sep_token_id
        self.added: list[str] = []
        self.add(added)

    @property
    def vocab_size(self) -> int:
        return self.base_size + len(self.added)

    def normalise(self, char: str) -> str:
        lowered = char.lower() if self.lower_case else char
        return lowered if len(lowered) == 1 else char

    def missing(self, texts: Iterable[str]) -> list[str]:
        """The characters of `texts` (normalised) that this vocabulary would read as [UNK], sorted."""
        return sorted({self.normalise(c) for t in texts for c in t} - self._ids.keys())

    def add(self, chars: Iterable[str]) -> None:
        for char in chars:
            if char not in self._ids:
                self._ids[char] = self.vocab_size
                self.added.append(char)

    def encode(self, text: str) -> list[int]:
        return [self._ids.get(self.normalise(c), self.unk_id) for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        tokens = {i: t for t, i in self._ids.items()}
        special = {self.pad_id, self.unk_id, self.cls_id, self.sep_id}
        return "".join(tokens[i] for i in ids if i not in special)

    def state(self) -> dict:
        """What a checkpoint keeps: the folder, its vocabulary's fingerprint and the added characters."""
        return {"pretrained": self.name_or_path, "fingerprint": self.fingerprint, "added": list(self.added)}

    @classmethod
    def from_state(cls, state: dict) -> "PretrainedTokenizer":
        tokenizer = cls(state["pretrained"], state["added"])
        if tokenizer.fingerprint != state["fingerprint"]:
            raise ValueError(f"the vocabulary at {state['pretrained']} is not the one the model was trained with")
        return tokenizer

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"type": "pretrained", **self.state()}, ensure_ascii=False), encoding="utf-8")


def encode_parts(tokenizer: Tokenizer, parts: tuple[str, ...]) -> list[int]:
    """Each part followed by [SEP]: how UniLM's target spells a key (and pre-training every text)."""
    ids: list[int] = []
    for part in parts:
        ids += tokenizer.encode(part) + [tokenizer.sep_id]
    return ids


def encode_key(tokenizer: Tokenizer, key: Key, order: str) -> list[int]:
    return encode_parts(tokenizer, key.parts(order))


def encode_question(tokenizer: Tokenizer, question: str, max_len: int) -> list[int]:
    """[CLS] question [SEP], the question cut to max_len tokens."""
    return [tokenizer.cls_id] + tokenizer.encode(question)[:max_len] + [tokenizer.sep_id]
