"""kgqa-report on a folder of runs with known per-question results: grouped means and stds, the
paired bootstrap against a direct computation, McNemar by hand, robustness to what real folders hold."""
from __future__ import annotations

import logging
import math
import os
import runpy
import statistics
from pathlib import Path

import numpy as np
import pytest

from kgqa.report import collect, main, report
from kgqa.report.collect import evaluations, questions_file, write_run_metrics
from kgqa.report.significance import compare, mcnemar_exact, paired_bootstrap

QUESTIONS = 60
TARGET_SKILL = {"spm": 0.7, "smp": 0.5}  # chance of a right answer, per order; lcs_power adds 0.1
SEEDS = (0, 1, 2)


def correct_answers(target: str, rule: str, seed: int) -> list[bool]:
    rng = np.random.default_rng([seed, len(target + rule), ord(target[1])])
    return [bool(x) for x in rng.random(QUESTIONS) < TARGET_SKILL[target] + (0.1 if rule == "lcs_power" else 0.0)]


def write_run(run_dir: Path, target: str, seed: int) -> dict[str, list[bool]]:
    """A trained run as kgqa-train leaves it: its own rule (none) untagged, lcs_power tagged; val and test."""
    run_dir.mkdir(parents=True)
    (run_dir / ".hydra").mkdir()
    factors = {"data": "toy", "backbone": "roformer", "target": target, "lookahead": "none", "seed": seed}
    metrics, questions, truth = {}, {}, {}
    for rule in ("none", "lcs_power"):
        for stage in ("val", "test"):
            correct = correct_answers(target, rule, seed + (10 if stage == "val" else 0))
            key = stage if rule == "none" else f"{stage}/{rule}"
            em = float(np.mean(correct))
            metrics |= {f"{key}/em": em, f"{key}/f1": em / 2 + 0.25, f"{key}/emf1": 0.75 * em + 0.125}
            questions[key] = [{"id": f"q{i}", "predicted": "s ||| p", "correct": ok, "confidence": 0.5}
                              for i, ok in enumerate(correct)]
            truth[f"{stage}/{rule}"] = correct
    history = [{"epoch": e, "val/em": (e + 1) / 4 * metrics["val/em"]} for e in range(3)]
    write_run_metrics(run_dir, factors, metrics, questions=questions, name=f"target={target},seed={seed}",
                      history=history)
    return truth


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, dict]:
    """Two orders × three seeds, each decoded with two rules; and the debris of a real folder."""
    root = tmp_path_factory.mktemp("runs")
    truth = {(t, s): write_run(root / f"{t}-{s}", t, s) for t in TARGET_SKILL for s in SEEDS}
    (root / "broken").mkdir()
    (root / "broken" / "metrics.json").write_text('{"factors": {"target": "spm"}, "metr')  # a run killed mid-write
    (root / "still-training" / ".hydra").mkdir(parents=True)
    return root, truth


def test_grouped_table_means_stds_constants_and_rules(folder, caplog):
    root, truth = folder
    with caplog.at_level(logging.WARNING, logger="kgqa.report"):
        table = report(root, resamples=200)
    assert str(root / "broken" / "metrics.json") in caplog.text  # the corrupt file is named, the rest reported
    assert "still-training" in caplog.text
    assert table.constants == {"data": "toy", "backbone": "roformer"}  # printed once, not as columns
    assert table.factors == ["target"] and table.rules == ["none", "lcs_power"]
    assert len(table.groups) == 4 and all(g.n == 3 for g in table.groups)
    for g in table.groups:
        (target,) = [v for _, v in g.configuration]
        for stage in ("val", "test"):
            ems = [float(np.mean(truth[(target, s)][f"{stage}/{g.rule}"])) for s in SEEDS]
            assert sorted(g.values(stage, "em")) == pytest.approx(sorted(ems))
    spm_none = next(g for g in table.groups if g.configuration == (("target", "spm"),) and g.rule == "none")
    ems = [float(np.mean(truth[("spm", s)]["test/none"])) for s in SEEDS]
    row = table.rows()[table.groups.index(spm_none)]
    assert f"{statistics.fmean(ems):.3f} ± {statistics.stdev(ems):.3f}" in row
    summary = (root / "summary.md").read_text()
    assert "constant: data=toy, backbone=roformer" in summary and "| target | none | lcs_power |" in summary
    assert "| data |" not in summary
    csv_lines = (root / "summary.csv").read_text().splitlines()
    assert csv_lines[0].startswith("target,rule,n,val/em,val/em_std") and len(csv_lines) == 5
    assert (root / "report.png").stat().st_size > 10_000
    assert not list(root.glob(".*.tmp"))  # outputs written atomically: no temporary left behind


