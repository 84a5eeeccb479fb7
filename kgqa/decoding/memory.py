"""The correction memory: corrected questions answered by their corrections at decode time, no weight changed.

After the beam has chosen a key, a question that matches a corrected one gets the corrected key instead:
the same question after `normalise_question`, always; a close one when its similarity to the corrected
question (rapidfuzz's normalised Indel similarity: 2·LCS / total length, of the normalised texts) reaches
`close`, or reaches the lower `when_wrong` while the beam chose one of the keys the correction says are
wrong (the model repeats its mistake on a rephrasing). A close match must name the correction's subject: on
templated questions another entity's question is as close as a rephrasing ("演员赵谢毕业于哪所学校" and
"演员赵王毕业于哪所学校": 0.91), and is never corrected by it. Both thresholds are tuned on dev
(experiments/bench_repair.py). A correction whose key a KB change deleted since is not used, and counted.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable

from rapidfuzz import fuzz, process

from kgqa.errors import DataError
from kgqa.kb.columns import KnowledgeBase
from kgqa.kb.corrections import Correction, key_text, normalise_question

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Remembered:
    correction: Correction
    key_id: int
    wrong_ids: frozenset[int]
    subject: str  # normalised: a close match names it


class CorrectionMemory:
    def __init__(self, kb: KnowledgeBase, corrections: Iterable[Correction] = (), close: float = 0.9,
                 when_wrong: float = 0.6):
        self.kb, self.close, self.when_wrong = kb, close, when_wrong
        self.entries: dict[str, Remembered] = {}  # normalised question -> its correction
        self.stale = 0  # answers a correction would have given, had a KB change not deleted its key
        self._reported = 0  # of them, those log_stale has reported
        self._texts: list[str] | None = None  # the entries' questions, for rapidfuzz (made again after an edit)
        self._live = kb.live_mask()
        for c in corrections:
            self.add(c)

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, correction: Correction) -> None:
        """Remember a correction (replacing one for the same question); its keys must be KB keys."""
        ids = [self.kb.find(k) for k in (correction.key, *correction.wrong)]
        if None in ids:
            absent = (correction.key, *correction.wrong)[ids.index(None)]
            raise DataError(f"correction of {correction.question!r}: the KB has no key {key_text(absent)}")
        self._texts = None
        self.entries[normalise_question(correction.question)] = Remembered(
            correction, ids[0], frozenset(ids[1:]), normalise_question(correction.key.subject))

    def remove(self, question: str) -> bool:
        self._texts = None
        return self.entries.pop(normalise_question(question), None) is not None

    def match(self, question: str, predicted: int | None) -> Remembered | None:
        """The correction for a question whose beam chose key id `predicted`, if one applies."""
        text = normalise_question(question)
        found = self.entries.get(text)
        if found is None and self.entries:
            floor = 100 * min(self.close, self.when_wrong)
            best = -1.0
            if self._texts is None:
                self._texts = list(self.entries)
            for choice, score, _ in process.extract(text, self._texts, scorer=fuzz.ratio, processor=None,
                                                    score_cutoff=floor, limit=None):
                candidate = self.entries[choice]
                if candidate.subject not in text:
                    continue
                threshold = self.when_wrong if predicted in candidate.wrong_ids else self.close
                if score >= 100 * threshold and score > best:
                    found, best = candidate, score
        if found is None:
            return None
        if not self._live[found.key_id]:
            self.stale += 1
            return None
        return found

    def log_stale(self) -> None:
        """One warning for the stale corrections met since the last one (the Answerer calls it per batch)."""
        new, self._reported = self.stale - self._reported, self.stale
        if new:
            log.warning("correction memory: %d answer(s) not corrected: the correction's key was deleted from the "
                        "KB since (remove or renew those corrections)", new)
