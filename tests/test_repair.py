"""Fixing a wrong answer without retraining: corrections files, the correction memory, live edits, kgqa-repair."""
from __future__ import annotations

import json
import logging
import multiprocessing
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

from cli import compose_train, printed_json, printed_metrics, run_cli
from kgqa.build import build_datamodule, build_module
from kgqa.data.kgclue import QAExample
from kgqa.data.triples import Key, Triple
from kgqa.decoding.memory import CorrectionMemory
from kgqa.errors import DataError
from kgqa.kb.changes import Change
from kgqa.kb.columns import KnowledgeBase
from kgqa.module import KgqaModule
from kgqa.kb.corrections import Correction, CorrectionFile, normalise_question, read_corrections
from kgqa.repair import CORRECTION_ID, allowed_kl

BIRTH, PLACE, COURSE, FEAT = (Key("刘晓华", "出生日期", "教授"), Key("刘晓华", "出生地", "教授"),
                              Key("刘晓华", "主讲课程", "教授"), Key("刘晓华", "主要成就", "教授"))
KB = KnowledgeBase([Triple(BIRTH, "1960年"), Triple(PLACE, "上海"), Triple(COURSE, "数学"), Triple(FEAT, "院士"),
                    Triple(Key("王芳", "出生日期"), "1970年")])


def write_lines(path: Path, *records) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in records),
                    encoding="utf-8")
    return path


def test_a_corrections_file_reads_both_forms_and_kgclue_lines(tmp_path):
    path = write_lines(tmp_path / "c.jsonl",
                       {"question": "刘晓华主要讲什么课？", "answer": "刘晓华（教授） ||| 主讲课程 ||| 数学",
                        "wrong": ["刘晓华（教授） ||| 主要成就"]},
                       {"question": "王芳哪年出生", "subject": "王芳", "predicate": "出生日期"},
                       {"id": 7, "question": "刘晓华生在哪", "answer": "刘晓华（教授） ||| 出生地 ||| 上海"})
    got = read_corrections(path, KB)
    assert got == [Correction("刘晓华主要讲什么课？", COURSE, (FEAT,)), Correction("王芳哪年出生", Key("王芳", "出生日期")),
                   Correction("刘晓华生在哪", PLACE)]


BAD_LINES = {
    "not JSON": ('{"question": "刘晓华哪年出生", ', "not JSON"),
    "no question": ({"answer": "刘晓华（教授） ||| 出生日期"}, "needs a non-empty \"question\""),
    "no key": ({"question": "刘晓华哪年出生"}, "needs \"answer\""),
    "bad key": ({"question": "刘晓华哪年出生", "answer": "刘晓华 出生日期"}, "a key is"),
    "a key the KB lacks": ({"question": "刘晓华哪年出生", "answer": "刘晓华（演员） ||| 出生日期"}, "the KB has no key 刘晓华（演员）"),
    "a wrong key the KB lacks": ({"question": "刘晓华哪年出生", "answer": "刘晓华（教授） ||| 出生日期",
                                  "wrong": ["刘晓华（教授） ||| 身高"]}, "the KB has no key 刘晓华（教授） ||| 身高"),
    "two answers": ({"question": "刘晓华 哪年出生?", "answer": "刘晓华（教授） ||| 出生地"}, "another answer for the question of line 1"),
}


@pytest.mark.parametrize("case", BAD_LINES)
def test_a_bad_line_is_one_error_naming_file_and_line(tmp_path, case):
    line, why = BAD_LINES[case]
    path = write_lines(tmp_path / "c.jsonl", {"question": "刘晓华哪年出生？", "answer": "刘晓华（教授） ||| 出生日期"},
                       {"question": "王芳哪年出生", "answer": "王芳 ||| 出生日期"}, line)
    with pytest.raises(DataError, match=rf"c\.jsonl:3: .*{why[:30]}".replace("(", r"\(").replace("|", r"\|")):
        read_corrections(path, KB)
    with pytest.raises(DataError, match=r"c\.jsonl:3"):
        CorrectionMemory(KB, CorrectionFile(path).read(KB))


