"""benchmarks/without_current.py: a log without a current column, as the model is trained for it."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from lisentry.models.features import ECHEM_FEATURES
from lisentry.models.window_features import CURRENT_FEATURES
from lisentry.training.data import RunTensors, augment_run

_PATH = Path(__file__).resolve().parents[3] / "benchmarks" / "without_current.py"
_spec = importlib.util.spec_from_file_location("without_current", _PATH)
wc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(wc)


def _run(n_echem: int = len(ECHEM_FEATURES), T: int = 12) -> RunTensors:
    rng = np.random.default_rng(3)
    return RunTensors("r-0", "fam", np.arange(T) * 600.0,
                      rng.normal(size=(T, 20)).astype(np.float32),
                      rng.normal(size=(T, n_echem)).astype(np.float32),
                      np.ones((T, n_echem), np.float32), np.zeros(T, np.int64),
                      np.full((T, 4), np.nan, np.float32), None, None)


def test_masks_the_current_columns_keeps_the_potential_and_the_original():
    rt = _run()
    before = rt.echem.copy()
    (out,) = wc.without_current([rt])
    cur = np.array([n in CURRENT_FEATURES for n in ECHEM_FEATURES])
    assert cur.sum() == len(CURRENT_FEATURES) and not cur[ECHEM_FEATURES.index("potential_V")]
    assert (out.echem_mask[:, cur] == 0).all() and (out.echem[:, cur] == 0).all()
    np.testing.assert_array_equal(out.echem[:, ~cur], before[:, ~cur])
    assert (out.echem_mask[:, ~cur] == 1).all()
    np.testing.assert_array_equal(rt.echem, before)      # the evaluated run is a copy
    assert (rt.echem_mask == 1).all()


def test_equals_the_training_augmentation_of_a_potential_only_log():
    rt = _run()
    (out,) = wc.without_current([rt])
    aug = augment_run(rt, np.random.default_rng(0), {"drop_current": 1.0}, 0.5)
    np.testing.assert_array_equal(out.echem, aug.echem)
    np.testing.assert_array_equal(out.echem_mask, aug.echem_mask)


def test_refuses_runs_that_already_carry_window_features():
    with pytest.raises(ValueError, match=f"r-0: expected the {len(ECHEM_FEATURES)} echem columns"):
        wc.without_current([_run(n_echem=len(ECHEM_FEATURES) + 30)])


def test_masks_only_the_named_columns_and_refuses_unknown_names():
    rt = _run()
    (out,) = wc.without_current([rt], ("charge_asinh", "log1p_h_since_step"))
    masked = np.flatnonzero((out.echem_mask == 0).all(axis=0)).tolist()
    assert masked == sorted(ECHEM_FEATURES.index(n) for n in ("charge_asinh", "log1p_h_since_step"))
    with pytest.raises(ValueError, match=r"unknown echem feature\(s\) \['charge'\]"):
        wc.without_current([rt], ("charge",))
