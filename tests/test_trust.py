"""A checkpoint is data, never code; settings that cannot work fail before any work; a checkpoint
is not silently decoded with a KB it was not trained with."""
from __future__ import annotations

import copy
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli import printed_metrics, run_cli
from kgqa.cli import CONFIG_DIR
from kgqa.cli.checks import check_config
from kgqa.data.toy import make_toy
from kgqa.errors import CheckpointError, ConfigError
from kgqa.checkpoints import load_checkpoint
from kgqa.trusted import RENAMED_TARGETS, project_targets, trusted_config

SMALL_TOY = ["+data.source.n_entities=300"]


@pytest.fixture(scope="module")
def toy_ckpt(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("trust") / "run"
    run_cli("train", "trainer.max_epochs=1", "trainer.num_sanity_val_steps=0", "logger=csv", *SMALL_TOY,
            f"hydra.run.dir={run_dir}")
    return run_dir / "checkpoints" / "best.ckpt"


def one_line_error(proc, *fragments: str) -> None:
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert any(line.startswith("kgqa: ") for line in proc.stderr.splitlines()), proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr[-3000:]


# --- a checkpoint is data ----------------------------------------------------------------
def test_project_targets_are_what_conf_declares():
    targets = project_targets()
    assert {"kgqa.kb.sources.FileKB", "kgqa.decoding.processors.SubjectCopy", "lightning.pytorch.Trainer"} <= targets
    assert not any(t.startswith(("os.", "subprocess.", "builtins.")) for t in targets)


HOSTILE = {  # where a crafted file may hide a call, and what it asks for
    "kb": lambda h, probe: h["run_config"].__setitem__("kb", {"_target_": "os.makedirs", "name": probe}),
    "data source": lambda h, probe: h["run_config"]["data"].__setitem__(
        "source", {"_target_": "os.makedirs", "name": probe}),
    "a rule in a list": lambda h, probe: h["run_config"].__setitem__(
        "lookahead", [{"_target_": "kgqa.decoding.processors.SubjectCopy"}, {"_target_": "os.makedirs", "name": probe}]),
    "the module's own hparams": lambda h, probe: h.__setitem__("lookahead", {"_target_": "os.makedirs", "name": probe}),
    "nested deep": lambda h, probe: h["run_config"]["trainer"].__setitem__(
        "callbacks", [{"x": {"_target_": "builtins.exec", "_args_": ["import os; os.makedirs('" + probe + "')"]}}]),
    "an interpolation": lambda h, probe: h["run_config"]["data"].__setitem__("name", "${oc.env:HOME}"),
}


@pytest.mark.parametrize("where", HOSTILE)
def test_a_crafted_checkpoint_is_refused_before_anything_runs(toy_ckpt, tmp_path, where):
    probe = tmp_path / "made_by_the_checkpoint"
    ckpt = torch.load(toy_ckpt, weights_only=True)
    HOSTILE[where](ckpt["hyper_parameters"], str(probe))
    crafted = tmp_path / "crafted.ckpt"
    torch.save(ckpt, crafted)
    with pytest.raises(CheckpointError, match="crafted.ckpt"):
        load_checkpoint(crafted)
    assert not probe.exists()


def test_kgqa_eval_and_predict_refuse_a_crafted_checkpoint(toy_ckpt, tmp_path):
    probe = tmp_path / "made_by_the_checkpoint"
    ckpt = torch.load(toy_ckpt, weights_only=True)
    ckpt["hyper_parameters"]["run_config"]["kb"] = {"_target_": "os.makedirs", "name": str(probe)}
    crafted = tmp_path / "crafted.ckpt"
    torch.save(ckpt, crafted)
    proc = run_cli("evaluate", f"ckpt={crafted}", "logger=csv", f"hydra.run.dir={tmp_path}/eval", check=False)
    one_line_error(proc, "os.makedirs", "not one of kgqa's own targets")
    proc = run_cli("predict", f"ckpt={crafted}", "question='李强属于什么气候？'", check=False)
    one_line_error(proc, "os.makedirs")
    assert not probe.exists()


def test_a_crafted_run_folder_is_refused_on_resume(toy_ckpt, tmp_path):
    """Whoever made the folder controls run_config.yaml and the checksum in run.json alike."""
    probe = tmp_path / "made_by_the_run_folder"
    run_dir = tmp_path / "run"
    shutil.copytree(toy_ckpt.parents[1], run_dir)
    config = yaml.safe_load((run_dir / "run_config.yaml").read_text())
    config["logger"] = {"_target_": "os.makedirs", "name": str(probe)}
    text = yaml.safe_dump(config, allow_unicode=True)
    (run_dir / "run_config.yaml").write_text(text)
    info = json.loads((run_dir / "run.json").read_text()) | {"run_config_sha256": hashlib.sha256(text.encode()).hexdigest()}
    (run_dir / "run.json").write_text(json.dumps(info))
    proc = run_cli("train", f"resume={run_dir}", check=False)
    one_line_error(proc, "logger._target_='os.makedirs'", "not one of kgqa's own targets")
    assert not probe.exists()


def test_trusted_config_keeps_a_plain_config():
    config = {"kb": {"_target_": "kgqa.kb.sources.SynthKB", "seed": 0}, "lookahead": None, "tags": ["a", 1]}
    assert trusted_config(copy.deepcopy(config), "x") == config


def test_renamed_targets_are_read_under_their_new_names():
    assert not set(RENAMED_TARGETS) & project_targets() and set(RENAMED_TARGETS.values()) <= project_targets()
    for old, new in RENAMED_TARGETS.items():
        stored = {"kb": {"_target_": old, "path": "x"}, "lookahead": [{"_target_": old}], "tags": [old]}
        assert trusted_config(stored, "x") == {"kb": {"_target_": new, "path": "x"}, "lookahead": [{"_target_": new}],
                                               "tags": [old]}


def test_a_checkpoint_saved_with_an_old_target_decodes_as_before(toy_ckpt, tmp_path):
    """A checkpoint trained before kgqa/kb/ names its KB source by its old path, one trained before the
    module had a config node of its own (model._target_) has none, and one trained before the data module
    had its node (data.module) keeps its settings flat in data."""
    ckpt = torch.load(toy_ckpt, weights_only=True)
    run = ckpt["hyper_parameters"]["run_config"]
    assert run["kb"]["_target_"] == "kgqa.kb.sources.SynthKB"
    run["kb"]["_target_"] = "kgqa.data.sources.SynthKB"
    del run["model"]
    module = run["data"].pop("module")
    run["data"].update({k: v for k, v in module.items() if k != "_target_"})
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    assert load_checkpoint(old)["hyper_parameters"]["run_config"]["kb"]["_target_"] == "kgqa.kb.sources.SynthKB"
    metrics = {name: printed_metrics(run_cli("evaluate", f"ckpt={path}", "split=val", "logger=csv",
                                             f"hydra.run.dir={tmp_path}/{name}"))
               for name, path in (("new", toy_ckpt), ("old", old))}
    assert metrics["old"] == metrics["new"] and "val/em" in metrics["old"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4096))
