"""Running where a scheduler placed the job: threads from the allocation, the sweep's keys carried into
each job, checks before anything is submitted to Slurm, a requeue taken between two batches, and a requeued
attempt continuing its run folder."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.experimental.callback import Callback
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback as LightningCallback
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig

SWEPT_KEYS_ENV = "KGQA_SWEPT_KEYS"  # set by the launching process; sbatch exports it to every job
SWEEP_SYNTAX = (",", "range(", "choice(", "interval(", "glob(")


def allotted_threads() -> int:
    """Torch and OpenMP threads from what this process may use: OMP_NUM_THREADS when the user set it,
    else Slurm's CPUs per task, else the cores in its affinity mask (not the machine's): oversubscribed
    threads on a shared node cost up to 10x."""
    import torch

    given = os.environ.get("OMP_NUM_THREADS") or os.environ.get("SLURM_CPUS_PER_TASK")
    threads = int(given) if given and given.isdigit() and int(given) > 0 else len(os.sched_getaffinity(0))
    os.environ["OMP_NUM_THREADS"] = str(threads)  # data-loader workers and other children
    torch.set_num_threads(threads)
    return threads


def command_line_sweeps(argv: list[str]) -> list[str]:
    """Keys a multirun command line varies: comma lists or sweep functions."""
    pairs = [a.split("=", 1) for a in argv if "=" in a]
    return [key.lstrip("+~") for key, value in pairs if any(x in value for x in SWEEP_SYNTAX)]


def swept_name(overrides: list[str], keys: set[str]) -> str:
    """A job's name: its overrides of the swept `keys` (e.g. "target=smp,seed=1"), "" when it has none."""
    return ",".join(o for o in overrides if o.split("=", 1)[0].lstrip("+~") in keys).replace("/", "_")


def swept_on_command_line() -> set[str]:
    """The launching command's swept keys: recorded by LaunchChecks for jobs in other processes (inside a
    submitit job sys.argv is submitit's), read from sys.argv in the launching process itself."""
    recorded = os.environ.get(SWEPT_KEYS_ENV)
    return set(json.loads(recorded)) if recorded else set(command_line_sweeps(sys.argv[1:]))


def check_slurm(launcher: DictConfig) -> None:
    """What sbatch would refuse or let hang, said in one line before any job is submitted."""
    if not shutil.which("sbatch"):
        raise SystemExit("kgqa: hydra/launcher=slurm needs Slurm's sbatch on the PATH (not found); "
                         "bash experiments/slurm/local_cluster.sh up starts a one-node Slurm here")
    partition = launcher.get("partition")
    if partition:
        known = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True).stdout.split()
        if partition not in known:
            raise SystemExit(f"kgqa: hydra.launcher.partition={partition}: no such Slurm partition "
                             f"(sinfo lists: {', '.join(known) or 'none'})")
    delay, limit = launcher.get("signal_delay_s") or 0, (launcher.get("timeout_min") or 0) * 60
    if limit and delay >= limit:
        raise SystemExit(f"kgqa: hydra.launcher.signal_delay_s={delay} is not shorter than the time limit "
                         f"(timeout_min={launcher.timeout_min}, {limit} s): the job would be signalled at its start")


