"""OnlineDetector: streaming == batch, state round trip without pickle, clone, input checks."""
from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from lisentry.datasets.errors import InputError
from lisentry.datasets.frame import CLASSES
from lisentry.detector.online import OnlineDetector

P_COLS = [f"p_{c}" for c in CLASSES]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    import torch

    from lisentry.datasets.pipeline import ProcessingConfig
    from lisentry.models.bundle import load_bundle, save_bundle
    from lisentry.models.net import LisentryNet
    torch.manual_seed(1)
    d = save_bundle(tmp_path_factory.mktemp("b") / "tiny", LisentryNet(n_ppm=1001, hidden=16, channels=(8, 8)),
                    {"processing": ProcessingConfig().to_dict(), "temperature": 0.02,
                     "ood_threshold": 50.0, "detector": {"enter": 0.6, "exit": 0.4, "min_consecutive": 2}})
    return load_bundle(d)


@pytest.fixture(scope="module")
def frames():
    from lisentry.datasets.pipeline import Pipeline, ProcessingConfig
    from lisentry.datasets.sim.run import simulate_run, to_run
    sim = simulate_run("hc_sulfide_overlithiation", 7, max_frames=12)
    return to_run(sim, Pipeline(ProcessingConfig())).frames


def stream(det, frames):
    rows = []
    for f in frames:
        det.update(f)
        rows.append(dict(det.last_row))
    return rows


def assert_rows_equal(a, b, atol=1e-6):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert ra["frame"] == rb["frame"] and ra["label"] == rb["label"]
        assert ra["timestamp"] == rb["timestamp"] and ra["status"] == rb["status"]
        for k in P_COLS + ["ood_score", "cluster_amount", "metal_amount", "ce_amount", "t_s",
                           "potential_V", "current_A"]:
            np.testing.assert_allclose(ra[k], rb[k], atol=atol, rtol=0, equal_nan=True, err_msg=k)
        # ppm (float32 head output x 100): the same to float32 precision
        np.testing.assert_allclose(ra["cluster_shift_ppm"], rb["cluster_shift_ppm"], atol=1e-4,
                                   rtol=0, equal_nan=True)


def test_streaming_equals_batch(bundle, frames):
    rows_s = stream(OnlineDetector(bundle), frames)
    batch = OnlineDetector(bundle)
    rows_b = batch.label_frames(frames)
    assert_rows_equal(rows_s, rows_b)
    assert len({r["label"] for r in rows_b}) > 1            # a comparison that can fail
    for r in rows_s:
        assert sum(r[c] for c in P_COLS) == pytest.approx(1.0, abs=1e-9)
    # causality: the streaming output at step i equals the batch labeller on frames[:i+1]
    for i in (0, 3, 7):
        assert_rows_equal([rows_s[i]], OnlineDetector(bundle).label_frames(frames[: i + 1])[-1:])
    # label_frames leaves the detector where streaming would: both continue alike
    s = OnlineDetector(bundle)
    stream(s, frames[:8])
    b = OnlineDetector(bundle)
    b.label_frames(frames[:8])
    assert b.n_seen == 8 and b.label == s.label and b.alarm == s.alarm
    assert_rows_equal(stream(s, frames[8:]), stream(b, frames[8:]))


def test_state_dict_round_trip_mid_run(bundle, frames, tmp_path):
    ref = stream(OnlineDetector(bundle), frames)
    det = OnlineDetector(bundle)
    stream(det, frames[:5])
    js, tensors = det.state_dict()
    (tmp_path / "s.json").write_text(json.dumps(js))          # JSON + safetensors, no pickle
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp_path / "s.safetensors"))
    fresh = OnlineDetector(bundle).load_state_dict(json.loads((tmp_path / "s.json").read_text()),
                                                   load_file(str(tmp_path / "s.safetensors")))
    assert fresh.n_seen == 5 and fresh.label == det.label
    assert fresh.predict_proba_one() == pytest.approx(det.predict_proba_one(), abs=1e-12)
    assert_rows_equal(stream(fresh, frames[5:]), ref[5:], atol=1e-9)


def test_state_of_another_bundle_is_refused(bundle, frames, tmp_path):
    det = OnlineDetector(bundle)
    det.update(frames[0])
    js, tensors = det.state_dict()
    js["bundle_sha256"] = "0" * 64
    with pytest.raises(ValueError, match="another model bundle"):
        OnlineDetector(bundle).load_state_dict(js, tensors)


def test_clone_is_fresh(bundle, frames):
    det = OnlineDetector(bundle)
    first = stream(det, frames[:6])
    c = det.clone()
    assert c is not det and c.n_seen == 0 and c.last_row is None and c.alarm is None
    with pytest.raises(RuntimeError):
        c.predict_proba_one()
    assert_rows_equal(stream(c, frames[:6]), first)          # same as the original from scratch
    assert det.n_seen == 6                                   # the original is untouched
    assert_rows_equal(stream(det.clone(), frames[:3]), first[:3])


