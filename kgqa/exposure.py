"""Exposure bias in training (conf/exposure/): teacher forcing only ever shows the model gold prefixes,
decoding shows it its own, so a slip early in a key (主要 for 主讲) is a prefix it never learnt to go on from.

Two remedies from the article's author (kexue.fm/archives/7259) change what the model *reads* at some target
positions while what it must *predict* stays the gold key:
- `replace_with: sibling`: a token the trie also allows at that point (the model's likely slips are the
  look-alike siblings of the gold key's tokens: 主要成就 beside 主讲课程);
- `replace_with: model`: the model's own trie-constrained choice at that point (scheduled sampling, in one
  teacher-forced pass as in parallel scheduled sampling, Duckworth et al. 2019), optionally ramped up.
And TeaForN (Goodman et al. 2020; kexue.fm/archives/7818): teacher forcing N steps ahead, each further pass
reading the last pass's predictions (as their expected embeddings) in place of the gold tokens; and R-Drop
(Liang et al. 2021), two dropout passes held together by their symmetric KL.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from kgqa.model import target_positions


def sibling_tokens(targets: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """At each target position [N], a token the trie allows there other than the gold one, drawn uniformly;
    the gold token where the trie allows nothing else. `allowed`: (position, token) pairs [K, 2]."""
    position, token = allowed.unbind(1)
    other = token != targets[position]
    draw = torch.rand(len(position), device=targets.device).masked_fill(~other, -1.0)
    best = torch.full(targets.shape, -1.0, device=targets.device).scatter_reduce(0, position, draw, "amax")
    chosen = other & (draw == best[position])
    out = targets.clone()
    out[position[chosen]] = token[chosen]
    return out


def model_tokens(scores: torch.Tensor, targets: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """At each target position, the token the model's step scores [N, V] rank first among those the trie allows
    there (its greedy constrained step after the gold prefix); the gold token where the trie allows none."""
    position, token = allowed.unbind(1)
    masked = torch.full_like(scores, float("-inf"))
    masked[position, token] = scores[position, token]
    reached = torch.zeros(targets.shape, dtype=torch.bool, device=targets.device)
    reached[position] = True
    return torch.where(reached, masked.argmax(-1), targets)


def read_with_replacements(input_ids: torch.Tensor, segment_ids: torch.Tensor, valid: torch.Tensor,
                           replacements: torch.Tensor, rate: float) -> torch.Tensor:
    """input_ids with each target token (row-major, as UniLM.target_scores numbers them) replaced by its
    `replacements` entry with probability `rate`. Only what later positions read changes: the position that
    predicts a token never sees it (causal attention), so every label stays the gold token."""
    rows, columns = target_positions(segment_ids, valid)
    chosen = torch.rand(len(rows), device=input_ids.device) < rate
    out = input_ids.clone()
    out[rows[chosen], columns[chosen] + 1] = replacements[chosen]
    return out


def teaforn_loss(scores: torch.Tensor, pass_loss: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                 weight: float, steps: int, through: bool = False) -> torch.Tensor:
    """TeaForN's passes after the first (whose `scores` [N, V] are given): pass k reads pass k-1's
    distributions (the softmax of its scores), `pass_loss(read)` gives its scores and loss, and the sum
    weighs pass k's loss by weight**k (the first pass's, weight 1, is the caller's). What a pass reads is
    held fixed unless `through`: the loss reaching back through it taught the first pass to be read, not
    to be right (the toy set, 8 epochs: val EM 0.667 against 0.9 and more; experiments/RESULTS.md)."""
    total = scores.new_zeros(())
    for n in range(1, steps):
        read = torch.softmax(scores.float(), -1)
        scores, loss = pass_loss(read if through else read.detach())
        total = total + weight**n * loss
    return total


def symmetric_kl(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """R-Drop's term: the mean over positions of KL(p‖q) + KL(q‖p) of two passes' step scores [N, V]."""
    p, q = torch.log_softmax(first.float(), -1), torch.log_softmax(second.float(), -1)
    kl = F.kl_div(q, p, log_target=True, reduction="sum") + F.kl_div(p, q, log_target=True, reduction="sum")
    return kl / (2 * max(len(first), 1))
