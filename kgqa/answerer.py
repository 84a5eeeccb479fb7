"""From question text to KB answers: the whole decoding path in one object.

question → tokens → UniLM → step scores → trie mask → look-ahead → beam → (S, P, M) → KB lookup → answer
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from kgqa.data.tokenizer import Tokenizer, encode_question
from kgqa.data.triples import Triple
from kgqa.decoding.beam import Processor, beam_search
from kgqa.decoding.processors import TrieMask
from kgqa.keyspace import KeySpace
from kgqa.model import UniLM


@dataclass(frozen=True)
class Answer:
    triple: Triple  # the decoded key with its first object, as the reference answers
    objects: tuple[str, ...]  # every object of the key, in KB order
    confidence: float  # probability of the key under the constraint (and look-ahead)


class Answerer:
    def __init__(self, keyspace: KeySpace, tokenizer: Tokenizer, lookahead: Processor | Sequence[Processor] | None = None,
                 beam: int = 3, num_return: int = 1, max_question_len: int = 64, batch_size: int = 64):
        """`lookahead`: a re-weighting rule, or several applied in turn, after the trie mask."""
        self.keyspace, self.tokenizer = keyspace, tokenizer
        rules = [] if lookahead is None else list(lookahead) if isinstance(lookahead, Sequence) else [lookahead]
        self.processors = [TrieMask(), *rules]
        self.beam, self.num_return = beam, num_return
        self.max_question_len, self.batch_size = max_question_len, batch_size

    def check_question(self, question: str) -> str:
        """For user input: a clear message instead of a stack trace."""
        if not isinstance(question, str) or not question.strip():
            raise ValueError("the question is empty")
        if len(self.tokenizer.encode(question.strip())) > self.max_question_len:
            raise ValueError(f"the question is longer than {self.max_question_len} tokens (data.max_question_len)")
        return question.strip()

    def __call__(self, model: UniLM, questions: Sequence[str]) -> list[list[Answer]]:
        """Answers in the questions' order, decoded in batches of similar length (less padding)."""
        kb = self.keyspace.kb
        encoded = [encode_question(self.tokenizer, q, self.max_question_len) for q in questions]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        out: list[list[Answer]] = [[] for _ in questions]
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            hyps = beam_search(model, self.keyspace, [encoded[i] for i in chunk], self.processors, self.tokenizer.pad_id,
                               self.beam, self.num_return)
            for i, per_question in zip(chunk, hyps):
                out[i] = [Answer(Triple(kb.keys[h.key_id], kb.answer(h.key_id)), tuple(kb.objects[h.key_id]), math.exp(h.log_prob))
                          for h in per_question]
        return out
