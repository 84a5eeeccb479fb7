"""What every step of the decoding shares: the step context and the look-ahead rule protocol.

question → tokens → UniLM → step scores → trie mask → [look-ahead] → beam → key id → KB → answer.
The search (kgqa.decoding.beam) builds a StepContext per step with the trie's allowed tokens
(kgqa.decoding.mask.step_context) and hands it, with the masked step scores, to each look-ahead
rule in turn (kgqa.decoding.processors). Imports go one way: context ← mask, processors ← beam ← answerer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from kgqa.kb.keyspace import KeySpace


@dataclass
class StepContext:
    """What a rule may look at in one step, for N beams (rows)."""

    keyspace: KeySpace
    questions: list[list[int]]  # question tokens (no special tokens), per question
    row_question: np.ndarray  # [N] question index of each row
    prefixes: np.ndarray  # [N, t] target tokens decoded so far
    states: np.ndarray  # [N] trie node of each row
    allowed: tuple[np.ndarray, np.ndarray]  # (row, token) pairs the trie allows
    branching_mask: np.ndarray  # [N] rows that allow more than one token: the model runs on these only
    branching: np.ndarray  # their indices
    device: torch.device = torch.device("cpu")  # where the step scores live

    def allowed_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (row, token) pairs as index tensors on the device."""
        return tuple(torch.from_numpy(np.asarray(a, dtype=np.int64)).to(self.device) for a in self.allowed)


class Rule(Protocol):
    """A look-ahead rule: re-weights the trie-masked log-probs [N, V] of a step; -inf stays -inf."""

    def __call__(self, scores: torch.Tensor, ctx: StepContext) -> torch.Tensor: ...


def scatter(shape: tuple[int, int], rows: np.ndarray, tokens: np.ndarray, values, device,
            fill: float = 0.0) -> torch.Tensor:
    """A tensor on the device, `fill` except for `values` at (rows, tokens): only the pairs travel."""
    values = torch.as_tensor(values)
    out = torch.full(shape, fill, dtype=values.dtype, device=device)
    index = tuple(torch.from_numpy(np.asarray(a, dtype=np.int64)).to(device) for a in (rows, tokens))
    out[index] = values.to(device)
    return out
