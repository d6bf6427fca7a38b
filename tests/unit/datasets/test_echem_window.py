"""Window averaging of potentiostat logs: hand-computed means, gaps, edges, charge."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from lisentry.datasets.io.potentiostat import EchemLog

T0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=timezone.utc).timestamp()


def _log(t_rel, e, i=None):
    t_rel = np.asarray(t_rel, float)
    i = np.full(len(t_rel), np.nan) if i is None else np.asarray(i, float)
    return EchemLog(T0 + t_rel, np.asarray(e, float), i)


def test_linear_ramp_mean_is_value_at_window_midpoint():
    # E = 0.5 - 0.01 t sampled every 1 s; window [2.5, 7.25] s (edges between samples)
    t = np.arange(0.0, 11.0)
    log = _log(t, 0.5 - 0.01 * t)
    w = log.window_stats(T0 + 2.5, T0 + 7.25)
    # exact: mean of a linear function over [a, b] = value at (a + b) / 2 = 4.875 s
    assert w.potential_V == pytest.approx(0.5 - 0.01 * 4.875, abs=1e-12)
    assert w.potential_max_V == pytest.approx(0.5 - 0.01 * 2.5)  # interpolated edge value
    assert w.potential_min_V == pytest.approx(0.5 - 0.01 * 7.25)
    assert w.n_samples == 5  # samples at 3, 4, 5, 6, 7
    assert w.status == "ok"


def test_step_inside_window_hand_computed():
    # samples every 2 s; E = 0 up to t = 10 s, 1 from t = 12 s (linear in between)
    t = np.arange(0.0, 21.0, 2.0)
    e = (t >= 12).astype(float)
    w = _log(t, e).window_stats(T0 + 5.0, T0 + 15.0)
    # integral over [5, 15]: [5,10] -> 0, [10,12] ramp -> 1, [12,15] -> 3; mean = 4 / 10
    assert w.potential_V == pytest.approx(0.4, abs=1e-12)
    assert (w.potential_min_V, w.potential_max_V) == (0.0, 1.0)


def test_window_between_two_samples_interpolates_both_edges():
    t = np.array([0.0, 10.0, 20.0])
    log = _log(t, [0.0, 1.0, 3.0])
    w = log.window_stats(T0 + 12.0, T0 + 14.0)
    # slope 0.2 V/s between 10 and 20 s: E(12) = 1.4, E(14) = 1.8 -> mean 1.6, no sample inside
    assert w.potential_V == pytest.approx(1.6)
    assert w.n_samples == 0
    assert (w.potential_min_V, w.potential_max_V) == pytest.approx((1.4, 1.8))
    # zero-width window: the interpolated value
    assert log.window_stats(T0 + 15.0, T0 + 15.0).potential_V == pytest.approx(2.0)


def test_random_windows_match_dense_trapezoid():
    rng = np.random.default_rng(3)
    t = np.cumsum(rng.uniform(0.5, 3.0, 400))
    e = np.sin(t / 40.0) + 0.05 * rng.standard_normal(len(t))
    cur = 1e-3 * np.cos(t / 70.0)
    log = _log(t, e, cur)
    a = rng.uniform(t[0], t[-1] - 50, 30)
    b = a + rng.uniform(0.0, 50.0, 30)
    many = log.window_stats_many(T0 + a, T0 + b)
    for k in range(30):
        # independent check: interpolate on a fine grid containing all samples and edges
        grid = np.unique(np.concatenate([[a[k], b[k]], t[(t > a[k]) & (t < b[k])]]))
        ev = np.interp(grid, t, e)
        expect = np.trapezoid(ev, grid) / (b[k] - a[k]) if b[k] > a[k] else ev[0]
        assert many.potential_V[k] == pytest.approx(expect, rel=1e-7, abs=1e-9)
        assert many.potential_min_V[k] == pytest.approx(ev.min())
        assert many.potential_max_V[k] == pytest.approx(ev.max())
        single = log.window_stats(T0 + a[k], T0 + b[k])
        assert single == many[k]
        # charge from the first sample to the window midpoint
        m = 0.5 * (a[k] + b[k])
        g = np.concatenate([t[t < m], [m]])
        assert many.charge_C[k] == pytest.approx(np.trapezoid(np.interp(g, t, cur), g), rel=1e-7, abs=1e-12)


def test_gap_inside_window_gives_nan_and_status():
    t = np.concatenate([np.arange(0.0, 100.0), np.arange(300.0, 400.0)])  # 201 s hole
    log = _log(t, np.ones_like(t), np.full(len(t), 1e-3))
    gap = log.window_stats(T0 + 90.0, T0 + 150.0)
    assert gap.status == "echem_gap"
    assert np.isnan(gap.potential_V) and np.isnan(gap.potential_min_V) and np.isnan(gap.current_A)
    # a window that only touches the hole's far edge also overlaps it
    assert log.window_stats(T0 + 299.0, T0 + 310.0).status == "echem_gap"
    # windows clear of the hole are fine
    assert log.window_stats(T0 + 10.0, T0 + 98.0).status == "ok"
    assert log.window_stats(T0 + 300.0, T0 + 320.0).status == "ok"
    # a larger tolerance allows interpolating across it
    wide = log.window_stats(T0 + 90.0, T0 + 150.0, max_gap_s=500.0)
    assert wide.status == "ok" and wide.potential_V == pytest.approx(1.0)


def test_default_gap_threshold():
    assert _log(np.arange(0, 100, 10.0), np.zeros(10)).max_gap_default_s() == 60.0
    assert _log(np.arange(0, 400, 20.0), np.zeros(20)).max_gap_default_s() == 100.0


def test_outside_and_partial_windows():
    t = np.arange(0.0, 1000.0, 1.0)
    log = _log(t, t * 1e-3)
    assert log.window_stats(T0 - 500, T0 - 100).status == "no_potential"
    assert np.isnan(log.window_stats(T0 + 2000, T0 + 2100).potential_V)
    # starts 300 s before the log: mean over the covered part [0, 100]
    p = log.window_stats(T0 - 300, T0 + 100)
    assert p.status == "echem_partial"
    assert p.potential_V == pytest.approx(0.05)
    # a few seconds beyond the last sample is within tolerance: ok
    assert log.window_stats(T0 + 950, T0 + 1005).status == "ok"
    empty = EchemLog(np.zeros(0), np.zeros(0), np.zeros(0))
    assert empty.window_stats(T0, T0 + 1).status == "no_potential"


def test_charge_of_constant_current_and_datetime_inputs():
    t = np.arange(0.0, 3600.0, 10.0)
    log = _log(t, np.full(len(t), 0.1), np.full(len(t), 2e-3))
    start = datetime.fromtimestamp(T0, timezone.utc)
    w = log.window_stats(start + timedelta(seconds=1000), start + timedelta(seconds=1300))
    assert w.charge_C == pytest.approx(2e-3 * 1150.0)
    assert w.current_A == pytest.approx(2e-3)
    naive = start.replace(tzinfo=None)  # naive = UTC
    assert log.window_stats(naive + timedelta(seconds=1000), naive + timedelta(seconds=1300)) == w
    np_dt = np.array([np.datetime64(int((T0 + 1000) * 1e3), "ms")])
    assert log.window_stats_many(np_dt, np_dt + np.timedelta64(300, "s"))[0] == w
    # potential-only log: current and charge NaN
    w2 = _log(t, np.zeros(len(t))).window_stats(T0 + 100, T0 + 200)
    assert np.isnan(w2.current_A) and np.isnan(w2.charge_C) and w2.status == "ok"


def test_slice_and_validation():
    t = np.arange(0.0, 100.0)
    log = _log(t, t)
    s = log.slice(T0 + 10, T0 + 20)
    assert len(s) == 11 and s.potential_V[0] == 10.0
    with pytest.raises(ValueError):
        EchemLog(np.array([0.0, 0.0]), np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError):
        log.window_stats(T0 + 5, T0 + 1)
