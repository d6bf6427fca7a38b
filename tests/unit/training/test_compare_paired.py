"""benchmarks/compare_models.py: the paired per-run comparison of two methods."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[3] / "benchmarks" / "compare_models.py"
_spec = importlib.util.spec_from_file_location("compare_models", _PATH)
cm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cm)


def test_paired_difference_uses_the_common_runs_and_brackets_the_mean():
    a = {"r1": 1.0, "r2": 0.5, "r3": 0.9, "only_a": 0.0}
    b = {"r1": 0.8, "r2": 0.5, "r3": 1.0, "only_b": 1.0}
    d = cm.paired_difference(a, b, n_boot=2000)
    assert d["n_runs"] == 3
    assert d["mean"] == pytest.approx((0.2 + 0.0 - 0.1) / 3)
    assert d["n_better"] == 1 and d["n_worse"] == 1
    lo, hi = d["ci95"]
    # resampled means of {0.2, 0, -0.1} stay within [-0.1, 0.2]
    assert -0.1 - 1e-12 <= lo <= d["mean"] <= hi <= 0.2 + 1e-12


def test_paired_difference_of_identical_methods_is_exactly_zero():
    a = {f"r{i}": i / 10 for i in range(10)}
    d = cm.paired_difference(a, dict(a))
    assert d["mean"] == 0.0 and d["ci95"] == [0.0, 0.0]
    assert d["n_better"] == d["n_worse"] == 0


def test_per_run_skips_runs_without_a_score():
    res = {"per_run": [{"run_id": "a", "macro_f1": 0.5}, {"run_id": "b", "macro_f1": None}]}
    assert cm._per_run(res) == {"a": 0.5}


def test_format_paired_names_the_pair_and_the_interval():
    d = cm.paired_difference({"a": 0.9, "b": 0.8}, {"a": 0.7, "b": 0.8}, n_boot=200)
    line = cm.format_paired("heldout: model - HGB", d)
    assert line.startswith("heldout: model - HGB: +0.100 macro-F1 over 2 runs")
    assert "better on 1, worse on 0" in line
