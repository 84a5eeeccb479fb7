"""kgqa-train: fit on train, select on val (EMF1), report test with the best checkpoint."""
import hydra
import lightning as L
from omegaconf import DictConfig

from kgqa.cli import CONFIG_DIR
from kgqa.runtime import build_datamodule, build_module, build_trainer, checkpoint_callback, print_config, print_metrics


def train(cfg: DictConfig) -> dict[str, float]:
    print_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    dm = build_datamodule(cfg)
    dm.setup()
    module = build_module(cfg, dm.tokenizer.vocab_size)
    ckpt = checkpoint_callback(cfg)
    trainer = build_trainer(cfg, callbacks=[ckpt])
    trainer.fit(module, dm)
    best = ckpt.best_model_path or None
    metrics: dict[str, float] = {}
    for evaluate in (trainer.validate, trainer.test):
        (result,) = evaluate(module, dm, ckpt_path=best, weights_only=True)
        metrics.update({k: float(v) for k, v in result.items() if not k.endswith("/loss")})
    print_metrics(metrics)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float:
    return train(cfg)["val/emf1"]


if __name__ == "__main__":
    main()
