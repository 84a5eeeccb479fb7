"""Thin Hydra entry points over conf/."""
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def sweep_group(default: str) -> str:
    """All runs of one multirun share a W&B group named after the sweep; single runs use `default`."""
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        return f"{default}-sweep-{'_'.join(Path(hc.sweep.dir).parts[-2:])}"
    return default


def override_name(default: str) -> str:
    """A multirun job is named from its overrides (what the sweep varies); a single run keeps `default`."""
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN and hc.job.override_dirname:
        return hc.job.override_dirname.replace("/", "_")
    return default


OmegaConf.register_new_resolver("sweep_group", sweep_group, replace=True)
OmegaConf.register_new_resolver("override_name", override_name, replace=True)
