"""Experiment workflow for real: multirun sweeps, distributed evaluation, resume after kill -9,
cluster settings, reports."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import OmegaConf

from cli import ROOT, printed_metrics, run_cli
from wandb_offline import read_offline_run
from kgqa.cli import CONFIG_DIR
from kgqa.report import collect, report

SMALL_TOY = ["+data.source.n_entities=300"]


@pytest.fixture(scope="module")
def trained_toy(tmp_path_factory) -> Path:
    """A partly trained toy model: some answers right, some wrong, so metric comparisons mean something."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    run_cli("train", "trainer.max_epochs=3", "logger=csv", *SMALL_TOY, f"hydra.run.dir={run_dir}")
    return run_dir


def test_multirun_sweep_shares_one_wandb_group_and_writes_summary(tmp_path):
    sweep = tmp_path / "sweep"
    run_cli("train", "-m", "target=spm,smp", "trainer.max_epochs=1", "trainer.num_sanity_val_steps=0", *SMALL_TOY,
            f"hydra.sweep.dir={sweep}")
    runs = sorted(sweep.glob("*/wandb/offline-run-*"))
    assert len(runs) == 2
    read = [read_offline_run(r) for r in runs]
    assert read[0].group == read[1].group and "sweep" in read[0].group
    assert {r.name for r in read} == {"target=spm", "target=smp"}
    assert {r.job_type for r in read} == {"target=spm", "target=smp"}  # the configuration without the seed
    assert {r.config["factors"]["target"] for r in read} == {"spm", "smp"}
    for run, r in zip(runs, read):  # each final evaluation's per-question results, as a W&B Table
        questions = (run.parents[1] / "questions_test.jsonl").read_text().splitlines()
        assert r.summary["test/questions/_type"] == "table-file" and r.summary["test/questions/nrows"] == len(questions)
    summary = (sweep / "summary.md").read_text()
    assert "| target | rule | n |" in summary and "| spm | lcs_power | 1 |" in summary and "test/emf1" in summary
    assert "constant: data=toy" in summary and "| backbone |" not in summary  # constant factors: once, above
    assert len((sweep / "summary.csv").read_text().splitlines()) == 3


def test_decode_only_sweep_needs_no_retraining(trained_toy, tmp_path):
    sweep = tmp_path / "eval"
    run_cli("evaluate", "-m", f"ckpt={trained_toy}", "lookahead=none,lcs_power", "decode.beam=1,3", "logger=csv",
            f"hydra.sweep.dir={sweep}")
    runs = collect(sweep)
    assert len(runs) == 4 and {(r["factors"]["lookahead"], r["factors"]["beam"]) for r in runs} == {
        ("none", 1), ("none", 3), ("lcs_power", 1), ("lcs_power", 3)}
    assert all(r["factors"]["target"] == "spm" for r in runs)  # the trained run's factors come along
    summary = (sweep / "summary.md").read_text()
    assert "| beam | rule | n |" in summary and "| 1 | none | 1 |" in summary and "| 3 | lcs_power | 1 |" in summary
    assert "| beam | none | lcs_power |" in summary  # the rules side by side


@pytest.mark.slow
def test_ddp_cpu_training_prints_once_and_without_sync_dist_warnings(tmp_path):
    """Two processes, one epoch: the config tree, the run folder and the final metrics once (rank 0), and no
    Lightning advice to sync epoch-level metrics (they are logged with sync_dist)."""
    run_dir = tmp_path / "ddp"
    proc = run_cli("train", "trainer=ddp_cpu", "trainer.max_epochs=1", "trainer.num_sanity_val_steps=0", "logger=csv",
                   *SMALL_TOY, f"hydra.run.dir={run_dir}")
    printed = proc.stdout + proc.stderr
    assert proc.stdout.count(f"run folder: {run_dir}") == 1
    assert sum(line.strip() == "config" for line in proc.stdout.splitlines()) == 1
    assert proc.stdout.count("test/em: ") == 1 and proc.stdout.count("val/emf1: ") == 1
    assert "sync_dist" not in printed, [line for line in printed.splitlines() if "sync_dist" in line][:3]


