"""kgqa-kb: build or inspect a KB and its key trie; add, delete or merge changes in a saved one."""
import json
import time

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from kgqa.cli import CONFIG_DIR, reporting_errors
from kgqa.data.tokenizer import CharTokenizer
from kgqa.kbfolder import KbFolder


def build_kb(cfg: DictConfig) -> dict:
    source = instantiate(cfg.data.source)
    start = time.perf_counter()
    kb = instantiate(cfg.kb).build(source)
    stats = kb.stats() | {"build_seconds": round(time.perf_counter() - start, 2)}
    print(json.dumps(stats, ensure_ascii=False, indent=1))
    if cfg.out:
        tokenizer = CharTokenizer.build(kb.strings())
        folder = KbFolder.create(cfg.out, kb, tokenizer, [cfg.target])
        print(f"wrote {folder.path}/Knowledge.txt, vocab.json and trie-{cfg.target}/")
    return stats


def change_kb(cfg: DictConfig) -> dict:
    if not cfg.kb_dir or not cfg.triples:
        raise SystemExit(f"kgqa: action={cfg.action} needs kb_dir=DIR (a folder written with out=) and triples=FILE.tsv")
    summary = KbFolder(cfg.kb_dir).record(cfg.action, cfg.triples)
    print(json.dumps(summary, ensure_ascii=False, indent=1))
    return summary


def merge_kb(cfg: DictConfig) -> dict:
    if not cfg.kb_dir:
        raise SystemExit("kgqa: action=merge needs kb_dir=DIR (a folder written with out=)")
    start = time.perf_counter()
    stats = KbFolder(cfg.kb_dir).merge() | {"merge_seconds": round(time.perf_counter() - start, 2)}
    print(json.dumps(stats, ensure_ascii=False, indent=1))
    return stats


ACTIONS = {"build": build_kb, "add": change_kb, "delete": change_kb, "merge": merge_kb}


def run(cfg: DictConfig) -> dict:
    if cfg.action not in ACTIONS:
        raise SystemExit(f"kgqa: unknown action={cfg.action}; choose one of {sorted(ACTIONS)}")
    return ACTIONS[cfg.action](cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="kb")
def main(cfg: DictConfig) -> None:
    reporting_errors(run, cfg)


if __name__ == "__main__":
    main()
