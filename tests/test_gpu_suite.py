"""experiments/gpu_suite.sh, the one command for every GPU figure, runs end to end on the CPU in its
reduced mode and writes one JSON with each part's figures and the DDP comparison."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from cli import ROOT


@pytest.mark.slow
def test_gpu_suite_reduced_mode_writes_one_json(tmp_path, kgclue_root):
    env = os.environ | {"OUT": str(tmp_path)}
    proc = subprocess.run(["bash", "experiments/gpu_suite.sh", "--reduced"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (path,) = tmp_path.glob("gpu_suite-*-reduced.json")
    report = json.loads(path.read_text())
    assert report["mode"] == "reduced" and report["status"] == {"decode": 0, "train": 0, "ddp": "0"}
    rules = {r["lookahead"] for r in report["decode"]["results"]}
    assert rules == {"none", "lcs_power"} and all(r["project_qps"] > 0 for r in report["decode"]["results"])
    assert {r["batching"] for r in report["train"]["rows"]} == {"bucketed", "shuffled"}
    assert report["ddp"]["same_metrics"] is True and report["ddp"]["one_device"]["test/em"] >= 0.0
    assert report["goals"]["decode_qps_beam3_lcs_power"] == next(
        r["project_qps"] for r in report["decode"]["results"] if r["lookahead"] == "lcs_power")