def test_skipping_bad_lines_counts_them_and_a_foreign_file_is_refused_even_so(tmp_path, caplog):
    path = write_lines(tmp_path / "c.jsonl", {"question": "刘晓华哪年出生", "answer": "刘晓华（教授） ||| 出生日期"},
                       "{broken", {"question": "王芳哪年出生", "answer": "王芳 ||| 出生日期"},
                       {"question": "x", "answer": "张三 ||| 身高"})
    with caplog.at_level(logging.WARNING):
        assert [c.key for c in read_corrections(path, KB, "skip")] == [BIRTH, Key("王芳", "出生日期")]
    assert "skipped 2 bad line(s)" in caplog.text
    foreign = write_lines(tmp_path / "f.jsonl", {"question": "a", "answer": "张三 ||| 身高"},
                          {"question": "b", "answer": "李四 ||| 身高"}, {"question": "c", "answer": "王芳 ||| 出生日期"})
    with pytest.raises(DataError, match="f.jsonl: 2 of its 3 corrections name keys this KB never had: it was made for another KB"):
        read_corrections(foreign, KB, "skip")


def memory(close=0.9, when_wrong=0.6, kb=KB):
    return CorrectionMemory(kb, [Correction("刘晓华主要讲什么课", COURSE, (FEAT,)), Correction("刘晓华是哪年出生的", BIRTH, (PLACE,))],
                            close=close, when_wrong=when_wrong)


def test_the_memory_answers_the_same_question_a_close_one_and_leaves_others_alone():
    m = memory()
    assert m.match("刘晓华 主要讲什么课？", None).key_id == KB.key_id(COURSE)  # the same after normalisation
    assert m.match("刘晓华主要讲什么课程", KB.key_id(COURSE)).key_id == KB.key_id(COURSE)  # close: ratio 0.95
    # a rephrasing, not close (ratio 0.71): corrected only while the beam repeats the mistake the correction names
    assert m.match("刘晓华主讲哪门课", KB.key_id(FEAT)).key_id == KB.key_id(COURSE)
    assert m.match("刘晓华主讲哪门课", KB.key_id(BIRTH)) is None
    assert m.match("刘晓华出生在哪里", KB.key_id(PLACE)) is None  # another question about the subject stays the model's
    assert memory(close=0.7).match("刘晓华主讲哪门课", None).key_id == KB.key_id(COURSE)  # the threshold decides
    # another subject's question, however close, is never corrected by it (0.71 here; 0.91 for "演员赵谢…"/"演员赵王…")
    assert memory(close=0.7, when_wrong=0.5).match("王芳是哪年出生的", KB.key_id(PLACE)) is None


def test_a_correction_whose_key_a_kb_change_deleted_is_counted_not_used():
    changed = KB.updated([Change("delete", COURSE)])
    m = memory(kb=changed)
    assert m.match("刘晓华主要讲什么课", None) is None and m.stale == 1
    assert m.match("刘晓华是哪年出生的", None).key_id == KB.key_id(BIRTH)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.sampled_from([" ", "？", "?", "，", "\u3000", "！"])), max_size=4),
       st.booleans())
def test_spaces_punctuation_and_width_never_hide_a_corrected_question(inserts, full_width):
    question = list("刘晓华是哪年出生的")
    for position, mark in sorted(inserts, reverse=True):
        question.insert(position, mark)
    text = "".join(question)
    text = text.replace("?", "？") if full_width else text
    assert normalise_question(text) == "刘晓华是哪年出生的"
    assert memory(close=1.0, when_wrong=1.0).match(text, None).key_id == KB.key_id(BIRTH)


def add_one_by_one(path: str, names: list[str]) -> None:
    store = CorrectionFile(path)
    for name in names:
        store.add(KB, [Correction(f"{name}哪年出生", BIRTH)])


def test_two_writers_adding_corrections_at_once_lose_nothing(tmp_path):
    path = tmp_path / "c.jsonl"
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=add_one_by_one, args=(str(path), [f"{w}{i}" for i in range(15)])) for w in "甲乙"]
    for p in writers:
        p.start()
    for p in writers:
        p.join(120)
    assert [p.exitcode for p in writers] == [0, 0]
    questions = {c.question for c in CorrectionFile(path).read(KB)}
    assert questions == {f"{w}{i}哪年出生" for w in "甲乙" for i in range(15)}
    assert CorrectionFile(path).remove(["甲3 哪年出生？"]) == 1 and len(CorrectionFile(path).read(KB)) == 29


