"""The key trie at KgCLUE scale (issue 4): build, save, load and query it, against the reference's dict trie.

    python experiments/bench_trie.py --scale 1.0 --reference-scale 0.05 --work /tmp/bench_trie

The official KB (20,559,652 triples, 3,121,457 subjects, 245,838 predicates) is not distributed,
so a KB with its statistics is generated, times --scale: subject, predicate and meaning lengths
and characters drawn from the QA data's answers (as is the share of subjects with a meaning),
predicates used Zipf-like, every triple its own key (an upper bound: one key may hold several
objects). Keys are encoded S [SEP] P [SEP] M [SEP] with a character vocabulary, as kgqa-kb does.

Each measurement runs in a fresh process, so its peak RSS is its own: the array trie at --scale,
then the array trie and the reference-style nested-dict trie (a dict per node, str tokens,
JSON file: the article's code) at --reference-scale, which the dict trie can hold, for the ratio.
Prints the numbers side by side and writes experiments/results/bench_trie-<scale>.json.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from kgqa.data.kgclue import read_qa
from kgqa.data.tokenizer import CharTokenizer
from kgqa.reference import DictTrie
from kgqa.trie import OverlayTrie, Trie, copy_segments

OFFICIAL = {"triples": 20_559_652, "subjects": 3_121_457, "predicates": 245_838}
QA_FILES = ("train.json", "dev.json", "test_public.json")
GOALS = {"build_seconds": 300, "build_peak_rss_mb": 8192, "load_seconds": 1.0, "bytes_on_disk": 1.5e9}
ROOT = Path(__file__).resolve().parents[1]


# --- the generated KB ----------------------------------------------------------------
def draw_strings(rng, count: int, lengths: np.ndarray, char_ids: np.ndarray, char_p: np.ndarray):
    """`count` random strings: lengths from the QA data's, characters by their QA frequency."""
    sizes = rng.choice(lengths, count)
    return rng.choice(char_ids, int(sizes.sum()), p=char_p).astype(np.uint16), sizes.astype(np.int64)


