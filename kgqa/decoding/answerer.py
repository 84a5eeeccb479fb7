"""From question text to KB answers: the whole decoding path in one object, built from the config here.

question → tokens → UniLM → step scores → trie mask → look-ahead → beam → key id (→ reranker → correction memory)
→ KB → answer.
`rules_from_config` is the one place that instantiates a `lookahead` config (conf/lookahead/), and
`answerer_from_config` the one that builds an Answerer from a run's `decode` and `lookahead` configs:
the LightningModule, kgqa-predict and the benchmarks all get their Answerer there.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Sequence

from hydra.utils import instantiate

from kgqa.data.tokenizer import Tokenizer, encode_question
from kgqa.data.triples import Triple
from kgqa.decoding.beam import Hypothesis, beam_search
from kgqa.decoding.context import Rule
from kgqa.decoding.memory import CorrectionMemory
from kgqa.kb.columns import KnowledgeBase
from kgqa.kb.corrections import CorrectionFile
from kgqa.kb.keyspace import KeySpace
from kgqa.model import UniLM
from kgqa.rerank import Reranker

log = logging.getLogger(__name__)
MEMORY_DEFAULTS = {"close": 0.9, "when_wrong": 0.6}  # conf/decode/beam.yaml's; a run saved before it lacks them


@dataclass(frozen=True)
class Answer:
    triple: Triple  # the decoded key with its first object, as the reference answers
    objects: tuple[str, ...]  # every object of the key, in KB order
    confidence: float  # probability of the key under the constraint (and look-ahead); 1 for a correction's
    from_memory: bool = False  # the correction memory gave it, not the beam
    key_id: int = -1  # the key's id in the KB


class Answerer:
    def __init__(self, keyspace: KeySpace, tokenizer: Tokenizer, rules: Sequence[Rule] = (), beam: int = 3,
                 num_return: int = 1, max_question_len: int = 64, batch_size: int = 64, renormalise: bool = True,
                 memory: CorrectionMemory | None = None, reranker: Reranker | None = None):
        """`rules`: the look-ahead rules, applied in turn after the trie mask (none: the mask alone);
        `renormalise`: step scores renormalised over the trie's tokens, or the model's own (beam_search);
        `memory`: corrections that replace the beam's first answer for the questions they match;
        `reranker`: reorders each question's returned beam (kgqa.rerank)."""
        self.keyspace, self.tokenizer, self.rules, self.memory = keyspace, tokenizer, list(rules), memory
        self.reranker = reranker
        self.beam, self.num_return, self.renormalise = beam, num_return, renormalise
        self.max_question_len, self.batch_size = max_question_len, batch_size

    def check_question(self, question: str) -> str:
        """For user input: a clear message instead of a stack trace."""
        if not isinstance(question, str) or not question.strip():
            raise ValueError("the question is empty")
        if len(self.tokenizer.encode(question.strip())) > self.max_question_len:
            raise ValueError(f"the question is longer than {self.max_question_len} tokens (data.module.max_question_len)")
        return question.strip()

    def decode(self, model: UniLM, encoded: Sequence[Sequence[int]], by_length: bool = True) -> list[list[Hypothesis]]:
        """Hypotheses for encoded questions, in their order; decoded in batches of similar length
        (less padding), or with `by_length=False` in batches in the questions' order."""
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i])) if by_length else range(len(encoded))
        out: list[list[Hypothesis]] = [[] for _ in encoded]
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            hyps = beam_search(model, self.keyspace, [encoded[i] for i in chunk], self.rules, self.tokenizer.pad_id,
                               self.beam, self.num_return, self.renormalise)
            for i, per_question in zip(chunk, hyps):
                out[i] = per_question
        return out

    def __call__(self, model: UniLM, questions: Sequence[str]) -> list[list[Answer]]:
        """Answers in the questions' order."""
        encoded = [encode_question(self.tokenizer, q, self.max_question_len) for q in questions]
        answers = [[self.answer(h.key_id, math.exp(h.log_prob)) for h in per_question]
                   for per_question in self.decode(model, encoded)]
        if self.reranker is not None:
            self.reranker.net.to(next(model.parameters()).device)
            self.reranker.rerank(questions, answers)
        if self.memory is not None:
            for question, per_question in zip(questions, answers):
                found = self.memory.match(question, per_question[0].key_id if per_question else None)
                if found is not None:
                    per_question[:] = [self.answer(found.key_id, 1.0, from_memory=True)] + [
                        a for a in per_question if a.key_id != found.key_id][: self.num_return - 1]
            self.memory.log_stale()
        return answers

    def answer(self, key_id: int, confidence: float, from_memory: bool = False) -> Answer:
        kb = self.keyspace.kb
        return Answer(Triple(kb.keys[key_id], kb.answer(key_id)), tuple(kb.objects[key_id]), confidence, from_memory,
                      key_id)


def rules_from_config(lookahead: Any) -> list[Rule]:
    """The look-ahead rules of a `lookahead` config (conf/lookahead/): one rule, a list of them, or none."""
    if not lookahead:
        return []
    rules = instantiate(lookahead, _convert_="all")
    return list(rules) if isinstance(rules, list) else [rules]


def memory_from_config(kb: KnowledgeBase, corrections: Any, decode: Any,
                       on_bad_line: str = "error") -> CorrectionMemory | None:
    """The correction memory of `corrections` (a file, or a KB folder's own file; None: no memory) with
    the thresholds of `decode.memory`."""
    if not corrections:
        return None
    settings = {**MEMORY_DEFAULTS, **(decode.get("memory") or {})}
    memory = CorrectionMemory(kb, CorrectionFile(corrections).read(kb, on_bad_line), **settings)
    log.info("correction memory: %d correction(s) from %s", len(memory), corrections)
    return memory


def answerer_from_config(keyspace: KeySpace, tokenizer: Tokenizer, decode: Any, lookahead: Any,
                         max_question_len: int, batch_size: int, corrections: Any = None,
                         reranker: Reranker | None = None) -> Answerer:
    """The Answerer a run's `decode` (beam, num_return, renormalise, memory) and `lookahead` configs
    describe, with the correction memory of `corrections` (memory_from_config) and `reranker`."""
    return Answerer(keyspace, tokenizer, rules_from_config(lookahead), beam=decode["beam"],
                    num_return=decode.get("num_return", 1), max_question_len=max_question_len, batch_size=batch_size,
                    renormalise=decode.get("renormalise", True),
                    memory=memory_from_config(keyspace.kb, corrections, decode), reranker=reranker)
