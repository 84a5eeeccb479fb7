"""kgqa-eval: decode a checkpoint on val or test with any decode/look-ahead settings."""
from pathlib import Path

import hydra
from omegaconf import DictConfig

from kgqa.cli import CONFIG_DIR, command_line_checked, reporting_errors, with_swept_factors
from kgqa.report import write_run_metrics
from kgqa.build import build_trainer, finish_loggers, restore
from kgqa.checkpoints import resolve_checkpoint
from kgqa.console import print_config, print_metrics, quiet_console


def evaluate(cfg: DictConfig) -> dict[str, float]:
    quiet_console()
    with_swept_factors(cfg)
    cfg, dm, module = restore(cfg.ckpt, cfg)
    module.corrections = cfg.get("corrections")
    print_config(cfg)
    trainer = build_trainer(cfg)
    run = trainer.validate if cfg.split == "val" else trainer.test
    (result,) = run(module, dm, verbose=False)
    metrics = {k: float(v) for k, v in result.items() if not k.endswith("/loss")}
    if trainer.is_global_zero:
        write_run_metrics(Path(cfg.output_dir), cfg.factors, metrics, questions=module.question_results,
                          name=cfg.run_name, checkpoint=str(resolve_checkpoint(cfg.ckpt).resolve()))
    finish_loggers(trainer)
    print_metrics(metrics)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def hydra_main(cfg: DictConfig) -> float:
    return reporting_errors(evaluate, cfg).get(f"{cfg.split}/emf1")


main = command_line_checked("eval", hydra_main)

if __name__ == "__main__":
    main()
