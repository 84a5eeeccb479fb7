import json

import numpy as np
import pytest

from kgqa.calibration import coverage_table, expected_calibration_error, reliability, write_calibration


def test_ece_and_bins_equal_hand_computed_values():
    confidence = np.array([0.95, 0.95, 0.15, 0.55])
    correct = np.array([1.0, 0.0, 0.0, 1.0])
    # bins: [0.9,1.0): conf .95, acc .5 (2 of 4); [0.1,0.2): conf .15, acc 0; [0.5,0.6): conf .55, acc 1
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.5 * 0.45 + 0.25 * 0.15 + 0.25 * 0.45)
    bins = reliability(confidence, correct)
    assert [b["count"] for b in bins] == [0, 1, 0, 0, 0, 1, 0, 0, 0, 2]
    assert bins[9]["accuracy"] == 0.5 and bins[1]["confidence"] == pytest.approx(0.15)


def test_perfectly_calibrated_answers_have_zero_ece():
    confidence = np.array([1.0, 1.0, 0.0, 0.0])
    assert expected_calibration_error(confidence, np.array([1.0, 1.0, 0.0, 0.0])) == 0.0


def test_coverage_trades_answers_for_accuracy():
    rows = {r["min_confidence"]: r for r in coverage_table(np.array([0.95, 0.95, 0.15, 0.55]), np.array([1.0, 0.0, 0.0, 1.0]))}
    assert rows[0.0] == {"min_confidence": 0.0, "answered": 1.0, "accuracy": 0.5}
    assert rows[0.5]["answered"] == 0.75 and rows[0.5]["accuracy"] == pytest.approx(2 / 3)
    assert rows[0.9]["answered"] == 0.5 and rows[0.9]["accuracy"] == 0.5


def test_write_calibration_leaves_json_and_diagram(tmp_path):
    report = write_calibration([(0.9, True), (0.2, False), (0.7, True)], tmp_path / "calibration_test.json")
    assert json.loads((tmp_path / "calibration_test.json").read_text())["ece"] == pytest.approx(report["ece"])
    assert (tmp_path / "calibration_test.png").stat().st_size > 1000