def test_refuses_other_grid_and_nucleus(bundle, frames):
    det = OnlineDetector(bundle)
    det.update(frames[0])
    f = frames[1]
    short = f.replace(ppm_grid=f.ppm_grid[::2], intensity=f.intensity[::2])
    shifted = f.replace(ppm_grid=f.ppm_grid + 50.0)              # same size, other ppm range
    na = f.replace(nucleus="23Na")
    for bad, word in ((short, "grid"), (shifted, "grid"), (na, "23Na")):
        with pytest.raises(InputError) as ei:
            det.update(bad)
        msg = str(ei.value)
        assert "\n" not in msg and str(f.source) in msg and word in msg
        with pytest.raises(InputError):
            OnlineDetector(bundle).label_frames([frames[0], bad])
    assert det.n_seen == 1                                        # refused frames change nothing
    assert_rows_equal(stream(det, frames[1:3]), OnlineDetector(bundle).label_frames(frames[:3])[1:])


def test_inputs_not_mutated(bundle, frames):
    before = [(f.intensity.copy(), f.ppm_grid.copy(), f.t_s, f.potential_V) for f in frames]
    det = OnlineDetector(bundle)
    stream(det, frames)
    det.label_frames(frames)
    for f, (inten, grid, t, v) in zip(frames, before):
        np.testing.assert_array_equal(f.intensity, inten)
        np.testing.assert_array_equal(f.ppm_grid, grid)
        assert f.t_s == t and (f.potential_V == v or (np.isnan(v) and np.isnan(f.potential_V)))


# ---------------------------------------------------------------- feature OOD scorer in the bundle
@pytest.fixture(scope="module")
def bundle_with_scorer(tmp_path_factory, bundle):
    """The tiny bundle plus a feature OOD scorer fitted on three simulated runs."""
    import shutil
    from types import SimpleNamespace

    from lisentry.datasets.pipeline import Pipeline, ProcessingConfig
    from lisentry.datasets.sim.run import simulate_run, to_run
    from lisentry.models.bundle import attach_ood_scorer, load_bundle
    from lisentry.models.ood_scorer import fit_on_runs, frames_inputs
    runs = []
    for fam, seed in (("graphite_normal_cycling", 1), ("hc_sulfide_ccv", 2), ("li_llzo_li", 3)):
        sim = simulate_run(fam, seed, max_frames=16)
        fr = to_run(sim, Pipeline(ProcessingConfig())).frames
        S, E, M = frames_inputs(fr)
        runs.append(SimpleNamespace(spectra=S, echem=E, echem_mask=M,
                                    y=np.array([CLASSES.index(x) for x in sim.labels[:len(fr)]])))
    scorer = fit_on_runs(bundle.model, runs[:2], runs[2:], n_components=8,
                         components=("mahalanobis", "pca_residual", "negative_area"))
    d = tmp_path_factory.mktemp("bo") / "tiny_ood"
    shutil.copytree(bundle.path, d)
    attach_ood_scorer(d, scorer, quantile=0.99)
    return load_bundle(d)


def test_feature_ood_score_streams_like_batch_and_flags_above_the_card_threshold(
        bundle_with_scorer, frames):
    b = bundle_with_scorer
    assert b.ood_scorer is not None and b.ood_score_threshold == b.card["ood"]["threshold"]
    rows_s = stream(OnlineDetector(b), frames)
    rows_b = OnlineDetector(b).label_frames(frames)
    assert_rows_equal(rows_s, rows_b, atol=1e-5)
    # the column is the scorer's score of the frame (not the energy), the flag its threshold
    from lisentry.models.ood_scorer import frames_inputs, head_inputs
    S, E, M = frames_inputs(frames)
    _, H = head_inputs(b.model, S, E, M)
    np.testing.assert_allclose([r["ood_score"] for r in rows_b], b.ood_scorer.score(S, H), atol=1e-5)
    # a frame whose spectrum is nothing like 7Li (a line at 150 ppm only) is flagged ood
    import dataclasses
    odd = np.zeros_like(frames[5].intensity)
    odd[np.argmin(np.abs(b.ppm_grid - 150.0)) + np.arange(-8, 9)] = 0.05
    bad = list(frames[:5]) + [dataclasses.replace(frames[5], intensity=odd)]
    rows = OnlineDetector(b).label_frames(bad)
    assert "ood" in rows[-1]["status"].split(";")
    assert rows[-1]["ood_score"] > b.ood_score_threshold


def test_bundle_refuses_a_changed_or_missing_scorer(bundle_with_scorer, tmp_path):
    import shutil

    from lisentry.models.bundle import BundleError, bundle_hash, load_bundle
    d = tmp_path / "b"
    shutil.copytree(bundle_with_scorer.path, d)
    assert bundle_hash(d) == bundle_with_scorer.sha256
    cfg = json.loads((d / "ood.json").read_text())
    cfg["thresholds"]["q0.99"] = 99.0
    (d / "ood.json").write_text(json.dumps(cfg))
    with pytest.raises(BundleError, match="ood.safetensors: SHA-256 does not match"):
        load_bundle(d)
    (d / "ood.json").unlink()
    with pytest.raises(BundleError, match="ood.json: missing"):
        load_bundle(d)
    # a bundle without the card section ignores stray files and uses the energy score
    card = json.loads((d / "card.json").read_text())
    del card["ood"]
    (d / "card.json").write_text(json.dumps(card))
    b = load_bundle(d)
    assert b.ood_scorer is None and b.ood_score_threshold == b.ood_threshold == 50.0


