"""Every path an entry point reads or writes, checked before the first expensive step (before a model
loads or data is read): a missing input, a folder where a file is expected and the reverse, an output
that exists (refused unless overwrite=true), lies under a file, cannot be written, or is an input.
Each is a ConfigError naming the key, so the command ends in one line, having written nothing."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterator

from omegaconf import DictConfig, OmegaConf

from kgqa.cli.cluster import unfinished_checkpoint
from kgqa.cli.sweep_runs import FAILED, in_multirun
from kgqa.errors import ConfigError
from kgqa.files import refuse_overwrite
from kgqa.kb.corrections import FOLDER_FILE

FILE, FOLDER, CHECKPOINT, CORRECTIONS = "file", "folder", "checkpoint", "corrections"
RUN_RESULTS = ("metrics.json", "checkpoints")  # what a run folder holds once a run wrote it


def reads(cfg: DictConfig) -> Iterator[tuple[str, Path, str]]:
    """(key, path, kind) of every input the config names."""
    def given(key: str) -> Path | None:
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        return Path(value) if isinstance(value, str) and value and value != "???" else None

    if given("resume"):  # a resume reads the run's own saved config and data (kgqa.cli.resume checks them)
        yield "resume", given("resume"), FOLDER
        return
    for key, kind in (("ckpt", CHECKPOINT), ("run", CHECKPOINT), ("input", FILE), ("data.root", FOLDER), ("data_root", FOLDER)):
        if given(key):
            yield key, given(key), kind
    if given("kb.path"):
        yield "kb.path", given("kb.path"), FOLDER if str(cfg.kb.get("_target_", "")).endswith("KbFolder") else FILE
    source = OmegaConf.select(cfg, "data.source")
    if source is not None and "files" in source and "ckpt" not in cfg:  # a trained run's data: checked once restored
        for split, name in source.files.items():
            yield f"data.source.files.{split}", Path(source.root) / name, FILE
    action = cfg.get("action")
    if given("corrections"):  # kgqa-eval/predict: a file or a KB folder's own; kgqa-kb action=correct: a file
        yield "corrections", given("corrections"), FILE if action else CORRECTIONS  # eval, predict, repair
    if action in ("add", "delete", "merge", "correct", "uncorrect", "corrections") and given("kb_dir"):
        yield "kb_dir", given("kb_dir"), FOLDER
    if action in ("add", "delete") and given("triples"):
        yield "triples", given("triples"), FILE


def writes(cfg: DictConfig) -> Iterator[tuple[str, Path, str]]:
    """(key, path, kind) of every output the config names: a file or a folder made anew."""
    if cfg.get("input") and cfg.get("output"):
        yield "output", Path(cfg.output), FILE
    if cfg.get("action", "build") == "build" and isinstance(cfg.get("out"), str) and cfg.out != "???":
        yield "out", Path(cfg.out), FOLDER


def check_input(key: str, path: Path, kind: str) -> None:
    if not path.exists():
        raise ConfigError(f"{key}={path}: no such {'file or folder' if kind == CHECKPOINT else kind}")
    if kind == CHECKPOINT and path.is_dir() and not (path / "checkpoints" / "best.ckpt").is_file():
        raise ConfigError(f"{key}={path}: a folder without checkpoints/best.ckpt; give a run folder or a .ckpt file")
    if kind == CORRECTIONS and path.is_dir() and not (path / FOLDER_FILE).is_file():
        raise ConfigError(f"{key}={path}: a folder without {FOLDER_FILE}; give a corrections file or a KB folder "
                          f"with corrections (kgqa-kb action=correct kb_dir=DIR corrections=FILE)")
    if kind == FILE and not path.is_file():
        raise ConfigError(f"{key}={path} is a folder: give a file")
    if kind == FOLDER and not path.is_dir():
        raise ConfigError(f"{key}={path} is a file: give a folder")


def check_output(key: str, path: Path, kind: str, overwrite: bool) -> None:
    if kind == FILE and path.is_dir():
        raise ConfigError(f"{key}={path} is a folder: give the path of a file to write")
    if kind == FOLDER and path.exists() and not path.is_dir():
        raise ConfigError(f"{key}={path} is a file: give the path of a folder to write")
    if path.exists() and not overwrite and (kind == FILE or any(path.iterdir())):
        what = "exists" if kind == FILE else "exists and is not an empty folder"
        raise ConfigError(f"{key}={path} {what}: choose another {key}, or overwrite=true to replace it")
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{key}={path}: {parent} is a file, so no folder can be made in it")
    try:  # what the write will do: a temporary file beside it (root ignores permission bits, so ask the system)
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise ConfigError(f"{key}={path}: cannot write in {parent} ({e.strerror})") from None


def check_run_folder(cfg: DictConfig) -> None:
    """The run folder (hydra.run.dir, made by Hydra already) holds no earlier run's results, which this run
    would write over (kgqa-eval in a training run's folder: its metrics.json), unless overwrite=true. A resume,
    Slurm's requeued attempt of a run and a sweep's unfinished run continue the run in its own folder; a sweep's
    failed run (failed.json) runs again in it."""
    folder = OmegaConf.select(cfg, "output_dir", default=None, throw_on_resolution_failure=False)
    if not folder or cfg.get("resume") or cfg.get("overwrite", False) or unfinished_checkpoint(Path(folder)):
        return
    if in_multirun() and (Path(folder) / FAILED).is_file():
        return
    held = [name for name in RUN_RESULTS if (Path(folder) / name).exists()]
    if held:
        raise ConfigError(f"hydra.run.dir={folder} holds a run already ({', '.join(held)}): choose another folder, "
                          "or overwrite=true to write over it")


def check_paths(cfg: DictConfig) -> None:
    """No output is one of the inputs; every input exists, as the kind it must be; every output can be
    written. A missing parent folder of an output is fine: it is made when the output is written (kgqa.files)."""
    inputs, outputs = list(reads(cfg)), list(writes(cfg))
    for key, path, _ in outputs:
        refuse_overwrite(path, *(p for _, p, _ in inputs), what=key)
    for key, path, kind in inputs:
        check_input(key, path, kind)
    overwrite = bool(cfg.get("overwrite", False))
    for key, path, kind in outputs:
        check_output(key, path, kind, overwrite)
    check_run_folder(cfg)

