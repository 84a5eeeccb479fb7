"""The trie mask: which tokens a step allows, and the step scores renormalised over them.

question → tokens → UniLM → step scores → [trie mask] → look-ahead → beam → key id → KB → answer.
The search (kgqa.decoding.beam) applies it itself, before any look-ahead rule: only tokens that
continue some KB key keep a score, so every hypothesis is a path in the trie.
"""
from __future__ import annotations

import numpy as np
import torch

from kgqa.decoding.context import StepContext, scatter
from kgqa.kb.keyspace import KeySpace


def step_context(keyspace: KeySpace, questions: list[list[int]], row_question: np.ndarray, prefixes: np.ndarray,
                 states: np.ndarray, device: torch.device = torch.device("cpu")) -> StepContext:
    """The context of one step: the rows' trie states and the (row, token) pairs the trie allows there."""
    allowed = keyspace.trie.allowed_tokens(states)
    branching_mask = np.bincount(allowed[0], minlength=len(states)) > 1
    return StepContext(keyspace, questions, row_question, prefixes, states, allowed, branching_mask,
                       np.flatnonzero(branching_mask), device)


def trie_mask(scores: torch.Tensor, ctx: StepContext) -> torch.Tensor:
    """Only tokens that continue some KB key, renormalised over them; -inf elsewhere (a whole row
    where nothing is allowed). Computed on the allowed pairs: a log-softmax per row over its pairs."""
    rows, tokens = ctx.allowed_index()
    kept = scores[rows, tokens]
    row_max = torch.full((len(scores),), float("-inf"), device=scores.device).scatter_reduce(0, rows, kept, "amax")
    kept = kept - row_max[rows]
    log_total = torch.zeros(len(scores), device=scores.device).index_add_(0, rows, kept.exp()).log()
    out = torch.full_like(scores, float("-inf"))
    out[rows, tokens] = kept - log_total[rows]
    return out


def masked_step_scores(branching_logits: torch.Tensor, ctx: StepContext) -> torch.Tensor:
    """[N, V] log-probs of the next token under the trie, from the model's logits on the branching
    rows only: a forced row (one allowed token) scores 0 for it whatever the model says, so the
    model need not run there; -inf elsewhere, and on rows that allow nothing."""
    forced = ~ctx.branching_mask[ctx.allowed[0]]
    out = scatter((len(ctx.states), branching_logits.shape[-1]), ctx.allowed[0][forced], ctx.allowed[1][forced],
                  torch.tensor(0.0), ctx.device, fill=float("-inf"))
    out[torch.from_numpy(ctx.branching).to(ctx.device)] = torch.log_softmax(branching_logits.float(), dim=-1)
    return trie_mask(out, ctx)


def model_step_scores(logits: torch.Tensor, ctx: StepContext) -> torch.Tensor:
    """[N, V] the model's own log-probs of the next token over the whole vocabulary, kept on the tokens
    the trie allows and -inf elsewhere, not renormalised: a key's score is then the model's probability
    of writing it, and a token the trie forces costs what the model says of it (after 主要 the trie
    allows only 成就; a model that expected 讲 pays for 成 here, where the renormalised score pays nothing)."""
    rows, tokens = ctx.allowed_index()
    out = torch.full(logits.shape, float("-inf"), device=logits.device)
    out[rows, tokens] = torch.log_softmax(logits.float(), dim=-1)[rows, tokens]
    return out
