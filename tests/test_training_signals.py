"""What training sees beyond plain teacher forcing: KB-driven augmentation and the trie-renormalised loss."""
from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from kgqa.cli import CONFIG_DIR
from kgqa.data.augment import PREDICATE_SLOT, SUBJECT_SLOT, SubjectSwap, TemplateFill, question_template
from kgqa.data.sources import ToySource
from kgqa.data.tokenizer import encode_key
from kgqa.data.triples import Key
from kgqa.kb.sources import SynthKB
from kgqa.datamodule import KgqaDataModule
from kgqa.model import UniLM, build_backbone


@pytest.fixture(scope="module")
def toy_dm() -> KgqaDataModule:
    dm = KgqaDataModule(ToySource(seed=0), SynthKB(), target="spm", augment=SubjectSwap(per_question=2, seed=0))
    dm.setup()
    return dm


@pytest.mark.parametrize("entities", ["train", "all"])
def test_subject_swap_asks_the_phrasing_about_other_kb_entities(toy_dm, entities):
    """entities=train swaps in only training entities (no val/test entity's key is trained on), all any."""
    train, kb = toy_dm.splits["train"], toy_dm.kb
    extra = SubjectSwap(per_question=2, entities=entities, seed=0)(train, kb)
    assert len(train) // 2 < len(extra) <= 2 * len(train)
    by_id = {str(e.id): e for e in train}
    train_entities = {(e.triple.key.subject, e.triple.key.meaning) for e in train}
    outside = sum((e.triple.key.subject, e.triple.key.meaning) not in train_entities for e in extra)
    assert outside == 0 if entities == "train" else outside > 0
    meanings = Counter((k.subject, k.predicate) for k in kb.keys)
    for e in extra:
        source = by_id[str(e.id).rsplit("/", 1)[0]]
        key = e.triple.key
        assert key in kb and e.triple.obj in kb.objects[kb.key_id(key)]
        assert key.predicate == source.triple.key.predicate and key.subject != source.triple.key.subject
        assert e.question == source.question.replace(source.triple.key.subject, key.subject)
        assert meanings[(key.subject, key.predicate)] == 1


def test_subject_swap_is_deterministic_for_a_seed(toy_dm):
    train = toy_dm.splits["train"]
    assert toy_dm.train_examples[: len(train)] == train
    assert SubjectSwap(2, seed=0)(train, toy_dm.kb) == toy_dm.train_examples[len(train):]
    assert SubjectSwap(2, seed=1)(train, toy_dm.kb) != toy_dm.train_examples[len(train):]


def test_template_fill_and_subject_swap_side_by_side_add_both_parts_pairs(toy_dm):
    """augment=template_fill_swap: each part draws from the training questions alone (no swap of a
    filled question), and its pairs are those the part makes by itself with the same settings."""
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("train", overrides=["augment=template_fill_swap", "augment.fill.per_question=2", "seed=3"])
    both = instantiate(cfg.augment)
    train = toy_dm.splits["train"]
    fill = TemplateFill(per_question=2, entities="train", seed=3)(train, toy_dm.kb)
    swap = SubjectSwap(per_question=1, entities="train", seed=3)(train, toy_dm.kb)
    assert fill and swap
    assert both(train, toy_dm.kb) == fill + swap


def test_question_template_makes_slots_of_s_and_of_p_outside_s():
    key = Key("出生日期表", "出生日期", "")
    assert question_template("出生日期表的出生日期是？", key) == f"{SUBJECT_SLOT}的{PREDICATE_SLOT}是？"
    assert question_template("出生日期表是什么？", key) is None  # P only inside S
    assert question_template("它的出生日期是？", key) is None  # no S


@pytest.mark.parametrize("entities", ["train", "all"])
def test_template_fill_asks_training_phrasings_about_other_keys(toy_dm, entities):
    train, kb = toy_dm.splits["train"], toy_dm.kb
    extra = TemplateFill(per_question=2, entities=entities, seed=0)(train, kb)
    by_id = {str(e.id): e for e in train}
    train_entities = {(e.triple.key.subject, e.triple.key.meaning) for e in train}
    meanings = Counter((k.subject, k.predicate) for k in kb.keys)
    templates = [e for e in train if question_template(e.question, e.triple.key)]
    assert len(extra) == 2 * len(templates) > 0
    outside = 0
    for e in extra:
        source = by_id[str(e.id).rsplit("/", 1)[0]]
        key = e.triple.key
        assert key in kb and e.triple.obj in kb.objects[kb.key_id(key)] and meanings[(key.subject, key.predicate)] == 1
        template = question_template(source.question, source.triple.key)
        assert e.question == template.replace(SUBJECT_SLOT, key.subject).replace(PREDICATE_SLOT, key.predicate)
        outside += (key.subject, key.meaning) not in train_entities
    assert outside == 0 if entities == "train" else outside > 0
    assert len({e.triple.key.predicate for e in extra}) > len({e.triple.key.predicate for e in templates})
    assert TemplateFill(2, entities, seed=0)(train, kb) == extra  # deterministic


