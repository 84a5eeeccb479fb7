"""kgqa-repair: a quick repair of a trained run's weights from corrections, as a new run that names its parent.

The parent's model is fine-tuned on the corrections mixed with `replay` of the parent's own training pairs
per correction, held to the parent's distributions on those (kgqa.repair), for at most `epochs` passes and
until `stop_at` of the corrections are answered right, then decoded on val and test like a trained run.
The correction memory (corrections= in kgqa-eval/predict) fixes the same questions without training.
"""
import time
from pathlib import Path

import hydra
import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from omegaconf import DictConfig, open_dict

from kgqa.build import build_trainer, finish_loggers, restore, val_and_test_metrics
from kgqa.checkpoints import load_checkpoint, resolve_checkpoint
from kgqa.cli import CONFIG_DIR, command_line_checked, reporting_errors
from kgqa.cli.resume import save_run_files
from kgqa.console import print_config, print_metrics, quiet_console
from kgqa.kb.corrections import CorrectionFile
from kgqa.repair import AnchorToParent, CorrectionsFixed, repair_pairs
from kgqa.report import write_run_metrics


def repair(cfg: DictConfig) -> dict[str, float]:
    quiet_console()
    parent = resolve_checkpoint(cfg.run).resolve()
    if cfg.get("lookahead") is None:  # the parent's own rule
        with open_dict(cfg):
            cfg.lookahead = load_checkpoint(parent)["hyper_parameters"]["run_config"].get("lookahead")
    cfg, dm, module = restore(cfg.run, cfg)
    with open_dict(cfg):
        cfg.trainer.max_epochs, cfg.trainer.check_val_every_n_epoch = cfg.epochs, cfg.epochs + 1  # val: after the fit
        cfg.parent_checkpoint = str(parent)
        cfg.factors.parent_run = str(Path(cfg.run).resolve())
        if cfg.lr is not None:
            cfg.optim.lr = module.hparams.optim["lr"] = cfg.lr
    corrections = CorrectionFile(cfg.corrections).read(dm.kb, cfg.on_bad_line)
    dm.train_examples = repair_pairs(corrections, dm.kb, dm.train_examples, cfg.replay, cfg.seed)
    print_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.output_dir)
    repaired = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", enable_version_counter=False,
                               save_on_train_epoch_end=True)  # the weights after the last epoch, where kgqa-eval looks
    until_fixed = [CorrectionsFixed(corrections, dm.kb),
                   EarlyStopping("repair/fixed", mode="max", stopping_threshold=cfg.stop_at, patience=cfg.epochs,
                                 check_on_train_epoch_end=True)]
    anchor = [AnchorToParent(cfg.anchor)] if cfg.anchor else []
    trainer = build_trainer(cfg, callbacks=[*until_fixed, repaired, *anchor])
    if trainer.is_global_zero:
        save_run_files(run_dir, cfg, trainer)
    start = time.perf_counter()
    trainer.fit(module, dm)
    metrics = {"repair/seconds": round(time.perf_counter() - start, 2), "repair/corrections": float(len(corrections)),
               "repair/epochs": float(trainer.current_epoch), "repair/fixed": float(trainer.callback_metrics["repair/fixed"])}
    metrics |= val_and_test_metrics(trainer, module, dm, repaired.best_model_path)
    if trainer.is_global_zero:
        write_run_metrics(run_dir, cfg.get("factors", {}), metrics, questions=module.question_results, name=cfg.run_name,
                          history=module.val_history, checkpoint=str(Path(repaired.best_model_path).resolve()))
    finish_loggers(trainer)
    print_metrics(metrics)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="repair")
def hydra_main(cfg: DictConfig) -> None:
    reporting_errors(repair, cfg)


main = command_line_checked("repair", hydra_main)

if __name__ == "__main__":
    main()
