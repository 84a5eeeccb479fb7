"""The run folder's step record (kgqa.step_record): rows as logged, and a line that is not one named."""
from __future__ import annotations

import json

import pytest

from kgqa.errors import DataError
from kgqa.step_record import RECORD, StepRecord


def test_rows_come_back_as_logged_with_the_wandb_run_and_its_close(tmp_path):
    record = StepRecord(tmp_path)
    record.wandb_run = "offline-run-1-abc"
    record.log_metrics({"train/loss": 2.5, "epoch": 0}, step=0)
    record.log_metrics({"train/loss": 1.25, "epoch": 0}, step=1)
    record.wandb_closed()
    rows = record.rows()
    assert [(r["step"], r["metrics"], r["wandb"]) for r in rows[:2]] == [
        (0, {"train/loss": 2.5, "epoch": 0.0}, "offline-run-1-abc"), (1, {"train/loss": 1.25, "epoch": 0.0}, "offline-run-1-abc")]
    assert rows[2] == {"closed": "offline-run-1-abc"} and all(r["time"] > 0 for r in rows[:2])


def test_a_line_that_is_not_a_row_is_named_by_file_and_line(tmp_path):
    (tmp_path / RECORD).write_text(json.dumps({"step": 0, "metrics": {}}) + "\n{\"step\": 1, \"metr\n")
    with pytest.raises(DataError, match=rf"^{tmp_path / RECORD}:2: not a row of the run's step record"):
        StepRecord(tmp_path).rows()
