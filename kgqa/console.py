"""What a run prints: the config tree, progress, the final metrics, and nothing of third parties' chatter."""
from __future__ import annotations

import logging
import warnings
from typing import Any

import rich
import rich.syntax
import rich.tree
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")


@rank_zero_only  # a DDP run starts the entry point once per process: the first one prints
def print_config(cfg: DictConfig) -> None:
    tree = rich.tree.Tree("config", style="dim")
    for key, value in cfg.items():
        body = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        tree.add(str(key)).add(rich.syntax.Syntax(body, "yaml", word_wrap=True))
    rich.print(tree)
    if "output_dir" in cfg:  # in full on a line of its own: rich fits the tree to 80 columns off a terminal
        print(f"run folder: {cfg.output_dir}")


@rank_zero_only
def print_metrics(metrics: dict[str, Any]) -> None:
    for name in sorted(metrics):
        print(f"{name}: {float(metrics[name]):.4f}")


def lightning_warnings_only(record: logging.LogRecord) -> bool:
    """Lightning's INFO lines ("💡 Tip: ... litlogger", "GPU available", "Seed set to", "Restoring states")
    are dropped; its warnings and errors pass."""
    return not (record.name.startswith("lightning") and record.levelno < logging.WARNING)


def quiet_console() -> None:
    """Filter the third-party noise a run cannot fix at its cause, each narrowly: Lightning's INFO
    chatter (on its own handlers and the root's, as Hydra set them up), and the deprecation warning
    Lightning's own pytree code triggers in torch on every fit."""
    for logger in (logging.getLogger(), *map(logging.getLogger, LIGHTNING_LOGGERS)):
        for handler in logger.handlers:
            if lightning_warnings_only not in handler.filters:
                handler.addFilter(lightning_warnings_only)
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            module=r"lightning\.pytorch\.utilities\._pytree")