# --- end to end: a weak toy run, its wrong val answers corrected ----------------------------------
@pytest.fixture(scope="module")
def weak_run(tmp_path_factory) -> tuple[Path, list[dict]]:
    """A toy run trained too short to be right everywhere, and a correction for each of its wrong val answers."""
    from kgqa.data.toy import make_toy

    run_dir = tmp_path_factory.mktemp("repair") / "run"
    run_cli("train", "trainer.max_epochs=6", "logger=csv", "lookahead=none", f"hydra.run.dir={run_dir}")
    val = {str(e.id): e for e in make_toy().splits["val"]}
    rows = [json.loads(line) for line in (run_dir / "questions_val.jsonl").read_text(encoding="utf-8").splitlines()]
    corrections = [{"question": val[str(r["id"])].question, "answer": val[str(r["id"])].triple.answer(),
                    "wrong": [r["predicted"]], "id": r["id"]} for r in rows if not r["correct"]]
    assert len(corrections) >= 5, "the weak run is right too often to test corrections"
    return run_dir, corrections


def correctness(path: Path) -> dict[str, bool]:
    return {str(r["id"]): r["correct"] for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())}


@pytest.mark.slow
def test_the_memory_fixes_every_corrected_question_and_breaks_none_in_every_entry_point(weak_run, tmp_path):
    run_dir, corrections = weak_run
    fixes = write_lines(tmp_path / "fixes.jsonl", *corrections)
    proc = run_cli("evaluate", f"ckpt={run_dir}", "split=val", "lookahead=none", f"corrections={fixes}", "logger=csv",
                   f"hydra.run.dir={tmp_path / 'eval'}")
    before, after = correctness(run_dir / "questions_val.jsonl"), correctness(tmp_path / "eval" / "questions_val.jsonl")
    corrected = {str(c["id"]) for c in corrections}
    assert all(after[i] for i in corrected)  # every corrected question is answered right
    assert [i for i, ok in before.items() if ok and not after[i]] == []  # and no right answer went wrong
    assert printed_metrics(proc)["val/from_memory"] >= len(corrections)

    questions = write_lines(tmp_path / "q.json", *({"id": c["id"], "question": c["question"]} for c in corrections))
    run_cli("predict", f"ckpt={run_dir}", f"input={questions}", f"output={tmp_path / 'answers.json'}", "lookahead=none",
            f"corrections={fixes}")
    answers = [json.loads(line) for line in (tmp_path / "answers.json").read_text(encoding="utf-8").splitlines()]
    assert [(a["answer"], a["from_memory"]) for a in answers] == [(c["answer"], True) for c in corrections]

    # a KB folder keeps them; a KB change that deletes a corrected key is counted at decode time, never a crash
    kb = tmp_path / "kb"
    run_cli("kb", f"out={kb}")
    assert printed_json(run_cli("kb", "action=correct", f"kb_dir={kb}", f"corrections={fixes}"))["corrections"] == len(corrections)
    listed = run_cli("kb", "action=corrections", f"kb_dir={kb}").stdout.splitlines()
    assert sorted(json.loads(line)["question"] for line in listed) == sorted(c["question"] for c in corrections)
    gone = tmp_path / "gone.tsv"
    subject, predicate, _ = (part.strip() for part in corrections[0]["answer"].split("|||"))
    gone.write_text(f"{subject}\t{predicate}\n", encoding="utf-8")
    run_cli("kb", "action=delete", f"kb_dir={kb}", f"triples={gone}")
    proc = run_cli("evaluate", f"ckpt={run_dir}", "split=val", "lookahead=none", "kb=folder", f"kb.path={kb}",
                   f"corrections={kb}", "logger=csv", f"hydra.run.dir={tmp_path / 'eval2'}")
    assert "1 answer(s) not corrected: the correction's key was deleted" in proc.stdout + proc.stderr
    assert printed_metrics(proc)["val/from_memory"] >= len(corrections) - 1


