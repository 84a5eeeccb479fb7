"""experiments/bench_decode.py and bench_decode_commits.py at a tiny scale: they run, and what they
report agrees with itself (the project decoder and the reference; two commits' answers)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
TINY = ["--sizes", "tiny", "--beams", "1", "--threads", "1", "--repeats", "1", "--questions", "12", "--train-steps", "30"]


def test_bench_decode_compares_the_project_decoder_with_the_reference(tmp_path, kgclue_root):
    subprocess.run([sys.executable, str(EXPERIMENTS / "bench_decode.py"), *TINY, "--root", str(kgclue_root),
                    "--model-dir", str(tmp_path / "models"), "--out", str(tmp_path)], check=True, capture_output=True)
    (report,) = [json.loads(p.read_text()) for p in tmp_path.glob("bench_decode-*.json")]
    rows = report["results"]
    assert [(r["size"], r["beam"], r["lookahead"]) for r in rows] == [("tiny", 1, "none"), ("tiny", 1, "lcs_power")]
    assert all(r["questions"] == 12 and r["project_qps"] > 0 and r["reference_qps"] > 0 for r in rows)
    # greedy search without look-ahead is the same search in both decoders
    assert rows[0]["agreement"] == 1.0 and rows[0]["project_em"] == rows[0]["reference_em"]
    assert (tmp_path / "models" / "tiny-30.pt").is_file()


@pytest.mark.slow
def test_bench_decode_commits_finds_the_same_answers_on_the_same_commit(tmp_path, kgclue_root):
    out = tmp_path / "commits.json"
    subprocess.run([sys.executable, str(EXPERIMENTS / "bench_decode_commits.py"), "--before", "HEAD", "--rounds", "1",
                    "--model-dir", str(tmp_path / "models"), "--root", str(kgclue_root), "--bench-args", " ".join(TINY),
                    "--out", str(out)], check=True, capture_output=True)
    report = json.loads(out.read_text())
    assert report["same_keys_in_every_run"] and report["largest_log_prob_difference"] == 0.0
    assert [r["lookahead"] for r in report["rows"]] == ["none", "lcs_power"] and report["decodes_compared"] == 8 + 2 * 12  # the warm-up, then each rule