class LaunchChecks(Callback):
    """Hydra callback in the launching process: records the command's swept keys for the jobs and, for
    the Slurm launcher, checks sbatch, the partition and the signal delay."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ[SWEPT_KEYS_ENV] = json.dumps(command_line_sweeps(list(config.hydra.overrides.task)))
        launcher = config.hydra.launcher
        if str(launcher.get("_target_", "")).endswith("SlurmLauncher"):
            check_slurm(launcher)


def unfinished_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint of a run its folder holds but did not finish (no metrics.json), where this
    process continues that run: Slurm's requeued attempt of a job (SLURM_RESTART_COUNT > 0), or a sweep's
    run launched again over its folder (a job killed without warning). Lightning's hpc_ckpt_N.ckpt from the
    requeue signal, or last.ckpt from the last epoch."""
    from kgqa.cli.sweep_runs import FINISHED, in_multirun

    again = int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0 or in_multirun()
    if not again or not (run_dir / "run_config.yaml").is_file() or (run_dir / FINISHED).is_file():
        return None
    found = [*run_dir.glob("hpc_ckpt_*.ckpt"), run_dir / "checkpoints" / "last.ckpt"]
    found = [p for p in found if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def slurm_job() -> str:
    """This job as Slurm names it: ARRAY_TASK for a task of an array (a sweep), else its id."""
    task = os.environ.get("SLURM_ARRAY_JOB_ID")
    return f"{task}_{os.environ['SLURM_ARRAY_TASK_ID']}" if task else os.environ["SLURM_JOB_ID"]


def in_slurm_main_thread() -> bool:
    """A Slurm job's process, where signal handlers can be set (the main thread)."""
    return SLURMEnvironment.detect() and threading.current_thread() is threading.main_thread()


class RequeueBetweenBatches(LightningCallback):
    """Slurm's signals handled between two training batches, in place of Lightning's handlers: USR1, the
    preset's requeue signal (signal_delay_s before the time limit, or `scancel --signal=USR1`), which
    Lightning answers by saving hpc_ckpt_N.ckpt wherever it lands, inside a step; and SIGTERM, Slurm ending
    this attempt (`scontrol requeue`, `scancel`, preemption; SIGKILL follows KillWait later), which
    Lightning answers by stopping after the batch, mid-validation even, with nothing saved. Here a signal
    only marks the request; before the next batch every rank saves the checkpoint (the loop, the loader's
    place in the epoch, each rank's RNG: the resume is exact). After USR1 rank 0 closes the W&B run (every
    step logged so far is in it), requeues this array task and the job waits for Slurm to end it. SIGTERM
    reaches every process of the job, W&B's service too, which dies at once with the records it had not
    written (wandb 0.31; a log call then raises): W&B is let go when it arrives, the attempt ends at the
    checkpoint, and the next one logs the lost steps again (kgqa.step_record). A signal after the last
    batch (the last validation) is taken when training ends; one before or after training (loading, the
    final tests) at once, USR1 requeuing, SIGTERM ending: the checkpoints on disk are where the run is."""

    def __init__(self):
        self.received: set[int] = set()
        self.trainer: L.Trainer | None = None  # while it trains
        if in_slurm_main_thread():  # from the start: before and after training a signal is taken at once
            signal.signal(signal.SIGUSR1, self.receive)
            signal.signal(signal.SIGTERM, self.receive)  # Lightning calls it in its own, and restores it

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """SIGTERM in place of Lightning's handler (set when fit starts; it restores ours at teardown)."""
        if in_slurm_main_thread():
            self.trainer = trainer
            signal.signal(signal.SIGTERM, self.receive)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A signal after the last batch (in the last validation) is taken here: the epoch's last.ckpt holds
        the run's end, nothing to save."""
        self.take_signals(trainer, None)
        self.trainer = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self.take_signals(trainer, Path(trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir)))

    def receive(self, signum: int, frame: Any) -> None:
        if self.trainer is None:  # no batch to wait for: the checkpoints on disk are where the run is
            if signum == signal.SIGUSR1:
                self.requeue("before or after training")
                return
            raise SystemExit(f"kgqa: Slurm ends job {slurm_job()} (SIGTERM) before or after training")
        self.received.add(signum)
        if signum == signal.SIGTERM:
            self.trainer.loggers = [x for x in self.trainer.loggers if not isinstance(x, WandbLogger)]

    @staticmethod
    def requeue(where: str) -> None:
        """`scontrol requeue` of this array task (not of its array), or one line saying how to continue."""
        job = slurm_job()
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"kgqa: scontrol requeue {job} failed ({done.stderr.strip()}); the run's folder holds "
                             f"its checkpoints: the same command, or resume=<run folder>, continues it")
        print(f"kgqa: requeued Slurm job {job} {where}", file=sys.stderr)

    def take_signals(self, trainer: L.Trainer, path: Path | None) -> None:
        """What any rank received, taken by all: saved to `path` (None: the run's checkpoints are current),
        then the attempt ends (SIGTERM) or rank 0 closes W&B and requeues the job."""
        if not trainer.strategy.reduce_boolean_decision(bool(self.received), all=False):
            return
        ending = trainer.strategy.reduce_boolean_decision(signal.SIGTERM in self.received, all=False)
        where = "after training" if path is None else f"at step {trainer.global_step}: {path}"
        if path is not None:
            self.save_between_batches(trainer, path)
        if ending:
            print(f"kgqa: Slurm ends job {slurm_job()} (SIGTERM) {where}", file=sys.stderr)
            raise SystemExit(0)
        if not trainer.is_global_zero:
            self.wait_for_slurm()
        from kgqa.build import finish_loggers

        finish_loggers(trainer)
        self.requeue(where)
        self.wait_for_slurm()

    @staticmethod
    def save_between_batches(trainer: L.Trainer, path: Path) -> None:
        """Lightning restores a mid-epoch checkpoint as one saved at the end of its last batch, before that
        batch's logging step was counted, and counts it again; saved here, before the next batch, the count
        already holds it, so it is saved one lower: the next attempt logs each step under its own number."""
        loop = trainer.fit_loop.epoch_loop
        counted_again = int(not loop._should_accumulate())
        loop._batches_that_stepped -= counted_again
        try:
            trainer.save_checkpoint(path)
        finally:
            loop._batches_that_stepped += counted_again

    def wait_for_slurm(self) -> None:
        """Nothing more is trained or logged: the requeue ends this attempt (SIGTERM, then SIGKILL)."""
        while signal.SIGTERM not in self.received:
            time.sleep(0.2)
        raise SystemExit(0)
