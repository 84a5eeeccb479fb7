"""Thin Hydra entry points over conf/."""
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from kgqa.errors import KgqaError

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def sweep_group(default: str) -> str:
    """All runs of one multirun share a W&B group named after the sweep; single runs use `default`."""
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        return f"{default}-sweep-{'_'.join(Path(hc.sweep.dir).parts[-2:])}"
    return default


SWEEP_SYNTAX = (",", "range(", "choice(", "interval(", "glob(")


def swept_keys() -> set[str]:
    """Keys a multirun varies: comma lists or sweep functions on the command line, or sweeper params."""
    from_cli = {a.split("=", 1)[0].lstrip("+~") for a in sys.argv[1:] if "=" in a and any(x in a.split("=", 1)[1] for x in SWEEP_SYNTAX)}
    return from_cli | set(HydraConfig.get().sweeper.get("params") or {})


def override_name(default: str, exclude: str = "") -> str:
    """A multirun job is named after the values it sweeps (e.g. "target=smp,seed=1"), leaving out the
    keys in `exclude` (e.g. "seed": the configuration that seeds repeat, W&B's job_type); a single
    run, or a job whose swept keys are all excluded, is `default`."""
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return default
    keys = swept_keys() - set(exclude.split())
    swept = [o for o in hc.overrides.task if o.split("=", 1)[0].lstrip("+~") in keys]
    return ",".join(swept).replace("/", "_") or default


OmegaConf.register_new_resolver("sweep_group", sweep_group, replace=True)
OmegaConf.register_new_resolver("override_name", override_name, replace=True)


def reporting_errors(entry, cfg):
    """Bad input (data, checkpoints, paths) ends with its message, not a stack trace."""
    try:
        return entry(cfg)
    except (KgqaError, FileNotFoundError) as e:
        raise SystemExit(f"kgqa: {e}") from None