def test_bundle_refuses_a_scorer_of_another_model(bundle_with_scorer, tmp_path):
    import torch

    from lisentry.datasets.pipeline import ProcessingConfig
    from lisentry.models.bundle import BundleError, attach_ood_scorer, load_bundle, save_bundle
    from lisentry.models.net import LisentryNet
    torch.manual_seed(2)
    d = save_bundle(tmp_path / "other", LisentryNet(n_ppm=1001, hidden=8, channels=(8, 8)),
                    {"processing": ProcessingConfig().to_dict()})
    attach_ood_scorer(d, bundle_with_scorer.ood_scorer)
    with pytest.raises(BundleError, match="32 head features; the model has 1001 and 16"):
        load_bundle(d)


# ---- symmetric cells (--cell symmetric) -------------------------------------------------------
@pytest.fixture(scope="module")
def sign_free_bundle(tmp_path_factory):
    import torch

    from lisentry.datasets.pipeline import ProcessingConfig
    from lisentry.models.bundle import load_bundle, save_bundle
    from lisentry.models.net import LisentryNet
    torch.manual_seed(2)
    d = save_bundle(tmp_path_factory.mktemp("b") / "sym", LisentryNet(n_ppm=1001, hidden=16, channels=(8, 8)),
                    {"processing": ProcessingConfig().to_dict(), "temperature": 0.02,
                     "ood_threshold": 50.0, "symmetric_cells": "sign_free",
                     "detector": {"enter": 0.6, "exit": 0.4, "min_consecutive": 2}})
    return load_bundle(d)


@pytest.fixture(scope="module")
def li_li_frames():
    from lisentry.datasets.pipeline import Pipeline, ProcessingConfig
    from lisentry.datasets.sim.run import simulate_run, to_run
    sim = simulate_run("li_plating_liquid_li", 4, max_frames=12)
    return to_run(sim, Pipeline(ProcessingConfig())).frames


def _mirrored(frames):
    """The same frames from the cell wired the other way (potential, current, charge negated)."""
    neg = lambda x: None if x is None else -x  # noqa: E731
    return [f.replace(potential_V=neg(f.potential_V), current_A=neg(f.current_A),
                      charge_C=neg(f.charge_C)) for f in frames]


def test_symmetric_cell_reads_either_wiring_alike(sign_free_bundle, li_li_frames):
    b = sign_free_bundle
    assert b.symmetric_cells == "sign_free"
    sym = OnlineDetector(b, cell="symmetric").label_frames(li_li_frames)
    mir = OnlineDetector(b, cell="symmetric").label_frames(_mirrored(li_li_frames))
    for r in mir:   # the rows report the potential and current as given
        r["potential_V"], r["current_A"] = -r["potential_V"], -r["current_A"]
    assert_rows_equal(sym, mir, atol=1e-9)
    half = OnlineDetector(b).label_frames(li_li_frames)
    half_m = OnlineDetector(b).label_frames(_mirrored(li_li_frames))
    diff = max(abs(x[c] - y[c]) for x, y in zip(half, half_m) for c in P_COLS)
    assert diff > 1e-3                        # read as a half cell, the wiring matters
    # the rows report the potential as measured, not its magnitude
    assert [r["potential_V"] for r in sym] == [f.potential_V for f in li_li_frames]
    assert_rows_equal(stream(OnlineDetector(b, cell="symmetric"), li_li_frames), sym)
    assert OnlineDetector(b, cell="symmetric").clone().cell == "symmetric"


def test_symmetric_cell_needs_a_sign_free_model_and_its_own_state(bundle, sign_free_bundle,
                                                                   li_li_frames):
    from lisentry.datasets.errors import ConfigError
    assert bundle.symmetric_cells == "signed"
    with pytest.raises(ConfigError, match="--cell symmetric needs a model trained with "
                                          "inputs.symmetric_cells: sign_free"):
        OnlineDetector(bundle, cell="symmetric")
    with pytest.raises(ConfigError, match="--cell must be one of"):
        OnlineDetector(sign_free_bundle, cell="Li|Li")
    det = OnlineDetector(sign_free_bundle, cell="symmetric")
    det.update(li_li_frames[0])
    js, tensors = det.state_dict()
    with pytest.raises(ValueError, match="symmetric cell, not --cell half"):
        OnlineDetector(sign_free_bundle).load_state_dict(js, tensors)
    assert OnlineDetector(sign_free_bundle, cell="symmetric").load_state_dict(js, tensors).n_seen == 1
