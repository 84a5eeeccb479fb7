"""The one-node Slurm of experiments/slurm/local_cluster.sh, shared by the test sessions on this machine:
each session registers itself under a lock, and the last one to leave stops the daemons if a session
started them."""
from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest
from filelock import FileLock

from cli import ROOT

SCRIPT = ROOT / "experiments" / "slurm" / "local_cluster.sh"
STATE = Path(os.environ.get("KGQA_SLURM_DIR", "/tmp/kgqa-slurm"))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


@contextmanager
def local_slurm():
    """Yields the partition of a running local Slurm (started if needed), with SLURM_CONF set."""
    if os.geteuid() != 0 and not shutil.which("slurmctld"):
        pytest.skip("Slurm is not installed and installing it needs root")
    users = STATE / "users"
    users.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(STATE.parent / f"{STATE.name}.lock"))
    with lock:
        started = not any(alive(int(p.name)) for p in users.iterdir()) and not (STATE / "slurmctld.pid").is_file()
        proc = subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise AssertionError(f"local_cluster.sh up failed:\n{proc.stderr[-3000:]}")
        (users / str(os.getpid())).touch()
        if started:
            (STATE / "started-by-tests").touch()
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(STATE / "slurm.conf")
    try:
        yield proc.stdout.strip().splitlines()[-1]
    finally:
        os.environ.pop("SLURM_CONF") if previous is None else os.environ.update(SLURM_CONF=previous)
        with lock:
            (users / str(os.getpid())).unlink(missing_ok=True)
            if not any(alive(int(p.name)) for p in users.iterdir()) and (STATE / "started-by-tests").is_file():
                subprocess.run(["bash", str(SCRIPT), "down"], check=True, timeout=120)
                (STATE / "started-by-tests").unlink()
