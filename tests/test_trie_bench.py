"""experiments/bench_trie.py at a tiny scale: the generated KB, both tries on it, the JSON it writes."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from kgqa.reference import DictTrie
from kgqa.trie import Trie

BENCH = Path(__file__).resolve().parents[1] / "experiments" / "bench_trie.py"
SCALE = 0.0005  # ~10k triples


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_trie", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_kb_has_the_official_shape(bench, kgclue_root):
    tokens, lengths, stats = bench.generate_keys(SCALE, kgclue_root)
    official = bench.OFFICIAL
    assert stats["triples"] == len(lengths) == round(official["triples"] * SCALE)
    assert stats["subjects"] == round(official["subjects"] * SCALE)
    assert 0.5 * official["predicates"] * SCALE < stats["predicates"] <= round(official["predicates"] * SCALE)
    assert 0.2 < stats["subjects_with_meaning"] < 0.35 and 10 < stats["tokens_per_key"] < 20
    # the same keys in the array trie and the reference dict trie: same next tokens everywhere asked
    trie, reference = Trie.from_flat(tokens, lengths), DictTrie()
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    for i in range(len(lengths)):
        reference.add(tokens[offsets[i] : offsets[i + 1]].tolist(), i)
    assert trie.num_keys == len(lengths)  # all distinct, none a prefix of another
    prefixes = bench.query_prefixes(tokens, lengths, 300)
    which, allowed = trie.allowed_tokens(trie.walk_all(prefixes)[0])
    for i, prefix in enumerate(prefixes):
        assert allowed[which == i].tolist() == sorted(int(t) for t in reference.next_ones(prefix.tolist()))


def test_bench_writes_its_numbers(bench, kgclue_root, tmp_path):
    out = tmp_path / "bench.json"
    bench.main(["--scale", str(SCALE), "--reference-scale", str(SCALE), "--qa-root", str(kgclue_root),
                "--work", str(tmp_path / "work"), "--out", str(out), "--queries", "256"])
    results = json.loads(out.read_text())
    array, reference = results["array"], results["reference"]
    for run in (array, reference["array"], reference["dict"]):
        assert run["kb"]["triples"] == round(bench.OFFICIAL["triples"] * SCALE)
        for field in ("build_seconds", "build_peak_rss_mb", "bytes_on_disk", "load_seconds", "lookup_us_single"):
            assert run[field] > 0
    assert array["keys"] == array["kb"]["triples"] and array["lookup_us_batched"] > 0
    assert set(reference["dict_over_array"]) >= {"build_seconds", "bytes_on_disk", "load_seconds"}
    assert all(results["goals_met"].values())
    assert not (tmp_path / "work" / f"array-{SCALE}").exists()  # the saved tries are removed