def test_paired_bootstrap_equals_a_direct_computation():
    rng = np.random.default_rng(7)
    a, b = (rng.random((3, 50)) < p for p in (0.7, 0.6))
    difference, low, high = paired_bootstrap(a, b, resamples=2500, seed=11)
    per_question = (a.astype(float) - b).mean(axis=0)
    draws = np.random.default_rng(11)
    direct = [per_question[draws.integers(0, 50, size=50)].mean() for _ in range(2500)]
    assert difference == pytest.approx(a.mean() - b.mean())
    assert (low, high) == pytest.approx(tuple(np.quantile(direct, [0.025, 0.975])))
    assert low < difference < high


def test_mcnemar_exact_by_hand():
    # 1 pair only A got right, 7 only B: under H0 the 8 discordant pairs are Binomial(8, 1/2)
    assert mcnemar_exact(1, 7) == pytest.approx(2 * (1 + 8) / 256)
    assert mcnemar_exact(7, 1) == mcnemar_exact(1, 7)
    assert mcnemar_exact(4, 4) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 10) == pytest.approx(2 / 1024)
    assert mcnemar_exact(30, 70) == pytest.approx(2 * sum(math.comb(100, i) for i in range(31)) / 2**100)


def test_compare_groups_pairs_seeds_and_counts_discordant_questions(folder):
    root, truth = folder
    found = evaluations(collect(root))
    spm = [e for e in found if e.stage == "test" and e.rule == "lcs_power" and ("target", "spm") in e.configuration]
    smp = [e for e in found if e.stage == "test" and e.rule == "lcs_power" and ("target", "smp") in e.configuration]
    c = compare(spm, smp, resamples=500, seed=3)
    a = np.array([truth[("spm", s)]["test/lcs_power"] for s in SEEDS])
    b = np.array([truth[("smp", s)]["test/lcs_power"] for s in SEEDS])
    assert (c.pairs, c.questions) == (3, QUESTIONS)
    assert c.difference == pytest.approx(a.mean() - b.mean())
    assert (c.only_a, c.only_b) == (int((a & ~b).sum()), int((~a & b).sum()))
    assert c.p_value == pytest.approx(mcnemar_exact(c.only_a, c.only_b))
    by_id = sorted(range(QUESTIONS), key=lambda i: f"q{i}")  # compare orders questions by id
    assert (c.low, c.high) == pytest.approx(paired_bootstrap(a[:, by_id], b[:, by_id], 500, 3)[1:])


