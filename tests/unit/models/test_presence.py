"""PresenceGate: fit on separable features, gating of the amounts, file round trip, refusals;
the bundle stores and checks it; the detector reports gated amounts in both of its paths."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lisentry.datasets.errors import ConfigError
from lisentry.models.presence import PresenceGate

AUX = ("cluster_amount", "cluster_shift_ppm", "metal_amount", "ce_amount")


def _toy(n=400, f=6, seed=0):
    """Features whose first column says whether a cluster is there; amounts to match."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, f))
    present = X[:, 0] > 0.3
    amount = np.where(present, rng.uniform(0.006, 0.3, n), 0.0)
    return X, present, amount


def test_fit_separates_presence_and_apply_gates_only_the_gated_latent():
    X, present, amount = _toy()
    gate = PresenceGate(["cluster_amount"]).fit(X, {"cluster_amount": amount})
    is_open = gate.open(X)["cluster_amount"]
    assert np.mean(is_open == present) > 0.97
    aux = np.column_stack([np.full(len(X), 0.02), np.full(len(X), 90.0),
                           np.full(len(X), 0.05), np.full(len(X), 0.5)])
    out = gate.apply(aux, AUX, X)
    # closed: amount 0 and no shift; open: untouched; other latents never touched
    assert np.all(out[~is_open, 0] == 0.0) and np.all(np.isnan(out[~is_open, 1]))
    assert np.all(out[is_open, 0] == 0.02) and np.all(out[is_open, 1] == 90.0)
    np.testing.assert_array_equal(out[:, 2:], aux[:, 2:])
    assert aux[0, 0] == 0.02    # a copy: the input is unchanged


def test_frames_between_absent_and_present_are_not_fitted_on():
    X, present, amount = _toy()
    pick = (X[:, 1] > 0) & ~present
    grey = np.where(pick, 0.002, amount)           # between free_below and detect_limit
    unknown = np.where(pick, np.nan, amount)       # not known at all (measured frames)
    a = PresenceGate(["cluster_amount"]).fit(X, {"cluster_amount": grey})
    b = PresenceGate(["cluster_amount"]).fit(X, {"cluster_amount": unknown})
    np.testing.assert_array_equal(a.coef_, b.coef_)
    stats = a.fit_stats_["cluster_amount"]
    assert stats == {"n_present": int(present.sum()), "n_absent": int((~present & ~pick).sum())}


def test_fit_refuses_data_without_both_kinds_of_frames():
    X, _, amount = _toy()
    with pytest.raises(ValueError, match="with and without"):
        PresenceGate(["cluster_amount"]).fit(X, {"cluster_amount": np.full(len(X), np.nan)})
    with pytest.raises(ValueError, match="no true amounts"):
        PresenceGate(["cluster_amount", "metal_amount"]).fit(X, {"cluster_amount": amount})


@pytest.mark.parametrize("kw, msg", [
    ({"latents": ["ce_amount"]}, "presence.latents"),
    ({"latents": []}, "presence.latents"),
    ({"free_below": 0.01, "detect_limit": 0.005}, "free_below"),
    ({"threshold": 1.0}, "threshold"),
    ({"C": 0.0}, "presence.C")])
