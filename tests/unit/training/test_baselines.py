"""Baselines: descriptors against analytic values, obvious synthetic events found, causality."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lisentry.datasets.errors import ConfigError
from lisentry.datasets.frame import CLASSES
from lisentry.models.features import echem_features
from lisentry.training.baselines import (BASELINES, FeatureBaseline, MiniRocketBaseline,
                                         RuleBaseline, causal_rate, frame_features,
                                         FEATURE_NAMES, run_macro_f1, spectral_descriptors,
                                         window_tensor)
from lisentry.training.data import RunTensors
from lisentry.training.evaluate import evaluate_predictions
from lisentry.training.metrics import macro_f1

GRID = np.linspace(-100.0, 400.0, 1001)


def gauss(center, fwhm, area):
    s = fwhm / (2 * math.sqrt(2 * math.log(2)))
    return area * np.exp(-0.5 * ((GRID - center) / s) ** 2) / (s * math.sqrt(2 * math.pi))


def make_run(rng, n=40, onset=None, kind="metal", dt=300.0, noise=2e-4, run_id="r"):
    """A run whose only change is a peak growing from frame ``onset`` (metal at 270 ppm:
    plating_onset; cluster at 60 ppm with the potential below 0 V: cluster_growth)."""
    base = gauss(0.0, 4.0, 0.7) + gauss(245.0, 12.0, 0.3)
    spectra = np.tile(base, (n, 1)) + rng.normal(0, noise, (n, len(GRID)))
    y = np.zeros(n, np.int64)
    v = np.full(n, 0.08)
    if onset is not None:
        k = np.arange(n) - onset
        amt = np.clip(k + 1, 0, None) * 0.006
        if kind == "metal":
            spectra += amt[:, None] * gauss(270.0, 6.0, 1.0)[None, :]
            y[k >= 0] = CLASSES.index("plating_onset")
        else:
            spectra += amt[:, None] * gauss(60.0, 25.0, 1.0)[None, :]
            y[k >= 0] = CLASSES.index("cluster_growth")
            v[k >= 0] = -0.01
    t = np.arange(n) * dt
    cur = np.full(n, 2e-4)
    e, m = echem_features(t, v, cur, cur * t)
    return RunTensors(run_id, f"syn_{kind}", t, spectra.astype(np.float32), e, m, y,
                      np.full((n, 0), np.nan, np.float32),
                      None if onset is None or kind != "metal" else float(t[onset]), None)


@pytest.fixture(scope="module")
def metal_runs():
    rng = np.random.default_rng(1)
    train = [make_run(rng, onset=o, run_id=f"tr{o}") for o in (8, 14, 20, 26)]
    train += [make_run(rng, onset=None, run_id="tr_none")]
    test = [make_run(rng, onset=17, run_id="te17"), make_run(rng, onset=None, run_id="te_none")]
    return train, test


def onset_frame(labels, cls="plating_onset"):
    hits = np.flatnonzero(np.asarray(labels) == cls)
    return int(hits[0]) if len(hits) else None


# ---------------------------------------------------------------- descriptors
def test_descriptors_match_analytic_peak_areas():
    rng = np.random.default_rng(0)
    run = make_run(rng, onset=5, noise=0.0)
    d = spectral_descriptors(run.spectra)
    # metal area at frame t is 0.006 * (t - 5 + 1) beyond the initial lines
    expect = np.clip(np.arange(40) - 4, 0, None) * 0.006
    # 255-285 ppm holds 98.6 % of a 6-ppm-FWHM Gaussian centred at 270 (|x| < 15 = 5.9 sigma)
    np.testing.assert_allclose(d["metal_extra"], expect, atol=2e-4)
    assert d["metal_peak_ppm"][20] == pytest.approx(270.0, abs=1.0)
    assert np.isnan(d["metal_peak_ppm"][0])
    # the CE window 235-275 ppm holds the 245-ppm line and part of the new 270-ppm peak
    from scipy.stats import norm
    sig_ce, sig_m = 12.0 / 2.3548, 6.0 / 2.3548
    in_ce = norm.cdf(30 / sig_ce) - norm.cdf(-10 / sig_ce)
    in_m = norm.cdf(5 / sig_m) - norm.cdf(-35 / sig_m)
    np.testing.assert_allclose(d["ce_frac"], 1 + expect * in_m / (0.3 * in_ce), atol=2e-3)
    assert d["cluster_rel"][-1] == pytest.approx(0.0, abs=1e-6)
    # the first frame's total is the sum of the two initial lines (0.7 + 0.3)
    assert d["total"][0] == pytest.approx(1.0, abs=1e-3)


def test_cluster_descriptor_and_rate():
    rng = np.random.default_rng(0)
    run = make_run(rng, onset=10, kind="cluster", noise=0.0)
    d = spectral_descriptors(run.spectra)
    from scipy.stats import norm
    sig = 25.0 / 2.3548
    frac = norm.cdf(70 / sig) - norm.cdf(-50 / sig)  # share of the peak inside 10..130 ppm
    expect = np.clip(np.arange(40) - 9, 0, None) * 0.006 * frac
    np.testing.assert_allclose(d["cluster_rel"], expect, atol=3e-4)
    rate = causal_rate(d["cluster_rel"], run.t_s, 1)
    # 0.006 per 300 s frame = 0.072 per hour
    assert rate[20] == pytest.approx(0.072 * frac, rel=1e-3)
    assert d["cluster_peak_ppm"][25] == pytest.approx(60.0, abs=1.0)


def test_reference_is_causal_for_the_first_frames():
    rng = np.random.default_rng(0)
    run = make_run(rng, onset=0, noise=0.0)  # metal already growing in frames 0..2
    d = spectral_descriptors(run.spectra, ref_frames=3)
    # frame 1's reference is the mean of frames 0 and 1 -> extra = (0.012 - 0.009) = 0.003
    assert d["metal_extra"][1] == pytest.approx(0.003, abs=2e-4)


def test_frame_features_shape_and_window_tensor():
    rng = np.random.default_rng(0)
    run = make_run(rng, onset=5)
    X = frame_features(run)
    assert X.shape == (40, len(FEATURE_NAMES))
    W = window_tensor(run, window=8, n_bins=64)
    assert W.shape == (40, 130, 8)
    # padding by repeating the first frame; last column is the current frame
    np.testing.assert_array_equal(W[0], np.repeat(W[0][:, -1:], 8, axis=1))
    np.testing.assert_array_equal(W[10][:, -2], W[9][:, -1])
    # difference-to-first-frame channels are 0 on frame 0
    assert np.all(W[0, 64:128] == 0)
    # bin means ignore NaN; a bin with no covered point is 0
    flat = RunTensors("f", "f", run.t_s[:3], np.full((3, 1001), 2.0, np.float32), run.echem[:3],
                      run.echem_mask[:3], run.y[:3], run.aux[:3], None, None)
    flat.spectra[:, :40] = np.nan           # bins hold 15-16 points: bin 0 empty, bin 2 partly
    Wf = window_tensor(flat, window=2, n_bins=64)
    assert Wf[2, 0, -1] == 0.0 and Wf[2, 1, -1] == 0.0
    np.testing.assert_allclose(Wf[2, 2:64, -1], 2.0, rtol=1e-6)
    np.testing.assert_allclose(Wf[2, 128:130, -1], run.echem[2, :2], rtol=1e-6)


def test_run_macro_f1_equals_metrics_module():
    rng = np.random.default_rng(3)
    for _ in range(50):
        yt = rng.integers(-1, 4, 30)
        yp = rng.integers(0, 4, 30)
        ref = macro_f1([CLASSES[i] if i >= 0 else None for i in yt], [CLASSES[i] for i in yp])
        assert run_macro_f1(yt, yp) == pytest.approx(ref)


# ---------------------------------------------------------------- baselines find the obvious
@pytest.mark.parametrize("cls, kwargs, max_delay, min_f1", [
    (RuleBaseline, {}, 3, 0.9),
    (FeatureBaseline, {"max_iter": 40}, 3, 0.9),
])
def test_baselines_find_a_growing_metal_peak(metal_runs, cls, kwargs, max_delay, min_f1):
    train, test = metal_runs
    model = cls(**kwargs).fit(train)
    labels = model.predict_labels_runs(test)
    first = onset_frame(labels[0])
    assert first is not None and 17 <= first <= 17 + max_delay
    assert onset_frame(labels[1]) is None          # no metal, no alarm
    assert run_macro_f1(test[0].y, np.array([CLASSES.index(s) for s in labels[0]])) > min_f1
    probs = model.predict_proba_runs(test)
    assert all(p.shape == (len(r), 4) for p, r in zip(probs, test))
    np.testing.assert_allclose(probs[0].sum(axis=1), 1.0, atol=1e-9)


def test_minirocket_learns_the_metal_peak(metal_runs):
    # random channel groups rarely include the one informative bin of 130 channels, so only
    # a weaker claim than for the other two: plating is much more probable after the onset
    train, test = metal_runs
    model = MiniRocketBaseline().fit(train)
    p = model.predict_proba_runs(test)
    plating = CLASSES.index("plating_onset")
    assert p[0][22:, plating].mean() > p[0][:17, plating].mean() + 0.3
    assert p[1][:, plating].mean() < 0.2
    assert model.temperature_ > 0


def test_rule_baseline_tunes_metal_threshold_and_finds_cluster_growth():
    rng = np.random.default_rng(5)
    train = [make_run(rng, onset=o, kind="cluster", run_id=f"c{o}") for o in (6, 15, 24)]
    train += [make_run(rng, onset=None, run_id="none")]
    rb = RuleBaseline().fit(train)
    assert rb.train_score_ > 0.9
    test = make_run(rng, onset=12, kind="cluster")
    lab = rb.predict_labels_runs([test])[0]
    first = onset_frame(lab, "cluster_growth")
    assert first is not None and 12 <= first <= 16
    assert "plating_onset" not in set(lab) and "imminent_short" not in set(lab)


def test_rule_baseline_grid_search_improves_over_bad_start(metal_runs):
    train, _ = metal_runs
    start = RuleBaseline(metal_min=10.0, grid={})        # no tuning: never fires
    bad = start.fit(train).train_score_
    tuned = RuleBaseline(metal_min=10.0, grid={"metal_min": (10.0, 0.005, 0.01)}).fit(train)
    assert tuned.thresholds_["metal_min"] in (0.005, 0.01)
    assert tuned.train_score_ > bad + 0.2


# ---------------------------------------------------------------- causality
@pytest.mark.parametrize("cls, kwargs", [
    (RuleBaseline, {"grid": {}}),
    (FeatureBaseline, {"max_iter": 20}),
    (MiniRocketBaseline, {"n_features": 672, "n_groups": 2}),
])
def test_prediction_at_t_ignores_future_frames(metal_runs, cls, kwargs):
    train, test = metal_runs
    model = cls(**kwargs).fit(train)
    run = test[0]
    t0 = 12
    rng = np.random.default_rng(9)
    spectra = run.spectra.copy()
    spectra[t0 + 1:] = rng.normal(0, 0.05, spectra[t0 + 1:].shape)   # a wild future
    spectra[t0 + 1:, 900:] = np.nan
    v = np.full(len(run), 0.08)
    v[t0 + 1:] = -0.5 + rng.normal(0, 0.1, len(run) - t0 - 1)
    cur = np.full(len(run), 2e-4)
    e, m = echem_features(run.t_s, v, cur, cur * run.t_s)
    changed = RunTensors(run.run_id, run.family, run.t_s, spectra, e, m, run.y, run.aux,
                         run.t_onset_s, run.t_short_s)
    p_a = model.predict_proba_runs([run])[0]
    p_b = model.predict_proba_runs([changed])[0]
    np.testing.assert_array_equal(p_a[:t0 + 1], p_b[:t0 + 1])
    assert not np.array_equal(p_a, p_b) or cls is RuleBaseline
    l_a, l_b = model.predict_labels_runs([run])[0], model.predict_labels_runs([changed])[0]
    assert l_a[:t0 + 1].tolist() == l_b[:t0 + 1].tolist()


# ---------------------------------------------------------------- contract
def test_sklearn_contract_and_errors(metal_runs):
    train, test = metal_runs
    for name, cls in BASELINES.items():
        est = cls()
        params = est.get_params()
        assert not any(k.endswith("_") for k in vars(est)), name   # __init__ only stores
        assert cls(**params).get_params().keys() == params.keys()
        with pytest.raises(ConfigError, match="did you mean"):
            est.set_params(**{list(params)[0] + "x": 1})
        with pytest.raises(ConfigError, match="at least one run"):
            cls().fit([])
    with pytest.raises(ConfigError, match="not fitted"):
        FeatureBaseline().predict_proba_runs(test)
    with pytest.raises(ConfigError, match="unknown keys"):
        RuleBaseline(grid={"metal_mni": (1,)}).fit(train)


def test_predictions_feed_the_shared_metrics(metal_runs):
    train, test = metal_runs
    rb = RuleBaseline().fit(train)
    res = evaluate_predictions(test, rb.predict_runs(test))
    assert res["overall"]["n_runs"] == 2
    pl = res["overall"]["plating"]
    assert pl["n_detected"] == 1 and pl["n_runs_with_onset"] == 1
    assert 0 <= pl["delay_s"]["median"] <= 4 * 300.0


def test_rule_plating_latch_releases_below_half_threshold():
    n = 8
    m = np.array([0.0, 0.02, 0.012, 0.006, 0.004, 0.02, 0.0, 0.0])
    sig = {"cluster_rel": np.zeros(n), "cluster_rate": np.zeros(n), "metal_extra": m,
           "ce_frac": np.ones(n), "v": np.full(n, 0.1), "dvdt": np.zeros(n),
           "noise_mV": np.zeros(n)}
    th = {**RuleBaseline()._thresholds(), "metal_min": 0.01}
    lab = RuleBaseline._apply(sig, th)
    # on above 0.01, held while above 0.005, released at 0.004, on again at 0.02
    assert lab.tolist() == [0, 2, 2, 2, 0, 2, 0, 0]


def test_docstring_examples_of_baselines_and_their_window_features():
    import doctest
    import lisentry.models.window_features as feats
    import lisentry.training.baselines as mod
    for m in (mod, feats):
        res = doctest.testmod(m, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        assert res.failed == 0, m.__name__
    assert doctest.testmod(feats).attempted > 0     # causal_rate's example lives there now
