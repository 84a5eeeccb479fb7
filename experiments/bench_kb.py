"""Knowledge.txt → a ready KB folder, and the folder loaded back (issue 13), read by Arrow against the
line-by-line reader of the commit before it, side by side.

    python experiments/bench_kb.py --scale 1.0 --baseline-scale 0.1 --work /tmp/bench_kb

A user starts from a Knowledge.txt (`kgqa-kb kb=file kb.path=... out=DIR`, then runs with
`kb=folder kb.path=DIR`). A Knowledge.txt with the official KB's statistics times --scale is
written (bench_trie's keys; objects drawn from the QA answers); each step runs in a fresh
process, so its peak RSS is its own, as kgqa-kb does it:

- build: the KB read from Knowledge.txt, the character vocabulary of its strings, and the folder
  written (`KbFolder.create`: Knowledge.txt, vocab.json, kb/ columns, the spm key trie);
- load: the folder loaded as a run does (`KbFolder(DIR).kb` and its saved trie), answers looked up.

`arrow` is this checkout (kgqa.kb.arrow_reader); `lines` is the code of --before (by default
the commit this branch started from, extracted with git archive), run at --baseline-scale only.
Prints the numbers and writes experiments/results/bench_kb_arrow-<scale>.json, with the load average
(the machine is shared) before and after each step.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench_trie import ROOT, generate_keys, in_fresh_process, qa_answers, reset_peak_rss, rss_mb

BEFORE = "683e8311"  # the commit before the Arrow reader: KnowledgeBase(read_knowledge(path)), strings as JSON


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
    """kind: build or load, with the kgqa on PYTHONPATH (this checkout, or the one before)."""
    from kgqa.data.tokenizer import CharTokenizer
    try:
        from kgqa.kb.folder import KbFolder
    except ImportError:  # the code of --before, from before kgqa/kb/
        from kgqa.kbfolder import KbFolder

    reset_peak_rss()
    out = {"loadavg_at_start": os.getloadavg(), "rss_at_start_mb": round(rss_mb("VmRSS"))}
    folder_path = work / "folder"
    if kind == "build":
        try:
            from kgqa.kb.arrow_reader import read_knowledge_kb
        except ImportError:  # the line-by-line code, from before kgqa/kb/
            from kgqa.data.kb import KnowledgeBase
            from kgqa.data.kgclue import read_knowledge
            kb = step(out, "read", lambda: KnowledgeBase(read_knowledge(path)))
            tokenizer = step(out, "tokenizer", lambda: CharTokenizer.build(kb.strings()))
        else:
            kb = step(out, "read", lambda: read_knowledge_kb(path))
            tokenizer = step(out, "tokenizer", lambda: CharTokenizer.build(kb.characters()))
        out["keys"] = len(kb)
        shutil.rmtree(folder_path, ignore_errors=True)
        step(out, "write_folder", lambda: KbFolder.create(folder_path, kb, tokenizer, ["spm"]))
        out["ready_folder_seconds"] = round(sum(out[f"{s}_seconds"] for s in ("read", "tokenizer", "write_folder")), 2)
    else:  # load: what a run with kb=folder pays
        folder = KbFolder(folder_path)
        kb = step(out, "load_kb", lambda: folder.kb)
        keyspace = step(out, "load_trie", lambda: folder.keyspace(kb, folder.saved_tokenizer, "spm"))
        out["load_seconds"] = round(out["load_kb_seconds"] + out["load_trie_seconds"], 2)
        rng = np.random.default_rng(0)
        ids = rng.integers(0, len(kb), 1000).tolist()
        start = time.perf_counter()
        answers = [(kb.keys[i], kb.answer(i), kb.objects[i]) for i in ids]  # what the Answerer reads per answer
        out["answer_us"] = round((time.perf_counter() - start) / len(ids) * 1e6, 1)
        start = time.perf_counter()
        found = [kb.key_id(key) for key, _, _ in answers]  # what the gold-key checks ask
        out["key_id_us"] = round((time.perf_counter() - start) / len(ids) * 1e6, 1)
        assert found == ids and len(keyspace.trie.sequence(ids[0])) > 3
        out["bytes_on_disk"] = {p.name: sum(f.stat().st_size for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())
                                for p in folder_path.iterdir()}
    out["loadavg_at_end"] = os.getloadavg()
    return out


def run_worker(kind: str, code: Path, path: Path, work: Path) -> dict:
    """A worker in a fresh process, with `code` (a folder holding kgqa/) first on its path."""
    cmd = ["env", f"PYTHONPATH={code}", sys.executable, __file__, "--worker", kind, "--knowledge", str(path),
           "--work", str(work)]
    return in_fresh_process(cmd, f"{kind} with {code} on {path}")


def same_folders(a: Path, b: Path) -> bool:
    """Whether two folders hold the same Knowledge.txt and vocabulary: the same KB, keys, ids and objects
    (the trie test of the same KB is in tests/test_kb_arrow.py)."""
    return all((a / name).read_bytes() == (b / name).read_bytes() for name in ("Knowledge.txt", "vocab.json"))


def measure(scale: float, args, codes: dict[str, Path]) -> dict:
    work = args.work / f"scale-{scale}"
    work.mkdir(parents=True, exist_ok=True)
    path = work / "Knowledge.txt"
    start = time.perf_counter()
    stats = write_knowledge_file(scale, args.qa_root, path)
    result = {"scale": scale, "generated": stats, "generate_seconds": round(time.perf_counter() - start, 1),
              "knowledge_bytes": path.stat().st_size}
    for name, code in codes.items():
        result[name] = {kind: run_worker(kind, code, path, work / name) for kind in ("build", "load")}
    if len(codes) > 1:
        result["same_knowledge_and_vocab"] = same_folders(*(work / name / "folder" for name in codes))
    shutil.rmtree(work, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="times the official KB's size")
    parser.add_argument("--baseline-scale", type=float, default=0.1, help="KB size run by both readers; 0: skip")
    parser.add_argument("--before", default=BEFORE, help="the git revision whose reader is the baseline")
    parser.add_argument("--qa-root", type=Path, default=ROOT.parent / "shared" / "kgclue")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_kb"), help="where the files go (removed after)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default experiments/results/bench_kb_arrow-<scale>.json)")
    parser.add_argument("--worker", choices=("build", "load"), help=argparse.SUPPRESS)
    parser.add_argument("--knowledge", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.knowledge, args.work)))
        return
    cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    results = {"command": "python experiments/bench_kb.py " + " ".join(sys.argv[1:]), "cpus": os.cpu_count(),
               "cpu": cpu, "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
               "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "before": args.before}
    out = args.out or ROOT / "experiments" / "results" / f"bench_kb_arrow-{args.scale}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.baseline_scale:
        before = args.work / "before"
        shutil.rmtree(before, ignore_errors=True)
        before.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "kgqa"], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive.stdout, check=True)
        side = measure(args.baseline_scale, args, {"lines": before, "arrow": ROOT})
        side["lines_over_arrow"] = {f"{kind}.{k}": round(side["lines"][kind][k] / max(side["arrow"][kind][k], 1e-9), 2)
                                    for kind, keys in (("build", ("read_seconds", "ready_folder_seconds",
                                                                  "write_folder_peak_rss_mb")),
                                                       ("load", ("load_seconds", "load_trie_peak_rss_mb")))
                                    for k in keys}
        results["side_by_side"] = side
        print(json.dumps(side, indent=1), flush=True)
        out.write_text(json.dumps(results, indent=1))
    if args.scale:
        results["at_scale"] = measure(args.scale, args, {"arrow": ROOT})
        print(json.dumps(results["at_scale"], indent=1))
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
