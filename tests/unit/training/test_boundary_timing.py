"""benchmarks/boundary_timing.py: class boundaries entered early, on time, late or missed."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[3] / "benchmarks" / "boundary_timing.py"
_spec = importlib.util.spec_from_file_location("boundary_timing", _PATH)
bt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bt)

N, C, P, S = 0, 1, 2, 3


def test_offsets_early_late_missed_and_spurious():
    truth = np.array([N] * 10 + [C] * 10 + [N] * 10 + [P] * 5 + [S] * 5)
    pred = np.array([N] * 6 + [C] * 16 + [N] * 9 + [S] * 9)
    # (no plating predicted): N->C entered 4 frames early, C->N 2 late, N->P missed,
    # P->S entered 4 frames early (at frame 31, inside the plating episode)
    bounds, spurious = bt.boundary_offsets(truth, pred)
    assert bounds == [("normal_lithiation", "cluster_growth", -4),
                      ("cluster_growth", "normal_lithiation", 2),
                      ("normal_lithiation", "plating_onset", None),
                      ("plating_onset", "imminent_short", -4)]
    assert spurious == []
    # an entry may not come from before the previous true boundary
    b, _ = bt.boundary_offsets(np.array([N, N, C, C, N, N, C, C]), np.array([N, C, C, C, C, C, C, C]))
    assert b[2] == ("normal_lithiation", "cluster_growth", None)
    # an episode of a class with no true frame of its own is spurious, with its length
    _, spur = bt.boundary_offsets(np.array([N] * 8), np.array([N, N, C, C, C, N, P, N]))
    assert spur == [("cluster_growth", 3), ("plating_onset", 1)]
    # unlabelled frames start no boundary; a prediction already in the class counts at frame 0
    b, _ = bt.boundary_offsets(np.array([-1, -1, C, C]), np.array([C, C, C, C]))
    assert b == []
    b, _ = bt.boundary_offsets(np.array([N, C, C]), np.array([C, C, C]))
    assert b == [("normal_lithiation", "cluster_growth", -1)]
    with pytest.raises(ValueError, match="differ in length"):
        bt.boundary_offsets(truth, pred[:-1])


def test_summary_buckets_and_families():
    class R:  # the two attributes summarize reads
        def __init__(self, y, family):
            self.y, self.family = np.array(y), family
    runs = [R([N] * 5 + [C] * 5, "a"), R([N] * 5 + [P] * 5, "b")]
    labels = [np.array([N] * 6 + [C] * 4), np.array([N] * 10)]
    s = bt.summarize(runs, labels)
    assert s["boundaries"] == {"N->C": {"+1": 1}, "N->P": {"missed": 1}}
    assert s["missed_by_family"] == {"N->P": {"b": 1}}
    text = bt.format_summary("x", s)
    assert "missed N->P: b 1" in text and "spurious episodes: none" in text
