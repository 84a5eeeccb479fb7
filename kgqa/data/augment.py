"""KB-driven augmentation: more training pairs from KB triples and the phrasing of training questions.

An augmentation is called with the training questions and the KB only: it cannot read a val or test
question, so no held-out fact reaches training through it unless `entities="all"` draws it from the KB.

A from-scratch model memorises its training questions (the loss reaches zero); the article
credits similar-question pre-training with about +2 EM. Here the KB supplies the variety.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Callable, Iterable, Protocol, Sequence

import numpy as np

from kgqa.data.kgclue import QAExample
from kgqa.data.triples import Key, Triple
from kgqa.errors import ConfigError, DataError

log = logging.getLogger(__name__)


class Facts(Protocol):
    """What an augmentation reads of a KB (kgqa.kb.columns.KnowledgeBase has it): the data layer
    describes the shape it needs instead of importing the KB package, which is built on top of it."""

    keys: Sequence[Key]

    def live_ids(self) -> Iterable[int]: ...

    def answer(self, key_id: int) -> str: ...


class EntityRule:
    """Which KB keys an augmentation may draw: "train", the keys of the training questions' entities
    (subject and meaning), so a gain cannot come from facts of dev/test entities (on the real KB a
    dev/test key is one of 20M, on kb=synth one of ~60: drawing from every key would teach them);
    or "all", every key in the KB."""

    def __init__(self, entities: str):
        if entities not in ("train", "all"):
            raise ConfigError(f"augment.entities={entities!r}: choose train (keys of training entities) or all")
        self.name = entities

    def rule(self, train: list[QAExample]) -> Callable[[Key], bool]:
        if self.name == "all":
            return lambda key: True
        entities = {(e.triple.key.subject, e.triple.key.meaning) for e in train}
        return lambda key: (key.subject, key.meaning) in entities


class SubjectSwap:
    """A training question's phrasing, asked about another KB entity that holds the same predicate.

    For a question q about (S, P, M) that contains S, draw `per_question` keys (S', P, M') from the
    KB and add (q with S replaced by S', S' P M' -> its object). Each phrasing of P then comes with
    many subjects, so the model learns to copy S and to read P from the phrasing instead of
    memorising question-key pairs. Only keys whose (S', P) has a single meaning are drawn (the
    question cannot say which of two homonyms it means). `entities` chooses the entities drawn, as
    TemplateFill's does: "train" (the strict control) or "all".
    """

    def __init__(self, per_question: int = 1, entities: str = "train", seed: int = 0):
        self.per_question, self.entities, self.seed = per_question, EntityRule(entities), seed

    def __call__(self, train: list[QAExample], kb: Facts) -> list[QAExample]:
        named = unambiguous_keys(kb, self.entities.rule(train))
        by_predicate = defaultdict(list)  # P -> ids of keys that name their entity unambiguously
        for i in named:
            by_predicate[kb.keys[i].predicate].append(i)
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
        log.info("subject swap (%s entities): %d extra training pairs from %d questions (%d do not contain their subject)",
                 self.entities.name, len(extra), len(train), no_subject)
        return extra


def unambiguous_keys(kb: Facts, admit: Callable[[Key], bool]) -> list[int]:
    """Ids of the admitted live keys whose (S, P) has a single meaning in the KB: a question that
    names S and P cannot say which of two homonyms it means, so only these make a fair question."""
    meanings = defaultdict(list)  # (S, P) -> ids of admitted keys
    clash = set()  # (S, P) held by a key that is not admitted: still a second meaning
    for i in kb.live_ids():
        key = kb.keys[i]
        if admit(key):
            meanings[(key.subject, key.predicate)].append(i)
        else:
            clash.add((key.subject, key.predicate))
    return [ids[0] for sp, ids in meanings.items() if len(ids) == 1 and sp not in clash]


class TemplateFill:
    """Training questions as templates, filled with other KB keys: questions for predicates no
    training question answers.

    A training question that contains both its S and its P verbatim ("X的出生日期是？") becomes a
    template ("{S}的{P}是？"), filled `per_question` times with a drawn key (S', P', M') whose (S', P')
    has one meaning; the target is that key. KgCLUE's dev and test questions ask for predicates
    that no training question answers, so a model trained on its own questions alone never
    produces them; this teaches it to read P from the question as it reads S.

    `entities` (EntityRule): "train" (the strict control) draws only keys of the training questions'
    entities; "all" draws from every key in the KB.
    """

    def __init__(self, per_question: int = 1, entities: str = "train", seed: int = 0):
        self.per_question, self.entities, self.seed = per_question, EntityRule(entities), seed

    def __call__(self, train: list[QAExample], kb: Facts) -> list[QAExample]:
        pool = unambiguous_keys(kb, self.entities.rule(train))
        if not pool:
            raise DataError(f"template fill: no KB key of {self.entities.name} entities has a single meaning to ask about")
        templates = [(e, template) for e in train if (template := question_template(e.question, e.triple.key))]
        rng = np.random.default_rng(self.seed)
        extra = []
        for example, template in templates:
            for n, j in enumerate(rng.choice(len(pool), size=min(self.per_question, len(pool)), replace=False)):
                new = kb.keys[pool[j]]
                question = template.replace(SUBJECT_SLOT, new.subject).replace(PREDICATE_SLOT, new.predicate)
                extra.append(QAExample(f"{example.id}/fill{n}", question, Triple(new, kb.answer(pool[j]))))
        log.info("template fill (%s entities): %d extra training pairs from %d templates of %d questions, %d keys drawn from",
                 self.entities.name, len(extra), len(templates), len(train), len(pool))
        return extra


class Augmentations:
    """Several augmentations side by side (`augment=template_fill_swap`): each draws its pairs from the
    training questions alone, never from another's output, and their pairs are added together."""

    def __init__(self, **parts: Callable):
        self.parts = parts

    def __call__(self, train: list[QAExample], kb: Facts) -> list[QAExample]:
        return [pair for part in self.parts.values() for pair in part(train, kb)]


SUBJECT_SLOT, PREDICATE_SLOT = "\x00", "\x01"  # characters no question holds (the readers refuse NUL)


def question_template(question: str, key: Key) -> str | None:
    """The question with its S and P made slots, or None when it does not hold both verbatim
    (P is looked for outside S, so a predicate inside the subject's name is not a slot)."""
    if not key.subject or not key.predicate or key.subject not in question:
        return None
    parts = question.split(key.subject)
    if not any(key.predicate in part for part in parts):
        return None
    return SUBJECT_SLOT.join(part.replace(key.predicate, PREDICATE_SLOT) for part in parts)
