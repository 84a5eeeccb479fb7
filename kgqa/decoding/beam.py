"""Trie-constrained beam search over a batch of questions.

question → tokens → UniLM → step scores → trie mask → look-ahead → [beam] → key id → KB → answer.
Each step the search masks the model's scores with the trie (kgqa.decoding.mask), then lets the
look-ahead rules re-weight them in turn (kgqa.decoding.processors): the mask is the search's own
step, never an entry of the rule list. Every hypothesis is a path in the trie, so every answer is
a key of the KB. Scores only decrease (log-probabilities), so a question is done
once its num_return-th finished key beats its best live beam. A beam is finished once a single
key is left below its trie node: the rest of that key is forced and adds nothing to its score
(with the model's own scores, decode.renormalise=false, it adds what the model says: a beam finishes
at its key's end).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from kgqa.decoding.context import Rule
from kgqa.decoding.mask import masked_step_scores, model_step_scores, step_context
from kgqa.kb.keyspace import KeySpace
from kgqa.model import UniLM


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


def fill_from_the_end(keep: np.ndarray) -> np.ndarray:
    """Indices of the kept items, where each dropped one's place goes to a kept one from the end:
    the other questions keep their rows, so the KV cache moves only the rows of those that moved."""
    count = int(keep.sum())
    order = np.arange(count)
    order[~keep[:count]] = np.flatnonzero(keep[count:]) + count
    return order


@torch.no_grad()
def beam_search(
    model: UniLM,
    keyspace: KeySpace,
    questions: Sequence[Sequence[int]],
    rules: Sequence[Rule],
    pad_id: int,
    beam_size: int = 3,
    num_return: int = 1,
    renormalise: bool = True,
) -> list[list[Hypothesis]]:
    """Top keys per question. `questions` are encoded "[CLS] q [SEP]" token ids; `rules` are the
    look-ahead rules, applied in turn after the trie mask.

    The question is encoded once; each step runs one token per beam against the KV cache.
    The batch holds only unfinished questions: one row each at the first step, beam_size after.
    A beam whose trie state allows a single token needs no LM head: its step scores are those
    the trie mask makes of any scores, 0 for that token. So a beam with a single key left
    below it is that key, at its score now: it finishes there, and the model never runs the key's forced rest.

    With `renormalise=False` a key scores the model's own full-vocabulary log-probs of its tokens,
    the forced ones included (kgqa.decoding.mask.model_step_scores): the model runs on every row and a
    beam finishes at the end of its key.
    """
    if num_return > beam_size:
        raise ValueError(f"num_return ({num_return}) cannot exceed beam_size ({beam_size})")
    device = next(model.parameters()).device
    trie, K = keyspace.trie, beam_size
    content = [list(q[1:-1]) for q in questions]
    dead_state = keyspace.trie.DEAD  # dead beams allow nothing and cost nothing

    active = np.arange(len(questions))  # unfinished questions, in batch order
    scores = np.zeros((len(active), 1), dtype=np.float32)  # [question, beam] log-probs so far
    states = np.full(len(active), trie.ROOT, dtype=np.int64)  # trie node of each row
    prefixes = np.zeros((len(active), 0), dtype=np.int64)  # target tokens of each row
    finished: list[list[Hypothesis]] = [[] for _ in questions]
    nth_finished = np.full(len(questions), -np.inf, dtype=np.float32)  # num_return-th best finished score

    ctx = step_context(keyspace, content, active, prefixes, states, device)
    step_scores_of = masked_step_scores if renormalise else model_step_scores

    def decided(states: np.ndarray) -> np.ndarray:
        """Where a beam's key is settled: one key left below it, or with the model's own scores its end."""
        return trie.key_count(states) == 1 if renormalise else trie.is_leaf(states)

    logits, cache = model.start(*left_pad(questions, pad_id, device))
    if renormalise:
        logits = logits[torch.from_numpy(ctx.branching).to(device)]
    while True:
        step_scores = step_scores_of(logits, ctx)
        for rule in rules:
            step_scores = rule(step_scores, ctx)
        (n, R), V = scores.shape, step_scores.shape[-1]
        total = (torch.from_numpy(scores).to(device).view(-1, 1) + step_scores).view(n, R * V)  # dead beams: -inf
        top_scores, top_idx = (t.cpu().numpy() for t in total.topk(min(2 * K, R * V), dim=1))

        # walk each question's candidates best first: one with a single key left among the top K
        # is a finished key, other finite candidates fill the K beams in score order
        rows, tokens = np.arange(n)[:, None] * R + top_idx // V, top_idx % V
        finite = np.isfinite(top_scores)
        next_states = np.full(rows.shape, dead_state, dtype=np.int64)
        next_states[finite] = trie.step(states[rows[finite]], tokens[finite])
        settled = np.zeros_like(finite)
        settled[finite] = decided(next_states[finite])
        extends = finite & ~settled
        better_beams = np.cumsum(extends, 1) - extends  # candidates that extend, ranked above this one
        considered = finite & (better_beams < K)
        finishing = considered & settled & (np.arange(rows.shape[1]) < K)
        for i, r in zip(*np.nonzero(finishing)):
            key_id = int(trie.values_under(int(next_states[i, r]))[0])
            finished[active[i]].append(Hypothesis(key_id, float(top_scores[i, r])))
        for q in active[finishing.any(1)]:
            finished[q].sort(key=lambda h: -h.log_prob)
            if len(finished[q]) >= num_return:
                nth_finished[q] = finished[q][num_return - 1].log_prob

        kept = considered & extends
        i, r = np.nonzero(kept)
        slot = better_beams[i, r]
        beam_rows, beam_tokens = np.repeat(rows[:, :1], K, 1), np.repeat(tokens[:, :1], K, 1)
        beam_states, new_scores = np.full((n, K), dead_state, dtype=np.int64), np.full((n, K), -np.inf, dtype=np.float32)
        beam_rows[i, slot], beam_tokens[i, slot] = rows[i, r], tokens[i, r]
        beam_states[i, slot], new_scores[i, slot] = next_states[i, r], top_scores[i, r]
        done = ~kept.any(1) | (nth_finished[active] >= new_scores[:, 0])

        going_on = fill_from_the_end(~done)
        active, scores = active[going_on], new_scores[going_on]
        if not len(active):
            return [f[:num_return] for f in finished]
        beam_rows, beam_tokens = beam_rows[going_on].ravel(), beam_tokens[going_on].ravel()
        states, prefixes = beam_states[going_on].ravel(), np.concatenate([prefixes[beam_rows], beam_tokens[:, None]], 1)
        cache.reorder(beam_rows)
        ctx = step_context(keyspace, content, np.repeat(active, K), prefixes, states, device)
        rows = torch.from_numpy(ctx.branching).to(device) if renormalise else None
        logits = model.extend(torch.from_numpy(beam_tokens).to(device), cache, rows)
