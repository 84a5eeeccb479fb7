"""Knowledge.txt → a ready KB folder with the command users run, and the folder loaded back.

    python experiments/bench_kb.py --scale 1.0 --work /tmp/bench_kb
    python experiments/bench_kb.py --scale 0 --baseline-scale 0.1 --before REV   # REV and this checkout, side by side
    python experiments/bench_kb.py --scale 1.0 --eval-run RUN   # and kgqa-eval of RUN on its own KB and on the folder

A Knowledge.txt with the official KB's statistics times --scale is written (bench_trie's keys;
objects drawn from the QA answers; then the QA splits' answer triples, which the official KB holds), then:

- build: `kgqa-kb data=kgclue kb=file kb.path=Knowledge.txt out=DIR`, the command of the README, as a
  subprocess of a fresh wrapper process that reports its wall time and the peak RSS of it and its
  children (getrusage RUSAGE_CHILDREN), so this figure and what users run cannot drift apart;
- load: the folder loaded as a run does (`KbFolder(DIR).kb` and its saved trie), answers looked up;
- foreign tokenizer: a tokenizer that did not build the folder (its vocabulary in another order) asks
  for the trie twice, each in a fresh process: the first builds it and keeps it in the folder, the
  second loads what the first kept; its load time beside the folder's own trie's;
- eval (--eval-run RUN, a run trained on a smaller KB): `kgqa-eval ckpt=RUN` with the run's own KB, then
  `kgqa-eval ckpt=RUN kb=folder kb.path=DIR allow_kb_change=true` twice (the first keeps the trie for the
  run's tokenizer in the folder, the second loads it), each measured as the build is; the second's wall
  time over the own KB's is the cost of the full KB to a user.

`after` is this checkout (its kgqa-kb console script); with --before, `before` is the code of REV
(kgqa/ and conf/, extracted with git archive, run as `python -m kgqa.cli.kb`) at --baseline-scale,
side by side with this checkout on the same file, and whether the two folders hold the same bytes.
Prints the numbers and writes experiments/results/bench_kb-<scale>.json, with the load average
(the machine is shared) before and after each step.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench_trie import QA_FILES, ROOT, generate_keys, in_fresh_process, qa_answers, read_qa, reset_peak_rss, rss_mb

ORDER = "spm"


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
        gold = dict.fromkeys(f"{e.triple.key.full_subject}\t{e.triple.key.predicate}\t{e.triple.obj}\n"
                             for name in QA_FILES for e in read_qa(qa_root / name))
        f.writelines(gold)  # the QA splits' answers, as the official KB holds them
    return stats | {"gold_triples": len(gold)}


def step(out: dict, name: str, fn):
    """Run fn, record its seconds and the process's peak RSS so far."""
    start = time.perf_counter()
    value = fn()
    out[f"{name}_seconds"] = round(time.perf_counter() - start, 2)
    out[f"{name}_peak_rss_mb"] = round(rss_mb())
    return value


def measured(command: list[str]) -> dict:
    """Run `command` from this (fresh) process: its wall time, exit status and the peak RSS of it and its
    children; the end of what it printed, and all of its output when it fails."""
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    out = {"seconds": round(time.perf_counter() - start, 2), "rc": proc.returncode,
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)}
    out["stdout_tail"] = proc.stdout[-1000:]  # what it printed last: the metrics, the KB's statistics
    if proc.returncode:
        out["output_tail"] = (proc.stdout + proc.stderr)[-3000:]
    return out


def kb_command(code: Path, path: Path, folder: Path, qa_root: Path) -> tuple[list[str], dict]:
    """The README's command for the code at `code`, and its environment: this checkout's console script,
    or `python -m kgqa.cli.kb` with another checkout first on the path."""
    args = ["data=kgclue", f"data.root={qa_root}", "kb=file", f"kb.path={path}", f"out={folder}"]
    if code == ROOT:
        return [str(Path(sys.executable).with_name("kgqa-kb")), *args], dict(os.environ)
    return [sys.executable, "-m", "kgqa.cli.kb", *args], dict(os.environ, PYTHONPATH=str(code))


def run_build(code: Path, path: Path, work: Path, qa_root: Path) -> dict:
    """kgqa-kb writing work/folder."""
    folder = work / "folder"
    shutil.rmtree(folder, ignore_errors=True)
    return run_measured(*kb_command(code, path, folder, qa_root))


def run_measured(command: list[str], env: dict | None = None) -> dict:
    """`command` measured by a fresh wrapper process (its RUSAGE_CHILDREN is this command's alone)."""
    print(f"running {' '.join(command)} ...", file=sys.stderr, flush=True)
    wrapper = subprocess.run([sys.executable, __file__, "--measure", "--", *command], env=env, capture_output=True,
                             text=True, check=True)
    out = {"command": " ".join(command), "loadavg_at_start": os.getloadavg(), **json.loads(wrapper.stdout)}
    out["loadavg_at_end"] = os.getloadavg()
    if out["rc"]:
        raise RuntimeError(f"{out['command']} failed:\n{out['output_tail']}")
    return out


def run_evals(run: Path, folder: Path) -> dict:
    """kgqa-eval of `run` on test with its own KB, then twice on `folder`; the EM each printed."""
    eval_cli = str(Path(sys.executable).with_name("kgqa-eval"))
    own = [eval_cli, f"ckpt={run}", "split=test", "logger=csv"]
    full = [*own, "kb=folder", f"kb.path={folder}", "allow_kb_change=true"]
    out = {"own_kb": run_measured(own), "folder_first": run_measured(full), "folder_second": run_measured(full)}
    out["second_over_own_kb"] = {k: round(out["folder_second"][k] / max(out["own_kb"][k], 1e-9), 2)
                                 for k in ("seconds", "peak_rss_mb")}
    return out


