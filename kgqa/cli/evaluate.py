"""kgqa-eval: decode a checkpoint on val or test with any decode/look-ahead settings."""
import hydra
from omegaconf import DictConfig

from kgqa.cli import CONFIG_DIR
from kgqa.runtime import build_trainer, print_config, print_metrics, restore


def evaluate(cfg: DictConfig) -> dict[str, float]:
    if cfg.split not in ("val", "test"):
        raise ValueError(f"split must be val or test, not {cfg.split!r}")
    cfg, dm, module = restore(cfg.ckpt, cfg)
    print_config(cfg)
    trainer = build_trainer(cfg)
    run = trainer.validate if cfg.split == "val" else trainer.test
    (result,) = run(module, dm)
    metrics = {k: float(v) for k, v in result.items() if not k.endswith("/loss")}
    print_metrics(metrics)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> float:
    return evaluate(cfg)[f"{cfg.split}/emf1"]


if __name__ == "__main__":
    main()
