"""kgqa-pretrain: in-domain masked-LM pre-training (kgqa.pretrain) into out=<folder>, which
`kgqa-train backbone.pretrained=<folder>` then starts from."""
import json
import tempfile
import time
from pathlib import Path

import hydra
import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from kgqa.build import build_trainer, finish_loggers
from kgqa.cli import CONFIG_DIR, command_line_checked, reporting_errors
from kgqa.errors import ConfigError
from kgqa.files import swap_in_folder
from kgqa.pretrain import PretrainingTexts, characters, pretrain_into


def check_settings(cfg: DictConfig) -> None:
    """What conf/pretrain.yaml's rules (kgqa.cli.checks) cannot see: the backbone (the out= folder: kgqa.cli.paths)."""
    if cfg.backbone.pretrained:
        raise ConfigError(f"backbone.pretrained={cfg.backbone.pretrained}: kgqa-pretrain trains a backbone from "
                          "random weights; choose backbone=bert or backbone=roformer with a size=")
    if cfg.max_len > cfg.backbone.max_position_embeddings:
        raise ConfigError(f"max_len={cfg.max_len} exceeds backbone.max_position_embeddings="
                          f"{cfg.backbone.max_position_embeddings}")


def pretrain(cfg: DictConfig) -> dict:
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    check_settings(cfg)
    L.seed_everything(cfg.seed, workers=True)
    source = instantiate(cfg.data.source)
    kb = instantiate(cfg.kb).build(source)
    questions = [e.question for e in source.splits["train"]]  # the training split only, never val or test
    texts = PretrainingTexts(questions, kb, cfg.target)
    settings = {k: OmegaConf.to_container(cfg[k]) for k in ("backbone", "optim", "scheduler")}
    trainer = build_trainer(cfg, enable_checkpointing=False, use_distributed_sampler=True)  # DDP: each rank a share

    def write(folder: Path) -> None:
        pretrain_into(folder, texts, characters(questions, kb), settings, trainer, cfg.data.module.batch_size,
                      cfg.mask_rate, cfg.max_len, cfg.seed)

    start = time.perf_counter()
    if rank_zero_only.rank == 0:  # known before fit from the launcher's environment; only rank 0 writes out=
        swap_in_folder(Path(cfg.out), write)
    else:
        with tempfile.TemporaryDirectory() as scratch:
            write(Path(scratch))
    finish_loggers(trainer)
    loss = trainer.callback_metrics.get("train/mlm_loss")  # the last step's (none when no step ran)
    summary = {"out": str(cfg.out), "texts": len(texts), "steps": trainer.global_step,
               "loss": None if loss is None else round(float(loss), 4),
               "seconds": round(time.perf_counter() - start, 1)}
    if rank_zero_only.rank == 0:
        print(json.dumps(summary, ensure_ascii=False, indent=1))
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="pretrain")
def hydra_main(cfg: DictConfig) -> None:
    reporting_errors(pretrain, cfg)


main = command_line_checked("pretrain", hydra_main)

if __name__ == "__main__":
    main()
