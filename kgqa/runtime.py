"""What every entry point shares: building the pieces from a config, checkpoints, printing."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import lightning as L
import rich
import rich.syntax
import rich.tree
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from kgqa.errors import CheckpointError
from kgqa.data.tokenizer import CharTokenizer, PretrainedTokenizer, Tokenizer
from kgqa.datamodule import KgqaDataModule
from kgqa.module import KgqaModule


def print_config(cfg: DictConfig) -> None:
    tree = rich.tree.Tree("config", style="dim")
    for key, value in cfg.items():
        body = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        tree.add(str(key)).add(rich.syntax.Syntax(body, "yaml"))
    rich.print(tree)


def build_datamodule(cfg: DictConfig, tokenizer: Tokenizer | None = None) -> KgqaDataModule:
    d = cfg.data
    return KgqaDataModule(instantiate(d.source), instantiate(cfg.kb), target=cfg.target, batch_size=d.batch_size,
                          eval_batch_size=d.eval_batch_size, max_question_len=d.max_question_len,
                          num_workers=d.get("num_workers", 0), batches_per_bucket=d.get("batches_per_bucket", 50),
                          pretrained=cfg.backbone.pretrained, tokenizer=tokenizer, seed=cfg.seed,
                          augment=instantiate(cfg.augment) if cfg.get("augment") else None,
                          trie_targets=cfg.optim.get("trie_loss", 0.0) > 0)


def build_module(cfg: DictConfig, vocab_size: int) -> KgqaModule:
    c = OmegaConf.to_container(cfg, resolve=True)
    return KgqaModule(vocab_size, backbone=c["backbone"], optim=c["optim"], decode=c["decode"],
                      lookahead=c.get("lookahead"), seed=c["seed"], factors=c.get("factors"), run_config=c)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file, then rename: a crash mid-write leaves the previous checkpoint intact."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        with open(tmp, "wb") as f:
            f.write(buffer.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = True) -> dict[str, Any]:
        return load_checkpoint(path, map_location)


def load_checkpoint(path, map_location="cpu") -> dict[str, Any]:
    """torch.load with weights_only=True, and a clear error for a missing, truncated or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for damaged files
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or not saved by torch): {type(e).__name__}: {str(e)[:200]}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "run_config" not in ckpt.get("hyper_parameters", {}):
        raise CheckpointError(f"{path} is not a kgqa checkpoint (no state_dict or run config)")
    return ckpt


def tokenizer_from_state(state: dict[str, Any]) -> Tokenizer:
    return CharTokenizer(state["vocab"]) if "vocab" in state else PretrainedTokenizer(state["pretrained"])


def build_trainer(cfg: DictConfig, callbacks: list | None = None, **overrides) -> L.Trainer:
    logger = instantiate(cfg.logger)
    return instantiate(cfg.trainer, logger=logger, callbacks=[RichProgressBar(), *(callbacks or [])],
                       plugins=[AtomicCheckpointIO()], **overrides)


def finish_loggers(trainer: L.Trainer) -> None:
    """Close the W&B run: the jobs of a multirun share one process, and each must get its own run."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and trainer.is_global_zero:
            logger.experiment.finish()


def checkpoint_callbacks(cfg: DictConfig) -> tuple[ModelCheckpoint, ModelCheckpoint]:
    """best.ckpt (by val EMF1) and last.ckpt (every epoch, to resume from; Lightning's save_last
    only follows saves of the monitored checkpoint, so it can lag behind)."""
    folder = Path(cfg.output_dir) / "checkpoints"
    best = ModelCheckpoint(dirpath=folder, filename="best", monitor="val/emf1", mode="max", enable_version_counter=False)
    last = ModelCheckpoint(dirpath=folder, filename="last", enable_version_counter=False)
    return best, last


def print_metrics(metrics: dict[str, Any]) -> None:
    for name in sorted(metrics):
        print(f"{name}: {float(metrics[name]):.4f}")


def resolve_checkpoint(path: str) -> Path:
    p = Path(path)
    return p / "checkpoints" / "best.ckpt" if p.is_dir() else p


def restore(ckpt_path: str, cfg: DictConfig) -> tuple[DictConfig, KgqaDataModule, KgqaModule]:
    """Re-create a trained run: its data, KB and weights from the checkpoint, decoding from `cfg`."""
    ckpt = load_checkpoint(resolve_checkpoint(ckpt_path))
    run = OmegaConf.create(ckpt["hyper_parameters"]["run_config"])
    kept = [k for k in ("data", "kb", "target", "backbone", "optim", "seed", "factors") if k in run and not (k == "kb" and cfg.get("kb"))]
    merged = OmegaConf.merge({k: run[k] for k in kept}, cfg)  # a kb given here replaces the run's whole
    if cfg.get("data_root"):
        merged.data.root = merged.data.source.root = cfg.data_root
    if "logger" in merged and "group" in run.get("logger", {}) and "group" in merged.logger:
        merged.logger.group = run.logger.group  # decode-time runs land beside the run that trained the model
    tokenizer = tokenizer_from_state(ckpt[KgqaDataModule.__qualname__])
    dm = build_datamodule(merged, tokenizer)
    module = build_module(merged, tokenizer.vocab_size)
    module.load_state_dict(ckpt["state_dict"])
    return merged, dm, module
