"""KB-driven augmentation: more training pairs from KB triples and the phrasing of training questions.

A from-scratch model memorises its training questions (the loss reaches zero); the article
credits similar-question pre-training with about +2 EM. Here the KB supplies the variety.
"""
from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np

from kgqa.kb.columns import KnowledgeBase
from kgqa.data.kgclue import QAExample
from kgqa.data.triples import Triple

log = logging.getLogger(__name__)


class SubjectSwap:
    """A training question's phrasing, asked about another KB entity that holds the same predicate.

    For a question q about (S, P, M) that contains S, draw `per_question` keys (S', P, M') from the
    KB and add (q with S replaced by S', S' P M' -> its object). Each phrasing of P then comes with
    many subjects, so the model learns to copy S and to read P from the phrasing instead of
    memorising question-key pairs. Only keys whose (S', P) has a single meaning are drawn (the
    question cannot say which of two homonyms it means), and no subject of a held-out question
    (val/test) is ever used, so the held-out keys stay unseen as in the un-augmented run.
    """

    def __init__(self, per_question: int = 1, seed: int = 0):
        self.per_question, self.seed = per_question, seed

    def __call__(self, train: list[QAExample], kb: KnowledgeBase, held_out: list[QAExample]) -> list[QAExample]:
        held_out_subjects = {e.triple.key.subject for e in held_out if e.triple is not None}
        meanings = defaultdict(list)  # (S, P) -> key ids
        for i in kb.live_ids():
            key = kb.keys[i]
            if key.subject not in held_out_subjects:
                meanings[(key.subject, key.predicate)].append(i)
        by_predicate = defaultdict(list)  # P -> ids of keys that name their entity unambiguously
        for (_, predicate), ids in meanings.items():
            if len(ids) == 1:
                by_predicate[predicate].append(ids[0])
        rng = np.random.default_rng(self.seed)
        extra, no_subject = [], 0
        for example in train:
            key = example.triple.key
            if key.subject not in example.question:
                no_subject += 1
                continue
            pool = by_predicate.get(key.predicate, [])
            drawn = rng.choice(len(pool), size=min(len(pool), self.per_question + 1), replace=False) if pool else []
            others = [pool[j] for j in drawn if kb.keys[pool[j]].subject != key.subject]  # (S, P) is unique in pool
            for n, i in enumerate(others[: self.per_question]):
                new = kb.keys[i]
                question = example.question.replace(key.subject, new.subject)
                extra.append(QAExample(f"{example.id}/swap{n}", question, Triple(new, kb.answer(i))))
        log.info("subject swap: %d extra training pairs from %d questions (%d do not contain their subject)",
                 len(extra), len(train), no_subject)
        return extra
