"""kgqa-train: fit on train, select on val (EMF1), report val and test with the best checkpoint."""
import json
from pathlib import Path

import hydra
import lightning as L
from hydra import compose
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from kgqa.cli import CONFIG_DIR, reporting_errors
from kgqa.report import write_run_metrics
from kgqa.errors import CheckpointError
from kgqa.runtime import (build_datamodule, build_module, build_trainer, checkpoint_callbacks,
                          finish_loggers, print_config, print_metrics)

RUN_CONFIG, RUN_INFO = "run_config.yaml", "run.json"


def resumed_config(run_dir: Path) -> tuple[DictConfig, Path]:
    """The run's own resolved config, pointed at its last checkpoint and its W&B run."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if not (run_dir / RUN_CONFIG).is_file() or not last.is_file():
        raise CheckpointError(f"{run_dir} is not a kgqa run with a checkpoint to resume ({RUN_CONFIG}, {last.relative_to(run_dir)})")
    cfg = OmegaConf.load(run_dir / RUN_CONFIG)
    info = json.loads((run_dir / RUN_INFO).read_text()) if (run_dir / RUN_INFO).is_file() else {}
    if "wandb_id" in info and "id" in cfg.logger:
        cfg.logger.id, cfg.logger.resume = info["wandb_id"], "allow"
    return cfg, last


def decode_variants(cfg: DictConfig) -> list[tuple[str, dict | None]]:
    """(tag, look-ahead config) pairs: the run's own rule, plus each ablation rule by name."""
    variants = [("", OmegaConf.to_container(cfg.lookahead) if cfg.get("lookahead") else None)]
    for name in cfg.get("ablation_lookaheads") or []:
        rule = compose(config_name="train", overrides=[f"lookahead={name}"]).get("lookahead")
        variants.append((name, OmegaConf.to_container(rule) if rule else None))
    return variants


def train(cfg: DictConfig) -> dict[str, float]:
    resume_from = None
    if cfg.resume:
        cfg, resume_from = resumed_config(Path(cfg.resume))
    else:
        cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    run_dir = Path(cfg.output_dir)
    print_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    dm = build_datamodule(cfg)
    dm.setup()
    module = build_module(cfg, dm.tokenizer.vocab_size)
    best_ckpt, last_ckpt = checkpoint_callbacks(cfg)
    trainer = build_trainer(cfg, callbacks=[best_ckpt, last_ckpt])
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, run_dir / RUN_CONFIG)
        wandb = next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
        (run_dir / RUN_INFO).write_text(json.dumps({"wandb_id": wandb.experiment.id} if wandb else {}))
    trainer.fit(module, dm, ckpt_path=resume_from, weights_only=True)

    best = best_ckpt.best_model_path or None
    metrics: dict[str, float] = {}
    for tag, lookahead in decode_variants(cfg):
        module.eval_tag, module.lookahead_cfg = tag, lookahead
        for evaluate in (trainer.validate, trainer.test):
            (result,) = evaluate(module, dm, ckpt_path=best, weights_only=True)
            metrics.update({k: float(v) for k, v in result.items() if not k.endswith("/loss")})
    if trainer.is_global_zero:
        write_run_metrics(run_dir, cfg.get("factors", {}), metrics, questions=module.question_results,
                          name=cfg.run_name, history=module.val_history, checkpoint=best)
    finish_loggers(trainer)
    print_metrics(metrics)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float:
    return reporting_errors(train, cfg)["val/emf1"]


if __name__ == "__main__":
    main()
