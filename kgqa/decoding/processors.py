"""The look-ahead rules, applied in turn to the trie-masked log-probabilities of each step.

question → tokens → UniLM → step scores → trie mask → [look-ahead] → beam → key id → KB → answer.
Like transformers' logits processors, each rule is a small object `rule(scores, ctx) -> scores`
(kgqa.decoding.context.Rule): it re-weights the allowed tokens, by how much of the question the
keys through each token could still cover (LCS rules), by a subject copied from it (SubjectCopy) or by
what the KB knows of each meaning of a homonym (MeaningEvidence).
The search has applied the trie mask before them; conf/lookahead/ names them by these classes.
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch
from rapidfuzz import process
from rapidfuzz.distance import LCSseq

from kgqa.decoding.context import StepContext, scatter
from kgqa.kb.keyspace import KeySpace


def renormalise(scores: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(scores, dim=-1)


def as_text(tokens, sep: int) -> str:
    """Content tokens as a string, one character per token: rapidfuzz compares strings fastest."""
    return "".join(chr(t) for t in tokens if t != sep)


class Completions(NamedTuple):
    """The keys through a trie node, sorted and grouped by their next token."""

    next_tokens: np.ndarray  # [G] each group's token
    group_starts: np.ndarray  # [G] its first key
    texts: list[str]  # [K] each key's content
    segment_rest: np.ndarray  # [K] its tokens from the node to the end of the segment (P or M) being decoded


class LcsLookahead:
    """Base of the look-ahead rules: Δ per allowed token, once S is decoded and >1 token is allowed.

    Δ(token) = max over the keys through prefix+token of the gain LCS(question, key) − LCS(question,
    prefix), floored at 0 as in the article's reference code, but over content tokens only (its code
    also counts [CLS]/[SEP] ids and applies the power before the trie mask; see
    experiments/RESULTS.md). With uncovered_cost μ > 0 a key's gain loses μ for each character of
    the segment being decoded beyond what the gain covers: of two predicates covering as much of
    the question, the one with fewer other characters wins (多高: 塔高 over 最高学历). The article's μ is 0.
    Computed only for the rows where the rule applies, all their (question, key) pairs in one
    rapidfuzz call; what a trie node's keys look like is memoised per node.
    """

    def __init__(self, uncovered_cost: float = 0.0, cache_size: int = 65536):
        self.uncovered_cost = uncovered_cost
        self._completions = lru_cache(maxsize=cache_size)(self._completions_uncached)
        self._keyspace: KeySpace | None = None

    def _completions_uncached(self, state: int, depth: int) -> Completions:
        sep = self._keyspace.sep_id
        seqs = sorted((s.tolist() for s in self._keyspace.trie.sequences_under(state)), key=lambda s: s[depth])
        next_tokens = np.array([s[depth] for s in seqs])
        starts = np.flatnonzero(np.diff(next_tokens, prepend=-1))
        rest = np.array([(s[depth:] + [sep]).index(sep) for s in seqs])
        return Completions(next_tokens[starts], starts, [as_text(s, sep) for s in seqs], rest)

    def sparse_gains(self, ctx: StepContext) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, token, Δ) for the allowed tokens of the rows where the rule applies."""
        if self._keyspace is not ctx.keyspace:
            self._keyspace = ctx.keyspace
            self._completions.cache_clear()
        sep, depth = ctx.keyspace.sep_id, ctx.prefixes.shape[1]
        rows = np.flatnonzero(ctx.branching_mask & (ctx.prefixes == sep).any(1))
        if not len(rows):
            return rows, rows, np.zeros(0, dtype=np.float32)
        texts = {q: as_text(ctx.questions[q], sep) for q in np.unique(ctx.row_question[rows]).tolist()}
        questions = [texts[q] for q in ctx.row_question[rows].tolist()]
        completions = [self._completions(state, depth) for state in ctx.states[rows].tolist()]
        n_keys = np.array([len(c.texts) for c in completions])
        # one call for every (question, prefix) and (question, key) pair of this step
        pair_questions = questions + [q for q, n in zip(questions, n_keys) for _ in range(n)]
        pair_texts = [as_text(p, sep) for p in ctx.prefixes[rows].tolist()] + [t for c in completions for t in c.texts]
        lcs = process.cpdist(pair_questions, pair_texts, scorer=LCSseq.similarity, dtype=np.int32, workers=1)
        gain = lcs[len(rows) :] - np.repeat(lcs[: len(rows)], n_keys)  # per key, over its row's prefix
        if self.uncovered_cost:
            rest = np.concatenate([c.segment_rest for c in completions])
            gain = gain - self.uncovered_cost * np.maximum(rest - gain, 0)
        key_offsets = np.cumsum(n_keys) - n_keys
        n_tokens = np.array([len(c.next_tokens) for c in completions])
        group_starts = np.concatenate([offset + c.group_starts for offset, c in zip(key_offsets, completions)])
        delta = np.maximum(np.maximum.reduceat(gain, group_starts), 0)
        return np.repeat(rows, n_tokens), np.concatenate([c.next_tokens for c in completions]), delta.astype(np.float32)

    def gains(self, ctx: StepContext, vocab_size: int) -> torch.Tensor:
        """Δ as a dense [N, V] tensor (0 where the rule does not apply)."""
        return scatter((len(ctx.states), vocab_size), *self.sparse_gains(ctx), ctx.device)

    def rule(self, scores: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
        """The re-weighting of log-probs by Δ, before renormalising."""
        raise NotImplementedError

    def __call__(self, scores: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """Re-weights and renormalises the rows with some Δ > 0; the others stay as they are
        (already normalised log-probs, which renormalising would not change)."""
        rows, tokens, delta = self.sparse_gains(ctx)
        positive = delta > 0
        rows, tokens, delta = rows[positive], tokens[positive], delta[positive]
        if not len(rows):
            return scores
        changed = np.unique(rows)
        gains = scatter((len(changed), scores.shape[-1]), np.searchsorted(changed, rows), tokens, delta, ctx.device)
        index = torch.from_numpy(changed).to(ctx.device)
        out = scores.clone()
        out[index] = renormalise(self.rule(scores[index], gains))
        return out


class LcsPowerLookahead(LcsLookahead):
    """The article's rule: p ← p^(1/(Δ+1)), renormalised over the allowed tokens."""

    def rule(self, scores: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
        return scores / (gains + 1)


class LcsBonusLookahead(LcsLookahead):
    """An additive alternative: log p + α·Δ, renormalised. α sets how much coverage may outweigh the model."""

    def __init__(self, alpha: float = 1.0, uncovered_cost: float = 0.0, cache_size: int = 65536):
        super().__init__(uncovered_cost, cache_size)
        self.alpha = alpha

    def rule(self, scores: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
        return scores + self.alpha * gains


class SubjectCopy:
    """While S is decoded: log p + α for each token on the way to a KB subject that is a verbatim
    piece of the question (and for [SEP] once S is one), plus β for each character the longest
    such subject through the token still adds, renormalised over the allowed tokens.

    The article's look-ahead starts after S, but S is where a from-scratch model slips most on
    unseen questions (it starts a subject at the wrong character: 你什么时候参加的执业兽医资格考试
    → 加加大街): KgCLUE subjects are almost always copied from the question. Only pieces that are
    whole subjects count: a bonus for any copied character would lead the beam into subjects that
    merely begin like the question (怎样才能得到于禁 → 怎么又是你). β is the article's coverage idea
    for S: of the subjects in 观音寺市诞生, 观音寺市 covers more of the question than 观音寺.
    """

    def __init__(self, alpha: float = 16.0, per_char: float = 0.0, cache_size: int = 4096):
        self.alpha, self.per_char, self.cache_size = alpha, per_char, cache_size
        self._copies: dict[tuple[int, ...], dict[tuple[int, ...], dict[int, int]]] = {}  # memo per question
        self._keyspace: KeySpace | None = None

    def _memoise(self, questions: list[tuple[int, ...]]) -> None:
        """For each new question: prefix → {next token: characters the longest copied subject
        through it still adds ([SEP]: 0)}. The subjects are the pieces of the question after which
        the trie allows [SEP]: every suffix of every new question walked down the trie at once."""
        unique = list(dict.fromkeys(questions))
        new = [q for q in unique if q not in self._copies]
        if not new:
            return
        if len(self._copies) + len(new) > self.cache_size:
            self._copies.clear()  # then all of this step's questions are new
            new = unique
        trie, sep = self._keyspace.trie, self._keyspace.sep_id
        suffixes = [(q, i) for q in new for i in range(len(q))]
        states, _ = trie.path_states([q[i:] for q, i in suffixes])
        row, length = np.nonzero(states[:, 1:] >= 0)
        length += 1
        ends = trie.step(states[row, length], np.full(len(row), sep)) >= 0
        tables: dict[tuple[int, ...], dict[tuple[int, ...], dict[int, int]]] = {q: {} for q in new}
        for r, n in zip(row[ends].tolist(), length[ends].tolist()):
            question, start = suffixes[r]
            subject, table = question[start : start + n], tables[question]
            for i in range(n):
                nexts = table.setdefault(subject[:i], {})
                nexts[subject[i]] = max(nexts.get(subject[i], 0), n - i)
            table.setdefault(subject, {})[sep] = 0
        self._copies.update(tables)

    def copy_pairs(self, ctx: StepContext) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, token, characters still to copy) for the tokens on the way to a subject copied from
        the question, in the branching rows still in S; [SEP] ends S with 0 characters to go."""
        if self._keyspace is not ctx.keyspace:
            self._keyspace = ctx.keyspace
            self._copies.clear()
        rows = np.flatnonzero(ctx.branching_mask & ~(ctx.prefixes == ctx.keyspace.sep_id).any(1))
        questions = {q: tuple(ctx.questions[q]) for q in np.unique(ctx.row_question[rows]).tolist()}
        self._memoise(list(questions.values()))
        pair_rows, pair_tokens, to_copy = [], [], []
        for row, q, prefix in zip(rows.tolist(), ctx.row_question[rows].tolist(), ctx.prefixes[rows].tolist()):
            nexts = self._copies[questions[q]].get(tuple(prefix), {})
            pair_rows += [row] * len(nexts)
            pair_tokens += nexts.keys()
            to_copy += nexts.values()
        return tuple(np.array(a, dtype=np.int64) for a in (pair_rows, pair_tokens, to_copy))

    def __call__(self, scores: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        rows, tokens, to_copy = self.copy_pairs(ctx)
        if not len(rows):
            return scores
        changed = np.unique(rows)
        bonus = scatter((len(changed), scores.shape[-1]), np.searchsorted(changed, rows), tokens,
                        self.alpha + self.per_char * torch.from_numpy(to_copy).to(scores.dtype), ctx.device)
        index = torch.from_numpy(changed).to(ctx.device)
        out = scores.clone()
        out[index] = renormalise(scores[index] + bonus)
        return out


class MeaningEvidence:
    """While M is decoded and two or more meanings of the decoded subject are still allowed: log p + α·E for
    each allowed token, renormalised, E the best evidence among the meanings through the token. A meaning's
    evidence is the most characters of the question (its subject taken out) that one of that meaning's facts
    in the KB shares with it (LCS with a predicate or an object), facts every meaning here has alike left out,
    and under `min_chars` counted as none.

    A homonym's keys rarely differ in anything the question spells out (刘德华（演员）vs 刘德华（科学家）), so the
    look-ahead rules, which cover the question with the key alone, cannot tell them apart; their other facts
    can (主演过无间道的刘德华 is the one with 无间道 among his works). What a subject's meanings know is memoised.
    """

    def __init__(self, alpha: float = 4.0, min_chars: int = 1, cache_size: int = 4096):
        self.alpha, self.min_chars = alpha, min_chars
        self._facts = lru_cache(maxsize=cache_size)(self._facts_uncached)
        self._keyspace: KeySpace | None = None

    def _facts_uncached(self, subject: tuple[int, ...]) -> dict[str, frozenset[str]]:
        """Each meaning of the subject name: its predicates and objects in the KB, as token strings."""
        ks = self._keyspace
        facts: dict[str, set[str]] = {}
        for key_id in ks.trie.values_under(ks.trie.walk([*subject, ks.sep_id])).tolist():
            key = ks.kb.keys[key_id]
            texts = facts.setdefault(key.meaning, set())
            texts.update(as_text(ks.tokenizer.encode(t), ks.sep_id) for t in (key.predicate, *ks.kb.objects[key_id]))
        return {meaning: frozenset(texts) for meaning, texts in facts.items()}

    def evidence_pairs(self, ctx: StepContext) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, token, E) for the allowed tokens of the rows deciding between two or more meanings."""
        ks = ctx.keyspace
        if self._keyspace is not ks:
            self._keyspace = ks
            self._facts.cache_clear()
        sep, depth = ks.sep_id, ctx.prefixes.shape[1]
        rows = np.flatnonzero(ctx.branching_mask & ((ctx.prefixes == sep).sum(1) == ks.order.index("m")))
        pair_rows, pair_tokens, pair_evidence = [], [], []
        for row in rows.tolist():
            prefix = ctx.prefixes[row].tolist()
            subject = tuple(prefix[: prefix.index(sep)])
            state = int(ctx.states[row])
            meanings = [ks.kb.keys[k].meaning for k in ks.trie.values_under(state).tolist()]
            if len(set(meanings)) < 2:
                continue
            facts = self._facts(subject)
            shared = frozenset.intersection(*(facts[m] for m in set(meanings)))
            question = as_text(ctx.questions[ctx.row_question[row]], sep).replace(as_text(subject, sep), "", 1)
            evidence = {}
            for meaning in set(meanings):
                texts = sorted(facts[meaning] - shared)
                best = int(process.cdist([question], texts, scorer=LCSseq.similarity, workers=1).max()) if texts else 0
                evidence[meaning] = best if best >= self.min_chars else 0
            by_token: dict[int, int] = {}
            for sequence, meaning in zip(ks.trie.sequences_under(state), meanings):
                token = int(sequence[depth])
                by_token[token] = max(by_token.get(token, 0), evidence[meaning])
            pair_rows += [row] * len(by_token)
            pair_tokens += by_token.keys()
            pair_evidence += by_token.values()
        return (np.array(pair_rows, dtype=np.int64), np.array(pair_tokens, dtype=np.int64),
                np.array(pair_evidence, dtype=np.float32))

    def __call__(self, scores: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        rows, tokens, evidence = self.evidence_pairs(ctx)
        if not evidence.any():
            return scores
        changed = np.unique(rows)
        bonus = scatter((len(changed), scores.shape[-1]), np.searchsorted(changed, rows), tokens,
                        self.alpha * torch.from_numpy(evidence), ctx.device)
        index = torch.from_numpy(changed).to(ctx.device)
        out = scores.clone()
        out[index] = renormalise(scores[index] + bonus.to(scores.dtype))
        return out
