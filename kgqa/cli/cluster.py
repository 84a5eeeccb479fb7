"""Running where a scheduler placed the job: threads from the allocation, the sweep's keys carried into
each job, checks before anything is submitted to Slurm, and a requeued attempt continuing its run folder.
Light (no torch, no Lightning): every entry point imports it; the requeue itself is kgqa.cli.requeue."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

SWEPT_KEYS_ENV = "KGQA_SWEPT_KEYS"  # set by the launching process; sbatch exports it to every job
SWEEP_SYNTAX = (",", "range(", "choice(", "interval(", "glob(")


def allotted_threads() -> int:
    """Torch and OpenMP threads from what this process may use: OMP_NUM_THREADS when the user set it,
    else Slurm's CPUs per task, else the cores in its affinity mask (not the machine's): oversubscribed
    threads on a shared node cost up to 10x. Torch, when this process has imported it, is set; imported
    later, it takes OMP_NUM_THREADS (a command that needs no torch, kgqa-kb, never loads it)."""
    given = os.environ.get("OMP_NUM_THREADS") or os.environ.get("SLURM_CPUS_PER_TASK")
    threads = int(given) if given and given.isdigit() and int(given) > 0 else len(os.sched_getaffinity(0))
    os.environ["OMP_NUM_THREADS"] = str(threads)  # data-loader workers and other children, torch imported later
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
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
