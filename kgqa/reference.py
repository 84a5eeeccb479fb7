"""Slow, obviously correct references, kept only to check the fast code against (tests, benchmarks).

Nothing on the decoding path (question → tokens → UniLM → step scores → trie mask → look-ahead →
beam → key id → KB → answer) imports this module: tests/ compare kgqa.trie, kgqa.metrics and
kgqa.decoding with it, and experiments/bench_trie.py and bench_decode.py time the project against it.
Each piece is written as the article's code or a textbook writes it, once.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # bench_trie measures its process's memory: importing this module must not load torch
    from kgqa.model import UniLM


def lcs(a, b) -> int:
    """Length of the longest common subsequence of two sequences, by the textbook DP (one row kept)."""
    row = [0] * (len(b) + 1)
    for x in a:
        diagonal = 0
        for j, y in enumerate(b):
            diagonal, row[j + 1] = row[j + 1], diagonal + 1 if x == y else max(row[j + 1], row[j])
    return row[-1]


class DictTrie:
    """The article's Trie: a dict per node keyed by the token as a string (as json.dump writes it),
    the value under "-1" at the end of a key; next tokens by walking from the root."""

    END = "-1"

    def __init__(self, data: dict | None = None):
        self.data = {} if data is None else data

    def add(self, key, value) -> None:
        node = self.data
        for t in key:
            node = node.setdefault(str(t), {})
        node[self.END] = value

    def _node(self, prefix) -> dict:
        node = self.data
        for t in prefix:
            node = node[str(t)]
        return node

    def value(self, key):
        return self._node(key)[self.END]

    def next_ones(self, prefix) -> list[str]:
        """The tokens allowed after `prefix`, as the strings the trie stores."""
        return [k for k in self._node(prefix) if k != self.END]

    def keys(self, prefix, node: dict | None = None) -> list[list[int]]:
        """Every key that starts with `prefix` (recursively, as the article's Trie.keys)."""
        node = self._node(prefix) if node is None else node
        out = []
        for t, child in node.items():
            out += [list(prefix)] if t == self.END else self.keys(list(prefix) + [int(t)], child)
        return out

    def save(self, path: Path) -> None:
        with open(path, "w") as f:
            json.dump(self.data, f)

    @classmethod
    def load(cls, path: Path) -> "DictTrie":
        with open(path) as f:
            return cls(json.load(f))


class NaiveDecoder:
    """The article's AutoQA decoder, one question at a time, on a kgqa UniLM.

    The look-ahead computes what the project defines (README): Δ over content tokens, applied
    to the trie-masked, renormalised probabilities. `literal=True` instead follows the article's
    code to the letter: LCS over the raw ids ([CLS] question [SEP] against keys with their
    [SEP]s) and p^(1/w) on the full softmax before the trie mask renormalises.
    """

    def __init__(self, model: UniLM, keys: list[list[int]], sep_id: int, lookahead: bool, literal: bool = False):
        self.model, self.sep, self.lookahead, self.literal = model, sep_id, lookahead, literal
        self.trie = DictTrie()
        for key_id, key in enumerate(keys):
            self.trie.add(key, key_id)

    def content(self, ids) -> list[int]:
        return list(ids) if self.literal else [t for t in ids if t != self.sep]

    def predict(self, question: list[int], output_ids: list[list[int]]) -> np.ndarray:
        """Next-token probabilities [rows, V] under the trie (and the look-ahead): full recompute."""
        import torch  # here, not at the top: see TYPE_CHECKING above
        device = next(self.model.parameters()).device
        ids = torch.tensor([question + o for o in output_ids], device=device)
        segments = torch.tensor([[0] * len(question) + [1] * len(o) for o in output_ids], device=device)
        with torch.no_grad():
            logits = self.model(ids, segments, torch.ones_like(ids, dtype=torch.bool))[:, -1]
        probas = torch.softmax(logits.double(), -1).cpu().numpy()
        q = self.content(question if self.literal else question[1:-1])
        new_probas = np.zeros_like(probas)
        for i, prefix in enumerate(output_ids):
            allowed = [int(t) for t in self.trie.next_ones(prefix)]
            p = probas[i, allowed]
            if not self.literal:
                p = p / p.sum()  # the trie mask renormalises first
            if self.lookahead and len(allowed) > 1 and self.sep in prefix:
                weights = dict.fromkeys(allowed, 1.0)
                covered = lcs(self.content(prefix), q)
                for c in self.trie.keys(prefix):
                    if len(c) > len(prefix):
                        w = lcs(self.content(c), q) - covered
                        weights[c[len(prefix)]] = max(w + 1, weights[c[len(prefix)]])
                p = p ** (1 / np.array([weights[t] for t in allowed]))
            new_probas[i, allowed] = p / p.sum()
        return new_probas

    def beam_search(self, question: list[int], topk: int, min_ends: int = 3,
                    maxlen: int = 256) -> tuple[list[int], float]:
        """bert4keras's AutoRegressiveDecoder.beam_search: finished hypotheses leave the beam (which
        shrinks); the search returns as soon as the best hypothesis of a step is finished.
        (bert4keras scores log(p + 1e-12), which can put a token outside the trie into a beam and
        break the trie lookup; here such tokens score -inf and never enter a beam.)"""
        output_ids, output_scores = [[]], np.zeros(1)
        for _ in range(maxlen):
            with np.errstate(divide="ignore"):
                scores = output_scores[:, None] + np.log(self.predict(question, output_ids))
            k = min(topk, int(np.isfinite(scores).sum()))
            rows, tokens = np.unravel_index(np.argpartition(scores, -k, axis=None)[-k:], scores.shape)
            output_ids = [output_ids[r] + [int(t)] for r, t in zip(rows, tokens)]
            output_scores = scores[rows, tokens]
            is_end = np.array([o[-1] == self.sep for o in output_ids])
            end_counts = np.array([o.count(self.sep) for o in output_ids])
            best = output_scores.argmax()
            if is_end[best] and end_counts[best] >= min_ends:
                return output_ids[best], float(output_scores[best])
            unfinished = ~is_end | (end_counts < min_ends)
            output_ids = [o for o, keep in zip(output_ids, unfinished) if keep]
            output_scores, topk = output_scores[unfinished], int(unfinished.sum())
        return output_ids[output_scores.argmax()], float(output_scores.max())

    def answer(self, question: list[int], beam: int) -> tuple[int, float]:
        """The answer's key id and its score (log-probability under the rule)."""
        ids, score = self.beam_search(question, beam)
        return self.trie.value(ids), score
