"""Resuming a run where its folder is: the saved config (checked against its sha256, admitting only
the project's own targets), moved paths re-pointed, and the few overrides a resume may apply."""
import hashlib
import json
from pathlib import Path

import lightning as L
import yaml
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from kgqa.errors import CheckpointError, ConfigError
from kgqa.files import write_text
from kgqa.trusted import trusted_config

RUN_CONFIG, RUN_INFO = "run_config.yaml", "run.json"
RUN_CONFIG_KEYS = ("output_dir", "seed", "target", "data", "kb", "backbone", "optim", "scheduler", "loss", "decode",
                   "trainer", "logger")
# What a resume may change: more epochs, other resources, another logger, data that moved, extra test decodes.
RESUME_OVERRIDES = ("trainer.max_epochs", "trainer.accelerator", "trainer.devices", "trainer.num_nodes",
                    "trainer.strategy", "logger", "data.root", "data.module.num_workers", "ablation_lookaheads")


def moved(node, old: str, new: str):
    """`node` (a plain container) with every path string at or under `old` moved to `new`."""
    if isinstance(node, dict):
        return {moved(k, old, new): moved(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [moved(v, old, new) for v in node]
    if isinstance(node, str) and old and (node == old or node.startswith(old.rstrip("/") + "/")):
        return new + node[len(old):]
    return node


def read_run_files(run_dir: Path) -> tuple[dict, dict]:
    """The saved config and run info, or a CheckpointError naming the damaged file."""
    config_path, info_path = run_dir / RUN_CONFIG, run_dir / RUN_INFO
    try:
        info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{info_path} is damaged (not JSON: {e}); restore it or start a new run") from None
    if not isinstance(info, dict):
        raise CheckpointError(f"{info_path} is damaged (not a JSON object); restore it or start a new run")
    text = config_path.read_bytes()
    digest = info.get("run_config_sha256")
    if digest and hashlib.sha256(text).hexdigest() != digest:
        raise CheckpointError(f"{config_path} changed since the run wrote it (truncated, damaged or edited; "
                              f"{RUN_INFO} has its sha256): restore it, or give allowed changes beside resume=")
    try:
        saved = OmegaConf.create(text.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{config_path} is damaged (not UTF-8 text: {e.reason} at byte {e.start})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise CheckpointError(f"{config_path} is damaged ({where}{getattr(e, 'problem', None) or e})") from None
    missing = [k for k in RUN_CONFIG_KEYS if not isinstance(saved, DictConfig) or k not in saved]
    if missing:
        raise CheckpointError(f"{config_path} is damaged or not a kgqa run config (no {', '.join(missing)})")
    return OmegaConf.to_container(saved), info


def resumed_config(run_dir: Path, given: DictConfig, overrides: list[str],
                   checkpoint: Path | None = None) -> tuple[DictConfig, Path]:
    """The run's own resolved config, pointed at `run_dir` wherever the folder now is, at its last
    checkpoint (or `checkpoint`) and its W&B run, with the `overrides` (as given on the command line,
    composed into `given`) that RESUME_OVERRIDES allows; any other override is refused before any work."""
    changes = {o: o.split("=", 1)[0].lstrip("+") for o in overrides if not o.startswith("resume=")}  # "~key" refused
    refused = [o for o, key in changes.items() if key not in RESUME_OVERRIDES]
    if refused:
        raise ConfigError(f"resume= continues a run as it was configured; refused: {' '.join(refused)} "
                          f"(allowed beside resume=: {', '.join(RESUME_OVERRIDES)})")
    last = checkpoint or run_dir / "checkpoints" / "last.ckpt"
    if not (run_dir / RUN_CONFIG).is_file() or not last.is_file():
        raise CheckpointError(f"{run_dir} is not a kgqa run with a checkpoint to resume "
                              f"({RUN_CONFIG}, {last.relative_to(run_dir)})")
    saved, info = read_run_files(run_dir)
    saved = trusted_config(saved, run_dir / RUN_CONFIG)  # a run folder is data: only the project's own targets
    here = str(run_dir.resolve())
    cfg = OmegaConf.create(moved(saved, str(saved["output_dir"]), here))
    old_root = OmegaConf.select(cfg, "data.root")
    for key in changes.values():
        OmegaConf.update(cfg, key, OmegaConf.select(given, key), merge=False, force_add=True)
    new_root = OmegaConf.select(cfg, "data.root")
    if old_root and new_root != old_root:
        cfg = OmegaConf.create(moved(OmegaConf.to_container(cfg), old_root, new_root))
    if new_root and not Path(new_root).is_dir():
        raise ConfigError(f"data.root={new_root} (saved in {run_dir / RUN_CONFIG}) does not exist: "
                          f"give the data's new folder with resume={run_dir} ++data.root=<folder>")
    if "wandb_id" in info and "id" in cfg.logger:
        cfg.logger.id, cfg.logger.resume = info["wandb_id"], "allow"
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)), last


def finished_epochs(run_dir: Path, cfg: DictConfig) -> int | None:
    """The epochs a run trained when its metrics.json (written once it finished) shows it reached
    trainer.max_epochs: a resume of it only tests again. None when it has epochs left to train."""
    try:
        history = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8")).get("history") or []
        epochs = max(int(h["epoch"]) for h in history) + 1
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return epochs if 0 < cfg.trainer.max_epochs <= epochs else None


class CheckpointsFollowTheFolder(Callback):
    """A checkpoint's callback states name the folder it was saved in; pointed at where the run
    folder is now (else Lightning keeps the old best path and forgets the best score)."""

    def __init__(self, folder: str):
        self.folder = folder

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        states = checkpoint.get("callbacks") or {}
        checkpoint["callbacks"] = {key: moved(state, state["dirpath"], self.folder) if state.get("dirpath") else state
                                   for key, state in states.items()}


def save_run_files(run_dir: Path, cfg: DictConfig, trainer: L.Trainer) -> None:
    """run_config.yaml, and run.json with the W&B run to continue and the config's sha256 (a resume
    refuses a config that changed since)."""
    text = OmegaConf.to_yaml(cfg)
    write_text(run_dir / RUN_CONFIG, text)
    wandb = next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
    info = {"wandb_id": wandb.experiment.id} if wandb else {}
    write_text(run_dir / RUN_INFO, json.dumps(info | {"run_config_sha256": hashlib.sha256(text.encode()).hexdigest()}))
