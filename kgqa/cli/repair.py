"""kgqa-repair: a quick repair of a trained run's weights from corrections, as a new run that names its parent.

The parent's model is fine-tuned on the corrections mixed with `replay` of the parent's own training pairs
per correction (what was right stays right), for `epochs` passes, then decoded on val and test like a trained
run. The correction memory (corrections= in kgqa-eval/predict) fixes the same questions without training.
"""
import time
from pathlib import Path

import hydra
import lightning as L
import numpy as np
from omegaconf import DictConfig, open_dict

from kgqa.build import build_trainer, checkpoint_callbacks, finish_loggers, restore, val_and_test_metrics
from kgqa.checkpoints import load_checkpoint, resolve_checkpoint
from kgqa.cli import CONFIG_DIR, command_line_checked, reporting_errors
from kgqa.cli.resume import save_run_files
from kgqa.console import print_config, print_metrics, quiet_console
from kgqa.data.kgclue import QAExample
from kgqa.data.triples import Triple
from kgqa.kb.corrections import CorrectionFile
from kgqa.report import write_run_metrics


class AnchorToParent(L.Callback):
    """L2-SP: each step also pulls every weight back toward the parent's, by `strength` × (w − w_parent) added
    to its gradient, so weights the corrections do not need stay where the parent had them (less churn)."""

    def __init__(self, strength: float):
        self.strength, self.parent = strength, {}

    def on_fit_start(self, trainer, module) -> None:
        self.parent = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}

    def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
        for name, p in module.named_parameters():
            if p.grad is not None and name in self.parent:
                p.grad.add_(p.detach() - self.parent[name], alpha=self.strength)


def repair_pairs(corrections, kb, train: list[QAExample], replay: int, seed: int) -> list[QAExample]:
    """The corrections as training pairs, and `replay` of the parent's training pairs per correction."""
    pairs = [QAExample(f"correction/{i}", c.question, Triple(c.key, kb.answer(kb.key_id(c.key))))
             for i, c in enumerate(corrections)]
    drawn = np.random.default_rng(seed).choice(len(train), size=min(len(train), replay * len(pairs)), replace=False)
    return pairs + [train[i] for i in drawn.tolist()]


def repair(cfg: DictConfig) -> dict[str, float]:
    quiet_console()
    parent = resolve_checkpoint(cfg.run).resolve()
    if cfg.get("lookahead") is None:  # the parent's own rule
        with open_dict(cfg):
            cfg.lookahead = load_checkpoint(parent)["hyper_parameters"]["run_config"].get("lookahead")
    cfg, dm, module = restore(cfg.run, cfg)
    with open_dict(cfg):
        cfg.trainer.max_epochs, cfg.trainer.check_val_every_n_epoch = cfg.epochs, cfg.epochs
        cfg.parent_checkpoint = str(parent)
        cfg.factors.parent_run = str(Path(cfg.run).resolve())
        if cfg.lr is not None:
            cfg.optim.lr = module.hparams.optim["lr"] = cfg.lr
    corrections = CorrectionFile(cfg.corrections).read(dm.kb, cfg.on_bad_line)
    dm.train_examples = repair_pairs(corrections, dm.kb, dm.train_examples, cfg.replay, cfg.seed)
    print_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.output_dir)
    best_ckpt, last_ckpt = checkpoint_callbacks(cfg)
    anchor = [AnchorToParent(cfg.anchor)] if cfg.anchor else []
    trainer = build_trainer(cfg, callbacks=[best_ckpt, last_ckpt, *anchor])
    if trainer.is_global_zero:
        save_run_files(run_dir, cfg, trainer)
    start = time.perf_counter()
    trainer.fit(module, dm)
    metrics = {"repair/seconds": round(time.perf_counter() - start, 2), "repair/corrections": float(len(corrections))}
    metrics |= val_and_test_metrics(trainer, module, dm, best_ckpt.best_model_path)
    if trainer.is_global_zero:
        write_run_metrics(run_dir, cfg.get("factors", {}), metrics, questions=module.question_results, name=cfg.run_name,
                          history=module.val_history, checkpoint=str(Path(best_ckpt.best_model_path).resolve()))
    finish_loggers(trainer)
    print_metrics(metrics)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="repair")
def hydra_main(cfg: DictConfig) -> None:
    reporting_errors(repair, cfg)


main = command_line_checked("repair", hydra_main)

if __name__ == "__main__":
    main()
