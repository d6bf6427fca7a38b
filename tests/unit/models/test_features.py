"""Tests of lisentry.models.features: masked spectra and causal echem features."""
from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from lisentry.datasets.frame import AcquisitionParams, Frame
from lisentry.models.features import (ECHEM_FEATURES, EchemFeatureState, echem_features,
                                      frame_arrays, spectrum_inputs)

NAN = float("nan")
COL = {name: k for k, name in enumerate(ECHEM_FEATURES)}

# A hand-made run: 30-min frames, one missing potential, a current jump, a sign change,
# a missing current and missing charges.
T = [0.0, 1800.0, 3600.0, 5400.0, 7200.0, 9000.0]
V = [1.00, 0.95, NAN, 0.85, 0.80, 0.90]
I = [1e-4, 1e-4, 2e-4, 2e-4, -2e-4, NAN]
Q = [0.0, 0.18, NAN, 0.90, 1.26, NAN]


def test_spectrum_inputs_masks_nan_and_inf():
    v, m = spectrum_inputs(np.array([[0.5, np.nan, -np.inf, 2.0]]))
    assert v.dtype == np.float32 and m.dtype == np.float32
    assert v.tolist() == [[0.5, 0.0, 0.0, 2.0]]
    assert m.tolist() == [[1.0, 0.0, 0.0, 1.0]]


def test_echem_features_hand_computed():
    f, m = echem_features(T, V, I, Q)
    assert f.shape == (6, len(ECHEM_FEATURES)) and f.dtype == np.float32
    # potential: missing at frame 2 -> masked and zero, not a silent 0 V reading
    assert m[:, COL["potential_V"]].tolist() == [1, 1, 0, 1, 1, 1]
    assert f[2, COL["potential_V"]] == 0
    np.testing.assert_allclose(f[[0, 1, 3, 4, 5], 0], [1.0, 0.95, 0.85, 0.80, 0.90], rtol=1e-6)
    # current: asinh(I / 0.1 mA)
    c = COL["current_asinh"]
    assert m[:, c].tolist() == [1, 1, 1, 1, 1, 0]
    np.testing.assert_allclose(f[:5, c], np.arcsinh([1, 1, 2, 2, -2]), rtol=1e-6)
    # dV/dt: -0.05 V / 0.5 h = -0.1 V/h at frame 1; frame 3 uses frame 1 (frame 2 has no
    # potential): -0.10 V / 1 h; frame 4: -0.05 V / 0.5 h; frame 5: +0.1 V / 0.5 h = 0.2 V/h
    d = COL["dVdt_asinh"]
    assert m[:, d].tolist() == [0, 1, 0, 1, 1, 1]
    np.testing.assert_allclose(f[[1, 3, 4, 5], d], np.arcsinh([-1.0, -1.0, -1.0, 2.0]), atol=1e-5)
    # charge in mAh (3.6 C), asinh-scaled
    q = COL["charge_asinh"]
    assert m[:, q].tolist() == [1, 1, 0, 1, 1, 0]
    np.testing.assert_allclose(f[[0, 1, 3, 4], q], np.arcsinh([0, 0.05, 0.25, 0.35]), rtol=1e-5)
    # time since the last current step: steps at 0 s (first), 3600 s (x2 jump), 7200 s (sign)
    s = COL["log1p_h_since_step"]
    assert m[:, s].tolist() == [1] * 6
    np.testing.assert_allclose(f[:, s], np.log1p([0, 0.5, 0, 0.5, 0, 0.5]), atol=1e-6)


def test_potential_noise_is_detrended_rms():
    n = COL["potential_noise_asinh"]
    f, m = echem_features(T, V, I, Q)
    # frames 0-1: fewer than 3 known potentials; frame 2: no potential
    assert m[:3, n].tolist() == [0, 0, 0]
    # frames 3 and 4: the known potentials lie exactly on a -0.1 V/h line -> rms 0
    np.testing.assert_allclose(f[[3, 4], n], [0.0, 0.0], atol=1e-3)
    # frame 5: window = frames 1..5, known at t = 0.5, 1.5, 2.0, 2.5 h
    th = np.array([0.5, 1.5, 2.0, 2.5])
    vv = np.array([0.95, 0.85, 0.80, 0.90])
    resid = vv - np.polyval(np.polyfit(th, vv, 1), th)
    expect = math.asinh(math.sqrt(np.mean(resid ** 2)) / 1e-3)
    assert m[5, n] == 1
    assert f[5, n] == pytest.approx(expect, rel=1e-5)


