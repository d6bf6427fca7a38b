"""benchmarks/cluster_head.py: spurious and kept shares of cluster shifts per reporting threshold."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[3] / "benchmarks" / "cluster_head.py"
_spec = importlib.util.spec_from_file_location("cluster_head", _PATH)
ch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ch)


def test_threshold_table_counts_spurious_and_kept_frames():
    truth = np.array([0.0, 0.0, 0.0, 0.0, 0.002, 0.01, 0.03, 0.06, np.nan])
    est = np.array([0.001, 0.006, 0.015, 0.04, 0.5, 0.004, 0.025, 0.07, 0.9])
    rows = ch.threshold_table(est, truth, thresholds=(0.005, 0.02, 0.05))
    # 4 cluster-free frames (0.002 is neither free nor detectable; NaN truth ignored),
    # 3 frames with a cluster >= 0.005
    assert [r["n_free"] for r in rows] == [4, 4, 4] and rows[0]["n_cluster"] == 3
    assert [r["spurious"] for r in rows] == pytest.approx([3 / 4, 1 / 4, 0.0])
    assert [r["kept"] for r in rows] == pytest.approx([2 / 3, 2 / 3, 1 / 3])


def test_threshold_table_without_free_or_cluster_frames_gives_none():
    rows = ch.threshold_table([0.1, 0.2], [0.02, 0.03], thresholds=(0.01,))
    assert rows[0]["spurious"] is None and rows[0]["kept"] == 1.0


def test_family_errors():
    out = ch.family_errors([0.01, 0.03, 0.02, 0.0], [0.0, 0.0, 0.05, np.nan],
                           np.array(["a", "a", "b", "b"]))
    assert out["a"] == {"mae": pytest.approx(0.02), "max_estimate_cluster_free": pytest.approx(0.03),
                        "n_frames": 2}
    assert out["b"]["mae"] == pytest.approx(0.03) and out["b"]["max_estimate_cluster_free"] is None
    assert out["b"]["n_frames"] == 1


def test_shift_errors_count_only_frames_where_a_true_cluster_gets_a_shift():
    est = [90.0, 100.0, 80.0, 70.0, np.nan]
    true = [92.0, 90.0, 80.0, np.nan, 85.0]
    true_amount = [0.1, 0.1, 0.001, 0.0, 0.1]
    reported = [0.05, 0.2, 0.1, 0.1, 0.1]
    out = ch.shift_errors(est, true, true_amount, reported)
    # frame 2: truth below the detection limit; 3: no true shift; 4: no estimate
    assert out["n_frames"] == 2 and out["median_abs_ppm"] == 6.0
    assert ch.shift_errors(est, true, true_amount, [0.0] * 5)["median_abs_ppm"] is None
