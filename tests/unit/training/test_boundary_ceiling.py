"""benchmarks/boundary_ceiling.py: the truth shifted in time, scored with the evaluation's metric."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[3] / "benchmarks" / "boundary_ceiling.py"
_spec = importlib.util.spec_from_file_location("boundary_ceiling", _PATH)
bc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bc)


def test_shift_labels_moves_transitions_and_holds_edges():
    y = np.array([0, 0, 1, 1, 3])
    assert bc.shift_labels(y, 1).tolist() == [0, 0, 0, 1, 1]
    assert bc.shift_labels(y, -1).tolist() == [0, 1, 1, 3, 3]
    assert bc.shift_labels(y, 0).tolist() == y.tolist()
    assert bc.shift_labels(y, 9).tolist() == [0] * 5


def test_one_frame_late_costs_what_the_hand_count_says():
    run = SimpleNamespace(run_id="r", family="f", has_short_precursors=False,
                          t_s=np.arange(6) * 600.0, y=np.array([0, 0, 0, 1, 1, 1]),
                          t_onset_s=None, t_short_s=None)
    res = bc.ceiling([run], [0, 1])
    assert res[0]["overall"] == pytest.approx(1.0)
    # late by one: normal F1 = 2*3/(2*3+1) = 6/7, cluster F1 = 2*2/(2*2+1) = 4/5
    assert res[1]["overall"] == pytest.approx((6 / 7 + 4 / 5) / 2)
    assert res[1]["by_family"] == {"f": pytest.approx((6 / 7 + 4 / 5) / 2)}
