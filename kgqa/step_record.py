"""Every row a training run logs, kept in its folder (steps.jsonl) exactly once over all the attempts that
trained it, and its W&B run made whole from it. W&B's service dies with a job that ends without closing
its run: SIGTERM, which Slurm sends every process of a job it requeues, cancels or preempts, and SIGKILL
take the records the service had not yet written (wandb 0.31: a whole epoch's, measured), so an offline
run the attempt did not close holds an unknown part of its steps. The next attempt sets such a run aside
(wandb/incomplete/) and, before it trains, logs its steps again from this record."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from kgqa.errors import DataError
from kgqa.files import write_text

RECORD = "steps.jsonl"


class StepRecord(Logger):
    """A logger beside W&B: each row appended as one write (in the file before the next step, so a
    SIGKILL loses none), with its wall-clock time and the W&B offline run it went to."""

    def __init__(self, run_dir: str | Path):
        super().__init__()
        self.path = Path(run_dir) / RECORD
        self.wandb_run: str | None = None  # this attempt's offline run folder (wandb/<name>)

    @property
    def name(self) -> str:
        return "steps"

    @property
    def version(self) -> int:
        return 0

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Nothing: run_config.yaml holds the configuration."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.append({"step": step, "time": round(time.time(), 3), "wandb": self.wandb_run,
                     "metrics": {k: float(v) for k, v in metrics.items()}})

    @rank_zero_only
    def wandb_closed(self) -> None:
        """This attempt's W&B run was finished: every row it was given is in it."""
        if self.wandb_run:
            self.append({"closed": self.wandb_run})

    def append(self, row: dict) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")

    def rows(self) -> list[dict]:
        rows = []
        lines = self.path.read_text(encoding="utf-8").splitlines() if self.path.is_file() else []
        for number, line in enumerate(lines, 1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise DataError(f"{self.path}:{number}: not a row of the run's step record ({error.msg}); mend or "
                                f"remove the line to continue the run") from None
        return rows


def offline_run(logger: WandbLogger) -> Path | None:
    """The offline run folder W&B writes this process's run to; None when it streams to a server (what
    the server received cannot be set aside, nor told apart from what it lost)."""
    run = logger.experiment
    return Path(run.settings.sync_dir) if run.offline else None


class WandbMadeWhole(Callback):
    """Before the first batch an attempt trains (its checkpoint restored, the loop's logging step set), or
    when its fit ends with none (its checkpoint was the training's end): the record is cut to the rows logged
    before that step (the next are trained and logged again), the offline runs of attempts that did not
    close theirs are moved to wandb/incomplete/, and their rows are logged again to this attempt's W&B
    run, which so holds every step once with the runs closed before it."""

    def __init__(self, record: StepRecord):
        self.record, self.first_batch = record, True
        self.wandb: WandbLogger | None = None  # rank 0's, when it writes an offline run
        self.here: Path | None = None  # that offline run's folder

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        wandb = next((x for x in trainer.loggers if isinstance(x, WandbLogger)), None)
        self.here = offline_run(wandb) if wandb and trainer.is_global_zero else None
        self.wandb = wandb if self.here else None
        self.record.wandb_run, self.first_batch = (self.here.name if self.here else None), True

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self.made_whole(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Also after a fit that had nothing to train (Lightning then calls no train hook)."""
        self.made_whole(trainer)

    def made_whole(self, trainer: L.Trainer) -> None:
        if not self.first_batch or not trainer.is_global_zero:
            return
        self.first_batch = False
        step = trainer.fit_loop.epoch_loop._batches_that_stepped  # the step the next row is logged at
        rows = [r for r in self.record.rows() if "closed" in r or r["step"] < step]
        closed = {r["closed"] for r in rows if "closed" in r}
        left_open = {r["wandb"] for r in rows if "step" in r and r["wandb"]} - closed - {self.record.wandb_run}
        if self.here and left_open:
            for name in sorted(left_open):
                if (self.here.parent / name).is_dir():
                    (self.here.parent / "incomplete").mkdir(exist_ok=True)
                    shutil.move(self.here.parent / name, self.here.parent / "incomplete" / name)
            for row in rows:
                if row.get("wandb") in left_open:
                    self.wandb.log_metrics(row["metrics"], row["step"])
                    row["wandb"] = self.record.wandb_run
        write_text(self.record.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
