"""Trie-constrained beam search over a batch of questions.

question → tokens → UniLM → step scores → trie mask → look-ahead → beam → KB key.
Every hypothesis is a path in the trie, so every answer is a key of the KB. Scores
only decrease (renormalised log-probabilities), so a question is done once its
num_return-th finished key beats its best live beam.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from kgqa.decoding.processors import StepContext
from kgqa.keyspace import KeySpace
from kgqa.model import UniLM

Processor = Callable[[torch.Tensor, StepContext], torch.Tensor]


@dataclass(frozen=True)
class Hypothesis:
    key_id: int
    log_prob: float  # under the constraint (and look-ahead): exp() is the answer's confidence


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Questions end at the same column, so every beam's next token is predicted at the last one."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    valid = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        valid[i, width - len(s) :] = True
    return ids.to(device), valid.to(device)


@torch.no_grad()
def beam_search(
    model: UniLM,
    keyspace: KeySpace,
    questions: Sequence[Sequence[int]],
    processors: Sequence[Processor],
    pad_id: int,
    beam_size: int = 3,
    num_return: int = 1,
) -> list[list[Hypothesis]]:
    """Top keys per question. `questions` are encoded "[CLS] q [SEP]" token ids."""
    if num_return > beam_size:
        raise ValueError(f"num_return ({num_return}) cannot exceed beam_size ({beam_size})")
    device = next(model.parameters()).device
    B, K = len(questions), beam_size
    q_ids, q_valid = left_pad(questions, pad_id, device)
    q_ids, q_valid = q_ids.repeat_interleave(K, 0), q_valid.repeat_interleave(K, 0)
    content = [list(q[1:-1]) for q in questions]
    row_question = np.repeat(np.arange(B), K)

    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one live beam per question at the start
    prefixes = torch.zeros(B * K, 0, dtype=torch.long, device=device)
    dead_state = keyspace.trie.DEAD  # dead beams allow nothing and cost nothing
    states = np.full(B * K, dead_state, dtype=np.int64)
    states[::K] = keyspace.trie.ROOT
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    done = np.zeros(B, dtype=bool)

    while not done.all():
        ids = torch.cat([q_ids, prefixes], 1)
        segments = torch.cat([torch.zeros_like(q_ids), torch.ones_like(prefixes)], 1)
        valid = torch.cat([q_valid, torch.ones_like(prefixes, dtype=torch.bool)], 1)
        step_scores = torch.log_softmax(model(ids, segments, valid)[:, -1].float(), dim=-1)
        ctx = StepContext(keyspace, content, row_question, prefixes, states)
        for process in processors:
            step_scores = process(step_scores, ctx)
        V = step_scores.shape[-1]
        alive = torch.isfinite(scores.view(-1, 1))
        total = torch.where(alive, scores.view(-1, 1) + step_scores, float("-inf")).view(B, K * V)
        top_scores, top_idx = total.topk(2 * K, dim=1)
        top_scores, top_idx = top_scores.cpu().numpy(), top_idx.cpu().numpy()

        rows, tokens = (np.arange(B)[:, None] * K + top_idx // V), top_idx % V
        next_states = keyspace.trie.step(states[rows.ravel()], tokens.ravel()).reshape(B, 2 * K)
        leaves = keyspace.trie.is_leaf(np.maximum(next_states, 0).ravel()).reshape(B, 2 * K)

        keep_rows, keep_tokens, keep_states = rows[:, :K].copy(), tokens[:, :K].copy(), np.full((B, K), dead_state)
        new_scores = np.full((B, K), -np.inf, dtype=np.float32)
        for b in np.flatnonzero(~done):
            live = 0
            for r in range(2 * K):
                s = top_scores[b, r]
                if not np.isfinite(s) or live == K:
                    break
                if leaves[b, r]:
                    if r < K:
                        key_id = int(keyspace.trie.values_under(int(next_states[b, r]))[0])
                        finished[b].append(Hypothesis(key_id, float(s)))
                    continue
                keep_rows[b, live], keep_tokens[b, live] = rows[b, r], tokens[b, r]
                keep_states[b, live], new_scores[b, live] = next_states[b, r], s
                live += 1
            finished[b].sort(key=lambda h: -h.log_prob)
            enough = len(finished[b]) >= num_return
            done[b] = live == 0 or (enough and finished[b][num_return - 1].log_prob >= new_scores[b, 0])
        new_scores[done], keep_states[done] = -np.inf, dead_state

        flat_rows = torch.from_numpy(keep_rows.ravel()).to(device)
        prefixes = torch.cat([prefixes[flat_rows], torch.from_numpy(keep_tokens.reshape(-1, 1)).to(device)], 1)
        states = keep_states.ravel()
        scores = torch.from_numpy(new_scores).to(device)
    return [f[:num_return] for f in finished]
