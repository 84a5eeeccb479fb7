"""The two data generators: kb=synth distractors over real gold, and the toy dataset."""
from collections import Counter

import pytest

from kgqa.data.kgclue import read_qa
from kgqa.data.synth import synth_kb
from kgqa.data.toy import MEANINGS, NAME_CHARS, TEMPLATES, make_toy


@pytest.fixture(scope="module")
def gold(kgclue_root):
    """A slice of the real answers: 3,000 train + 500 dev triples, enough for shared predicates."""
    train = read_qa(kgclue_root / "train.json")[:3000]
    dev = read_qa(kgclue_root / "dev.json")[:500]
    return [e.triple for e in train + dev]


@pytest.fixture(scope="module")
def synth(gold):
    return synth_kb(gold, seed=0)


def test_synth_is_deterministic(gold, synth):
    assert synth_kb(gold, seed=0) == synth
    assert synth_kb(gold, seed=1) != synth


def test_synth_keeps_gold_first_and_never_reuses_gold_keys(gold, synth):
    assert synth[: len(gold)] == gold
    gold_keys = {t.key for t in gold}
    distractors = synth[len(gold) :]
    assert len(distractors) > 3 * len(gold)
    assert not [t for t in distractors if t.key in gold_keys]
    assert max(Counter(t.key for t in distractors).values()) == 1


def test_synth_adds_confusable_predicates(gold, synth):
    """Most gold predicates should meet a look-alike (shared character) on their own entity."""
    preds = {}
    for t in synth:
        preds.setdefault((t.key.subject, t.key.meaning), []).append(t.key.predicate)
    confusable = sum(
        any(q != t.key.predicate and set(q) & set(t.key.predicate) for q in preds[(t.key.subject, t.key.meaning)])
        for t in gold
    )
    assert confusable / len(gold) > 0.5


def test_synth_adds_homonyms_and_prefix_subjects(gold, synth):
    """New entities either reuse a gold name with another meaning, or extend / cut a gold name."""
    gold_entities = {(t.key.subject, t.key.meaning) for t in gold}
    gold_preds = {}
    for t in gold:
        gold_preds.setdefault(t.key.subject, set()).add(t.key.predicate)
    gold_prefixes = {s[:j] for s in gold_preds for j in range(1, len(s))}
    distractors = synth[len(gold) :]
    homonyms = [t for t in distractors if t.key.subject in gold_preds and (t.key.subject, t.key.meaning) not in gold_entities]
    assert any(t.key.predicate in gold_preds[t.key.subject] for t in homonyms)
    prefixed = [t.key.subject for t in distractors if t.key.subject not in gold_preds]
    assert prefixed
    assert all(s in gold_prefixes or any(s[:j] in gold_preds for j in range(1, len(s))) for s in prefixed)


def test_synth_objects_come_from_the_same_predicate(gold, synth):
    objects = {}
    for t in gold:
        objects.setdefault(t.key.predicate, set()).add(t.obj)
    checked = [t for t in synth[len(gold) :] if len(objects.get(t.key.predicate, ())) >= 2]
    assert checked
    assert all(t.obj in objects[t.key.predicate] for t in checked)


@pytest.fixture(scope="module")
def toy():
    return make_toy(seed=0)


def test_toy_is_deterministic(toy):
    assert make_toy(seed=0) == toy
    assert make_toy(seed=1) != toy


def test_toy_sizes_and_ids(toy):
    sizes = {name: len(split) for name, split in toy.splits.items()}
    assert 1500 <= sizes["train"] <= 3000 and 100 <= sizes["val"] <= 200 and 100 <= sizes["test"] <= 200
    for split in toy.splits.values():
        assert [e.id for e in split] == list(range(len(split)))


def test_toy_holds_out_subjects(toy):
    train = {e.triple.key.subject for e in toy.splits["train"]}
    val = {e.triple.key.subject for e in toy.splits["val"]}
    test = {e.triple.key.subject for e in toy.splits["test"]}
    assert not train & val and not train & test and not val & test


def test_toy_questions_are_answerable(toy):
    """Each QA triple is in the KB, the question names its subject, and homonyms carry a hint."""
    kb = {t.key: t.obj for t in toy.triples}
    assert len(kb) == len(toy.triples)
    meanings = {}
    for key in kb:
        meanings.setdefault(key.subject, []).append(key.meaning)
    for split in toy.splits.values():
        for e in split:
            key = e.triple.key
            assert kb.get(key) == e.triple.obj
            assert key.subject in e.question
            if len(set(meanings[key.subject])) > 1:
                assert MEANINGS[key.meaning][1].format(s=key.subject) in e.question


def test_toy_kb_has_distractors(toy):
    """The KB holds entities no question asks about (prefix names) and homonyms that are asked about."""
    meanings = {}
    for t in toy.triples:
        meanings.setdefault(t.key.subject, set()).add(t.key.meaning)
    asked = {e.triple.key.subject for split in toy.splits.values() for e in split}
    assert any(s not in asked for s in meanings)
    assert any(len(meanings[s]) > 1 for s in asked)


def test_toy_templates_are_unambiguous():
    templates = [t for _, ts in TEMPLATES.values() for t in ts]
    assert len(templates) == len(set(templates))
    fixed_chars = set("".join(templates + [hint for _, hint in MEANINGS.values()]).replace("{s}", ""))
    assert not fixed_chars & set(NAME_CHARS)
