"""What every entry point shares: building the pieces from a config, checkpoints, printing."""
from __future__ import annotations

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
from kgqa.files import atomic_output
from kgqa.trusted import trusted_config
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
        with atomic_output(path, "wb") as f:
            torch.save(checkpoint, f)

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = True) -> dict[str, Any]:
        return load_checkpoint(path, map_location)


def load_checkpoint(path, map_location="cpu") -> dict[str, Any]:
    """torch.load with weights_only=True (tensors and plain values, no pickled objects) and a run config
    that names only the project's own targets (kgqa.trusted); a clear error for a missing, truncated,
    foreign or untrusted file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for damaged files
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or not saved by torch): "
                              f"{type(e).__name__}: {str(e)[:200]}") from None
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hparams, dict) or not isinstance(ckpt.get("state_dict"), dict) or "run_config" not in hparams:
        raise CheckpointError(f"{path} is not a kgqa checkpoint (no state_dict or run config)")
    ckpt["hyper_parameters"] = trusted_config(dict(hparams), path)
    return ckpt


def tokenizer_from_state(state: Any, path: Path) -> Tokenizer:
    """The tokenizer a checkpoint was trained with: its character vocabulary, or the pretrained one it
    names with the characters added in training (so the resized embeddings line up)."""
    state = state if isinstance(state, dict) else {}
    try:
        if is_strings(state.get("vocab")):
            return CharTokenizer(state["vocab"])
        if isinstance(state.get("pretrained"), str) and isinstance(state.get("fingerprint"), str) and is_strings(state.get("added")):
            return PretrainedTokenizer.from_state(state)
    except ValueError as e:  # a ConfigError too: the pretrained folder is gone
        raise CheckpointError(f"{path}: {e}") from None
    raise CheckpointError(f"{path} holds no vocabulary (a kgqa checkpoint keeps its tokenizer's)")


def is_strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


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
    """Re-create a trained run: its data, KB and weights from the checkpoint, decoding from `cfg`.
    A KB that is not the one the model was trained with is refused unless cfg.allow_kb_change."""
    path = resolve_checkpoint(ckpt_path)
    ckpt = load_checkpoint(path)
    run = OmegaConf.create(ckpt["hyper_parameters"]["run_config"])
    kept = [k for k in ("data", "kb", "target", "backbone", "optim", "seed", "factors") if k in run and not (k == "kb" and cfg.get("kb"))]
    merged = OmegaConf.merge({k: run[k] for k in kept}, cfg)  # a kb given here replaces the run's whole
    if cfg.get("data_root"):
        merged.data.root = merged.data.source.root = cfg.data_root
    if "logger" in merged and "group" in run.get("logger", {}) and "group" in merged.logger:
        merged.logger.group = run.logger.group  # decode-time runs land beside the run that trained the model
    state = ckpt.get(KgqaDataModule.__qualname__)
    dm = build_datamodule(merged, tokenizer_from_state(state, path))
    dm.setup()
    dm.check_kb(state.get("kb"), path, allow_change=bool(cfg.get("allow_kb_change", False)))
    module = build_module(merged, dm.tokenizer.vocab_size)
    try:
        module.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(f"{path}: its weights do not fit the model its config describes: {str(e)[:300]}") from None
    return merged, dm, module