def test_a_spike_raises_the_noise_feature_but_a_ramp_does_not():
    t = np.arange(10) * 300.0
    ramp = 0.5 - 1e-4 * t  # -0.36 V/h, perfectly linear
    spiky = ramp.copy()
    spiky[7] += 0.02
    nan = np.full(10, np.nan)
    n = COL["potential_noise_asinh"]
    f_ramp, _ = echem_features(t, ramp, nan, nan)
    f_spike, _ = echem_features(t, spiky, nan, nan)
    assert np.all(np.abs(f_ramp[2:, n]) < 1e-2)
    assert f_spike[7, n] > 2.0  # several mV of residual
    np.testing.assert_allclose(f_spike[:7], f_ramp[:7])  # causal: nothing changes before


def test_relative_current_trend_hand_computed():
    f, m = echem_features(T, V, I, Q)
    d1, d3 = COL["dlnI_dt_asinh"], COL["dlnI_dt_3_asinh"]
    # frame 1: same current -> 0; frame 2: x2 in 0.5 h -> ln 2 / 0.5 h; frame 3: flat;
    # frame 4: sign change -> undefined; frame 5: current unknown -> undefined
    assert m[:, d1].tolist() == [0, 1, 1, 1, 0, 0]
    np.testing.assert_allclose(f[1:4, d1], np.arcsinh([0.0, math.log(2) / 0.5 / 0.1, 0.0]),
                               rtol=1e-6, atol=1e-7)
    # 3 frames back: frame 3 vs frame 0 (ln 2 over 1.5 h); frame 4 vs 1: sign change
    assert m[:, d3].tolist() == [0, 0, 0, 1, 0, 0]
    assert f[3, d3] == pytest.approx(math.asinh(math.log(2) / 1.5 / 0.1), rel=1e-6)


def test_a_soft_short_leak_turns_the_hold_current_trend_positive():
    # potentiostatic hold: the current decays 1 % per 7.5-min frame, then a leak of
    # -5.5 mV / R_s with R_s falling from 30 kOhm adds a growing current
    t = np.arange(40) * 450.0
    i_cell = 10e-6 * 0.99 ** np.arange(40)
    r_s = np.where(np.arange(40) < 30, np.inf, 3e4 / 2.0 ** (np.arange(40) - 30))
    i = i_cell + 5.5e-3 / r_s
    v = np.full(40, -5.5e-3)
    f, m = echem_features(t, v, i, np.full(40, np.nan))
    d3 = COL["dlnI_dt_3_asinh"]
    assert np.all(f[3:30, d3] < 0)        # healthy hold: decaying current
    assert np.all(f[32:, d3] > 0.5)       # leak: rising current
    # the absolute-current feature barely moves over the same frames (why the trend is needed)
    c = COL["current_asinh"]
    assert abs(f[32, c] - f[29, c]) < 0.01


def test_streaming_equals_batch_and_state_round_trips_through_json():
    rng = np.random.default_rng(3)
    n = 40
    t = np.cumsum(rng.uniform(200, 400, n))
    v = rng.normal(0.1, 0.05, n)
    v[rng.random(n) < 0.2] = np.nan
    i = rng.choice([1e-4, -1e-4, 3e-4, 0.0, np.nan], n)
    q = np.cumsum(np.nan_to_num(i) * 300)
    fb, mb = echem_features(t, v, i, q)
    st = EchemFeatureState()
    for k in range(n):
        if k == 17:  # save and restore mid-run
            st = EchemFeatureState.from_dict(json.loads(json.dumps(st.to_dict())))
        fs, ms = st.update(t[k], v[k], i[k], q[k])
        np.testing.assert_array_equal(fs, fb[k])
        np.testing.assert_array_equal(ms, mb[k])
    # a prefix gives the same rows as the full run (causality)
    fp, mp = echem_features(t[:25], v[:25], i[:25], q[:25])
    np.testing.assert_array_equal(fp, fb[:25])
    np.testing.assert_array_equal(mp, mb[:25])
    assert np.all(fb[mb == 0] == 0)


def test_time_going_backwards_is_an_error():
    with pytest.raises(ValueError, match="must not decrease"):
        echem_features([0, 10, 5], [1, 1, 1], [0, 0, 0], [0, 0, 0])
    with pytest.raises(ValueError, match="same length"):
        echem_features([0, 10], [1], [0, 0], [0, 0])


