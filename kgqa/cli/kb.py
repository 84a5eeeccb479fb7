"""kgqa-kb: build or inspect a KB and its key trie; add, delete or merge changes in a saved one."""
import json
import time
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from kgqa.cli import CONFIG_DIR, command_line_checked, reporting_errors
from kgqa.data.tokenizer import CharTokenizer
from kgqa.data.triples import TARGET_ORDERS
from kgqa.errors import ConfigError
from kgqa.kb.corrections import CorrectionFile, read_corrections
from kgqa.kb.folder import KNOWLEDGE, KbFolder

NEEDS = {"kb_dir": "kb_dir=DIR (a folder written with out=)",
         "triples": "triples=FILE.tsv (S（M） TAB P TAB O per line)",
         "corrections": "corrections=FILE.jsonl (a question and its answer per line)"}


def require(cfg: DictConfig, *keys: str) -> None:
    missing = [NEEDS[k] for k in keys if not cfg.get(k)]
    if missing:
        raise ConfigError(f"action={cfg.action} needs {' and '.join(missing)}")


def kb_input(cfg: DictConfig) -> Path | None:
    """The file (kb=file) or folder (kb=folder) the KB is read from; None for KBs made from the data."""
    path = OmegaConf.select(cfg, "kb.path")
    return Path(path) if path else None


def build_kb(cfg: DictConfig) -> dict:
    if cfg.target not in TARGET_ORDERS:
        raise ConfigError(f"target={cfg.target}: not a target order; choose one of {sorted(TARGET_ORDERS)}")
    source = instantiate(cfg.data.source)
    start = time.perf_counter()
    kb = instantiate(cfg.kb).build(source)
    stats = kb.stats() | {"build_seconds": round(time.perf_counter() - start, 2)}
    print(json.dumps(stats, ensure_ascii=False, indent=1))
    if cfg.out:
        kb_file = kb_input(cfg)
        kb_file = kb_file / KNOWLEDGE if kb_file and kb_file.is_dir() else kb_file
        folder = KbFolder.create(cfg.out, kb, CharTokenizer.build(kb.characters()), [cfg.target], source=kb_file)
        print(f"wrote {folder.path}/Knowledge.txt, vocab.json and trie-{cfg.target}/")
    return stats


def change_kb(cfg: DictConfig) -> dict:
    require(cfg, "kb_dir", "triples")
    summary = KbFolder(cfg.kb_dir).record(cfg.action, cfg.triples)
    print(json.dumps(summary, ensure_ascii=False, indent=1))
    return summary


def merge_kb(cfg: DictConfig) -> dict:
    require(cfg, "kb_dir")
    start = time.perf_counter()
    stats = KbFolder(cfg.kb_dir).merge() | {"merge_seconds": round(time.perf_counter() - start, 2)}
    print(json.dumps(stats, ensure_ascii=False, indent=1))
    return stats


def correct_kb(cfg: DictConfig) -> dict:
    """The folder's correction memory (DIR/corrections.jsonl): add a file's corrections, remove its questions, or list it."""
    require(cfg, "kb_dir", *(["corrections"] if cfg.action != "corrections" else []))
    kb, memory = KbFolder(cfg.kb_dir).loaded.kb, CorrectionFile(cfg.kb_dir)
    if cfg.action == "corrections":
        for c in memory.read(kb, "skip"):
            print(json.dumps(c.as_json(), ensure_ascii=False))
        return {}
    given = read_corrections(cfg.corrections, kb, cfg.on_bad_line)
    start = time.perf_counter()
    if cfg.action == "correct":
        summary = {"added": memory.add(kb, given)}
    else:
        summary = {"removed": memory.remove([c.question for c in given])}
    summary |= {"corrections": len(memory.read(kb, "skip")), "seconds": round(time.perf_counter() - start, 4)}
    print(json.dumps(summary, ensure_ascii=False, indent=1))
    return summary


ACTIONS = {"build": build_kb, "add": change_kb, "delete": change_kb, "merge": merge_kb,
           "correct": correct_kb, "uncorrect": correct_kb, "corrections": correct_kb}


def run(cfg: DictConfig) -> dict:
    if cfg.action not in ACTIONS:
        raise ConfigError(f"action={cfg.action}: not an action; choose one of {sorted(ACTIONS)}")
    return ACTIONS[cfg.action](cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="kb")
def hydra_main(cfg: DictConfig) -> None:
    reporting_errors(run, cfg)


main = command_line_checked("kb", hydra_main)

if __name__ == "__main__":
    main()
