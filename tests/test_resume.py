"""Resuming a run keeps everything: its val history across resumes, its folder wherever it moved, the
overrides a resume allows; other overrides and damaged run folders end in one line, before any work.
(Resume after kill -9: tests/test_workflow.py.)"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from cli import ROOT, run_cli
from test_workflow import SMALL_TOY


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory) -> Path:
    """A run trained for one epoch, logging to W&B (offline)."""
    run_dir = tmp_path_factory.mktemp("one_epoch") / "run"
    run_cli("train", "trainer.max_epochs=1", "trainer.num_sanity_val_steps=0", *SMALL_TOY, f"hydra.run.dir={run_dir}")
    return run_dir


def entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def test_moved_run_resumes_where_it_is_with_every_epoch_once(one_epoch, tmp_path):
    old, new = tmp_path / "old" / "run", tmp_path / "new" / "run"
    shutil.copytree(one_epoch, old)
    shutil.move(old, new)
    outputs = entries(ROOT / "outputs")
    run_cli("train", f"resume={new}", "trainer.max_epochs=2", "logger=csv")
    run_cli("train", f"resume={new}", "trainer.max_epochs=3")

    history = json.loads((new / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert history[0] == json.loads((one_epoch / "metrics.json").read_text())["history"][0]
    last = torch.load(new / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2
    best_state = next(state for key, state in last["callbacks"].items() if "val/emf1" in key)
    assert float(best_state["best_model_score"]) == max(h["val/emf1"] for h in history)  # the best kept its score
    # everything landed in the new place: nothing in the old one, no stray Hydra folder
    assert entries(tmp_path / "old") == set() and entries(ROOT / "outputs") == outputs
    saved = OmegaConf.load(new / "run_config.yaml")
    assert saved.output_dir == saved.logger.save_dir == saved.trainer.default_root_dir == str(new.resolve())
    best = json.loads((new / "metrics.json").read_text())["checkpoint"]
    assert best == str(new.resolve() / "checkpoints" / "best.ckpt")
    # logger=csv applied (and kept by the second resume); the W&B run of the first epoch stays the only one
    assert saved.logger._target_.endswith("CSVLogger") and len(list((new / "csv").glob("version_*"))) == 2
    assert len(list((new / "wandb").glob("offline-run-*"))) == 1
    # the original launch record stays; each resume records its own beside it
    assert (new / ".hydra" / "config.yaml").read_bytes() == (one_epoch / ".hydra" / "config.yaml").read_bytes()
    assert len(entries(new / ".hydra" / "resumes")) == 2


def test_resume_of_a_missing_folder_refuses_and_writes_nothing(tmp_path):
    """A mistyped resume= ends in one line before Hydra makes any folder (neither it nor outputs/<time>)."""
    missing, outputs = tmp_path / "no-such-run", entries(ROOT / "outputs")
    proc = run_cli("train", f"resume={missing}", "trainer.max_epochs=2", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"kgqa: resume={missing}: no such run folder"
    assert not missing.exists() and entries(ROOT / "outputs") == outputs


def without_digest_with_data_root(run_dir: Path) -> None:
    """An older run folder (no digest in run.json) whose data lived in a folder gone since."""
    cfg = OmegaConf.load(run_dir / "run_config.yaml")
    cfg.data.root = str(run_dir / "moved-away")
    OmegaConf.save(cfg, run_dir / "run_config.yaml")
    info = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({"wandb_id": info["wandb_id"]}))


@pytest.mark.parametrize("damage, overrides, named", [
    (None, ["target=smp", "trainer.max_epochs=2", "backbone=bert"], "refused: target=smp backbone=bert (allowed"),
    (lambda d: (d / "run_config.yaml").write_bytes((d / "run_config.yaml").read_bytes()[:600]), [], "run_config.yaml"),
    (lambda d: (d / "run.json").write_text('{"wandb_id": "ab'), [], "run.json is damaged"),
    (without_digest_with_data_root, [], "moved-away (saved in"),
], ids=["refused-override", "truncated-run-config", "garbage-run-json", "data-root-gone"])
def test_resume_refuses_in_one_line(one_epoch, tmp_path, damage, overrides, named):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    for name in ("run_config.yaml", "run.json", "checkpoints/last.ckpt"):
        shutil.copyfile(one_epoch / name, run_dir / name)
    if damage:
        damage(run_dir)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    proc = run_cli("train", f"resume={run_dir}", *overrides, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("kgqa: ") and named in message
    assert {p: p.read_bytes() for p in before} == before  # nothing of the run was touched


def test_resume_of_a_finished_run_says_it_was_finished(one_epoch, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(one_epoch, run_dir)
    proc = run_cli("train", f"resume={run_dir}", "logger=csv")
    assert (f"kgqa: resume={run_dir.resolve()}: the run finished its 1 epochs (trainer.max_epochs=1); its best "
            "checkpoint is tested again, nothing trained (give trainer.max_epochs=11 to train on)") in proc.stderr
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0


def test_a_run_saved_before_the_data_module_had_its_node_resumes(one_epoch, tmp_path):
    """Its run_config.yaml keeps the data module's settings flat in data (data.batch_size, ...); the old
    key of the resume override moves to data.module.num_workers with one line, and the run trains on."""
    import hashlib

    run_dir = tmp_path / "run"
    shutil.copytree(one_epoch, run_dir)
    cfg = OmegaConf.to_container(OmegaConf.load(run_dir / "run_config.yaml"))
    module = cfg["data"].pop("module")
    cfg["data"].update({k: v for k, v in module.items() if k != "_target_"})
    (run_dir / "run_config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    info = json.loads((run_dir / "run.json").read_text())
    info["run_config_sha256"] = hashlib.sha256((run_dir / "run_config.yaml").read_bytes()).hexdigest()
    (run_dir / "run.json").write_text(json.dumps(info))
    proc = run_cli("train", f"resume={run_dir}", "trainer.max_epochs=2", "data.num_workers=0", "logger=csv")
    assert "kgqa: data.num_workers= is deprecated, use data.module.num_workers= (taken as data.module.num_workers=0)" \
        in proc.stderr
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    assert [h["epoch"] for h in json.loads((run_dir / "metrics.json").read_text())["history"]] == [0, 1]


def test_the_data_module_config_reads_an_old_flat_data_node():
    from kgqa.build import datamodule_config

    current = OmegaConf.create({"root": "r", "module": {"_target_": "kgqa.datamodule.KgqaDataModule", "batch_size": 8}})
    old = OmegaConf.create({"root": "r", "batch_size": 8, "eval_batch_size": 16, "source": {}})
    resumed_old = OmegaConf.merge(old, {"module": {"num_workers": 2}})  # a resume's data.module.num_workers
    assert datamodule_config(current) == {"_target_": "kgqa.datamodule.KgqaDataModule", "batch_size": 8}
    assert datamodule_config(old) == {"_target_": "kgqa.datamodule.KgqaDataModule", "batch_size": 8,
                                      "eval_batch_size": 16}
    assert datamodule_config(resumed_old).num_workers == 2 and datamodule_config(resumed_old).batch_size == 8