def test_any_bytes_are_a_checkpoint_or_a_checkpoint_error(tmp_path, data):
    path = tmp_path / "any.ckpt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="any.ckpt"):
        load_checkpoint(path)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=10**9), flip=st.integers(min_value=0, max_value=10**9))
def test_damaged_checkpoints_load_or_fail_clearly(toy_ckpt, tmp_path, cut, flip):
    data = bytearray(toy_ckpt.read_bytes())
    data = data[: cut % len(data)] if cut % 3 == 0 else data
    if data:
        data[flip % len(data)] ^= 0xFF
    path = tmp_path / "damaged.ckpt"
    path.write_bytes(bytes(data))
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as e:
        assert "damaged.ckpt" in str(e)
    else:
        assert isinstance(ckpt["state_dict"], dict)


# --- a checkpoint and the KB it was trained with -----------------------------------------
def write_knowledge(path: Path, triples) -> Path:
    path.write_text("".join(f"{t.key.full_subject}\t{t.key.predicate}\t{t.obj}\n" for t in triples), encoding="utf-8")
    return path


def test_a_checkpoint_refuses_a_kb_it_was_not_trained_with(toy_ckpt, tmp_path):
    toy = make_toy(n_entities=300)
    gold = {e.triple.key for split in ("val", "test") for e in toy.splits[split]}
    # the same characters, but none of the val/test gold keys: the wrong KB for these questions
    no_gold = write_knowledge(tmp_path / "no_gold.txt", [t for t in toy.triples if t.key not in gold])
    proc = run_cli("evaluate", f"ckpt={toy_ckpt}", "kb=file", f"kb.path={no_gold}", "logger=csv",
                   f"hydra.run.dir={tmp_path}/e1", check=False)
    one_line_error(proc, "was not trained with this KB", "gold key", "allow_kb_change=true")
    # characters the vocabulary has never seen
    foreign = write_knowledge(tmp_path / "foreign.txt", list(toy.triples) + [
        type(toy.triples[0]).parse("鑫淼（犇骉）", "龘", "靐")])
    proc = run_cli("evaluate", f"ckpt={toy_ckpt}", "kb=file", f"kb.path={foreign}", "logger=csv",
                   f"hydra.run.dir={tmp_path}/e2", check=False)
    one_line_error(proc, "cannot spell", "龘")
    proc = run_cli("evaluate", f"ckpt={toy_ckpt}", "kb=file", f"kb.path={foreign}", "allow_kb_change=true",
                   "logger=csv", f"hydra.run.dir={tmp_path}/e3")
    assert "test/em" in printed_metrics(proc)


