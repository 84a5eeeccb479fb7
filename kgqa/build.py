"""The run's objects from its config: datamodule, module and trainer for a new run, and the same
construction from the config a checkpoint stores (restore)."""
from __future__ import annotations

from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf, open_dict

from kgqa.checkpoints import AtomicCheckpointIO, load_checkpoint, resolve_checkpoint, tokenizer_from_state
from kgqa.data import DATAMODULE_KEYS
from kgqa.data.tokenizer import Tokenizer
from kgqa.datamodule import KgqaDataModule
from kgqa.errors import CheckpointError
from kgqa.module import KgqaModule
from kgqa.rerank import RERANKER_FILE, load_reranker
from kgqa.step_record import StepRecord


def datamodule_config(data: DictConfig) -> DictConfig:
    """data.module: the data module's _target_ and own settings. A run saved before they had that node
    kept the settings flat in data (data.batch_size, ...): they are read from there, under what is in data.module
    (a resume's data.module.num_workers)."""
    target = {"_target_": f"{KgqaDataModule.__module__}.{KgqaDataModule.__qualname__}"}
    saved_flat = {k: data[k] for k in DATAMODULE_KEYS if k in data}
    return OmegaConf.merge(target, saved_flat, data.get("module") or {})


def build_datamodule(cfg: DictConfig, tokenizer: Tokenizer | None = None) -> KgqaDataModule:
    """cfg.data.module, given the sources (data.source, kb) and what it serves the rest of the run: the target
    order, the backbone's vocabulary, the restored tokenizer, the augmentation and the loss's extra targets."""
    sequence_loss = OmegaConf.select(cfg, "loss.sequence_loss", default=0.0) > 0
    return instantiate(datamodule_config(cfg.data), instantiate(cfg.data.source), instantiate(cfg.kb),
                       target=cfg.target, pretrained=cfg.backbone.pretrained, tokenizer=tokenizer, seed=cfg.seed,
                       augment=instantiate(cfg.augment) if cfg.get("augment") else None,
                       trie_targets=(OmegaConf.select(cfg, "loss.trie_loss", default=0.0) > 0
                                     or OmegaConf.select(cfg, "exposure.replace", default=0.0) > 0),
                       candidates=OmegaConf.select(cfg, "loss.candidates", default=0) if sequence_loss else 0,
                       _recursive_=False)


def build_module(cfg: DictConfig, vocab_size: int) -> KgqaModule:
    """cfg.model (its _target_ and own settings), given the groups it reads as plain containers: the
    optimiser and scheduler stay configs, built in configure_optimizers, and all of it is saved in the checkpoint."""
    c = OmegaConf.to_container(cfg, resolve=True)
    return instantiate(cfg.model, vocab_size, backbone=c["backbone"], optim=c["optim"], scheduler=c.get("scheduler"),
                       loss=c.get("loss"), exposure=c.get("exposure"), decode=c["decode"], lookahead=c.get("lookahead"), seed=c["seed"],
                       factors=c.get("factors"), run_config=c, _recursive_=False, _convert_="all")


def build_logger(cfg: DictConfig):
    """cfg.logger; Lightning's WandbLogger passes wandb.init anonymous=None, which wandb warns about
    for any value given, so it is not passed at all."""
    logger = instantiate(cfg.logger)
    if isinstance(logger, WandbLogger):
        logger._wandb_init.pop("anonymous", None)
    return logger


def build_trainer(cfg: DictConfig, callbacks: list | None = None, record: StepRecord | None = None,
                  **overrides) -> L.Trainer:
    """In a Slurm job Lightning takes the ranks from Slurm but does not requeue on USR1 itself: its handler
    saves wherever the signal lands, inside a step; kgqa.cli.requeue.RequeueBetweenBatches requeues a training.
    `record`: a training's StepRecord, logged to beside cfg.logger."""
    slurm = [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []
    return instantiate(cfg.trainer, logger=[build_logger(cfg), *([record] if record else [])],
                       callbacks=[RichProgressBar(), *(callbacks or [])], plugins=[AtomicCheckpointIO(), *slurm],
                       **overrides)


def finish_loggers(trainer: L.Trainer) -> None:
    """Close the W&B run (the jobs of a multirun share one process, and each must get its own run), and
    say so in the step record."""
    if not trainer.is_global_zero:
        return
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()
    for logger in trainer.loggers:
        if isinstance(logger, StepRecord):
            logger.wandb_closed()


def val_and_test_metrics(trainer: L.Trainer, module, dm, ckpt_path: str | None) -> dict[str, float]:
    """val and test decoded with a checkpoint (a run's best), as a finished run reports them (losses left out)."""
    metrics: dict[str, float] = {}
    for evaluate in (trainer.validate, trainer.test):
        (result,) = evaluate(module, dm, ckpt_path=ckpt_path, weights_only=True, verbose=False)
        metrics.update({k: float(v) for k, v in result.items() if not k.endswith("/loss")})
    return metrics


def checkpoint_callbacks(cfg: DictConfig) -> tuple[ModelCheckpoint, ModelCheckpoint]:
    """best.ckpt (by val EMF1) and last.ckpt (every epoch, to resume from; Lightning's save_last
    only follows saves of the monitored checkpoint, so it can lag behind)."""
    folder = Path(cfg.output_dir) / "checkpoints"
    best = ModelCheckpoint(dirpath=folder, filename="best", monitor="val/emf1", mode="max", enable_version_counter=False)
    last = ModelCheckpoint(dirpath=folder, filename="last", enable_version_counter=False)
    return best, last


def restore(ckpt_path: str, cfg: DictConfig) -> tuple[DictConfig, KgqaDataModule, KgqaModule]:
    """Re-create a trained run: its data, KB and weights from the checkpoint, decoding from `cfg`, with the
    reranker the run trained beside it when cfg.use_reranker. A KB that is not the one the model was trained with
    is refused unless cfg.allow_kb_change."""
    path = resolve_checkpoint(ckpt_path)
    ckpt = load_checkpoint(path)
    run = OmegaConf.create(ckpt["hyper_parameters"]["run_config"])
    kept = [k for k in ("data", "kb", "target", "backbone", "optim", "scheduler", "loss", "model", "seed", "factors")
            if k in run and not (k == "kb" and cfg.get("kb"))]
    given = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "data"])  # data: the run's, at data.root if it moved
    merged = OmegaConf.merge({k: run[k] for k in kept}, given)  # a kb given here replaces the run's whole
    root = OmegaConf.select(cfg, "data.root")
    if root:
        merged.data.root = merged.data.source.root = root
    if "logger" in merged and "group" in run.get("logger", {}) and "group" in merged.logger:
        merged.logger.group = run.logger.group  # decode-time runs land beside the run that trained the model
    if "model" not in merged:  # saved before the module had a config node of its own
        with open_dict(merged):
            merged.model = {"_target_": f"{KgqaModule.__module__}.{KgqaModule.__qualname__}"}
    state = ckpt.get(KgqaDataModule.__qualname__)
    dm = build_datamodule(merged, tokenizer_from_state(state, path))
    dm.setup()
    dm.check_kb(state.get("kb"), path, allow_change=bool(cfg.get("allow_kb_change", False)))
    module = build_module(merged, dm.tokenizer.vocab_size)
    try:
        module.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(f"{path}: its weights do not fit the model its config describes: {str(e)[:300]}") from None
    reranker = path.parent / RERANKER_FILE
    if cfg.get("use_reranker") and reranker.is_file():  # the run trained one (rerank=beam)
        module.reranker = load_reranker(reranker, dm.tokenizer, dm.max_question_len)
    return merged, dm, module
