"""Each run of a sweep ends in its own folder, whatever the launcher: finished (metrics.json), or failed
(failed.json: its error line and the log to read) while the other runs go on. The same multirun command
run again over the same sweep folder runs only the runs that did not finish: a finished folder is skipped
with a line saying so, an unfinished one continues from its newest checkpoint, a failed one runs again."""
from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from kgqa.files import write_text

FAILED, FINISHED = "failed.json", "metrics.json"
log = logging.getLogger("kgqa")


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def job_log() -> str:
    """Where this run's output is: submitit's stderr file in a Slurm job, else Hydra's job log."""
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
        import submitit

        return str(submitit.JobEnvironment().paths.stderr.resolve())
    hc = HydraConfig.get()
    return str(Path(hc.runtime.output_dir, f"{hc.job.name}.log").resolve())


def finished_metrics(run_dir: Path) -> dict[str, float] | None:
    """A finished run's metrics, when this multirun job's folder holds one (it is not run again)."""
    if not in_multirun() or not (run_dir / FINISHED).is_file() or (run_dir / FAILED).is_file():
        return None
    log.info("%s: finished already (%s), skipped", run_dir, FINISHED)
    return json.loads((run_dir / FINISHED).read_text(encoding="utf-8")).get("metrics") or {}


def record_failure(run_dir: Path, name: str, error: str, crash: bool) -> dict:
    """failed.json in the run folder (the sweep summary lists it); a crash's traceback goes to the log."""
    import wandb

    if crash:
        log.error("%s", traceback.format_exc())
    if wandb.run is not None:  # the next run of a local sweep, in this process, gets a W&B run of its own
        wandb.finish(exit_code=1)
    line = " ".join(error.split())
    log.error("kgqa: %s", line)  # in the job's log file too
    print(f"kgqa: {line}", file=sys.stderr)
    write_text(run_dir / FAILED, json.dumps({"name": name, "error": line, "log": job_log()}, ensure_ascii=False))
    return {}


def record_dead_job(run_dir: Path, overrides: list[str], job: str, state: str, log_file: Path) -> None:
    """failed.json for a run whose Slurm job ended without a result, written by the launching process:
    nothing in the job could say why (SIGKILL, out of memory, a lost node), Slurm's state does."""
    from kgqa.cli.cluster import swept_name, swept_on_command_line

    name = swept_name(overrides, swept_on_command_line()) or " ".join(overrides)
    line = (f"Slurm job {job} ended without a result ({state}: killed, out of memory or its node lost); "
            f"its last checkpoint, if any, is where the same command continues it")
    print(f"kgqa: {name}: {line}", file=sys.stderr)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / FAILED, json.dumps({"name": name, "error": line, "log": str(log_file.resolve())},
                                            ensure_ascii=False))


def passed(run_dir: Path) -> None:
    """A run that ran to its end is no longer a failed one."""
    (run_dir / FAILED).unlink(missing_ok=True)


def failures(sweep_dir: Path) -> list[tuple[Path, dict]]:
    """The failed runs under a sweep folder, with what each recorded."""
    return [(p.parent, json.loads(p.read_text(encoding="utf-8"))) for p in sorted(sweep_dir.glob(f"*/{FAILED}"))]
