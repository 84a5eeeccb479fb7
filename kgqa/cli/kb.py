"""kgqa-kb: build or inspect a KB and its key trie."""
import json
import time
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from kgqa.cli import CONFIG_DIR
from kgqa.data.tokenizer import CharTokenizer
from kgqa.keyspace import KeySpace


def build_kb(cfg: DictConfig) -> dict:
    source = instantiate(cfg.data.source)
    start = time.perf_counter()
    kb = instantiate(cfg.kb).build(source)
    stats = kb.stats() | {"build_seconds": round(time.perf_counter() - start, 2)}
    print(json.dumps(stats, ensure_ascii=False, indent=1))
    if cfg.out:
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "Knowledge.txt", "w", encoding="utf-8") as f:
            for t in kb.triples():
                f.write(f"{t.key.full_subject}\t{t.key.predicate}\t{t.obj}\n")
        tokenizer = CharTokenizer.build(s for k in kb.keys for s in (k.subject, k.predicate, k.meaning))
        tokenizer.save(out / "vocab.json")
        keyspace = KeySpace(kb, tokenizer, cfg.target)
        keyspace.trie.save(out / f"trie-{cfg.target}")
        print(f"wrote {out}/Knowledge.txt, vocab.json and trie-{cfg.target}/ ({keyspace.trie.num_nodes} nodes)")
    return stats


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="kb")
def main(cfg: DictConfig) -> None:
    build_kb(cfg)


if __name__ == "__main__":
    main()
