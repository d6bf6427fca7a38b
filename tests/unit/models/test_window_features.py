"""Window features as model inputs: streaming = batch, causality, scaling, bundle and detector."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from lisentry.datasets.pipeline import Pipeline, ProcessingConfig
from lisentry.datasets.sim.run import simulate_run, to_run
from lisentry.models.features import N_ECHEM, echem_features
from lisentry.models.window_features import (FEATURE_NAMES, MODEL_FEATURES, N_MODEL_FEATURES,
                                             N_WINDOW_FEATURES, POTENTIOSTAT_FEATURES,
                                             WindowFeatureState, WindowInputs,
                                             potentiostat_columns, window_features)

GRID = np.linspace(-100.0, 400.0, 1001)
COL = {n: j for j, n in enumerate(FEATURE_NAMES)}


@pytest.fixture(scope="module")
def run_frames():
    """A simulated overlithiation run through the real pipeline, its potential log starting
    at the fourth frame (as on the real Li | Li run) and one frame without a potential."""
    frames = to_run(simulate_run("hc_sulfide_overlithiation", 7, max_frames=14),
                    Pipeline(ProcessingConfig())).frames
    return [dataclasses.replace(f, potential_V=math.nan, current_A=math.nan)
            if i in (0, 1, 2, 8) else f for i, f in enumerate(frames)]


def arrays(frames):
    S = np.stack([f.intensity for f in frames]).astype(np.float32)
    t = np.array([f.t_s for f in frames])
    e, m = echem_features(t, [f.potential_V for f in frames], [f.current_A for f in frames],
                          [f.charge_C for f in frames])
    return S, t, e, m


def test_streaming_equals_batch_on_a_processed_run(run_frames):
    S, t, e, m = arrays(run_frames)
    batch = window_features(S, t, e, m, GRID)
    st = WindowFeatureState(GRID)
    stream = np.stack([st.update(S[i], t[i], e[i], m[i]) for i in range(len(S))])
    assert batch.shape == (len(S), N_WINDOW_FEATURES)
    np.testing.assert_array_equal(np.isnan(batch), np.isnan(stream))
    np.testing.assert_allclose(stream, batch, rtol=1e-9, atol=1e-12, equal_nan=True)
    # the potentiostat's columns are undefined before its log starts; the spectra's are not
    spectral = [j for j, n in enumerate(FEATURE_NAMES) if n not in POTENTIOSTAT_FEATURES
                and not n.endswith("peak_ppm") and "peak_ppm" not in n]
    assert np.isnan(batch[:3, COL["potential_V"]]).all()
    assert np.isfinite(batch[:, spectral]).all()
    assert batch[3, COL["potential_min_so_far_V"]] == pytest.approx(run_frames[3].potential_V)


def test_state_survives_json_and_is_rebuilt_from_a_batch(run_frames):
    S, t, e, m = arrays(run_frames)
    batch = window_features(S, t, e, m, GRID)
    st = WindowFeatureState(GRID)
    for i in range(6):
        st.update(S[i], t[i], e[i], m[i])
    again = WindowFeatureState.from_dict(json.loads(json.dumps(st.to_dict())), GRID)
    rest = np.stack([again.update(S[i], t[i], e[i], m[i]) for i in range(6, len(S))])
    np.testing.assert_allclose(rest, batch[6:], rtol=1e-9, atol=1e-12, equal_nan=True)
    for k in (1, 2, 9):     # fewer and more frames than the reference / rate memory
        rebuilt = WindowFeatureState.from_batch(S[:k], t[:k], batch[:k], GRID)
        rest = np.stack([rebuilt.update(S[i], t[i], e[i], m[i]) for i in range(k, len(S))])
        np.testing.assert_allclose(rest, batch[k:], rtol=1e-9, atol=1e-12, equal_nan=True)


def test_features_are_causal(run_frames):
    S, t, e, m = arrays(run_frames)
    a = window_features(S, t, e, m, GRID)
    S2, e2 = S.copy(), e.copy()
    S2[7:] *= 3.0
    e2[7:] += 1.0
    b = window_features(S2, t, e2, m, GRID)
    np.testing.assert_array_equal(a[:7], b[:7])
    assert not np.allclose(a[7:], b[7:], equal_nan=True)


def test_a_growing_metal_line_reads_as_new_metal_and_its_rate():
    """New metal at 270 ppm growing by 0.01 of the initial signal per 10-min frame."""
    s = 4.0 / 2.355
    host = np.exp(-0.5 * (GRID / s) ** 2) / (s * math.sqrt(2 * math.pi))
    metal = np.exp(-0.5 * ((GRID - 270.0) / s) ** 2) / (s * math.sqrt(2 * math.pi))
    n = 8
    S = np.stack([host + 0.01 * max(0, k - 3) * metal for k in range(n)])
    t = 600.0 * np.arange(n)
    e, m = echem_features(t, np.full(n, 0.1), np.full(n, 1e-4), np.zeros(n))
    f = window_features(S, t, e, m, GRID)
    np.testing.assert_allclose(f[:4, COL["metal_extra"]], 0.0, atol=2e-3)
    assert f[7, COL["metal_extra"]] == pytest.approx(0.04, rel=0.1)
    assert f[7, COL["d1_metal_extra_per_h"]] == pytest.approx(0.06, rel=0.1)    # 0.01 / 10 min
    assert f[7, COL["metal_peak_ppm"]] == pytest.approx(270.0, abs=1.0)
    assert abs(f[7, COL["cluster_rel"]]) < 2e-3


def test_inputs_scale_mask_and_card(run_frames):
    S, t, e, m = arrays(run_frames)
    w = WindowInputs.fit([(S, t, e, m), (S[:8], t[:8], e[:8], m[:8])], GRID)
    assert w.scale.shape == (N_MODEL_FEATURES,) and (w.scale > 0).all()
    assert set(MODEL_FEATURES) == set(FEATURE_NAMES) - set(POTENTIOSTAT_FEATURES)
    wide, mask = w.widen(S, t, e, m)
    assert wide.shape == (len(S), N_ECHEM + N_MODEL_FEATURES) and wide.dtype == np.float32
    np.testing.assert_array_equal(wide[:, :N_ECHEM], e)
    raw = window_features(S, t, e, m, GRID)[:, [COL[n] for n in MODEL_FEATURES]]
    np.testing.assert_array_equal(mask[:, N_ECHEM:], np.isfinite(raw))
    assert (wide[:, N_ECHEM:][~np.isfinite(raw)] == 0).all()      # masked, never silently used
    np.testing.assert_allclose(wide[:, N_ECHEM:][np.isfinite(raw)],
                               np.arcsinh(raw / w.scale)[np.isfinite(raw)], rtol=1e-5)
    back = WindowInputs.from_card(json.loads(json.dumps(w.card())), GRID)
    np.testing.assert_array_equal(back.scale, w.scale)
    with pytest.raises(ValueError, match="window features v1"):   # the 31-column version
        WindowInputs.from_card({**w.card(), "version": 1, "names": list(FEATURE_NAMES)}, GRID)
    with pytest.raises(ValueError, match="20 positive"):
        WindowInputs(np.zeros(N_WINDOW_FEATURES), GRID)


def test_the_all_31_set_reads_the_potentiostat_summaries_too(run_frames):
    """``feature_set="all"``: 31 columns, card round trip, and drop_echem's column mask covers
    the appended potentiostat summaries but not the spectral features."""
    S, t, e, m = arrays(run_frames)
    w = WindowInputs.fit([(S, t, e, m)], GRID, feature_set="all")
    assert w.n_features == N_WINDOW_FEATURES and w.feature_set == "all"
    wide, mask = w.widen(S, t, e, m)
    assert wide.shape == (len(S), N_ECHEM + N_WINDOW_FEATURES)
    raw = window_features(S, t, e, m, GRID)
    np.testing.assert_array_equal(mask[:, N_ECHEM:], np.isfinite(raw))
    assert not mask[:3, N_ECHEM + COL["potential_min_so_far_V"]].any()   # no log yet
    assert mask[5:, N_ECHEM + COL["potential_min_so_far_V"]].all()
    back = WindowInputs.from_card(json.loads(json.dumps(w.card())), GRID)
    assert back.names == FEATURE_NAMES and back.feature_set == "all"
    np.testing.assert_array_equal(back.widen(S, t, e, m)[0], wide)
    cols = potentiostat_columns(N_ECHEM + N_WINDOW_FEATURES)
    appended = cols[N_ECHEM:]
    assert cols[:N_ECHEM].all() and appended.sum() == len(POTENTIOSTAT_FEATURES)
    assert {FEATURE_NAMES[j] for j in np.flatnonzero(appended)} == set(POTENTIOSTAT_FEATURES)
    with pytest.raises(ValueError, match="one of"):
        WindowInputs.fit([(S, t, e, m)], GRID, feature_set="potentiostat")
    with pytest.raises(ValueError, match="not one of the sets"):
        WindowInputs(np.ones(3), GRID, names=FEATURE_NAMES[:3])


@pytest.mark.parametrize("feature_set", [None, "spectral", "all", "all_but_minimum"])
def test_drop_current_reproduces_a_potential_only_log(run_frames, feature_set):
    """``augment.drop_current`` masks exactly what an EC-Lab export of time and Ewe only (the
    measured run's) leaves undefined at inference, with or without window features."""
    from lisentry.training.data import RunTensors, augment_run
    S, t, e, m = arrays(run_frames)
    pot = [f.potential_V for f in run_frames]
    nan = [math.nan] * len(run_frames)
    e_only, m_only = echem_features(t, pot, nan, nan)
    if feature_set is None:
        wide, mask, wide0, mask0 = e, m, e_only, m_only
    else:
        w = WindowInputs.fit([(S, t, e, m)], GRID, feature_set=feature_set)
        (wide, mask), (wide0, mask0) = w.widen(S, t, e, m), w.widen(S, t, e_only, m_only)
    n = len(S)
    rt = RunTensors("r", "f", t, S, wide, mask, np.zeros(n, np.int64),
                    np.zeros((n, 4), np.float32), None, None)
    out = augment_run(rt, np.random.default_rng(0), {"drop_current": 1.0}, 0.5)
    if feature_set in ("all", "all_but_minimum"):
        # one exception: a causal rate is 0 (defined) at the first frame even without the
        # current; the augmentation masks it there too
        j = N_ECHEM + w.names.index("abs_current_rate_3_per_h")
        assert mask0[0, j] == 1 and wide0[0, j] == 0 and not mask0[1:, j].any()
        mask0 = mask0.copy()
        mask0[0, j] = 0
    np.testing.assert_array_equal(out.echem_mask, mask0)
    np.testing.assert_allclose(out.echem * mask0, wide0 * mask0, rtol=1e-6)
    assert (out.echem[mask0 == 0] == 0).all()
    assert mask0[:, 0].sum() > 0 and mask0[:, 1].sum() == 0      # potential kept, current gone


def test_a_dropped_potential_log_keeps_the_spectral_window_features(run_frames):
    """Training's drop_echem augmentation masks what a missing potential log leaves undefined
    at inference (the echem features), and only that: the model's window features are all
    read off the spectra."""
    from lisentry.training.data import RunTensors, augment_run
    cols = potentiostat_columns(N_ECHEM + N_MODEL_FEATURES)
    assert cols[:N_ECHEM].all() and not cols[N_ECHEM:].any()
    assert potentiostat_columns(N_ECHEM).all()
    S, t, e, m = arrays(run_frames)
    w = WindowInputs(np.ones(N_MODEL_FEATURES), GRID)
    wide, mask = w.widen(S, t, e, m)
    n = len(S)
    rt = RunTensors("r", "f", t, S, wide, mask, np.zeros(n, np.int64),
                    np.zeros((n, 4), np.float32), None, None)
    out = augment_run(rt, np.random.default_rng(0), {"drop_echem": 1.0}, 0.5)
    assert (out.echem_mask[:, cols] == 0).all() and (out.echem[:, cols] == 0).all()
    np.testing.assert_array_equal(out.echem_mask[:, ~cols], mask[:, ~cols])
    np.testing.assert_array_equal(out.echem[:, ~cols], wide[:, ~cols])
    # and without a potential log the detector's window features are the same
    nan = np.full(n, np.nan)
    e0, m0 = echem_features(t, nan, nan, nan)
    wide0, mask0 = w.widen(S, t, e0, m0)
    np.testing.assert_array_equal(wide0[:, ~cols], wide[:, ~cols])
    np.testing.assert_array_equal(mask0[:, cols], 0)


def window_bundle(tmp_path, n_echem=N_ECHEM + N_MODEL_FEATURES, card_window=True):
    from lisentry.models.bundle import save_bundle
    from lisentry.models.net import LisentryNet
    torch.manual_seed(0)
    net = LisentryNet(n_ppm=len(GRID), n_echem=n_echem, hidden=8, channels=(4, 4),
                      pooled_bins=8).eval()
    w = WindowInputs(np.linspace(0.01, 1.0, N_MODEL_FEATURES), GRID)
    card = {"ppm_grid": {"min": -100.0, "max": 400.0, "step": 0.5},
            "processing": ProcessingConfig().to_dict(), "temperature": 0.05,
            "detector": {"enter": 0.6, "exit": 0.4, "min_consecutive": 1, "horizon_s": 3600.0}}
    if card_window:
        card["window_features"] = w.card()
    return save_bundle(tmp_path / "wb", net, card), w


def test_bundle_records_the_window_inputs_and_refuses_a_width_mismatch(tmp_path):
    from lisentry.datasets.errors import ConfigError
    from lisentry.models.bundle import BundleError, load_bundle
    d, w = window_bundle(tmp_path)
    b = load_bundle(d)
    np.testing.assert_array_equal(b.window_inputs.scale, w.scale)
    assert json.loads((d / "card.json").read_text())["inputs"]["window_features"]["version"] == 2
    with pytest.raises(ConfigError, match="28 echem input columns"):
        window_bundle(tmp_path, card_window=False)
    with pytest.raises(ConfigError, match="takes 8 echem input columns"):
        window_bundle(tmp_path, n_echem=N_ECHEM)
    card = json.loads((d / "card.json").read_text())
    card["inputs"]["window_features"]["names"][0] = "something_else"
    (d / "card.json").write_text(json.dumps(card))
    with pytest.raises(BundleError, match="card.json: window features"):
        load_bundle(d)


def test_detector_streams_a_window_model_like_its_batch_labeller_and_resumes(tmp_path, run_frames):
    from lisentry.detector.online import OnlineDetector
    from lisentry.models.bundle import load_bundle
    d, _ = window_bundle(tmp_path)
    b = load_bundle(d)
    det = OnlineDetector(b)
    rows = []
    for f in run_frames[:7]:
        det.update(f)
        rows.append(dict(det.last_row))
    js, tensors = det.state_dict()
    det = OnlineDetector(b).load_state_dict(json.loads(json.dumps(js)), tensors)
    for f in run_frames[7:]:
        det.update(f)
        rows.append(dict(det.last_row))
    batch = OnlineDetector(b)
    brows = batch.label_frames(run_frames[:10])
    for f in run_frames[10:]:          # label_frames leaves the state update() would have
        batch.update(f)
        brows.append(dict(batch.last_row))
    p = lambda rs: np.array([[r[f"p_{c}"] for c in b.classes] for r in rs])  # noqa: E731
    np.testing.assert_allclose(p(rows), p(brows), atol=1e-6)
    assert [r["label"] for r in rows] == [r["label"] for r in brows]
    # the window features matter: the same model fed zeros there answers differently
    S, t, e, m = arrays(run_frames)
    wide, mask = b.window_inputs.widen(S, t, e, m)
    with torch.no_grad():
        full = b.model(torch.from_numpy(S)[None], torch.from_numpy(wide)[None],
                       echem_mask=torch.from_numpy(mask)[None])["logits"]
        wide[:, N_ECHEM:] = 0
        mask[:, N_ECHEM:] = 0
        blind = b.model(torch.from_numpy(S)[None], torch.from_numpy(wide)[None],
                        echem_mask=torch.from_numpy(mask)[None])["logits"]
    assert not torch.allclose(full, blind)


@pytest.fixture(scope="module")
def one_way_frames():
    """A simulated one-way Li | liquid | Li run: 1 h at open circuit, then stripping."""
    return to_run(simulate_run("li_plating_liquid_li", 0, max_frames=24),
                  Pipeline(ProcessingConfig())).frames


def _widened_run(frames, feature_set):
    """The run's window inputs (``feature_set``) and its widened :class:`RunTensors`."""
    from lisentry.training.data import RunTensors
    S, t, e, m = arrays(frames)
    w = WindowInputs.fit([(S, t, e, m)], GRID, feature_set=feature_set)
    wide, mask = w.widen(S, t, e, m)
    n = len(S)
    return w, RunTensors("r", "f", t, S, wide, mask, np.zeros(n, np.int64),
                         np.zeros((n, 4), np.float32), None, None)


def _late_log(frames, w, k):
    """Widened echem input and mask of the run whose log starts at frame ``k``, as the
    detector computes them."""
    late = [dataclasses.replace(f, potential_V=math.nan, current_A=math.nan, charge_C=math.nan)
            if i < k else f for i, f in enumerate(frames)]
    S, t, e_late, m_late = arrays(late)
    return w.widen(S, t, e_late, m_late)


def test_a_late_log_restarts_the_log_history_features(one_way_frames):
    """``drop_echem_prefix`` with all 31 window features: the features that summarize the log's
    past (running potential minimum, 3-frame changes) are those of a log that starts at the
    first unmasked frame, as the detector computes them on a measured run whose log starts
    late. Without the restart the minimum remembers the masked open-circuit rest (0 V)."""
    from lisentry.models.window_features import HISTORY_FEATURES
    from lisentry.training.data import augment_run
    frames = one_way_frames
    w, rt = _widened_run(frames, "all")
    rest = int(np.sum(np.abs(np.nan_to_num([f.current_A for f in frames])) == 0))
    assert 10 <= rest < 16
    cfg = {"drop_echem_prefix": 1.0, "drop_echem_prefix_max_frames": 20}
    for seed in range(50):    # a cut past the rest: the log starts under current
        out = augment_run(rt, np.random.default_rng(seed), cfg, 0.5, window=w)
        k = int(np.argmax(out.echem_mask[:, 0] > 0))
        if k > rest:
            break
    stale = augment_run(rt, np.random.default_rng(seed), cfg, 0.5)
    assert k > rest and np.all(out.echem_mask[k:, 0] == 1)
    wide_late, mask_late = _late_log(frames, w, k)
    cols = [N_ECHEM + w.names.index(n) for n in HISTORY_FEATURES]
    np.testing.assert_array_equal(out.echem_mask[k:, cols], mask_late[k:, cols])
    np.testing.assert_allclose(out.echem[k:, cols], wide_late[k:, cols], rtol=1e-6, atol=1e-7)
    j = N_ECHEM + w.names.index("potential_min_so_far_V")
    assert np.all(out.echem[k:, j] > 0)                          # stripping: positive potential
    assert np.all(stale.echem[k:, j] == 0)                       # the stale minimum saw the rest
    assert (out.echem[:k, cols] == 0).all() and (out.echem_mask[:k, cols] == 0).all()


def test_all_but_minimum_set():
    """``all_but_minimum``: the 31 less the running potential minimum, a width of its own (the
    loader tells the sets apart by width), and drop_echem's mask covers its 10 potentiostat
    summaries."""
    from lisentry.models.window_features import FEATURE_SETS
    names = FEATURE_SETS["all_but_minimum"]
    assert len(names) == N_WINDOW_FEATURES - 1 and "potential_min_so_far_V" not in names
    assert len({len(v) for v in FEATURE_SETS.values()}) == len(FEATURE_SETS)
    cols = potentiostat_columns(N_ECHEM + len(names))
    assert cols[:N_ECHEM].all() and cols[N_ECHEM:].sum() == len(POTENTIOSTAT_FEATURES) - 1
    w = WindowInputs(np.ones(len(names)), GRID, names=names)
    back = WindowInputs.from_card(json.loads(json.dumps(w.card())), GRID)
    assert back.feature_set == "all_but_minimum" and back.names == names


def test_a_log_that_starts_with_the_current(one_way_frames):
    """``drop_echem_until_current``: the log starts at the first frame under current (its
    open-circuit rest in another technique's file), with the log-history features of a log
    that starts there, as the detector computes them."""
    from lisentry.models.window_features import HISTORY_FEATURES
    from lisentry.training.data import augment_run
    frames = one_way_frames
    w, rt = _widened_run(frames, "all_but_minimum")
    S, t, wide, mask = rt.spectra, rt.t_s, rt.echem, rt.echem_mask
    out = augment_run(rt, np.random.default_rng(0), {"drop_echem_until_current": 1.0}, 0.5, window=w)
    k = int(np.argmax(np.abs(np.nan_to_num([f.current_A for f in frames])) > 0))
    assert k > 5
    assert not out.echem_mask[:k, :N_ECHEM].any() and out.echem_mask[k:, 0].all()
    wide_late, mask_late = _late_log(frames, w, k)
    cols = [N_ECHEM + w.names.index(n) for n in HISTORY_FEATURES if n in w.names]
    np.testing.assert_array_equal(out.echem_mask[k:, cols], mask_late[k:, cols])
    np.testing.assert_allclose(out.echem[k:, cols], wide_late[k:, cols], rtol=1e-6, atol=1e-7)
    # a run under current from its first frame is left as it is
    rt0 = dataclasses.replace(rt, echem=wide[k:], echem_mask=mask[k:], t_s=t[k:], spectra=S[k:],
                              y=rt.y[k:], aux=rt.aux[k:])
    same = augment_run(rt0, np.random.default_rng(0), {"drop_echem_until_current": 1.0}, 0.5, window=w)
    np.testing.assert_array_equal(same.echem_mask, mask[k:])


def test_noisier_spectra_get_their_window_features_computed_anew(run_frames):
    """``augment.noise_prob``: the window features of a noisier run are those the detector
    computes from the noisier spectra, not the clean run's; the echem columns are untouched."""
    from lisentry.training.data import augment_run, noise_window_mask
    w, rt = _widened_run(run_frames, "all_but_minimum")
    cfg = {"noise_prob": 1.0, "noise_max_factor": 10.0, "intensity_jitter": 0.0, "shift_ppm": 0.0}
    out = augment_run(rt, np.random.default_rng(2), cfg, 0.5, None, noise_window_mask(GRID), w)
    assert not np.array_equal(out.spectra, rt.spectra)
    wide, mask = w.widen(out.spectra, rt.t_s, rt.echem[:, :N_ECHEM], rt.echem_mask[:, :N_ECHEM])
    np.testing.assert_array_equal(out.echem_mask, mask)
    np.testing.assert_array_equal(out.echem, wide)
    np.testing.assert_array_equal(out.echem[:, :N_ECHEM], rt.echem[:, :N_ECHEM])
    spectral = [N_ECHEM + j for j, n in enumerate(w.names) if n in MODEL_FEATURES]
    assert np.abs(out.echem[:, spectral] - rt.echem[:, spectral]).max() > 0.05


def test_a_current_free_run_keeps_its_current_masked_under_noise(run_frames):
    """A current-free member trains on runs whose current columns are masked; recomputing the
    window features of their noisier spectra must not bring those columns back."""
    from lisentry.models.window_features import current_columns
    from lisentry.training.data import augment_run, mask_current, noise_window_mask
    w, rt = _widened_run(run_frames, "all_but_minimum")
    (blind,) = mask_current([rt])
    cfg = {"noise_prob": 1.0, "noise_max_factor": 10.0, "intensity_jitter": 0.0, "shift_ppm": 0.0}
    out = augment_run(blind, np.random.default_rng(2), cfg, 0.5, None, noise_window_mask(GRID), w)
    cur = current_columns(rt.echem.shape[1])
    assert cur.any() and not out.echem_mask[:, cur].any() and not out.echem[:, cur].any()
    assert out.echem_mask[:, ~cur].sum() == blind.echem_mask[:, ~cur].sum() > 0
