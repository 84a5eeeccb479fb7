"""Sweeps as real Slurm jobs on the local one-node cluster (tests/slurm_cluster.py): the same runs as a local
sweep, named from the sweep's overrides, and a requeued job that continues its run folder and W&B run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cli import ROOT, run_cli
from wandb_offline import read_offline_run

TOY = ["trainer.max_epochs=2", "+data.source.n_entities=300"]
ONE_CPU = {"OMP_NUM_THREADS": "1"}  # what a job of the preset gets: the same threads, the same float sums


def slurm(partition: str) -> list[str]:
    return ["hydra/launcher=slurm", "trainer=cpu", f"hydra.launcher.partition={partition}"]


def runs(sweep: Path) -> dict[str, dict]:
    return {(d := json.loads(p.read_text()))["name"]: d for p in sorted(sweep.glob("*/metrics.json"))}


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory) -> Path:
    sweep = tmp_path_factory.mktemp("local") / "sweep"
    run_cli("train", "-m", "target=spm,smp", *TOY, f"hydra.sweep.dir={sweep}", env=ONE_CPU)
    return sweep


@pytest.mark.slurm
def test_sweep_through_slurm_equals_the_local_sweep_run_by_run(slurm_partition, local_sweep, tmp_path):
    sweep = tmp_path / "sweep"
    run_cli("train", "-m", *slurm(slurm_partition), "target=spm,smp", *TOY, f"hydra.sweep.dir={sweep}")
    jobs, local = runs(sweep), runs(local_sweep)
    assert sorted(jobs) == ["target=smp", "target=spm"]  # named from the sweep's overrides, not submitit's argv
    for name, run in jobs.items():
        assert run["metrics"] == local[name]["metrics"] and run["history"] == local[name]["history"]
    for folder in sorted(sweep.glob("[0-9]")):
        (wandb_dir,) = folder.glob("wandb/offline-run-*")
        logged = read_offline_run(wandb_dir)
        assert logged.job_type == json.loads((folder / "metrics.json").read_text())["name"]
        assert logged.group.startswith("toy-sweep-")
    assert (sweep / "summary.csv").is_file()
    script = next((sweep / ".submitit").glob("*/*_submission.sh")).read_text()
    assert {"--signal=USR1@90", "--cpus-per-task=1", "--gpus-per-node=0", "--mem=4GB"} <= set(script.split())


@pytest.mark.slurm
@pytest.mark.parametrize("partition, overrides, message", [
    ("no_such_partition", [], "hydra.launcher.partition=no_such_partition: no such Slurm partition (sinfo lists: {})"),
    (None, ["hydra.launcher.timeout_min=1"], "hydra.launcher.signal_delay_s=90 is not shorter than the time limit "
                                             "(timeout_min=1, 60 s): the job would be signalled at its start")],
    ids=["partition", "signal_delay"])
def test_bad_slurm_settings_are_one_line_before_any_job(slurm_partition, tmp_path, partition, overrides, message):
    proc = run_cli("train", "-m", *slurm(partition or slurm_partition), *overrides, "seed=0,1",
                   f"hydra.sweep.dir={tmp_path}/s", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "kgqa: " + message.format(slurm_partition)
    assert not (tmp_path / "s" / ".submitit").exists()


def test_no_sbatch_on_the_path_is_one_line(tmp_path):
    proc = run_cli("train", "-m", *slurm("debug"), "seed=0,1", f"hydra.sweep.dir={tmp_path}/s", check=False,
                   env={"PATH": str(Path(sys.executable).parent)})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("kgqa: hydra/launcher=slurm needs Slurm's sbatch on")


@pytest.mark.slurm
@pytest.mark.slow
def test_a_failed_job_is_reported_and_the_same_command_runs_only_it(slurm_partition, tmp_path):
    """One value of a swept key fails its job (a bad config, found in the job): the sweep summary names the run,
    its error line and the job's log, the other run finishes, and the command ends with status 1. The same
    command again skips the finished run (its results untouched: a short job that says so in its log) and runs
    the failed one again."""
    sweep = tmp_path / "sweep"
    command = ["train", "-m", *slurm(slurm_partition), "data.module.batch_size=32,0", "trainer.max_epochs=1",
               "+data.source.n_entities=300", f"hydra.sweep.dir={sweep}"]
    error = "data.module.batch_size=0 is not valid: expected an integer from 1"
    logs = []
    for launch in range(2):
        proc = run_cli(*command, check=False)
        assert proc.returncode == 1, proc.stderr[-3000:]
        assert proc.stderr.strip().splitlines()[-1] == (f"kgqa: 1 run(s) of the sweep failed; run the same command "
                                                        f"again (hydra.sweep.dir={sweep}) to run only the runs "
                                                        f"that did not finish")
        (line,) = [x for x in proc.stdout.splitlines() if x.startswith("failed: ")]
        assert line.startswith(f"failed: 1 (data.module.batch_size=0): {error} (log: ")
        logs.append(Path(line.rsplit("(log: ", 1)[1].rstrip(")")))
        assert logs[-1].parent.parent == sweep / ".submitit" and f"kgqa: {error}" in logs[-1].read_text()
        assert line in (sweep / "summary.md").read_text() and (sweep / "summary.csv").is_file()
        assert list(runs(sweep)) == ["data.module.batch_size=32"]
        if launch == 0:
            finished = {p: p.stat().st_mtime_ns for p in (sweep / "0").rglob("*")  # Hydra's own record and log
                        if p.is_file() and ".hydra" not in p.parts and p.name != "train.log"}  # are written again
        else:
            assert "skipped: 0: finished in an earlier launch of this sweep (metrics.json)" in proc.stdout
            assert {p: p.stat().st_mtime_ns for p in finished} == finished
    assert logs[0] != logs[1]  # the failed run was a job again


def logged_steps(run_dir: Path) -> list[tuple[int, float]]:
    """(step, train/loss) of every training step the run logged to W&B, over all its offline runs (attempts)."""
    rows = [h for d in sorted(run_dir.glob("wandb/offline-run-*")) for h in read_offline_run(d).history]
    return sorted((h["trainer/global_step"], h["train/loss"]) for h in rows if "train/loss" in h)


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="issue 27, measured 2026-12-04: metrics, history and final weights equal the "
                   "uninterrupted run, but the W&B train/loss values logged after the requeue differ (the last check)")
@pytest.mark.parametrize("requeue", [["scontrol", "requeue"], ["scancel", "--signal=USR1"]], ids=["scontrol", "usr1"])
def test_requeued_job_ends_as_the_uninterrupted_run(slurm_partition, local_sweep, tmp_path, requeue):
    """Requeued in its second epoch, by `scontrol requeue` (Slurm ends the attempt at once: it continues from
    last.ckpt) or by the preset's USR1 (RequeueBetweenBatches saves before the next batch, mid-epoch): the new
    attempt (SLURM_RESTART_COUNT=1) resumes in the same folder with the same W&B run id and ends with the
    uninterrupted run's metrics, history and weights; W&B holds every training step once."""
    sweep = tmp_path / "sweep"
    env = os.environ | {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    cmd = [sys.executable, "-m", "kgqa.cli.train", "-m", *slurm(slurm_partition), "target=spm", *TOY,
           f"hydra.sweep.dir={sweep}"]
    with subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as proc:
        last = sweep / "0" / "checkpoints" / "last.ckpt"
        for _ in range(600):
            if last.is_file() or proc.poll() is not None:
                break
            time.sleep(0.5)
        assert last.is_file(), proc.stderr.read() if proc.poll() is not None else "no checkpoint after 300 s"
        first_id = json.loads((sweep / "0" / "run.json").read_text())["wandb_id"]
        (job,) = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
        subprocess.run([*requeue, job], check=True)
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    restarts = subprocess.run(["sacct", "-n", "-X", "-D", "-j", job.split("_")[0], "-o", "State"],
                              capture_output=True, text=True).stdout.split()
    assert "REQUEUED" in restarts and restarts[-1] == "COMPLETED"
    (run,), reference = runs(sweep).values(), runs(local_sweep)["target=spm"]
    assert run["metrics"] == reference["metrics"] and run["history"] == reference["history"]
    weights = [torch.load(d / "0" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
               for d in (sweep, local_sweep)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[1])
    assert json.loads((sweep / "0" / "run.json").read_text())["wandb_id"] == first_id
    assert {p.name.rsplit("-", 1)[1] for p in (sweep / "0" / "wandb").glob("offline-run-*")} == {first_id}
    assert logged_steps(sweep / "0") == logged_steps(local_sweep / "0")
    assert not list((sweep / "0").glob("hpc_ckpt_*.ckpt"))
    if requeue[0] == "scancel":
        (log,) = (sweep / ".submitit").glob("*/*_0_log.err")
        assert "kgqa: requeued Slurm job" in log.read_text()


@pytest.mark.parametrize("env, cores, threads", [({"SLURM_CPUS_PER_TASK": "1"}, None, 1), ({}, {0}, 1),
                                                 ({"OMP_NUM_THREADS": "2", "SLURM_CPUS_PER_TASK": "1"}, {0}, 2),
                                                 ({}, None, len(os.sched_getaffinity(0)))])
def test_threads_follow_the_allocation(env, cores, threads):
    """Slurm's CPUs per task in a job, the affinity mask outside one; an OMP_NUM_THREADS the user set wins."""
    code = "import os, torch; from kgqa.cli.cluster import allotted_threads; " \
           "print(allotted_threads(), torch.get_num_threads(), os.environ['OMP_NUM_THREADS'])"
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK")}
    proc = subprocess.run([sys.executable, "-c", code], env=clean | env, capture_output=True, text=True, check=True,
                          cwd=ROOT, preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None)
    assert proc.stdout.split() == [str(threads)] * 3
