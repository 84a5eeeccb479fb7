"""Run the console scripts as a user would, in a subprocess with W&B offline."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METRIC_LINE = re.compile(r"^([a-z]+/[a-z0-9_]+): ([0-9.]+)$", re.M)


def run_cli(script: str, *overrides: str, check: bool = True, timeout: int = 900,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`env`: variables set beside the test's own (e.g. a PATH, OMP_NUM_THREADS)."""
    env = os.environ | {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "1"} | (env or {})
    cmd = [sys.executable, "-m", f"kgqa.cli.{script}", *overrides]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def printed_metrics(proc: subprocess.CompletedProcess) -> dict[str, float]:
    return {k: float(v) for k, v in METRIC_LINE.findall(proc.stdout)}


def printed_json(proc: subprocess.CompletedProcess) -> dict:
    """The JSON object a script printed over several lines (log lines may come before it)."""
    return json.loads(re.search(r"^\{$.*?^\}$", proc.stdout, re.M | re.S).group(0))


def compose_train(*overrides: str):
    """kgqa-train's config as the CLI composes it, the values Hydra sets at run time filled in."""
    from hydra import compose, initialize_config_dir

    from kgqa.cli import CONFIG_DIR

    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    cfg.run_name, cfg.output_dir, cfg.factors = "test", "unused", {}
    return cfg