def test_ddp_cpu_evaluation_equals_single_process(trained_toy, tmp_path):
    single = printed_metrics(run_cli("evaluate", f"ckpt={trained_toy}", "split=val", "logger=csv", f"hydra.run.dir={tmp_path}/one"))
    double = printed_metrics(run_cli("evaluate", f"ckpt={trained_toy}", "split=val", "logger=csv", "trainer=ddp_cpu",
                                     f"hydra.run.dir={tmp_path}/two"))
    assert 0.0 < single["val/em"] < 1.0  # a discriminating checkpoint
    assert double == single
    wrong = [p.read_text() for p in (tmp_path / "one").rglob("wrong_answers_val.jsonl")]
    wrong2 = [p.read_text() for p in (tmp_path / "two").rglob("wrong_answers_val.jsonl")]
    assert sorted(wrong[0].splitlines()) == sorted(wrong2[0].splitlines())  # gathered from both ranks, no duplicates
    questions = [sorted((tmp_path / d / "questions_val.jsonl").read_text().splitlines()) for d in ("one", "two")]
    assert questions[0] == questions[1] and len(questions[0]) == len({json.loads(q)["id"] for q in questions[0]})


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    common = ["trainer.max_epochs=3", "trainer.num_sanity_val_steps=0", *SMALL_TOY, "seed=3"]
    straight = printed_metrics(run_cli("train", *common, "logger=csv", f"hydra.run.dir={tmp_path}/straight"))

    killed = tmp_path / "killed"
    env = os.environ | {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = subprocess.Popen([sys.executable, "-m", "kgqa.cli.train", *common, f"hydra.run.dir={killed}"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.time() + 600
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert last.exists() and proc.poll() is None, "the run ended before its first checkpoint"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert torch.load(last, weights_only=True)["epoch"] < 2  # it really was cut short

    outputs = sorted((ROOT / "outputs").glob("*/*"))
    resumed = printed_metrics(run_cli("train", f"resume={killed}"))
    assert resumed == straight
    assert sorted((ROOT / "outputs").glob("*/*")) == outputs  # the resume wrote only in its run folder
    history = [json.loads((d / "metrics.json").read_text())["history"] for d in (tmp_path / "straight", killed)]
    assert [h["epoch"] for h in history[1]] == [0, 1, 2] and history[1] == history[0]  # each epoch once, as if never killed
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(last, weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the resumed W&B run is the same run: one id in every offline run folder (named offline-run-<time>-<id>);
    # the killed attempt's, which its dying service left short, is set aside and its steps logged again
    (run,), (set_aside,) = (sorted((killed / "wandb" / d).glob("offline-run-*")) for d in (".", "incomplete"))
    assert read_offline_run(run).id == run.name.rsplit("-", 1)[1] == set_aside.name.rsplit("-", 1)[1]
    losses = [[(r["step"], r["metrics"]["train/loss"]) for r in map(json.loads, (d / "steps.jsonl").open())
               if "train/loss" in r.get("metrics", {})] for d in (tmp_path / "straight", killed)]
    assert losses[1] == losses[0] and len({step for step, _ in losses[0]}) == len(losses[0]) > 0
    logged = [(h["trainer/global_step"], h["train/loss"]) for h in read_offline_run(run).history if "train/loss" in h]
    assert logged == losses[0]


def test_truncated_checkpoint_cannot_be_resumed_silently(tmp_path, trained_toy):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("run_config.yaml", "run.json"):
        (run_dir / name).write_bytes((trained_toy / name).read_bytes())
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.ckpt").write_bytes((trained_toy / "checkpoints" / "last.ckpt").read_bytes()[:4096])
    proc = run_cli("train", f"resume={run_dir}", "logger=csv", f"hydra.run.dir={tmp_path}/inv", check=False)
    assert proc.returncode != 0 and "not a readable checkpoint" in proc.stderr and "Traceback" not in proc.stderr


def test_slurm_launcher_and_multi_node_settings(monkeypatch):
    def launcher_for(*overrides):
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose("train", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "logger=csv",
                                               *overrides], return_hydra_config=True)

    # A 2-node x 8-GPU sweep (docs/cluster.md): what each job asks sbatch for follows the trainer.
    launcher = launcher_for("trainer=ddp", "trainer.devices=8", "trainer.num_nodes=2").hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node, launcher.cpus_per_task) == (2, 8, 8, 8)
    assert launcher.additional_parameters.signal == f"USR1@{launcher.signal_delay_s}"  # Lightning's requeue signal
    assert launcher.signal_delay_s < launcher.timeout_min * 60 and launcher.max_num_timeout == 0  # submitit's off
    cfg = launcher_for("trainer=ddp_cpu", "trainer.num_nodes=2")
    launcher = cfg.hydra.launcher
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node, launcher.cpus_per_task) == (2, 2, 0, 1)
    # What each SLURM task's Lightning sees: 2 nodes x 2 devices, ranks from SLURM, logging on rank 0 only.
    slurm = {"SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "2", "SLURM_PROCID": "3", "SLURM_LOCALID": "1",
             "SLURM_NODEID": "1", "SLURM_JOB_NAME": "kgqa", "SLURM_JOB_ID": "1", "SLURM_NODELIST": "node[1-2]"}
    for k, v in slurm.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)  # the Trainer sets it for the process: back after
    settings = OmegaConf.to_container(cfg.trainer)
    settings.pop("default_root_dir")  # ${hydra:...}: set only inside a running app
    trainer = instantiate(settings, logger=False)
    assert (trainer.num_nodes, trainer.num_devices, trainer.world_size, trainer.global_rank) == (2, 2, 4, 3)
    assert not trainer.is_global_zero


