"""Slurm's signals taken between two training batches (RequeueBetweenBatches): a requeue or an end of the
attempt that the next attempt resumes exactly."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger

from kgqa.cli.cluster import slurm_job


def in_slurm_main_thread() -> bool:
    """A Slurm job's process, where signal handlers can be set (the main thread)."""
    return SLURMEnvironment.detect() and threading.current_thread() is threading.main_thread()


class RequeueBetweenBatches(Callback):
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