def test_cli_compare_runs_and_groups_and_baseline_marks(folder, capsys):
    root, truth = folder
    main([str(root), "--compare", "target=spm,rule=lcs_power", "target=smp,rule=lcs_power", "--resamples", "300"])
    out = capsys.readouterr().out
    assert "EM difference A - B: +" in out and "McNemar exact" in out and "3 run pair(s)" in out
    with pytest.raises(SystemExit, match="rule=lcs_power, rule=none.*narrow"):  # each run holds two rules
        main(["--compare", str(root / "spm-0"), str(root / "smp-0")])
    main(["--compare", f"run={root / 'spm-0'},rule=none", f"run={root / 'smp-0'},rule=none", "--resamples", "300"])
    out = capsys.readouterr().out
    a, b = np.mean(truth[("spm", 0)]["test/none"]), np.mean(truth[("smp", 0)]["test/none"])
    assert f"EM difference A - B: {a - b:+.4f}" in out and "1 run pair(s)" in out
    main([str(root), "--baseline", "target=smp,rule=none", "--resamples", "300"])
    summary = (root / "summary.md").read_text()
    assert "(baseline)" in summary and "outside the 95 % paired bootstrap interval" in summary
    # spm with lcs_power is 30 points over smp without look-ahead on 180 (seed, question) pairs: marked
    assert any(line.startswith("| spm | lcs_power |") and " *" in line for line in summary.splitlines())


def test_cli_errors_are_one_line(folder, capsys):
    root, _ = folder
    with pytest.raises(SystemExit, match="selects 2 configurations or rules"):
        main([str(root), "--compare", "target=spm", "target=smp"])
    with pytest.raises(SystemExit, match="matches 0 rows"):
        main([str(root), "--baseline", "target=xyz"])


def test_questions_file_names_follow_metric_keys():
    assert questions_file("test") == "questions_test.jsonl"
    assert questions_file("test/copy_lcs_bonus") == "questions_test_copy_lcs_bonus.jsonl"


@pytest.mark.parametrize("record", ["ablation_cpu_tiny_grid.json", "ablation_cpu_tiny_trie_loss_seeds.json"])
def test_results_tables_are_what_kgqa_report_prints_from_the_records(record, tmp_path, monkeypatch):
    """The mean ± std tables of experiments/RESULTS.md (or, superseded, HISTORY.md) are the report of the
    committed per-run records."""
    experiments = Path(__file__).resolve().parents[1] / "experiments"
    monkeypatch.setattr("sys.argv", ["records_to_runs", str(experiments / "results" / record), str(tmp_path)])
    runpy.run_path(str(experiments / "records_to_runs.py"), run_name="__main__")
    main([str(tmp_path), "--resamples", "10"])
    summary = (tmp_path / "summary.md").read_text()
    by_rule = summary[summary.index("EM by decode rule"):].splitlines()[2:]
    results = (experiments / "RESULTS.md").read_text() + (experiments / "HISTORY.md").read_text()
    assert len(by_rule) >= 2 and all(line in results for line in by_rule if line.startswith("| "))


def test_eval_decodes_join_their_trained_run_and_the_newest_decode_wins(tmp_path):
    """kgqa-eval of a checkpoint: its rule becomes another row of the same configuration; a rule decoded
    again (after a change to the rule) replaces the older result."""
    trained = {"target": "spm", "beam": 3, "lookahead": "none", "seed": 0}
    write_run_metrics(tmp_path / "train", trained, {"test/em": 0.5, "test/lcs_power/em": 0.6})
    eval_factors = trained | {"split": "test"}
    write_run_metrics(tmp_path / "eval-a", eval_factors | {"lookahead": "copy_lcs_bonus"}, {"test/em": 0.8})
    write_run_metrics(tmp_path / "eval-b", eval_factors | {"lookahead": "lcs_power"}, {"test/em": 0.65})
    os.utime(tmp_path / "train" / "metrics.json", (1, 1))  # trained long before the decodes
    found = evaluations(collect(tmp_path))
    assert {(e.rule, e.metrics["em"]) for e in found} == {("none", 0.5), ("lcs_power", 0.65), ("copy_lcs_bonus", 0.8)}
    table = report(tmp_path, resamples=10)
    assert table.factors == [] and table.constants == {"target": "spm", "beam": 3}  # split is not a factor
    assert [g.rule for g in table.groups] == ["none", "lcs_power", "copy_lcs_bonus"]


