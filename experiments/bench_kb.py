"""The KB read from a Knowledge.txt at KgCLUE scale (issue 4), against the previous design side by side.

    python experiments/bench_kb.py --scale 1.0 --baseline-scale 0.1 --work /tmp/bench_kb

bench_trie.py measures the trie built from token arrays; a user starts from a Knowledge.txt
(`kgqa-kb kb=file kb.path=... out=DIR`, then runs with `kb=folder kb.path=DIR`), where the KB
object and the encoding of 20M keys come first. A Knowledge.txt with the official KB's statistics
times --scale is written (bench_trie's keys; objects drawn from the QA answers); each step runs in
a fresh process, so its peak RSS is its own:

- columns: `KnowledgeBase(read_knowledge(...))`, the tokenizer from its strings, the key trie
  (`KeySpace`), the KB folder written (`KbFolder.create`), then loaded back as a run does
  (`KbFolder(DIR).kb` and its saved trie, memory-mapped), and answers looked up;
- objects: the previous KnowledgeBase (a Key and a list per key, a dict from key to id, each key
  encoded alone for the trie), kept here as the baseline, through the same steps up to the trie.

Prints the numbers and writes experiments/results/bench_kb-<scale>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from bench_trie import ROOT, generate_keys, in_fresh_process, qa_answers, reset_peak_rss, rss_mb
from kgqa.data.kgclue import read_knowledge
from kgqa.data.kb import KnowledgeBase
from kgqa.data.tokenizer import CharTokenizer, encode_key
from kgqa.kbfolder import KbFolder
from kgqa.keyspace import KeySpace
from kgqa.trie import Trie


class ObjectKB:
    """The previous KnowledgeBase: a Key object and a list of objects per key, a dict from key to id."""

    def __init__(self, triples):
        objects: dict = {}
        for t in triples:
            objs = objects.setdefault(t.key, [])
            if t.obj not in objs:
                objs.append(t.obj)
        self.keys = sorted(objects)
        self.objects = [objects[k] for k in self.keys]
        self.index = {k: i for i, k in enumerate(self.keys)}

    def trie(self, tokenizer, order: str) -> Trie:
        """As its KeySpace did: each key encoded alone, the first of equal encodings kept."""
        first: dict = {}
        for i, key in enumerate(self.keys):
            first.setdefault(tuple(encode_key(tokenizer, key, order)), i)
        return Trie.build(list(first), list(first.values()))


def write_knowledge_file(scale: float, qa_root: Path, path: Path) -> dict:
    tokens, lengths, stats = generate_keys(scale, qa_root)
    _, answers, tokenizer = qa_answers(qa_root)
    vocab = [c if c.strip() else "_" for c in tokenizer.vocab]  # no blank fields
    vocab[tokenizer.sep_id] = "\t"
    picks = np.random.default_rng(1).integers(0, len(answers), len(lengths)).tolist()
    starts = np.cumsum(lengths) - lengths
    with open(path, "w", encoding="utf-8") as f:
        for start, length, pick in zip(starts.tolist(), lengths.tolist(), picks):
            subject, predicate, meaning, _ = "".join(vocab[t] for t in tokens[start : start + length].tolist()).split("\t")
            f.write(f"{subject}（{meaning}）\t{predicate}\t{answers[pick]}\n" if meaning else f"{subject}\t{predicate}\t{answers[pick]}\n")
    return stats


def step(out: dict, name: str, fn):
    """Run fn, record its seconds and the process's peak RSS so far."""
    start = time.perf_counter()
    value = fn()
    out[f"{name}_seconds"] = round(time.perf_counter() - start, 2)
    out[f"{name}_peak_rss_mb"] = round(rss_mb())
    return value