@pytest.fixture(scope="module")
def repaired_run(weak_run, tmp_path_factory) -> Path:
    run_dir, corrections = weak_run
    folder = tmp_path_factory.mktemp("repaired")
    fixes = write_lines(folder / "fixes.jsonl", *corrections)
    run_cli("repair", f"run={run_dir}", f"corrections={fixes}", "logger=csv", f"hydra.run.dir={folder / 'run'}")
    return folder / "run"


@pytest.mark.slow
def test_kgqa_repair_fine_tunes_a_new_run_that_names_its_parent_and_answers_the_corrections(weak_run, repaired_run):
    run_dir, corrections = weak_run
    record = json.loads((repaired_run / "metrics.json").read_text(encoding="utf-8"))
    assert record["factors"]["parent_run"] == str(run_dir.resolve()) and record["factors"]["lookahead"] == "none"
    after = correctness(repaired_run / "questions_val.jsonl")
    fixed = [after[str(c["id"])] for c in corrections]
    assert sum(fixed) >= 0.8 * len(fixed)  # the corrected questions, learnt


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="issue 25's churn goal is not met: the fine-tune turns right answers wrong "
                                       "(experiments/bench_repair.py: 12 % of right test answers at the defaults)")
def test_kgqa_repair_keeps_what_was_right(weak_run, repaired_run):
    run_dir, _ = weak_run
    before, after = correctness(run_dir / "questions_val.jsonl"), correctness(repaired_run / "questions_val.jsonl")
    kept = [after[i] for i, ok in before.items() if ok]
    assert sum(kept) >= 0.95 * len(kept)  # what was right stays right (replay)


# --- the fine-tune's distillation: held to the parent on replayed pairs only ----------------------------------
def test_the_parent_kl_is_renormalised_over_the_allowed_tokens_by_hand():
    parent = torch.tensor([[0.0, 1.0, 5.0], [2.0, 0.0, 0.0]])
    student = torch.tensor([[1.0, 0.0, -3.0], [0.0, 0.0, 9.0]])
    allowed = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1], [1, 2]])  # position 0: tokens 0, 1; position 1: all
    p0, q0 = torch.softmax(parent[0, :2], 0), torch.softmax(student[0, :2], 0)
    p1, q1 = torch.softmax(parent[1], 0), torch.softmax(student[1], 0)
    by_hand = ((p0 * (p0 / q0).log()).sum() + (p1 * (p1 / q1).log()).sum()) / 2
    torch.testing.assert_close(allowed_kl(parent, student, allowed), by_hand)
    torch.testing.assert_close(allowed_kl(parent, parent, allowed), torch.tensor(0.0))
    assert allowed_kl(parent, student, None) > 0


@pytest.mark.filterwarnings("ignore:You are trying to `self.log()`")  # no Trainer: a step by hand
def test_distillation_adds_the_parent_kl_of_the_replayed_pairs_to_the_gold_loss():
    """With distill > 0 a RepairModule's loss is the gold loss of the whole batch plus distill × the parent KL
    of its replayed pairs (not of its corrections); the KL is 0 until the model moves."""
    cfg = compose_train("logger=csv", "model._target_=kgqa.repair.RepairModule", "+model.distill=2.0")
    dm = build_datamodule(cfg)
    dm.setup()
    module = build_module(cfg, dm.tokenizer.vocab_size).eval()  # no dropout: the passes are comparable
    module.datamodule = dm
    train = dm.splits["train"][:12]
    examples = [QAExample(f"{CORRECTION_ID}{i}", e.question, e.triple) if i % 3 == 0 else e for i, e in enumerate(train)]
    replayed = dm.train_collate([e for i, e in enumerate(examples) if i % 3])
    batch = dm.train_collate(examples)
    module.on_fit_start()
    with torch.no_grad():
        torch.testing.assert_close(module.training_step(batch, 0), KgqaModule.training_step(module, batch, 0))
        for p in module.model.parameters():  # the model moves away from its parent
            p.add_(torch.randn_like(p) * 0.05)
        inputs = (replayed["input_ids"], replayed["segment_ids"], replayed["valid"])
        kl = allowed_kl(module.parent[0].target_scores(*inputs)[0], module.model.target_scores(*inputs)[0],
                        replayed.get("allowed"))
        expected = KgqaModule.training_step(module, batch, 0) + 2.0 * kl
        assert kl > 1e-3
        torch.testing.assert_close(module.training_step(batch, 0), expected)