def row_hashes(tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """A 64-bit polynomial hash per row (rows of 1+ tokens): finds duplicate strings without sorting them."""
    rank = np.arange(len(tokens)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    powers = np.cumprod(np.full(int(lengths.max()) + 1, 1_000_003, dtype=np.uint64))
    return np.add.reduceat(tokens.astype(np.uint64) * powers[rank], np.cumsum(lengths) - lengths)


def distinct(draw, count: int, rng):
    """`count` distinct strings from draw(k) -> (tokens, lengths): draw more until there are enough."""
    tokens, lengths = draw(count + count // 20 + 10)
    while True:
        _, first = np.unique(row_hashes(tokens, lengths), return_index=True)
        if len(first) >= count:
            keep = np.sort(rng.choice(first, count, replace=False))
            starts = np.cumsum(lengths) - lengths
            return concat_rows(tokens, starts[keep], lengths[keep])
        more_tokens, more_lengths = draw(count - len(first) + count // 20 + 10)
        tokens, lengths = np.concatenate([tokens, more_tokens]), np.concatenate([lengths, more_lengths])


def concat_rows(tokens: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rank = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return tokens[np.repeat(starts, lengths) + rank], lengths


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique by sorting (numpy 2's hash-based unique is much slower on 20M int64s)."""
    values = np.sort(values)
    return values[np.concatenate([[True], values[1:] != values[:-1]])]


def qa_answers(qa_root: Path) -> tuple[dict[str, list[str]], list[str], CharTokenizer]:
    """The answer triples of the QA splits: subjects, predicates and meanings; objects; their characters' vocabulary."""
    examples = [e for f in QA_FILES for e in read_qa(qa_root / f)]
    fields = {f: [getattr(e.triple.key, f) for e in examples] for f in ("subject", "predicate", "meaning")}
    return fields, [e.triple.obj for e in examples], CharTokenizer.build(s for strings in fields.values() for s in strings)


def generate_keys(scale: float, qa_root: Path, seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """Flat uint16 key tokens and key lengths of a KB with the official statistics times `scale`;
    the tokens are ids of qa_answers's vocabulary."""
    rng = np.random.default_rng(seed)
    fields, _, tokenizer = qa_answers(qa_root)
    meaning_share = sum(1 for m in fields["meaning"] if m) / len(fields["meaning"])
    sep = tokenizer.sep_id

    def drawer(field: str):
        strings = [s for s in fields[field] if s]
        chars, counts = np.unique(np.array(tokenizer.encode("".join(strings))), return_counts=True)
        lengths = np.array([len(s) for s in strings])
        return lambda count: draw_strings(rng, count, lengths, chars, counts / counts.sum())

    n_triples, n_subjects, n_predicates = (max(2, round(OFFICIAL[k] * scale)) for k in ("triples", "subjects", "predicates"))
    # entities: subject [SEP] meaning, distinct; about 27 % with a meaning
    draw_subject, draw_meaning = drawer("subject"), drawer("meaning")

    def draw_entity(count: int):
        s_tokens, s_lengths = draw_subject(count)
        has_meaning = rng.random(count) < meaning_share
        m_tokens, m_lengths = draw_meaning(int(has_meaning.sum()))
        m_all = np.zeros(count, dtype=np.int64)
        m_all[has_meaning] = m_lengths
        lengths = s_lengths + 1 + m_all
        out = np.full(int(lengths.sum()), sep, dtype=np.uint16)
        starts = np.cumsum(lengths) - lengths
        copy_segments(out, starts, s_tokens, np.cumsum(s_lengths) - s_lengths, s_lengths)
        copy_segments(out, (starts + s_lengths + 1)[has_meaning], m_tokens, np.cumsum(m_lengths) - m_lengths, m_lengths)
        return out, lengths

    e_tokens, e_lengths = distinct(draw_entity, n_subjects, rng)
    p_tokens, p_lengths = distinct(drawer("predicate"), n_predicates, rng)
    e_starts, p_starts = np.cumsum(e_lengths) - e_lengths, np.cumsum(p_lengths) - p_lengths
    s_lengths = np.flatnonzero(e_tokens == sep) - e_starts  # one [SEP] per entity, after its subject
    m_lengths = e_lengths - s_lengths - 1

    # keys per entity: at least one, the rest spread with a heavy tail (popular entities)
    cap = max(1, n_predicates // 4)
    weights = rng.pareto(2.0, n_subjects) + 1
    per_entity = np.minimum(1 + rng.multinomial(n_triples - n_subjects, weights / weights.sum()), cap)
    while (short := n_triples - per_entity.sum()) > 0:
        room = np.flatnonzero(per_entity < cap)
        np.add.at(per_entity, rng.choice(room, min(short, len(room)), replace=False), 1)
    # predicates: Zipf-like use, distinct within an entity; collisions are redrawn uniformly
    # (a Zipf redraw would mostly collide again on entities with thousands of predicates)
    cdf = np.cumsum(1.0 / np.arange(1, n_predicates + 1))
    cdf /= cdf[-1]
    entity = np.repeat(np.arange(n_subjects), per_entity)
    pairs = sorted_unique(entity * n_predicates + np.minimum(np.searchsorted(cdf, rng.random(len(entity))), n_predicates - 1))
    while (missing := per_entity - np.bincount(pairs // n_predicates, minlength=n_subjects)).any():
        entity = np.repeat(np.arange(n_subjects), missing)
        pairs = sorted_unique(np.concatenate([pairs, entity * n_predicates + rng.integers(0, n_predicates, len(entity))]))
    entity, predicate = pairs // n_predicates, pairs % n_predicates

    # keys S [SEP] P [SEP] M [SEP], built a chunk at a time
    lengths = s_lengths[entity] + p_lengths[predicate] + m_lengths[entity] + 3
    offsets = np.cumsum(lengths) - lengths
    tokens = np.full(int(lengths.sum()), sep, dtype=np.uint16)
    for a in range(0, len(entity), 1 << 20):
        e, p, o = entity[a : a + (1 << 20)], predicate[a : a + (1 << 20)], offsets[a : a + (1 << 20)]
        copy_segments(tokens, o, e_tokens, e_starts[e], s_lengths[e])
        copy_segments(tokens, o + s_lengths[e] + 1, p_tokens, p_starts[p], p_lengths[p])
        copy_segments(tokens, o + s_lengths[e] + p_lengths[p] + 2, e_tokens, e_starts[e] + s_lengths[e] + 1, m_lengths[e])
    stats = {"triples": len(entity), "subjects": n_subjects, "predicates": int(np.count_nonzero(np.bincount(predicate))),
             "subjects_with_meaning": round(float((m_lengths > 0).mean()), 4), "tokens": len(tokens),
             "tokens_per_key": round(len(tokens) / len(entity), 2), "vocab_size": tokenizer.vocab_size}
    return tokens, lengths, stats


# --- measurements ----------------------------------------------------------------------
def rss_mb(field: str = "VmHWM") -> float:
    """Peak (VmHWM) or current (VmRSS) resident memory of this process."""
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def disk_bytes(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def query_prefixes(tokens, lengths, count: int, seed: int = 1) -> list[np.ndarray]:
    """Random proper prefixes of random keys: where a decoder asks for the allowed tokens."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(lengths), count)
    starts = np.cumsum(lengths) - lengths
    depths = (rng.random(count) * lengths[rows]).astype(np.int64)
    return [tokens[starts[r] : starts[r] + d] for r, d in zip(rows, depths)]


def timed(fn, repeat: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def saved_and_loaded(out: dict, path: Path, load) -> object:
    """Save out["trie"] (the only reference to it), drop it, and load it back with `load`: the time,
    size on disk and memory of each step into `out`."""
    out["save_seconds"] = timed(lambda: out["trie"].save(path))
    out["bytes_on_disk"] = disk_bytes(path)
    del out["trie"]
    gc.collect()
    out["rss_before_load_mb"] = round(rss_mb("VmRSS"))
    reset_peak_rss()
    out["load_seconds"] = timed(lambda: out.setdefault("trie", load(path)))
    out["load_peak_rss_mb"] = round(rss_mb())
    return out.pop("trie")


def measure_array(tokens, lengths, folder: Path, queries: int, batch: int) -> dict:
    out = {"rss_before_build_mb": round(rss_mb("VmRSS"))}
    reset_peak_rss()
    start = time.perf_counter()
    trie = Trie.from_flat(tokens, lengths)
    out["build_seconds"] = time.perf_counter() - start
    out["build_peak_rss_mb"] = round(rss_mb())
    out |= {"keys": trie.num_keys, "nodes": trie.num_nodes, "internal_nodes": trie.num_internal}
    prefixes = query_prefixes(tokens, lengths, queries)
    out["trie"] = trie
    del trie, tokens
    trie = saved_and_loaded(out, folder, Trie.load)
    out["load_in_memory_seconds"] = timed(lambda: Trie.load(folder, mmap=False))
    states = trie.walk_all(prefixes)[0]
    batches = [states[i : i + batch] for i in range(0, len(states), batch)]
    out["first_lookup_ms"] = 1e3 * timed(lambda: trie.allowed_tokens(batches[0]))  # pages still faulting in
    out["lookup_us_batched"] = 1e6 * timed(lambda: [trie.allowed_tokens(b) for b in batches], 3) / len(states)
    out["allowed_per_lookup"] = round(len(trie.allowed_tokens(states)[0]) / len(states), 1)  # the root allows thousands
    out["lookup_us_single"] = 1e6 * timed(lambda: [trie.allowed_tokens(states[i : i + 1]) for i in range(len(states))]) / len(states)
    allowed = [trie.allowed_tokens(b) for b in batches]
    next_tokens = [tokens[np.searchsorted(which, np.arange(len(b)))] for b, (which, tokens) in zip(batches, allowed)]
    out["step_us_batched"] = 1e6 * timed(lambda: [trie.step(b, t) for b, t in zip(batches, next_tokens)], 3) / len(states)
    out["query_peak_rss_mb"] = round(rss_mb())
    out |= measure_overlay(trie, prefixes, batch)
    return out


def measure_overlay(trie: Trie, prefixes: list[np.ndarray], batch: int, changes: int = 1000) -> dict:
    """A KB change without a rebuild: `changes` keys added and as many deleted, over the loaded trie."""
    rng, changes = np.random.default_rng(2), min(changes, trie.num_keys // 4)
    rows = rng.choice(trie.num_keys, 2 * changes, replace=False)
    new_token = int(trie.tokens.max()) + 1  # a character the KB does not have: new keys clash with none
    added = [np.concatenate([[new_token], trie.row_sequences(r, r + 1)[0]]) for r in rows[:changes]]
    deleted = [trie.row_sequences(r, r + 1)[0] for r in rows[changes:]]
    start = time.perf_counter()
    overlay = OverlayTrie.over(trie, added, np.arange(trie.num_keys, trie.num_keys + changes), deleted)
    out = {"overlay_changes": 2 * changes, "overlay_seconds": time.perf_counter() - start}
    states = overlay.walk_all(prefixes)[0]
    batches = [states[i : i + batch] for i in range(0, len(states), batch)]
    out["overlay_lookup_us_batched"] = 1e6 * timed(lambda: [overlay.allowed_tokens(b) for b in batches], 3) / len(states)
    assert all(overlay.walk(k) >= 0 for k in added[:20]) and all(overlay.walk(k) == -1 for k in deleted[:20])
    return out


def measure_dict(tokens, lengths, path: Path, queries: int) -> dict:
    out = {"rss_before_build_mb": round(rss_mb("VmRSS"))}
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    reset_peak_rss()

    def build():
        trie = DictTrie()
        for i in range(len(lengths)):
            trie.add(tokens[offsets[i] : offsets[i + 1]].tolist(), i)
        out["trie"] = trie

    out["build_seconds"] = timed(build)
    out["build_peak_rss_mb"] = round(rss_mb())
    prefixes = [p.tolist() for p in query_prefixes(tokens, lengths, queries)]
    trie = saved_and_loaded(out, path, DictTrie.load)
    out["lookup_us_single"] = 1e6 * timed(lambda: [trie.next_ones(p) for p in prefixes]) / len(prefixes)
    return out


def worker(kind: str, scale: float, qa_root: Path, work: Path, queries: int, batch: int) -> dict:
    start = time.perf_counter()
    tokens, lengths, stats = generate_keys(scale, qa_root)
    result = {"trie": kind, "scale": scale, "kb": stats, "generate_seconds": round(time.perf_counter() - start, 1)}
    target = work / f"{kind}-{scale}"
    shutil.rmtree(target, ignore_errors=True)
    if kind == "array":
        result |= measure_array(tokens, lengths, target, queries, batch)
    else:
        target.mkdir(parents=True)
        result |= measure_dict(tokens, lengths, target / "trie.json", queries)
    shutil.rmtree(target, ignore_errors=True)
    return result


def in_fresh_process(cmd: list[str], what: str) -> dict:
    """Run a worker in a fresh process, so its peak RSS is not the previous one's; its last line of JSON."""
    print(f"running {what} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.splitlines()[-1])


def run_worker(kind: str, scale: float, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--scale", str(scale), "--qa-root", str(args.qa_root),
           "--work", str(args.work), "--queries", str(args.queries), "--batch", str(args.batch)]
    return in_fresh_process(cmd, f"{kind} trie at scale {scale}")


ROWS = ("build_seconds", "rss_before_build_mb", "build_peak_rss_mb", "save_seconds", "bytes_on_disk", "load_seconds",
        "rss_before_load_mb", "load_peak_rss_mb", "lookup_us_single", "lookup_us_batched", "allowed_per_lookup",
        "overlay_seconds", "overlay_lookup_us_batched")


def table(results: list[dict]) -> str:
    head = [f"{r['trie']} @ {r['kb']['triples']:,} triples" for r in results]
    lines = [f"{'':22}" + "".join(f"{h:>30}" for h in head)]
    for row in ROWS:
        cells = [r.get(row) for r in results]
        lines.append(f"{row:22}" + "".join(f"{'-' if c is None else f'{c:,.4g}' if isinstance(c, float) else f'{c:,}':>30}" for c in cells))
    return "\n".join(lines)


def ratios(array: dict, reference: dict) -> dict:
    """How many times the dict trie's number is the array trie's, same KB, same run."""
    keys = ("build_seconds", "build_peak_rss_mb", "bytes_on_disk", "load_seconds", "load_peak_rss_mb", "lookup_us_single")
    return {k: round(reference[k] / max(array[k], 1e-9), 1) for k in keys}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="times the official KB's size")
    parser.add_argument("--reference-scale", type=float, default=0.05, help="KB size for the dict trie (and the ratio); 0: skip")
    parser.add_argument("--qa-root", type=Path, default=ROOT.parent / "shared" / "kgclue")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_trie"), help="where the tries are saved (removed after)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default experiments/results/bench_trie-<scale>.json)")
    parser.add_argument("--queries", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=256, help="states per batched lookup (64 questions x 4 beams)")
    parser.add_argument("--worker", choices=("array", "dict"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.scale, args.qa_root, args.work, args.queries, args.batch)))
        return {}

    results = {"machine": {"cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")},
               "array": run_worker("array", args.scale, args)}
    shown = [results["array"]]
    if args.reference_scale:
        results["reference"] = {"array": run_worker("array", args.reference_scale, args),
                                "dict": run_worker("dict", args.reference_scale, args)}
        results["reference"]["dict_over_array"] = ratios(results["reference"]["array"], results["reference"]["dict"])
        shown += [results["reference"]["array"], results["reference"]["dict"]]
    array = results["array"]
    results["goals_met"] = {k: bool(array[k] <= limit) for k, limit in GOALS.items()}
    print(table(shown))
    if args.reference_scale:
        print("dict / array, same KB:", json.dumps(results["reference"]["dict_over_array"]))
    print("goals met at scale", args.scale, json.dumps(results["goals_met"]))
    out = args.out or ROOT / "experiments" / "results" / f"bench_trie-{args.scale}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