def foreign_tokenizer(saved):
    """A tokenizer that did not build the folder: its characters in reverse order (a model trained on
    another KB numbers them otherwise), so the folder's own trie does not serve it."""
    from kgqa.data.tokenizer import SPECIAL_TOKENS, CharTokenizer
    return CharTokenizer(list(SPECIAL_TOKENS) + saved.vocab[len(SPECIAL_TOKENS) :][::-1])


def worker(kind: str, work: Path) -> dict:
    """kind: load (the folder and its own trie) or foreign (the trie for foreign_tokenizer)."""
    from kgqa.kb.folder import KbFolder

    reset_peak_rss()
    out = {"loadavg_at_start": os.getloadavg(), "rss_at_start_mb": round(rss_mb("VmRSS"))}
    folder_path = work / "folder"
    folder = KbFolder(folder_path)
    kb = step(out, "load_kb", lambda: folder.kb)
    if kind == "foreign":
        keyspace = step(out, "trie", lambda: folder.keyspace(kb, foreign_tokenizer(folder.saved_tokenizer), ORDER))
        assert keyspace.trie.num_keys == len(kb)
    else:  # load: what a run with kb=folder pays
        keyspace = step(out, "load_trie", lambda: folder.keyspace(kb, folder.saved_tokenizer, ORDER))
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


def run_worker(kind: str, work: Path) -> dict:
    return in_fresh_process([sys.executable, __file__, "--worker", kind, "--work", str(work)], f"{kind} in {work}")


def folder_digest(folder: Path) -> dict[str, str]:
    """Per file of a KB folder, the SHA-256 of its bytes; the JSON headers without the times they record
    (of files written at another moment), so two folders written from one file compare equal."""
    digests = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != ".lock"):
        data = path.read_bytes()
        if path.suffix == ".json" and path.name != "vocab.json":
            header = json.loads(data)
            header["files"] = {name: entry[:2] for name, entry in header.get("files", {}).items()}
            if isinstance(header.get("source"), dict):
                header["source"].pop("mtime_ns", None)
            data = json.dumps(header, sort_keys=True).encode()
        digests[str(path.relative_to(folder))] = hashlib.sha256(data).hexdigest()
    return digests


def measure(scale: float, args, codes: dict[str, Path]) -> dict:
    work = args.work / f"scale-{scale}"
    work.mkdir(parents=True, exist_ok=True)
    path = work / "Knowledge.txt"
    start = time.perf_counter()
    stats = write_knowledge_file(scale, args.qa_root, path)
    result = {"scale": scale, "generated": stats, "generate_seconds": round(time.perf_counter() - start, 1),
              "knowledge_bytes": path.stat().st_size}
    for name, code in codes.items():
        result[name] = {"build": run_build(code, path, work / name, args.qa_root)}
    if "before" in codes:
        result["same_folder_bytes"] = folder_digest(work / "before" / "folder") == folder_digest(work / "after" / "folder")
        result["before_over_after"] = {k: round(result["before"]["build"][k] / max(result["after"]["build"][k], 1e-9), 2)
                                       for k in ("seconds", "peak_rss_mb")}
    after = work / "after"
    result["after"]["load"] = run_worker("load", after)
    first, second = run_worker("foreign", after), run_worker("foreign", after)
    result["foreign_tokenizer"] = {"first": first, "second": second, "second_over_own_trie_load": round(
        second["trie_seconds"] / max(result["after"]["load"]["load_trie_seconds"], 1e-9), 2)}
    if args.eval_run and "before" not in codes:
        result["eval"] = run_evals(args.eval_run, after / "folder")
    shutil.rmtree(work, ignore_errors=True)
    return result


def main() -> None:
    if sys.argv[1:2] == ["--measure"]:  # the wrapper process of run_build
        print(json.dumps(measured(sys.argv[3:])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="times the official KB's size; 0: skip")
    parser.add_argument("--baseline-scale", type=float, default=0.1, help="KB size run by --before and this checkout")
    parser.add_argument("--before", default=None, help="a git revision to run side by side with this checkout")
    parser.add_argument("--qa-root", type=Path, default=ROOT.parent / "shared" / "kgclue")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_kb"), help="where the files go (removed after)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default experiments/results/bench_kb-<scale>.json)")
    parser.add_argument("--eval-run", type=Path, default=None, help="a run folder to evaluate on its KB and the folder")
    parser.add_argument("--worker", choices=("load", "foreign"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.work)))
        return
    cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    results = {"command": "python experiments/bench_kb.py " + " ".join(sys.argv[1:]), "cpus": os.cpu_count(),
               "cpu": cpu, "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
               "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "before": args.before}
    out = args.out or ROOT / "experiments" / "results" / f"bench_kb-{args.scale or args.baseline_scale}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.before:
        before = args.work / "before-code"
        shutil.rmtree(before, ignore_errors=True)
        before.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "kgqa", "conf"], check=True,
                                 capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive.stdout, check=True)
        results["side_by_side"] = measure(args.baseline_scale, args, {"before": before, "after": ROOT})
        print(json.dumps(results["side_by_side"], indent=1), flush=True)
        out.write_text(json.dumps(results, indent=1))
    if args.scale:
        results["at_scale"] = measure(args.scale, args, {"after": ROOT})
        print(json.dumps(results["at_scale"], indent=1))
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
