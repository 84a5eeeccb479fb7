"""kgqa-train: fit on train, select on val (EMF1), report val and test with the best checkpoint."""
import sys
from pathlib import Path

import hydra
import lightning as L
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from kgqa.cli import CONFIG_DIR, command_line_checked, reporting_errors, with_swept_factors
from kgqa.cli.checks import check_config
from kgqa.cli.cluster import unfinished_checkpoint
from kgqa.cli.requeue import RequeueBetweenBatches
from kgqa.cli.resume import CheckpointsFollowTheFolder, finished_epochs, resumed_config, save_run_files
from kgqa.report import write_run_metrics
from kgqa.rerank import RERANKER_FILE, rerank_after_fit
from kgqa.build import (build_datamodule, build_module, build_trainer, checkpoint_callbacks, finish_loggers,
                        val_and_test_metrics)
from kgqa.console import print_config, print_metrics, quiet_console
from kgqa.step_record import StepRecord, WandbMadeWhole
from kgqa.trusted import project_targets


def decode_variants(cfg: DictConfig) -> list[tuple[str, dict | None]]:
    """(tag, look-ahead config) pairs: the run's own rule, plus each ablation rule by name."""
    variants = [("", OmegaConf.to_container(cfg.lookahead) if cfg.get("lookahead") else None)]
    for name in cfg.get("ablation_lookaheads") or []:
        rule = compose(config_name="train", overrides=[f"lookahead={name}"]).get("lookahead")
        variants.append((name, OmegaConf.to_container(rule, resolve=True) if rule else None))
    return variants


def weights_by_absolute_path(cfg: DictConfig) -> None:
    """A local backbone.pretrained folder is kept by its absolute path, as ckpt= is: the run's factors then
    name one folder one way, whatever directory each run started in. A hub name (no such folder) stays as typed."""
    weights = cfg.backbone.get("pretrained")
    if weights and Path(weights).is_dir():
        cfg.backbone.pretrained = str(Path(weights).resolve())


def train(cfg: DictConfig) -> dict[str, float]:
    requeue = RequeueBetweenBatches()  # first: a Slurm job's USR1 now requeues it, before training too
    resume_from = None
    unfinished = None if cfg.resume else unfinished_checkpoint(Path(cfg.output_dir))
    if cfg.resume:
        cfg, resume_from = resumed_config(Path(cfg.resume), cfg, list(HydraConfig.get().overrides.task))
        check_config(cfg)
        epochs = finished_epochs(Path(cfg.output_dir), cfg)
        if epochs:
            print(f"kgqa: resume={cfg.output_dir}: the run finished its {epochs} epochs (trainer.max_epochs="
                  f"{cfg.trainer.max_epochs}); its best checkpoint is tested again, nothing trained "
                  f"(give trainer.max_epochs={epochs + 10} to train on)", file=sys.stderr)
    elif unfinished:  # Slurm's new attempt of this job, or the sweep again: the run continues, as resume= would
        cfg, resume_from = resumed_config(Path(cfg.output_dir), cfg, [], checkpoint=unfinished)
    else:
        with_swept_factors(cfg)
        weights_by_absolute_path(cfg)
        cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    run_dir = Path(cfg.output_dir)
    quiet_console()
    print_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    dm = build_datamodule(cfg)
    dm.setup()
    module = build_module(cfg, dm.tokenizer.vocab_size)
    best_ckpt, last_ckpt = checkpoint_callbacks(cfg)
    record = StepRecord(run_dir)
    trainer = build_trainer(cfg, callbacks=[best_ckpt, last_ckpt, CheckpointsFollowTheFolder(best_ckpt.dirpath),
                                            requeue, WandbMadeWhole(record)], record=record)
    if trainer.is_global_zero:
        save_run_files(run_dir, cfg, trainer)
    variants = decode_variants(cfg)  # conf/ is read before training (the rules, the targets a checkpoint may
    project_targets()  # name): editing conf/ while a run trains leaves its final decodes alone
    trainer.fit(module, dm, ckpt_path=resume_from, weights_only=True)
    if trainer.is_global_zero:  # a requeue's checkpoints are spent once the run has trained past them
        for spent in run_dir.glob("hpc_ckpt_*.ckpt"):
            spent.unlink()
    best = str(Path(best_ckpt.best_model_path).resolve()) if best_ckpt.best_model_path else None
    metrics: dict[str, float] = {}
    if cfg.get("rerank") and best:  # the beam's own order first, beside the reranked decodes below
        module.use_decoding(dm, "no_rerank", variants[0][1])
        metrics.update(val_and_test_metrics(trainer, module, dm, best))
        module.reranker = rerank_after_fit(module, dm, cfg.rerank, best, variants[0][1],
                                           Path(best).parent / RERANKER_FILE, cfg.trainer.accelerator, cfg.seed)
    for tag, lookahead in variants:
        module.use_decoding(dm, tag, lookahead)
        metrics.update(val_and_test_metrics(trainer, module, dm, best))
    if trainer.is_global_zero:
        write_run_metrics(run_dir, cfg.get("factors", {}), metrics, questions=module.question_results,
                          name=cfg.run_name, history=module.val_history, checkpoint=best)
    finish_loggers(trainer)
    print_metrics(metrics)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def hydra_main(cfg: DictConfig) -> float:
    return reporting_errors(train, cfg).get("val/emf1")


main = command_line_checked("train", hydra_main)

if __name__ == "__main__":
    main()
