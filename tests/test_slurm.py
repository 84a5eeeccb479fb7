"""Sweeps as real Slurm jobs on the local one-node cluster (tests/slurm_cluster.py): the same runs as a local
sweep, named from the sweep's overrides, and a requeued job that continues its run folder and W&B run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import torch

from cli import ROOT, run_cli
from kgqa.report.collect import collect
from wandb_offline import read_offline_run

TOY = ["trainer.max_epochs=2", "+data.source.n_entities=300", "data.module.batch_size=2",  # 4 s an epoch to signal in
       "trainer.log_every_n_steps=1"]  # W&B: every step
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
    jobs, local = runs(tmp_path / "sweep"), runs(local_sweep)
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
@pytest.mark.slow
def test_decode_sweep_through_slurm_equals_the_local_one(slurm_partition, local_sweep, tmp_path):
    """kgqa-eval -m: each decode of the trained run a job, with the local sweep's metrics, run by run."""
    decodes = {}
    for where, launcher in (("local", []), ("slurm", slurm(slurm_partition))):
        sweep = tmp_path / where
        run_cli("evaluate", "-m", *launcher, f"ckpt={local_sweep / '0'}", "split=val", "decode.beam=1,3",
                f"hydra.sweep.dir={sweep}", env=ONE_CPU)
        decodes[where] = {(r["factors"]["beam"], r["factors"]["target"]): r["metrics"] for r in collect(sweep)}
    assert sorted(decodes["slurm"]) == [(1, "spm"), (3, "spm")]
    assert decodes["slurm"] == decodes["local"]
    assert len(list((tmp_path / "slurm" / ".submitit").glob("*/*_submission.sh"))) == 1  # one array of jobs


@pytest.mark.slurm
@pytest.mark.slow
def test_a_two_task_job_trains_with_slurms_ranks(slurm_partition, tmp_path):
    """trainer=ddp_cpu through Slurm: a job of two tasks (the preset: one per device), whose ranks Lightning's
    SLURMEnvironment takes from Slurm (it launches no processes of its own: two tasks of a job asking for
    two devices), rank 0 alone writing the run folder and W&B; its metrics equal the same two-process
    training launched here by Lightning."""
    common = ["trainer=ddp_cpu", "trainer.max_epochs=1", "+data.source.n_entities=300"]
    sweep, local = tmp_path / "sweep", tmp_path / "local"
    run_cli("train", "-m", "hydra/launcher=slurm", f"hydra.launcher.partition={slurm_partition}", *common,
            "seed=0", f"hydra.sweep.dir={sweep}")
    run_cli("train", *common, "seed=0", f"hydra.run.dir={local}", env=ONE_CPU)
    (job,) = [json.loads((sweep / "0" / "metrics.json").read_text())]
    reference = json.loads((local / "metrics.json").read_text())
    assert job["metrics"] == reference["metrics"] and job["history"] == reference["history"]
    script = next((sweep / ".submitit").glob("*/*_submission.sh")).read_text()
    assert "--ntasks-per-node=2" in script.split()
    array = next((sweep / ".submitit").glob("*/*_0_log.out")).name.split("_")[0]  # the array's job id
    steps = subprocess.run(["sacct", "-n", "-P", "-j", array, "-o", "JobName,NTasks"], capture_output=True,
                           text=True).stdout.split()
    assert any(line.endswith("|2") for line in steps), steps  # the job's step ran two tasks
    assert len(list((sweep / "0" / "wandb").glob("offline-run-*"))) == 1


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


def logged_steps(run_dir: Path) -> list[list[tuple[int, float]]]:
    """(step, train/loss) of every training step the run logged to W&B, an offline run (attempt) a list,
    oldest first."""
    return [[(h["trainer/global_step"], h["train/loss"]) for h in read_offline_run(d).history if "train/loss" in h]
            for d in sorted(run_dir.glob("wandb/offline-run-*"))]


def train_rows(record: Path) -> list[dict]:
    """The training steps a run's step record holds so far (its last line may be half written)."""
    text = record.read_text(encoding="utf-8") if record.is_file() else ""
    rows = [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]
    return [r["metrics"] for r in rows if "train/loss" in r.get("metrics", {})]


SECOND_EPOCH = "in its second epoch"  # a training step of the second (last) epoch logged
AFTER_THE_LAST_BATCH = "after its last batch"  # every training step logged: the last validation, the final tests