def test_frame_arrays_from_frames():
    grid = np.linspace(-100, 400, 11)
    acq = AcquisitionParams("7Li", 194.4, 194.4, 0.0, 1e5, 1024)
    t0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
    frames = []
    for k in range(3):
        inten = np.full(11, 0.1 * k, dtype=np.float32)
        inten[0] = np.nan
        frames.append(Frame("r", k, k + 1, t0 + timedelta(seconds=600 * k),
                            t0 + timedelta(seconds=600 * k + 300), 150.0 + 600 * k, "7Li", 194.4,
                            grid, inten, acq, potential_V=0.5 - 0.01 * k,
                            current_A=1e-4, charge_C=0.06 * k))
    spectra, e, m = frame_arrays(frames)
    assert spectra.shape == (3, 11) and np.isnan(spectra[:, 0]).all()
    fe, fm = echem_features([150, 750, 1350], [0.5, 0.49, 0.48], [1e-4] * 3, [0, 0.06, 0.12])
    np.testing.assert_array_equal(e, fe)
    np.testing.assert_array_equal(m, fm)


# ---- symmetric cells: sign-free features ----------------------------------------------------
def _charge(t, i):
    """Cumulative charge, C (trapezoid over the log), as a potentiostat reports it."""
    return np.concatenate([[0.0], np.cumsum(0.5 * (i[1:] + i[:-1]) * np.diff(t))])


def test_sign_free_features_are_the_same_for_a_symmetric_cell_wired_either_way():
    """The one-way Li | Li family simulated with both polarities: the signed features differ,
    the sign-free ones are identical, frame for frame (incl. steps and d ln|I|/dt)."""
    import dataclasses

    from lisentry.datasets.sim.scenarios import get_family, sample_params
    fam = get_family("li_plating_liquid_li")
    feats = {}
    for pol in ((0.5, 1.0), (-1.0, -0.5)):
        f = dataclasses.replace(fam, randomize={**dict(fam.randomize), "polarity": list(pol)})
        tr = sample_params(f, 3).simulate(3)
        t, v, i = tr.t_s[::30], tr.potential_V[::30], tr.current_A[::30]
        feats[pol[0] > 0] = {sf: echem_features(t, v, i, _charge(t, i), sign_free=sf)
                             for sf in (False, True)}
    a, b = feats[True], feats[False]
    assert not np.allclose(a[False][0][:, COL["potential_V"]], b[False][0][:, COL["potential_V"]])
    np.testing.assert_allclose(a[True][0], b[True][0], atol=1e-6)
    np.testing.assert_array_equal(a[True][1], b[True][1])
    # the step clock and the relative current trend do not depend on the reading
    for name in ("log1p_h_since_step", "dlnI_dt_asinh", "dlnI_dt_3_asinh"):
        np.testing.assert_array_equal(a[True][0][:, COL[name]], a[False][0][:, COL[name]])
    assert a[True][1][:, COL["dlnI_dt_asinh"]].sum() > 10          # defined on many frames


def test_sign_free_reads_magnitudes_and_streams_like_batch():
    fs, ms = echem_features(T, V, I, Q, sign_free=True)
    fa, ma = echem_features(T, np.abs(V), np.abs(I), np.abs(Q))
    for name in ("potential_V", "current_asinh", "charge_asinh", "dVdt_asinh", "potential_noise_asinh"):
        np.testing.assert_allclose(fs[:, COL[name]], fa[:, COL[name]], atol=1e-7)
        np.testing.assert_array_equal(ms[:, COL[name]], ma[:, COL[name]])
    # steps and current trends come from the signed current (|I| would hide the reversal)
    fsg, msg = echem_features(T, V, I, Q)
    for name in ("log1p_h_since_step", "dlnI_dt_asinh", "dlnI_dt_3_asinh"):
        np.testing.assert_array_equal(fs[:, COL[name]], fsg[:, COL[name]])
        np.testing.assert_array_equal(ms[:, COL[name]], msg[:, COL[name]])
    v_neg = [-x for x in V]
    f_neg, _ = echem_features(T, v_neg, I, Q, sign_free=True)
    np.testing.assert_array_equal(f_neg, fs)
    # the sign change of the current (row 4) is still a step
    assert fs[4, COL["log1p_h_since_step"]] == 0.0 and fs[3, COL["log1p_h_since_step"]] > 0
    st = EchemFeatureState(sign_free=True)
    for k in range(len(T)):
        if k == 3:   # the reading survives a save and restore
            st = EchemFeatureState.from_dict(json.loads(json.dumps(st.to_dict())))
            assert st.sign_free
        row, _ = st.update(T[k], v_neg[k], I[k], Q[k])
        np.testing.assert_array_equal(row, fs[k])
    # a state saved before the option existed reads signed
    d = EchemFeatureState().to_dict()
    d.pop("sign_free")
    assert not EchemFeatureState.from_dict(d).sign_free