@pytest.mark.slow
def test_optuna_search_runs_trials_and_reports(tmp_path):
    sweep = tmp_path / "optuna"
    run_cli("train", "hparams_search=optuna", "hydra.sweeper.n_trials=2", "trainer.max_epochs=1",
            "trainer.num_sanity_val_steps=0", "logger=csv", *SMALL_TOY, f"hydra.sweep.dir={sweep}")
    runs = collect(sweep)
    assert len(runs) == 2
    assert (sweep / "optimization_results.yaml").is_file()
    summary = (sweep / "summary.md").read_text()
    for factor in ("lr", "backbone.num_hidden_layers", "backbone.hidden_dropout_prob", "beam"):  # a column when the trials differ in it, else in the "constant:" line
        assert all(factor in run["factors"] for run in runs)
        assert f"| {factor} |" in summary or f"{factor}=" in summary.split("\n\n")[0], (factor, summary)
    assert len({(r["factors"]["lr"], r["factors"]["backbone.hidden_dropout_prob"]) for r in runs}) == 2


def test_report_writes_table_and_chart_and_per_question_results(trained_toy, tmp_path):
    table = report(trained_toy.parent)
    assert len(table.groups) == 1 and table.groups[0].values("test", "emf1")
    assert (trained_toy.parent / "report.png").stat().st_size > 1000
    run = json.loads((trained_toy / "metrics.json").read_text())
    for key, name in run["questions"].items():  # every evaluation's questions, beside its metrics
        rows = [json.loads(line) for line in (trained_toy / name).read_text().splitlines()]
        assert {"id", "predicted", "correct", "confidence"} <= rows[0].keys()
        assert sum(r["correct"] for r in rows) / len(rows) == pytest.approx(run["metrics"][f"{key}/em"], abs=1e-6)


def test_article_ablation_decodes_each_model_with_every_rule():
    from kgqa.cli.train import decode_variants
    from kgqa.decoding.processors import LcsBonusLookahead, LcsPowerLookahead, SubjectCopy

    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("train", overrides=["experiment=article_ablation"])
        variants = decode_variants(cfg)
    rules = {tag: instantiate(rule, _convert_="all") if rule else None for tag, rule in variants}
    assert rules[""] is None  # the run's own rule: none
    assert isinstance(rules["lcs_power"], LcsPowerLookahead) and isinstance(rules["lcs_bonus"], LcsBonusLookahead)
    assert [type(r) for r in rules["copy_lcs_bonus"]] == [SubjectCopy, LcsBonusLookahead]
    assert [type(r) for r in rules["copy_lcs_power"]] == [SubjectCopy, LcsPowerLookahead]