def worker(kind: str, path: Path, work: Path) -> dict:
    reset_peak_rss()
    out = {"kb": kind, "rss_at_start_mb": round(rss_mb("VmRSS"))}
    folder_path = work / "folder"
    if kind == "objects":
        kb = step(out, "read", lambda: ObjectKB(read_knowledge(path)))
        tokenizer = step(out, "tokenizer", lambda: CharTokenizer.build(s for k in kb.keys for s in (k.subject, k.predicate, k.meaning)))
        step(out, "trie", lambda: kb.trie(tokenizer, "spm"))
    elif kind == "columns":
        kb = step(out, "read", lambda: KnowledgeBase(read_knowledge(path)))
        out["keys"] = len(kb)
        tokenizer = step(out, "tokenizer", lambda: CharTokenizer.build(kb.strings()))
        step(out, "trie", lambda: KeySpace(kb, tokenizer, "spm"))
        shutil.rmtree(folder_path, ignore_errors=True)
        step(out, "write_folder", lambda: KbFolder.create(folder_path, kb, tokenizer, ["spm"]))
    else:  # load: what a run with kb=folder pays
        folder = KbFolder(folder_path)
        kb = step(out, "load_kb", lambda: folder.kb)
        keyspace = step(out, "load_trie", lambda: folder.keyspace(kb, folder.saved_tokenizer, "spm"))
        rng = np.random.default_rng(0)
        ids = rng.integers(0, len(kb), 1000).tolist()
        start = time.perf_counter()
        answers = [(kb.keys[i], kb.answer(i), kb.objects[i]) for i in ids]  # what the Answerer reads per answer
        out["answer_us"] = round((time.perf_counter() - start) / len(ids) * 1e6, 1)
        start = time.perf_counter()
        found = [kb.key_id(key) for key, _, _ in answers]  # what the gold-key checks ask
        out["key_id_us"] = round((time.perf_counter() - start) / len(ids) * 1e6, 1)
        assert found == ids and len(keyspace.trie.sequence(ids[0])) > 3
        out["bytes_on_disk"] = sum(p.stat().st_size for p in folder_path.rglob("*") if p.is_file())
    return out


def run_worker(kind: str, path: Path, work: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--knowledge", str(path), "--work", str(work)]
    return in_fresh_process(cmd, f"{kind} on {path}")


def measure(scale: float, args, kinds: tuple[str, ...]) -> dict:
    work = args.work / f"scale-{scale}"
    work.mkdir(parents=True, exist_ok=True)
    path = work / "Knowledge.txt"
    start = time.perf_counter()
    stats = write_knowledge_file(scale, args.qa_root, path)
    result = {"scale": scale, "generated": stats, "generate_seconds": round(time.perf_counter() - start, 1),
              "knowledge_bytes": path.stat().st_size}
    for kind in kinds:
        result[kind] = run_worker(kind, path, work)
    shutil.rmtree(work, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="times the official KB's size")
    parser.add_argument("--baseline-scale", type=float, default=0.1, help="KB size run by both designs, for the ratio; 0: skip")
    parser.add_argument("--qa-root", type=Path, default=ROOT.parent / "shared" / "kgclue")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_kb"), help="where the files go (removed after)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default experiments/results/bench_kb-<scale>.json)")
    parser.add_argument("--worker", choices=("columns", "load", "objects"), help=argparse.SUPPRESS)
    parser.add_argument("--knowledge", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.knowledge, args.work)))
        return
    results = {"command": "python experiments/bench_kb.py " + " ".join(sys.argv[1:]), "cpus": os.cpu_count(),
               "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    if args.baseline_scale:
        side = measure(args.baseline_scale, args, ("columns", "load", "objects"))
        side["objects_over_columns"] = {k: round(side["objects"][k] / max(side["columns"][k], 1e-9), 2)
                                        for k in ("read_seconds", "read_peak_rss_mb", "trie_seconds", "trie_peak_rss_mb")}
        results["side_by_side"] = side
        print(json.dumps(side, indent=1), flush=True)
    results["at_scale"] = measure(args.scale, args, ("columns", "load"))
    print(json.dumps(results["at_scale"], indent=1))
    out = args.out or ROOT / "experiments" / "results" / f"bench_kb-{args.scale}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
