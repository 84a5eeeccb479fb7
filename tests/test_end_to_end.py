"""The README's commands, run for real: train on toy data, evaluate, predict; KgCLUE smoke run."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from cli import printed_json, printed_metrics, run_cli
from wandb_offline import read_offline_run
from kgqa.data.kgclue import read_qa
from kgqa.data.toy import make_toy
from kgqa.report.collect import trained_model


@pytest.fixture(scope="module")
def toy_training(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    run_dir = tmp_path_factory.mktemp("toy") / "run"
    return run_dir, run_cli("train", "trainer.max_epochs=8", f"hydra.run.dir={run_dir}")


@pytest.fixture(scope="module")
def toy_run(toy_training) -> tuple[Path, dict[str, float]]:
    run_dir, proc = toy_training
    return run_dir, printed_metrics(proc)


CONSOLE_NOISE = ["💡 Tip", "litlogger", "GPU available", "TPU available", "Seed set to", "Restoring states",
                 "Loaded model weights", "LeafSpec", "transfer_batch_to_device", "anonymous",
                 "Validate metric", "Test metric"]


def test_a_run_prints_only_the_config_progress_and_metrics(toy_training):
    """Lightning's tips and INFO lines, deprecation warnings from its internals, W&B's anonymous warning
    and the empty validate/test tables stay off the console; the config and the metrics are there."""
    _, proc = toy_training
    console = proc.stdout + proc.stderr
    assert [noise for noise in CONSOLE_NOISE if noise in console] == []
    assert proc.stdout.lstrip().startswith("config") and printed_metrics(proc)["val/emf1"] >= 0


def test_toy_training_learns_held_out_questions(toy_run):
    run_dir, metrics = toy_run
    assert metrics["val/em"] >= 0.9 and metrics["test/em"] >= 0.9, metrics
    assert 0.0 <= metrics["test/f1"] <= 1.0 and metrics["test/emf1"] >= 0.9


def test_toy_run_leaves_offline_wandb_run_with_metrics(toy_run):
    run_dir, metrics = toy_run
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    run = read_offline_run(offline)
    assert run.group == "toy" and run.name == "toy-roformer-tiny-spm-lcs_power"
    assert run.config["run_config"]["target"] == "spm"
    logged = [h["val/em"] for h in run.history if "val/em" in h]
    assert len(logged) >= 8  # one per epoch, then the final validation
    assert logged[-1] == pytest.approx(metrics["val/em"], abs=5e-5)  # printed with 4 decimals
    wrong = run_dir / "wrong_answers_test.jsonl"
    assert wrong.is_file()


def test_eval_decodes_checkpoint_with_other_settings(toy_run):
    """Greedy, without look-ahead, each key scored by the model's own probabilities (decode.renormalise=false)."""
    run_dir, _ = toy_run
    proc = run_cli("evaluate", f"ckpt={run_dir}", "split=test", "lookahead=none", "decode.beam=1", "decode.renormalise=false",
                   "logger=csv", f"hydra.run.dir={run_dir}/eval")
    assert printed_metrics(proc)["test/em"] >= 0.9
    record = json.loads((run_dir / "eval" / "metrics.json").read_text(encoding="utf-8"))
    factors = record["factors"]
    assert (factors["beam"], factors["renormalise"], factors["lookahead"]) == (1, False, "none")
    trained = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    assert trained_model(record) == trained_model(trained) == str(run_dir.resolve())  # the report sees one model


def test_predict_answers_a_typed_question_and_rejects_bad_ones(toy_run):
    run_dir, _ = toy_run
    example = make_toy().splits["test"][0]
    proc = run_cli("predict", f"ckpt={run_dir}", f"question='{example.question}'")
    first = next(line for line in proc.stdout.splitlines() if line.startswith("1. "))
    assert first.startswith(f"1. {example.triple.answer()}  (confidence ")
    proc = run_cli("predict", f"ckpt={run_dir}", f"question='{example.question}'", "decode.min_confidence=1.0")
    assert "no confident answer" in proc.stdout
    for bad, message in (("'   '", "the question is empty"), ("'" + "问" * 100 + "'", "longer than 64 tokens")):
        proc = run_cli("predict", f"ckpt={run_dir}", f"question={bad}", check=False)
        assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr


def test_truncated_checkpoint_gives_clear_error(toy_run, tmp_path):
    run_dir, _ = toy_run
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes((run_dir / "checkpoints" / "best.ckpt").read_bytes()[:5000])
    proc = run_cli("evaluate", f"ckpt={broken}", "logger=csv", f"hydra.run.dir={tmp_path}/eval", check=False)
    assert proc.returncode != 0 and "is not a readable checkpoint" in proc.stderr