def signalled(sweep: Path, partition: str, signal_job: Callable[[str], object], when: str = SECOND_EPOCH,
              targets: str = "spm") -> tuple[str, int, str]:
    """A toy sweep through Slurm (`target=<targets>`), `signal_job(JOB)` called once its first run is at
    `when`, JOB its job (the array's task 0): (JOB, the launching command's exit status and stderr) once
    it ended."""
    env = os.environ | {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    cmd = [sys.executable, "-m", "kgqa.cli.train", "-m", *slurm(partition), f"target={targets}", *TOY,
           f"hydra.sweep.dir={sweep}"]
    with subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as proc:
        def there() -> bool:
            epochs = [r["epoch"] for r in train_rows(sweep / "0" / "steps.jsonl")]
            return epochs.count(1.0) >= (1 if when == SECOND_EPOCH else max(epochs.count(0.0), 1))
        for _ in range(3000):
            if there() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert there(), proc.stderr.read() if proc.poll() is not None else f"not {when} after 300 s"
        jobs = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
        (job,) = [j for j in jobs if "_" not in j or j.endswith("_0")]
        signal_job(job)
        _, err = proc.communicate(timeout=600)
    return job, proc.returncode, err


def taken(log: Path, said: str, when: str) -> bool:
    """The job's log says `said` where `when` puts it: at a step, or after (or before) training."""
    lines = [x for x in log.read_text().splitlines() if x.startswith(said)]
    return len(lines) == 1 and ((" at step " in lines[0]) == (when == SECOND_EPOCH))


def sent(*command: str) -> Callable[[str], object]:
    return lambda job: subprocess.run([*command, job], check=True)


def killed_like_the_oom_killer(job: str) -> None:
    """SIGKILL to the job's Python process (the training), nothing before it; `scancel --signal=KILL` is
    a plain cancel to Slurm (SIGTERM first)."""
    listed = subprocess.run(["scontrol", "listpids", job.split("_")[0]], capture_output=True, text=True,
                            check=True).stdout.split("\n")[1:]
    pids = [int(line.split()[0]) for line in listed if line.split() and line.split()[0].isdigit()]
    ours = {p for p in pids if b"submitit.core._submit" in Path(f"/proc/{p}/cmdline").read_bytes()
            and "python" in os.readlink(f"/proc/{p}/exe")}  # not srun, whose command line names it too
    parent = {p: int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1]) for p in ours}
    (python,) = [p for p in ours if parent[p] not in ours]  # not its forked children
    os.kill(python, signal.SIGKILL)


def final_states(job: str) -> list[str]:
    """Slurm's accounting of every attempt of a job, once the last one is recorded as ended (it lags)."""
    for _ in range(60):
        states = subprocess.run(["sacct", "-n", "-P", "-X", "-D", "-j", job, "-o", "State"],
                                capture_output=True, text=True).stdout.splitlines()
        if states and states[-1] not in ("PENDING", "RUNNING", "REQUEUED"):
            return states
        time.sleep(0.5)
    return states