# --- settings that cannot work -----------------------------------------------------------
BAD_SETTINGS = [
    ("train", ["decode.beam=abc"], "decode.beam='abc'"),
    ("train", ["decode.beam=0"], "decode.beam=0"),
    ("train", ["decode.beam=2", "decode.num_return=3"], "decode.num_return=3 exceeds"),
    ("train", ["target=xyz"], "one of spm, smp"),
    ("train", ["kb=file"], "kb.path="),
    ("train", ["optim.lr=-1"], "optim.lr=-1"),
    ("train", ["data.on_bad_line=ignore"], "one of error, skip"),
    ("train", ["ablation_lookaheads=[none,nope]"], "lookahead choices"),
    ("train", ["backbone.arch=gpt"], "one of bert, roformer"),
    ("train", ["model.copy=yes"], "model.copy='yes' is not valid: expected one of True, False"),
    ("eval", ["ckpt=x", "split=train"], "one of val, test"),
    ("eval", [], "ckpt="),
    ("predict", ["ckpt=x", "batch_size=0"], "batch_size=0"),
]


@pytest.mark.parametrize("config_name, overrides, message", BAD_SETTINGS)
def test_settings_that_cannot_work_are_named(config_name, overrides, message):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides)
    with pytest.raises(ConfigError) as error:
        check_config(cfg)
    assert message in str(error.value)


@pytest.mark.parametrize("config_name", ["train", "eval", "predict", "kb"])
def test_the_default_settings_pass(config_name):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=["ckpt=x"] if config_name in ("eval", "predict") else [])
    check_config(cfg)


@pytest.mark.parametrize("script, overrides, message", [
    ("train", ["decode.beam=abc", "hydra.run.dir=/tmp/kgqa-never"], "decode.beam='abc'"),
    ("evaluate", ["hydra.run.dir=/tmp/kgqa-never"], "ckpt="),
    ("predict", ["ckpt=nowhere", "input=a.json", "output=a.json"], "would overwrite the input"),
])
def test_entry_points_fail_in_one_line_before_any_work(script, overrides, message):
    proc = run_cli(script, *overrides, check=False)
    one_line_error(proc, message)
    assert not Path("/tmp/kgqa-never/checkpoints").exists()