def test_kgclue_smoke_train_test_predict(kgclue_root, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("train", "data=kgclue", f"data.root={kgclue_root}", "data.source.limit=48", "trainer.max_epochs=1",
                   "trainer.num_sanity_val_steps=0", "logger=csv", "augment=subject_swap", "loss.trie_loss=0.5",
                   "loss.sequence_loss=0.5",
                   f"hydra.run.dir={run_dir}")
    metrics = printed_metrics(proc)
    assert {"val/em", "val/f1", "val/emf1", "test/em", "test/f1", "test/emf1"} <= set(metrics)
    # strict subject swap: only the 48 questions' own entities are swapped in, so a few pairs, not one a question
    assert re.search(r"subject swap \(train entities\): [1-9]\d* extra training pairs from 48 questions",
                     (run_dir / "train.log").read_text())
    questions = tmp_path / "test.json"
    questions.write_text("".join((kgclue_root / "test.json").read_text(encoding="utf-8").splitlines(True)[:16]), encoding="utf-8")
    out = tmp_path / "predict.json"
    run_cli("predict", f"ckpt={run_dir}", f"input={questions}", f"output={out}", "decode.beam=2")
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == [e.id for e in read_qa(questions, labelled=False)]
    assert all(len(r["answer"].split(" ||| ")) == 3 for r in rows)
    moved = tmp_path / "数据 moved"  # the data moved since: data.root in every entry point (data_root still works)
    moved.mkdir()
    for name in ("train.json", "test_public.json"):
        (moved / name).symlink_to(kgclue_root / name)
    (moved / "dev.json").write_text("".join((kgclue_root / "dev.json").read_text(encoding="utf-8").splitlines(True)[:5]),
                                    encoding="utf-8")
    for key in ("data.root", "data_root"):
        proc = run_cli("evaluate", f"ckpt={run_dir}", "split=val", f"{key}={moved}", "logger=csv",
                       f"hydra.run.dir={tmp_path / key}")
        assert len((tmp_path / key / "questions_val.jsonl").read_text().splitlines()) == 5  # the moved dev.json's
    assert f"kgqa: data_root= is deprecated, use data.root= (taken as data.root={moved})" in proc.stderr


def test_bad_qa_line_names_file_and_line_or_is_counted(kgclue_root, tmp_path):
    lines = (kgclue_root / "dev.json").read_text(encoding="utf-8").splitlines(True)[:5]
    lines[2] = '{"id": 2, "question": "谁?", "answer": "只有 ||| 两段"}\n'
    for name in ("train.json", "dev.json", "test_public.json"):
        (tmp_path / name).write_text("".join(lines), encoding="utf-8")
    proc = run_cli("kb", "data=kgclue", f"data.root={tmp_path}", "kb=gold", check=False)
    assert proc.returncode != 0 and f"{tmp_path / 'train.json'}:3:" in proc.stderr
    proc = run_cli("kb", "data=kgclue", f"data.root={tmp_path}", "kb=gold", "data.on_bad_line=skip")
    assert "skipped 1 bad line(s)" in proc.stdout + proc.stderr and printed_json(proc)["triples"] == 4


def test_exported_kb_reloads_as_file_kb(tmp_path):
    first = run_cli("kb", f"out={tmp_path}")
    stats = printed_json(first)
    again = run_cli("kb", "kb=file", f"kb.path={tmp_path / 'Knowledge.txt'}")
    reloaded = printed_json(again)
    assert {k: v for k, v in reloaded.items() if k != "build_seconds"} == {k: v for k, v in stats.items() if k != "build_seconds"}
    assert (tmp_path / "trie-spm" / "trie.json").is_file()


@pytest.mark.slow
def test_pretrained_backbone_trains_and_restores(tmp_path):
    """backbone.pretrained loads weights and tokenizer with from_pretrained (a tiny model saved here)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    toy = make_toy()
    chars = sorted({c for t in toy.triples for s in (t.key.subject, t.key.predicate, t.key.meaning) for c in s}
                   | {c for e in toy.splits["train"] for c in e.question})
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars]) + "\n", encoding="utf-8")
    model_dir = tmp_path / "tiny-bert"
    BertTokenizerFast(vocab_file=str(vocab), do_lower_case=False).save_pretrained(model_dir)
    BertModel(BertConfig(vocab_size=len(chars) + 5, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=128)).save_pretrained(model_dir)
    run_dir = tmp_path / "run"
    proc = run_cli("train", "backbone=bert", f"backbone.pretrained={model_dir}", "trainer.max_epochs=1",
                   "trainer.num_sanity_val_steps=0", "logger=csv", f"hydra.run.dir={run_dir}")
    trained = printed_metrics(proc)
    again = printed_metrics(run_cli("evaluate", f"ckpt={run_dir}", "split=test", "logger=csv", f"hydra.run.dir={tmp_path}/eval"))
    assert again["test/em"] == trained["test/em"] and again["test/f1"] == trained["test/f1"]


def test_deleted_fact_never_answered_after_kb_change(toy_run, tmp_path):
    """A KB change reaches a trained model without retraining: kb=folder with a recorded deletion."""
    run_dir, _ = toy_run
    example = make_toy().splits["test"][0]
    run_cli("kb", f"out={tmp_path / 'kb'}")
    gone = tmp_path / "gone.tsv"
    gone.write_text(f"{example.triple.key.full_subject}\t{example.triple.key.predicate}\n", encoding="utf-8")
    run_cli("kb", "action=delete", f"kb_dir={tmp_path / 'kb'}", f"triples={gone}")
    proc = run_cli("predict", f"ckpt={run_dir}", f"question='{example.question}'", "kb=folder", f"kb.path={tmp_path / 'kb'}",
                   "decode.beam=3", "decode.num_return=3")
    answers = [line for line in proc.stdout.splitlines() if line[:2] in ("1.", "2.", "3.")]
    assert len(answers) == 3 and not any(f" {example.triple.answer()} " in a for a in answers)
