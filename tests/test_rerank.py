"""The reranker over the final beam (rerank=beam): it learns to find the gold key, only reorders the beam,
round-trips through its file, and kgqa-train / kgqa-eval train and use it."""
from __future__ import annotations

import json
import random

import pytest
import torch

from cli import compose_train, printed_metrics, run_cli
from kgqa.build import build_datamodule, build_module
from kgqa.errors import CheckpointError
from kgqa.rerank import RERANKER_FILE, fit_reranker, load_reranker, new_reranker, save_reranker


@pytest.fixture(scope="module")
def toy():
    cfg = compose_train("logger=csv")
    dm = build_datamodule(cfg)
    dm.setup()
    torch.manual_seed(0)
    return dm, build_module(cfg, dm.tokenizer.vocab_size)


def lists_with_the_gold_anywhere(dm, examples, rng: random.Random):
    """Each question's gold key among two other keys of its subject (look-alikes) or of the KB, at a random
    place, every candidate with the same beam score: only the text tells the gold key apart."""
    kb = dm.kb
    questions, lists, labels = [], [], []
    for e in examples:
        others = [k for k in kb.keys if k != e.triple.key]
        same_subject = [k for k in others if k.subject == e.triple.key.subject]
        drawn = rng.sample(same_subject, min(2, len(same_subject)))
        drawn += rng.sample(others, 2 - len(drawn))
        keys = drawn + [e.triple.key]
        rng.shuffle(keys)
        questions.append(e.question)
        lists.append([(k, kb.answer(kb.key_id(k)), 0.0) for k in keys])
        labels.append(keys.index(e.triple.key))
    return questions, lists, labels


def accuracy(reranker, questions, lists, labels) -> float:
    scores = reranker.scores(questions, lists)
    return sum(max(range(len(s)), key=s.__getitem__) == y for s, y in zip(scores, labels)) / len(labels)


def test_the_reranker_learns_to_find_the_gold_key_wherever_the_beam_put_it(toy):
    dm, module = toy
    rng = random.Random(0)
    train = lists_with_the_gold_anywhere(dm, dm.splits["train"][:600], rng)
    held_out = lists_with_the_gold_anywhere(dm, dm.splits["val"][:200], rng)
    torch.manual_seed(0)
    reranker = new_reranker(module.model, dm.tokenizer, dm.target, dm.max_question_len, 32, beam_score=False)
    before = accuracy(reranker, *held_out)
    fit_reranker(reranker, *train, epochs=4, lr=1e-3, batch_size=16)
    after = accuracy(reranker, *held_out)
    assert before < 0.5 and after >= 0.75, (before, after)  # chance: 1/3; 0.86-0.90 over three seeds
    assert reranker.net.beam_weight.item() == 0.0  # beam_score=false: the text alone ranks


def test_reranking_only_reorders_the_beam_and_the_file_round_trips(toy, tmp_path):
    dm, module = toy
    module.eval()  # no dropout: the same beams each time
    module.use_decoding(dm, "", None)
    questions = [e.question for e in dm.splits["val"][:40]]
    beams = module.answerer(module.model, questions)
    reranker = new_reranker(module.model, dm.tokenizer, dm.target, dm.max_question_len, 32)
    with torch.no_grad():
        reranker.net.head.weight.normal_(0, 5.0)  # an arbitrary scorer, deaf to the beam: the order changes
        reranker.net.beam_weight.zero_()
    save_reranker(reranker, tmp_path / RERANKER_FILE)
    loaded = load_reranker(tmp_path / RERANKER_FILE, dm.tokenizer, dm.max_question_len)
    lists = [[(a.triple.key, a.triple.obj, 0.0) for a in beam] for beam in beams]
    torch.testing.assert_close(torch.tensor(loaded.scores(questions, lists)), torch.tensor(reranker.scores(questions, lists)))
    module.reranker = loaded
    module.use_decoding(dm, "", None)
    reranked = module.answerer(module.model, questions)
    assert any([a.key_id for a in r] != [a.key_id for a in b] for r, b in zip(reranked, beams))
    for r, b in zip(reranked, beams):
        assert sorted(a.key_id for a in r) == sorted(a.key_id for a in b)  # the same KB keys, reordered
        assert sum(a.confidence for a in r) == pytest.approx(1.0, abs=1e-4)
        assert [a.confidence for a in r] == sorted((a.confidence for a in r), reverse=True)


def test_a_file_that_is_not_a_reranker_is_refused(toy, tmp_path):
    dm, _ = toy
    torch.save({"state_dict": {}}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="is not a kgqa reranker"):
        load_reranker(tmp_path / "x.pt", dm.tokenizer, dm.max_question_len)


@pytest.mark.slow
def test_rerank_beam_trains_a_reranker_after_the_fit_that_kgqa_eval_uses(tmp_path):
    run = tmp_path / "run"
    run_cli("train", "logger=csv", "rerank=beam", "rerank.epochs=1", f"hydra.run.dir={run}")
    trained = json.loads((run / "metrics.json").read_text())["metrics"]
    assert (run / "checkpoints" / RERANKER_FILE).is_file()
    assert {"val/em", "val/no_rerank/em", "test/oracle", "test/no_rerank/oracle"} <= trained.keys()
    assert trained["test/oracle"] == trained["test/no_rerank/oracle"]  # the same beams, reordered
    assert trained["test/em"] >= trained["test/no_rerank/em"] - 0.02
    evaluated = printed_metrics(run_cli("evaluate", f"ckpt={run}", "split=test", "logger=csv", f"hydra.run.dir={tmp_path / 'e'}"))
    beam_order = printed_metrics(run_cli("evaluate", f"ckpt={run}", "split=test", "logger=csv", "use_reranker=false",
                                         f"hydra.run.dir={tmp_path / 'b'}"))
    assert evaluated["test/em"] == pytest.approx(trained["test/em"], abs=1e-4)
    assert beam_order["test/em"] == pytest.approx(trained["test/no_rerank/em"], abs=1e-4)