def test_runs_of_another_sweep_without_a_factor_show_a_dash(tmp_path):
    write_run_metrics(tmp_path / "a", {"target": "spm", "seed": 0}, {"test/em": 0.5})
    write_run_metrics(tmp_path / "b", {"target": "spm", "augment": "subject_swap", "seed": 0}, {"test/em": 0.7})
    table = report(tmp_path, resamples=10)
    assert table.factors == ["augment"]
    assert [r[:3] for r in table.rows()] == [["–", "", "1"], ["subject_swap", "", "1"]]


def test_the_same_factors_in_another_order_are_one_configuration(tmp_path):
    """A run written before a factor existed, completed with it later, lists its factors in another order."""
    write_run_metrics(tmp_path / "a", {"target": "spm", "copy": False, "seed": 0}, {"test/em": 0.5})
    write_run_metrics(tmp_path / "b", {"copy": False, "target": "spm", "seed": 1}, {"test/em": 0.7})
    assert len({e.configuration for e in evaluations(collect(tmp_path))}) == 1
    table = report(tmp_path, resamples=10)
    assert len(table.groups) == 1 and len(table.groups[0].stage("test")) == 2


def test_two_models_with_the_same_factors_and_seed_are_named_in_a_warning(tmp_path, caplog):
    """A factor missing from the records (a run started before it existed) makes two models look like one
    decoded twice; a re-decode of the same checkpoint stays quiet."""
    factors = {"target": "spm", "lookahead": "none", "seed": 0}
    write_run_metrics(tmp_path / "a", factors, {"test/em": 0.5}, checkpoint=str(tmp_path / "a" / "checkpoints" / "best.ckpt"))
    write_run_metrics(tmp_path / "a-again", factors, {"test/em": 0.5}, checkpoint=str(tmp_path / "a"))
    os.utime(tmp_path / "a" / "metrics.json", (1, 1))
    with caplog.at_level(logging.WARNING, logger="kgqa.report"):
        assert len(evaluations(collect(tmp_path))) == 1
    assert "two different models" not in caplog.text
    write_run_metrics(tmp_path / "b", factors, {"test/em": 0.7}, checkpoint=str(tmp_path / "b" / "checkpoints" / "best.ckpt"))
    with caplog.at_level(logging.WARNING, logger="kgqa.report"):
        (kept,) = evaluations(collect(tmp_path))
    assert kept.metrics["em"] == 0.7 and "two different models" in caplog.text
    assert str(tmp_path / "a") in caplog.text and str(tmp_path / "b") in caplog.text


def test_long_configuration_labels_stay_inside_the_figure(tmp_path):
    """Many varying factors make long row labels (issue 14's folder has eleven); each is wrapped and drawn
    whole, none cut off at the figure's left edge."""
    from kgqa.report.plot import figure

    for seed in range(2):
        for n, trie_loss in enumerate((0.5, 1.0)):
            factors = {"target": ("spm", "smp")[n], "size": ("tiny", "small")[n], "pretrained": f"/a/long/folder/of/weights/{n}",
                       "augment": f"template_fill_{n}", "beam": 3 + n, "renormalise": bool(n), "trie_loss": trie_loss,
                       "sequence_loss": 0.3 * n, "lr": 5e-4 * (1 + n), "epochs": 1 + n, "seed": seed}
            write_run_metrics(tmp_path / f"r{n}-{seed}", factors, {"test/em": 0.5 + 0.1 * n, "test/lcs_power/em": 0.6},
                              history=[{"epoch": 0, "val/em": 0.4}])
    fig = figure(report(tmp_path, resamples=10))
    fig.canvas.draw()
    renderer, width = fig.canvas.get_renderer(), fig.bbox.width
    labels = [label for label in fig.axes[0].get_yticklabels() if label.get_text()]
    assert len(labels) == 2 and all("sequence_loss" in label.get_text() for label in labels)
    for label in labels:
        box = label.get_window_extent(renderer)
        assert 0 <= box.x0 and box.x1 <= width, label.get_text()