def ends_as_the_uninterrupted_run(sweep: Path, local_sweep: Path, wandb_id: str, set_aside: set[int]) -> None:
    """The uninterrupted run's metrics, history and weights; one W&B run id over all attempts, which hold
    every training step once, with its loss, as many as `set_aside` allows of them (left open by an attempt
    Slurm ended) moved to wandb/incomplete/ and logged again; the run's step record the same."""
    (run,), reference = runs(sweep).values(), runs(local_sweep)["target=spm"]
    assert run["metrics"] == reference["metrics"] and run["history"] == reference["history"]
    weights = [torch.load(d / "0" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
               for d in (sweep, local_sweep)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[1])
    assert json.loads((sweep / "0" / "run.json").read_text())["wandb_id"] == wandb_id
    assert {p.name.rsplit("-", 1)[1] for p in (sweep / "0" / "wandb").rglob("offline-run-*")} == {wandb_id}
    assert len(list((sweep / "0" / "wandb" / "incomplete").glob("offline-run-*"))) in set_aside
    (steps,) = logged_steps(local_sweep / "0")
    assert [row for attempt in logged_steps(sweep / "0") for row in attempt] == steps
    record = [json.loads(x) for x in (sweep / "0" / "steps.jsonl").read_text().splitlines()]
    assert [(r["step"], r["metrics"]["train/loss"]) for r in record if "train/loss" in r.get("metrics", {})] == steps
    assert not list((sweep / "0").glob("hpc_ckpt_*.ckpt"))


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.parametrize("requeue, when, set_aside", [
    (["scontrol", "requeue"], SECOND_EPOCH, {1}), (["scancel", "--signal=USR1"], SECOND_EPOCH, {0}),
    (["scancel", "--signal=USR1"], AFTER_THE_LAST_BATCH, {0, 1})],  # 1: in the final tests, requeued at once
    ids=["scontrol", "usr1", "usr1-after-the-last-batch"])
def test_requeued_job_ends_as_the_uninterrupted_run(slurm_partition, local_sweep, tmp_path, requeue, when, set_aside):
    """Requeued in its second epoch, by `scontrol requeue` (Slurm's SIGTERM: RequeueBetweenBatches saves
    before the next batch and the attempt ends) or by the preset's USR1 (it saves before the next batch and
    requeues), or by USR1 after the last batch (taken when training ends, or at once in the final tests):
    the new attempt (SLURM_RESTART_COUNT=1) resumes in the same folder with the same W&B run id and ends as
    the uninterrupted run (ends_as_the_uninterrupted_run). SIGTERM kills W&B's service too: the first
    attempt's offline run is set aside and its steps logged again."""
    sweep = tmp_path / "sweep"
    job, status, err = signalled(sweep, slurm_partition, sent(*requeue), when)
    assert status == 0, err[-3000:]
    assert "REQUEUED" in (attempts := final_states(job)) and attempts[-1] == "COMPLETED"
    first_id = next((sweep / "0" / "wandb").glob("offline-run-*")).name.rsplit("-", 1)[1]
    (log,) = (sweep / ".submitit").glob("*/*_0_log.err")
    said = {"scontrol": "kgqa: Slurm ends job", "scancel": "kgqa: requeued Slurm job"}[requeue[0]]
    assert taken(log, said, when), log.read_text()[-3000:]
    ends_as_the_uninterrupted_run(sweep, local_sweep, first_id, set_aside)


@pytest.mark.slurm
@pytest.mark.slow
def test_a_time_limit_reached_mid_training_requeues_and_the_run_ends_as_without_it(slurm_partition, tmp_path):
    """A 3-minute limit, the preset's USR1 120 s ahead, an 80-epoch toy run (about 100 s of training here):
    Slurm signals it mid-training, it saves between batches and requeues (again if the next attempt meets
    the limit too), and the run ends as the same run trained here without a limit, its W&B steps once."""
    long = ["target=spm", "trainer.max_epochs=80", "+data.source.n_entities=300"]
    run_cli("train", "-m", *long, f"hydra.sweep.dir={tmp_path}/local", env=ONE_CPU)
    sweep = tmp_path / "sweep"
    run_cli("train", "-m", *slurm(slurm_partition), "hydra.launcher.timeout_min=3", "hydra.launcher.signal_delay_s=120",
            *long, f"hydra.sweep.dir={sweep}")
    (log,) = (sweep / ".submitit").glob("*/*_0_log.err")
    assert "kgqa: requeued Slurm job" in log.read_text()
    (run,), (reference,) = runs(sweep).values(), runs(tmp_path / "local").values()
    assert run["metrics"] == reference["metrics"] and run["history"] == reference["history"]
    (steps,) = logged_steps(tmp_path / "local" / "0")
    assert [row for attempt in logged_steps(sweep / "0") for row in attempt] == steps


@pytest.mark.slurm
@pytest.mark.slow
def test_requeuing_one_array_task_leaves_its_sibling_alone(slurm_partition, local_sweep, tmp_path):
    """A 2-run sweep is one array; USR1 to one task requeues that task only (Lightning once requeued the
    whole array, Lightning#15022): its sibling runs once, and both runs end as the local sweep's."""
    signalled_job, status, err = signalled(tmp_path / "sweep", slurm_partition, sent("scancel", "--signal=USR1"),
                                           targets="spm,smp")
    assert status == 0, err[-3000:]
    sibling = signalled_job[:-1] + "1"
    assert "REQUEUED" in (states := final_states(signalled_job)) and states[-1] == "COMPLETED"
    assert final_states(sibling) == ["COMPLETED"]
    jobs, local = runs(tmp_path / "sweep"), runs(local_sweep)
    assert sorted(jobs) == ["target=smp", "target=spm"]
    for name, run in jobs.items():
        assert run["metrics"] == local[name]["metrics"] and run["history"] == local[name]["history"]


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.parametrize("end, when", [("scancel", SECOND_EPOCH), ("sigkill", SECOND_EPOCH),
                                       ("scancel", AFTER_THE_LAST_BATCH)],
                         ids=["scancel", "sigkill", "scancel-after-the-last-batch"])
def test_a_job_ended_for_good_is_continued_by_the_same_command(slurm_partition, local_sweep, tmp_path, end, when):
    """In the second epoch, `scancel` (SIGTERM: RequeueBetweenBatches saves before the next batch) or a
    SIGKILL to the training process with no warning (as the out-of-memory killer sends), or `scancel` after
    the last batch (the attempt ends when training ends, or at once in the final tests): the job ends
    without a result, the launching process records the run's failure (Slurm's state, the job's log) and
    the sweep says so; the same command again continues the run from its newest checkpoint (the saved one,
    or an epoch's last.ckpt) and ends as the uninterrupted run (ends_as_the_uninterrupted_run)."""
    sweep = tmp_path / "sweep"
    how = sent("scancel") if end == "scancel" else killed_like_the_oom_killer
    job, status, err = signalled(sweep, slurm_partition, how, when)
    assert status == 1 and "1 run(s) of the sweep failed" in err.strip().splitlines()[-1], err[-3000:]
    failed = json.loads((sweep / "0" / "failed.json").read_text())
    assert failed["error"].startswith(f"Slurm job {job} ended without a result ({final_states(job)[-1]}: killed")
    assert Path(failed["log"]).is_file()
    if end == "scancel":
        assert taken(Path(failed["log"]), "kgqa: Slurm ends job", when), Path(failed["log"]).read_text()[-3000:]
    else:
        assert "kgqa: Slurm ends job" not in Path(failed["log"]).read_text()
    first_id = next((sweep / "0" / "wandb").glob("offline-run-*")).name.rsplit("-", 1)[1]
    run_cli("train", "-m", *slurm(slurm_partition), "target=spm", *TOY, f"hydra.sweep.dir={sweep}")
    ends_as_the_uninterrupted_run(sweep, local_sweep, first_id, {1})
    assert not (sweep / "0" / "failed.json").exists()


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