def test_allowed_pairs_are_the_tries_choices_before_each_target_token(toy_dm):
    batch = toy_dm.collate(toy_dm.splits["val"][:16], trie_targets=True)
    trie, pairs = toy_dm.keyspace.trie, batch["allowed"].numpy()
    position = 0
    for example in batch["examples"]:
        _, target = toy_dm.encode_pair(example)
        for j in range(len(target)):
            which, tokens = trie.allowed_tokens([trie.walk(target[:j])])
            assert sorted(pairs[pairs[:, 0] == position, 1]) == sorted(tokens.tolist())
            assert target[j] in tokens
            position += 1
    assert pairs[:, 0].max() == position - 1


def test_trie_loss_is_cross_entropy_over_the_allowed_tokens(toy_dm):
    torch.manual_seed(0)
    model = UniLM(build_backbone("roformer", len(toy_dm.tokenizer.vocab), hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=64)).eval()
    batch = toy_dm.collate(toy_dm.splits["train"][:8], trie_targets=True)
    ids, seg, valid, allowed = batch["input_ids"], batch["segment_ids"], batch["valid"], batch["allowed"]
    with torch.no_grad():
        logits = model(ids, seg, valid)
        terms, position = [], 0
        for b in range(len(ids)):
            for pos in torch.nonzero(seg[b] == 1).flatten().tolist():  # target token at pos, predicted from pos-1
                choices = allowed[allowed[:, 0] == position, 1]
                log_probs = F.log_softmax(logits[b, pos - 1, choices], -1)
                terms.append(-log_probs[(choices == ids[b, pos]).nonzero().item()])
                position += 1
        by_hand = torch.stack(terms).mean()
        full = model.loss(ids, seg, valid)
        torch.testing.assert_close(model.loss(ids, seg, valid, trie_weight=1.0, allowed=allowed), by_hand)
        torch.testing.assert_close(model.loss(ids, seg, valid, trie_weight=0.5, allowed=allowed), (full + by_hand) / 2)
    assert by_hand < full  # fewer choices, more probability on the target


def _shared_prefix(a, b) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


@pytest.mark.parametrize("count", [1, 3])
def test_candidates_are_the_keys_beside_the_gold_one_in_the_trie(toy_dm, count):
    """Each question's first row is its gold key, then `count` other KB keys, drawn where the trie
    still holds more than `count` keys on the gold key's path: checked against every key of the KB."""
    examples = toy_dm.splits["train"][:24]
    batch = toy_dm.collate(examples, candidates=count)
    rows = batch["candidates"]
    assert rows["present"].shape == (len(examples), count + 1) and rows["present"].all()  # the toy KB is big enough
    keys = {tuple(encode_key(toy_dm.tokenizer, k, "spm")): k for k in toy_dm.kb.keys}
    ids, seg = rows["input_ids"].view(len(examples), count + 1, -1), rows["segment_ids"].view(len(examples), count + 1, -1)
    entity_siblings = 0
    for example, row_ids, row_seg in zip(examples, ids, seg):
        question, gold = toy_dm.encode_pair(example)
        targets = [r[s == 1].tolist() for r, s in zip(row_ids, row_seg)]
        assert targets[0] == gold and all(r[: len(question)].tolist() == question for r in row_ids)
        others = targets[1:]
        assert len({tuple(t) for t in others}) == count and gold not in others
        assert all(tuple(t) in keys for t in others)  # KB keys
        depth = min(_shared_prefix(gold, t) for t in others)
        # no node deeper on the gold path still holds more than `count` keys
        assert sum(_shared_prefix(gold, k) > depth for k in keys) <= count
        entity_siblings += all(keys[tuple(t)].subject == example.triple.key.subject for t in others)
    assert entity_siblings > 0  # mostly the entity's other predicates
    again = toy_dm.collate(examples, candidates=count)["candidates"]
    assert torch.equal(again["input_ids"], rows["input_ids"])  # the same draw for a question every time


def test_the_sequence_loss_teaches_the_gold_key_over_its_neighbours(toy_dm):
    """Trained on the candidate loss alone, a tiny model scores each training question's gold key above
    its trie neighbours (key_log_probs, the score decode.renormalise=false ranks by)."""
    torch.manual_seed(0)
    model = UniLM(build_backbone("roformer", len(toy_dm.tokenizer.vocab), hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=64))
    rows = toy_dm.collate(toy_dm.splits["train"][:16], candidates=3)["candidates"]

    def gold_first() -> float:
        with torch.no_grad():
            scores = model.key_log_probs(rows["input_ids"], rows["segment_ids"], rows["valid"]).view(16, 4)
        return (scores.argmax(1) == 0).float().mean().item()

    before = gold_first()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        optimiser.zero_grad()
        loss = model.candidate_loss(**rows)
        loss.backward()
        optimiser.step()
    assert before < 0.6 and gold_first() == 1.0 and loss.item() < 0.1