def test_the_recommended_recipe_composes_to_the_settings_results_reports():
    """experiment=kgclue_cpu_recipe is the command behind RESULTS' headline row of issue 14."""
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("train", overrides=["experiment=kgclue_cpu_recipe"])
    augment = instantiate(cfg.augment, seed=0)
    assert type(augment).__name__ == "TemplateFill" and augment.entities.name == "train"
    assert cfg.model["copy"] is True and cfg.loss.trie_loss == 1.0 and cfg.lookahead is None
    assert (cfg.data.source._target_, cfg.kb._target_, cfg.target) == ("kgqa.data.sources.KgclueSource",
                                                                       "kgqa.kb.sources.SynthKB", "spm")
    assert cfg.backbone.arch == "roformer" and cfg.backbone.hidden_size == 256 and cfg.trainer.max_epochs == 1
    assert cfg.optim.lr == 5e-4 and cfg.trainer.check_val_every_n_epoch == 1
    assert list(cfg.ablation_lookaheads) == ["lcs_power", "copy_lcs_bonus", "copy_lcs_bonus_meaning"]


@pytest.mark.parametrize("overrides, lr", [
    (["size=tiny"], 3e-3),
    (["size=small"], 5e-4),                                          # tiny's 3e-3 diverges at this width
    (["experiment=kgclue_cpu_recipe", "size=tiny"], 3e-3),          # the recipe at another size takes that size's
    (["size=small", "optim.lr=1e-3"], 1e-3),                         # the command line wins
    (["experiment=article"], 5e-6),                                  # an experiment's own rate wins over its size's
    (["hparams_search=optuna", "size=small", "optim.lr=2e-3"], 2e-3),
])
def test_each_size_brings_its_learning_rate_and_what_is_said_later_wins(overrides, lr):
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("train", overrides=overrides)
        pretrain = compose("pretrain", overrides=[o for o in overrides if o.startswith(("size=", "optim."))])
    assert cfg.optim.lr == lr and cfg.factors.lr == lr
    if not any(o.startswith("experiment=") for o in overrides):
        assert pretrain.optim.lr == lr


def test_eval_shards_cover_every_question_once_in_length_order():
    from kgqa.datamodule import LengthOrderedShard

    lengths = [5, 3, 9, 3, 7, 1, 4]
    shards = [list(LengthOrderedShard(lengths, rank, 3)) for rank in range(3)]
    assert sorted(i for shard in shards for i in shard) == list(range(len(lengths)))
    assert [len(s) for s in shards] == [3, 2, 2]  # no padding: exact metric sums
    for shard in shards:
        assert [lengths[i] for i in shard] == sorted(lengths[i] for i in shard)


def test_every_swept_key_is_a_factor_of_the_sweeps_runs(monkeypatch):
    """Optuna's params (depth, dropout beside lr and beam) and the command line's swept keys each get a
    factor, so the sweep's summary has a column for each; a key a factor already reads gets no second one."""
    from hydra.core.hydra_config import HydraConfig

    from kgqa.cli import with_swept_factors
    from kgqa.cli.cluster import SWEPT_KEYS_ENV

    monkeypatch.setenv(SWEPT_KEYS_ENV, json.dumps(["lookahead", "augment", "data.module.batch_size", "seed"]))
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("train", overrides=["hparams_search=optuna", "augment=subject_swap", "data.module.batch_size=16",
                                          "backbone.num_hidden_layers=4", "backbone.hidden_dropout_prob=0.1"],
                      return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    before = set(cfg.factors)
    with_swept_factors(cfg)
    added = OmegaConf.to_container(cfg.factors, resolve=True)
    assert set(added) - before == {"backbone.num_hidden_layers", "backbone.hidden_dropout_prob", "data.module.batch_size"}
    assert (added["backbone.num_hidden_layers"], added["backbone.hidden_dropout_prob"]) == (4, 0.1)
    assert added["data.module.batch_size"] == 16 and added["augment"] == "subject_swap" and added["lr"] == cfg.optim.lr