def test_bad_parameters_are_refused(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        PresenceGate(**kw)


def test_save_load_round_trip_and_refusals(tmp_path):
    X, _, amount = _toy()
    gate = PresenceGate(["cluster_amount"], threshold=0.4).fit(X, {"cluster_amount": amount})
    gate.save(tmp_path, {"note": "x"})
    back = PresenceGate.load(tmp_path)
    np.testing.assert_array_equal(back.predict_proba(X), gate.predict_proba(X))
    assert back.threshold == 0.4 and back.latents == ("cluster_amount",)
    assert json.loads((tmp_path / "presence.json").read_text())["meta"] == {"note": "x"}
    with pytest.raises(ValueError, match="fitted on 6"):
        back.predict_proba(X[:, :5])
    cfg = json.loads((tmp_path / "presence.json").read_text())
    cfg["params"]["latents"] = ["cluster_amount", "metal_amount"]    # arrays hold one latent
    (tmp_path / "presence.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="do not fit 2 latents"):
        PresenceGate.load(tmp_path)
    (tmp_path / "presence.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ConfigError, match="not a presence gate"):
        PresenceGate.load(tmp_path)


# ---------------------------------------------------------------------- in a bundle
@pytest.fixture()
def gated_bundle(tmp_path):
    """A tiny random bundle with a gate fitted on its own features of a short simulated run
    (the run's true cluster amounts), and that run's frames."""
    import torch

    from lisentry.datasets.pipeline import Pipeline, ProcessingConfig
    from lisentry.datasets.sim.run import simulate_run, to_run
    from lisentry.models.bundle import attach_presence_gate, save_bundle
    from lisentry.models.net import LisentryNet
    torch.manual_seed(2)
    net = LisentryNet(n_ppm=1001, hidden=12, channels=(8, 8))
    # ungated, every frame reports a cluster of 0.05 at 90 ppm, so that a gated 0 can only
    # come from the gate
    with torch.no_grad():
        net.aux_head.weight.zero_()
        names = list(net.aux_names)
        net.aux_head.bias.zero_()
        net.aux_head.bias[names.index("cluster_amount")] = 0.05 / float(net.aux_scale[names.index("cluster_amount")])
        net.aux_head.bias[names.index("cluster_shift_ppm")] = 90.0 / float(net.aux_scale[names.index("cluster_shift_ppm")])
    d = save_bundle(tmp_path / "b", net, {"processing": ProcessingConfig().to_dict(),
                                          "temperature": 0.05, "ood_threshold": 50.0})
    sim = simulate_run("hc_sulfide_overlithiation", 7, max_frames=30)
    frames = to_run(sim, Pipeline(ProcessingConfig())).frames
    return d, net, frames


def _features(net, frames):
    import torch

    from lisentry.models.features import echem_features
    spectra = torch.from_numpy(np.stack([f.intensity for f in frames]).astype(np.float32))[None]
    e, m = echem_features([f.t_s for f in frames], [f.potential_V for f in frames],
                          [f.current_A for f in frames], [f.charge_C for f in frames])
    net.eval()      # as the detector runs it (no dropout)
    with torch.no_grad():
        out = net(spectra, torch.from_numpy(e)[None], echem_mask=torch.from_numpy(m)[None],
                  return_features=True)
    return out["features"][0].double().numpy()


def test_bundle_stores_checks_and_detector_applies_the_gate(gated_bundle):
    from lisentry.detector.online import OnlineDetector
    from lisentry.models.bundle import (BundleError, attach_presence_gate, bundle_hash,
                                        load_bundle)
    d, net, frames = gated_bundle
    plain = OnlineDetector(load_bundle(d)).label_frames(frames)
    assert all(r["cluster_amount"] == pytest.approx(0.05) and r["cluster_shift_ppm"] == pytest.approx(90.0)
               for r in plain)
    h0 = bundle_hash(d)
    F = _features(net, frames)
    # "present" on the second half of the run, so the gate closes on the first half
    truth = np.where(np.arange(len(frames)) >= len(frames) // 2, 0.1, 0.0)
    gate = PresenceGate(["cluster_amount"]).fit(F, {"cluster_amount": truth})
    attach_presence_gate(d, gate)
    b = load_bundle(d)
    assert b.presence_gate is not None and b.card["presence"]["latents"] == ["cluster_amount"]
    assert bundle_hash(d) != h0     # a watcher's saved state names the bundle with its gate
    det = OnlineDetector(b)
    batch = det.label_frames(frames)
    stream = []
    det.reset()
    for f in frames:
        det.update(f)
        stream.append(dict(det.last_row))
    is_open = gate.open(F)["cluster_amount"]
    assert 0 < is_open.sum() < len(frames)
    for i, (p, g, s) in enumerate(zip(plain, batch, stream)):
        # the gate changes no probability, label or other latent
        assert g["label"] == p["label"] and g["p_plating_onset"] == p["p_plating_onset"]
        assert g["metal_amount"] == p["metal_amount"]
        if is_open[i]:
            assert g["cluster_amount"] == p["cluster_amount"]
        else:
            assert g["cluster_amount"] == 0.0 and np.isnan(g["cluster_shift_ppm"])
        # streaming and batch agree on the gated amounts
        assert s["cluster_amount"] == pytest.approx(g["cluster_amount"], abs=1e-6)
        assert np.isnan(s["cluster_shift_ppm"]) == np.isnan(g["cluster_shift_ppm"])

    # a changed gate file is refused with one line naming it
    p = d / "presence.safetensors"
    p.write_bytes(p.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(BundleError, match="presence.safetensors or presence.json: SHA-256 does not match"):
        load_bundle(d)
    # ... and so is a changed presence.json; the bundle still loads without its gate, and a
    # new gate replaces the broken one
    assert load_bundle(d, presence=False).presence_gate is None
    attach_presence_gate(d, gate)
    assert load_bundle(d).presence_gate is not None
    j = d / "presence.json"
    j.write_text(j.read_text().replace('"threshold": 0.5', '"threshold": 0.9'))
    with pytest.raises(BundleError, match="presence.json: SHA-256 does not match"):
        load_bundle(d)


def test_a_gate_for_other_features_is_refused(gated_bundle):
    from lisentry.models.bundle import BundleError, attach_presence_gate, load_bundle
    d, _, _ = gated_bundle
    X, _, amount = _toy(f=7)
    attach_presence_gate(d, PresenceGate(["cluster_amount"]).fit(X, {"cluster_amount": amount}))
    with pytest.raises(BundleError, match="takes 7 features; the model gives 24"):
        load_bundle(d)


def test_saving_a_new_bundle_drops_the_old_gate(gated_bundle):
    from lisentry.models.bundle import attach_presence_gate, load_bundle, save_bundle
    d, net, frames = gated_bundle
    F = _features(net, frames)
    truth = np.where(np.arange(len(frames)) >= 10, 0.1, 0.0)
    attach_presence_gate(d, PresenceGate(["cluster_amount"]).fit(F, {"cluster_amount": truth}))
    save_bundle(d, net, {"temperature": 0.05})
    assert not (d / "presence.safetensors").exists() and not (d / "presence.json").exists()
    assert load_bundle(d).presence_gate is None


def test_onnx_export_carries_the_gate(gated_bundle, tmp_path):
    """``aux`` of the exported step is what the detector reports: gated amounts 0 and no
    shift where the gate is closed, the raw estimate where it is open."""
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    from lisentry.detector.online import OnlineDetector
    from lisentry.models.bundle import attach_presence_gate, load_bundle
    from lisentry.models.features import echem_features
    from lisentry.models.onnx_export import check_onnx, export_onnx, read_metadata
    d, net, frames = gated_bundle
    F = _features(net, frames)
    truth = np.where(np.arange(len(frames)) >= len(frames) // 2, 0.1, 0.0)
    attach_presence_gate(d, PresenceGate(["cluster_amount"]).fit(F, {"cluster_amount": truth}))
    b = load_bundle(d)
    rows = OnlineDetector(b).label_frames(frames)
    path = export_onnx(b.model, tmp_path / "g.onnx", card=b.card, presence_gate=b.presence_gate)
    assert read_metadata(path)["presence_gate"] == ["cluster_amount"]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    e, m = echem_features([f.t_s for f in frames], [f.potential_V for f in frames],
                          [f.current_A for f in frames], [f.charge_C for f in frames])
    st = {k: v.numpy() for k, v in b.model.init_state(1).items()}
    names = list(b.model.aux_names)
    k, j = names.index("cluster_amount"), names.index("cluster_shift_ppm")
    closed = 0
    for t, (f, row) in enumerate(zip(frames, rows)):
        res = sess.run(None, {"spectrum": f.intensity[None].astype(np.float32),
                              "echem": e[t:t + 1], "echem_mask": m[t:t + 1], **st})
        st = dict(zip(("h", "ref", "ref_mask", "n_seen"), res[2:]))
        assert res[1][0, k] == pytest.approx(row["cluster_amount"], abs=1e-5)
        assert np.isnan(res[1][0, j]) == np.isnan(row["cluster_shift_ppm"])
        closed += row["cluster_amount"] == 0.0
    assert 0 < closed < len(frames)
    # the parity check compares the file with the gated amounts (and a plain file with raw ones)
    assert check_onnx(b.model, path, n_frames=8, presence_gate=b.presence_gate)["max_abs_aux_diff"] < 1e-4
    plain = export_onnx(b.model, tmp_path / "plain.onnx")
    assert read_metadata(plain)["presence_gate"] is None
    assert check_onnx(b.model, plain, n_frames=8)["max_abs_aux_diff"] < 1e-4
