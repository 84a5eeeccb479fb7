"""Step-score processors, applied in turn to the log-probabilities of each decoding step.

Like transformers' logits processors, each is a small object: the trie mask keeps only
tokens that continue a KB key; a look-ahead rule re-weights the allowed tokens by how
much of the question the keys through each token could still cover.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
from rapidfuzz import process
from rapidfuzz.distance import LCSseq

from kgqa.keyspace import KeySpace


@dataclass
class StepContext:
    """What a processor may look at in one step, for N beams (rows)."""

    keyspace: KeySpace
    questions: list[list[int]]  # question tokens (no special tokens), per question
    row_question: np.ndarray  # [N] question index of each row
    prefixes: torch.Tensor  # [N, t] target tokens decoded so far
    states: np.ndarray  # [N] trie node of each row
    allowed: tuple[np.ndarray, np.ndarray] = field(init=False)  # (row, token) pairs

    def __post_init__(self):
        self.allowed = self.keyspace.trie.allowed_tokens(self.states)

    def allowed_mask(self, vocab_size: int) -> torch.Tensor:
        mask = torch.zeros(len(self.states), vocab_size, dtype=torch.bool)
        mask[torch.from_numpy(self.allowed[0]), torch.from_numpy(self.allowed[1].astype(np.int64))] = True
        return mask.to(self.prefixes.device)


def renormalise(scores: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(scores, dim=-1)


class TrieMask:
    """Only tokens that continue some KB key; renormalised over them."""

    def __call__(self, scores: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return renormalise(scores.masked_fill(~ctx.allowed_mask(scores.shape[-1]), float("-inf")))


class LcsLookahead:
    """Base of the look-ahead rules: Δ per allowed token, once S is decoded and >1 token is allowed.

    Δ(token) = max over the keys through prefix+token of LCS(question, key) − LCS(question, prefix),
    floored at 0 (special tokens left out of both), as in the article's reference code.
    """

    def __init__(self, cache_size: int = 65536):
        self._completions = lru_cache(maxsize=cache_size)(self._completions_uncached)
        self._keyspace: KeySpace | None = None

    def _completions_uncached(self, state: int, depth: int) -> tuple[np.ndarray, list[list[int]]]:
        """Next token and content tokens of every key through a trie node (memoised per node)."""
        ks = self._keyspace
        seqs = [ks.key_tokens[k] for k in ks.trie.values_under(state)]
        return np.array([s[depth] for s in seqs]), [[t for t in s if t != ks.sep_id] for s in seqs]

    def gains(self, ctx: StepContext, vocab_size: int) -> torch.Tensor:
        """Δ as a dense [N, V] tensor (0 where the rule does not apply)."""
        if self._keyspace is not ctx.keyspace:
            self._keyspace = ctx.keyspace
            self._completions.cache_clear()
        sep = ctx.keyspace.sep_id
        delta = np.zeros((len(ctx.states), vocab_size), dtype=np.float32)
        depth = ctx.prefixes.shape[1]
        n_allowed = np.bincount(ctx.allowed[0], minlength=len(ctx.states))
        prefixes = ctx.prefixes.tolist()
        for row in np.flatnonzero(n_allowed > 1):
            prefix = prefixes[row]
            if sep not in prefix:
                continue
            question = ctx.questions[ctx.row_question[row]]
            next_tokens, contents = self._completions(int(ctx.states[row]), depth)
            covered = LCSseq.similarity(question, [t for t in prefix if t != sep])
            best = process.cdist([question], contents, scorer=LCSseq.similarity, dtype=np.int32)[0] - covered
            np.maximum.at(delta[row], next_tokens, best.astype(np.float32))
        return torch.from_numpy(delta).to(ctx.prefixes.device)


class LcsPowerLookahead(LcsLookahead):
    """The article's rule: p ← p^(1/(Δ+1)), renormalised over the allowed tokens."""

    def __call__(self, scores: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return renormalise(scores / (self.gains(ctx, scores.shape[-1]) + 1))


class LcsBonusLookahead(LcsLookahead):
    """An additive alternative: log p + α·Δ, renormalised. α sets how much coverage may outweigh the model."""

    def __init__(self, alpha: float = 1.0, cache_size: int = 65536):
        super().__init__(cache_size)
        self.alpha = alpha

    def __call__(self, scores: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return renormalise(scores + self.alpha * self.gains(ctx, scores.shape[-1]))
