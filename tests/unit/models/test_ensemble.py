"""LisentryEnsemble: the mean of its members' logits, streamed like a single network, saved and
loaded as a bundle, run by the online detector and exported to ONNX."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lisentry.datasets.errors import ConfigError
from lisentry.models.bundle import export_onnx, load_bundle, save_bundle
from lisentry.models.ensemble import LisentryEnsemble
from lisentry.models.features import ECHEM_FEATURES, ECHEM_FEATURES_VERSION, N_ECHEM
from lisentry.models.net import LisentryNet

GRID = {"min": 0.0, "max": 31.5, "step": 0.5}  # 64 points
CARD = {"ppm_grid": GRID, "processing": {"apodization_hz": 50.0}, "temperature": 1.0,
        "horizon_s": 3600,
        "echem_features": {"names": list(ECHEM_FEATURES), "version": ECHEM_FEATURES_VERSION}}


def members(n_ppm=64, seeds=(0, 1, 2), **kw):
    nets = []
    for s in seeds:
        torch.manual_seed(s)
        nets.append(LisentryNet(n_ppm=n_ppm, hidden=8, channels=(4, 4), pooled_bins=4,
                                echem_hidden=4, **kw).eval())
    return nets


def inputs(T=7, B=2, n_ppm=64):
    g = torch.Generator().manual_seed(5)
    x = torch.rand(B, T, n_ppm, generator=g)
    x[:, :, :3] = float("nan")            # uncovered edge
    e = torch.randn(B, T, N_ECHEM, generator=g)
    e[0, :2] = float("nan")               # potential log not started yet
    return x, e


def test_logits_are_the_members_mean_and_features_side_by_side():
    nets = members()
    ens = LisentryEnsemble.from_members(nets).eval()
    x, e = inputs()
    with torch.no_grad():
        outs = [n(x, e, return_features=True) for n in nets]
        got = ens(x, e, return_features=True)
    torch.testing.assert_close(got["logits"], sum(o["logits"] for o in outs) / 3)
    torch.testing.assert_close(got["aux"], sum(o["aux"] for o in outs) / 3)
    assert got["features"].shape[-1] == sum(o["features"].shape[-1] for o in outs)
    # the members differ, so the mean is not any one of them (a comparison that can fail)
    assert (outs[0]["logits"] - got["logits"]).abs().max() > 1e-3


def test_streaming_equals_batch_with_padding():
    ens = LisentryEnsemble.from_members(members(heads="softmax")).eval()
    x, e = inputs()
    lengths = torch.tensor([7, 4])
    with torch.no_grad():
        want = ens(x, e, lengths=lengths, return_state=True)
        for b, n in enumerate(lengths.tolist()):
            st = ens.init_state(1)
            for t in range(n):
                o, st = ens.step(x[b:b + 1, t], e[b:b + 1, t], st)
                torch.testing.assert_close(o["logits"][0], want["logits"][b, t], atol=1e-5, rtol=0)
            # the batch call's end state is where streaming got to
            torch.testing.assert_close(want["state"]["h"][:, b], st["h"][:, 0], atol=1e-5, rtol=0)
        # a forward pass that continues from a state equals the uninterrupted one
        first = ens(x[:, :3], e[:, :3], return_state=True)
        rest = ens(x[:, 3:], e[:, 3:], state=first["state"])
        full = ens(x, e)
    torch.testing.assert_close(rest["logits"], full["logits"][:, 3:], atol=1e-5, rtol=0)


def test_members_must_agree_on_inputs_and_state_layout():
    a = members(seeds=(0,))[0].config
    with pytest.raises(ConfigError, match="member 1 has input_scale=2.0"):
        LisentryEnsemble([a, {**a, "input_scale": 2.0}])
    with pytest.raises(ConfigError, match="non-empty list"):
        LisentryEnsemble([])
    # widths may differ; the state is the members' states side by side
    ens = LisentryEnsemble([a, {**a, "hidden": 12}])
    assert ens.init_state(2)["h"].shape == (1, 2, 20)
    with pytest.raises(ValueError, match="width 19"):
        ens.step(torch.rand(1, 64), torch.zeros(1, N_ECHEM),
                 {**ens.init_state(1), "h": torch.zeros(1, 1, 19)})


def test_bundle_round_trip(tmp_path):
    ens = LisentryEnsemble.from_members(members()).eval()
    d = save_bundle(tmp_path / "ens", ens, CARD)
    b = load_bundle(d, expect_grid=GRID)
    assert isinstance(b.model, LisentryEnsemble) and len(b.model) == 3
    assert b.card["model"]["name"] == "lisentry_ensemble"
    x, e = inputs()
    with torch.no_grad():
        torch.testing.assert_close(b.model(x, e)["logits"], ens(x, e)["logits"], atol=0, rtol=0)


def test_bundle_checks_each_members_descriptor_grid(tmp_path):
    a, = members(seeds=(0,), descriptors=True, ppm_min=GRID["min"], ppm_step=GRID["step"])
    bad, = members(seeds=(1,), descriptors=True, ppm_min=GRID["min"], ppm_step=1.0)
    d = save_bundle(tmp_path / "ens", LisentryEnsemble.from_members([a, bad]), CARD)
    with pytest.raises(Exception, match="descriptor grid"):
        load_bundle(d)


def test_online_detector_streams_an_ensemble_like_its_batch_labeller(tmp_path):
    from lisentry.datasets.pipeline import Pipeline, ProcessingConfig
    from lisentry.datasets.sim.run import simulate_run, to_run
    from lisentry.detector.online import OnlineDetector
    ens = LisentryEnsemble.from_members(members(n_ppm=1001)).eval()
    d = save_bundle(tmp_path / "ens", ens, {**CARD, "ppm_grid": {"min": -100.0, "max": 400.0, "step": 0.5},
                                            "processing": ProcessingConfig().to_dict(),
                                            "temperature": 0.05})
    frames = to_run(simulate_run("hc_sulfide_overlithiation", 7, max_frames=8),
                    Pipeline(ProcessingConfig())).frames
    b = load_bundle(d)
    det = OnlineDetector(b)
    rows = []
    for f in frames:
        det.update(f)
        rows.append(dict(det.last_row))
    batch = OnlineDetector(b).label_frames(frames)
    for r, q in zip(rows, batch):
        assert r["label"] == q["label"]
        np.testing.assert_allclose([r[f"p_{c}"] for c in b.classes],
                                   [q[f"p_{c}"] for c in b.classes], atol=1e-6)


def test_onnx_export_of_an_ensemble(tmp_path):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from lisentry.models.onnx_export import check_onnx
    ens = LisentryEnsemble.from_members(members(seeds=(0, 1))).eval()
    r = check_onnx(ens, export_onnx(ens, tmp_path / "e.onnx"), n_frames=10)
    assert r["argmax_agree"] == 1.0 and r["max_abs_logit_diff"] < 1e-4


# ---- current-free members, routed by the current's mask ---------------------------------------
def _keep():
    from lisentry.models.window_features import current_columns
    return torch.as_tensor(~current_columns(N_ECHEM), dtype=torch.float32)


def test_routed_ensemble_takes_the_current_free_members_where_the_current_is_missing():
    nets = members(seeds=(0, 1, 2))
    ens = LisentryEnsemble.from_members(nets, current_free=[False, False, True]).eval()
    assert ens.routed and ens.config["current_free"] == [False, False, True]
    x, e = inputs(T=8)
    m = torch.isfinite(e).float()
    cur = ECHEM_FEATURES.index("current_asinh")
    m[1, 4:, cur] = 0                       # run 1 loses its current column from frame 4
    e[1, 4:, cur] = 0
    out = ens(x, e, echem_mask=m)
    with torch.no_grad():
        a = (nets[0](x, e, echem_mask=m)["logits"] + nets[1](x, e, echem_mask=m)["logits"]) / 2
        # the current-free member never sees the current's columns, on any frame
        b = nets[2](x, torch.nan_to_num(e) * _keep(), echem_mask=m * _keep())["logits"]
    known = m[..., cur] > 0
    torch.testing.assert_close(out["logits"][known], a[known])
    torch.testing.assert_close(out["logits"][~known], b[~known])
    assert (~known).sum() == 4 + 2          # run 0's first two frames have no log at all
    # streaming gives the batch result, frame by frame
    st, steps = ens.init_state(2), []
    for t in range(8):
        o, st = ens.step(x[:, t], e[:, t], st, echem_mask=m[:, t])
        steps.append(o["logits"])
    torch.testing.assert_close(torch.stack(steps, 1), out["logits"], atol=1e-5, rtol=0)
    # an ensemble without current-free members is unchanged by the option
    plain = LisentryEnsemble.from_members(nets[:2]).eval()
    assert not plain.routed and "current_free" not in plain.config
    torch.testing.assert_close(plain(x, e, echem_mask=m)["logits"], a)


def test_routed_ensemble_needs_members_of_both_kinds_and_round_trips(tmp_path):
    nets = members(seeds=(0, 1))
    for bad in ([True, True], [False], [False, True, True]):
        with pytest.raises(ConfigError, match="current_free"):
            LisentryEnsemble.from_members(nets, current_free=bad)
    ens = LisentryEnsemble.from_members(nets, current_free=[False, True]).eval()
    b = load_bundle(save_bundle(tmp_path / "r", ens, CARD))
    assert b.model.current_free == [False, True]
    x, e = inputs()
    m = torch.isfinite(e).float()
    m[:, 3:, ECHEM_FEATURES.index("current_asinh")] = 0
    torch.testing.assert_close(b.model(x, e, echem_mask=m)["logits"], ens(x, e, echem_mask=m)["logits"])


def test_onnx_export_of_a_routed_ensemble(tmp_path):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from lisentry.models.onnx_export import check_onnx
    ens = LisentryEnsemble.from_members(members(seeds=(0, 1)), current_free=[False, True]).eval()
    # 30 frames: check_onnx masks the echem of frames 10-19, so both halves answer
    r = check_onnx(ens, export_onnx(ens, tmp_path / "r.onnx"), n_frames=30)
    assert r["argmax_agree"] == 1.0 and r["max_abs_logit_diff"] < 1e-4


def test_routed_ensemble_with_window_columns_feeds_its_current_free_members_as_trained():
    """With the window features appended (the shipped 8 + 30 columns), a frame without a current
    gets exactly the current-free member's output on the run as training masks it
    (``training.data.mask_current``)."""
    from lisentry.training.data import RunTensors, mask_current
    n_echem = N_ECHEM + 30
    nets = [LisentryNet(n_ppm=64, n_echem=n_echem, hidden=8, channels=(4, 4), pooled_bins=4,
                        echem_hidden=4).eval() for _ in range(2)]
    ens = LisentryEnsemble.from_members(nets, current_free=[False, True]).eval()
    x, _ = inputs(T=6, B=1)
    g = torch.Generator().manual_seed(3)
    e = torch.randn(1, 6, n_echem, generator=g)
    m = torch.ones(1, 6, n_echem)
    rt = RunTensors("r", "f", np.arange(6.0), x[0].numpy(), e[0].numpy(), m[0].numpy(),
                    np.zeros(6, np.int64), np.zeros((6, 4), np.float32), None, None)
    masked = mask_current([rt])[0]
    assert masked.echem_mask.sum() < m.sum()            # some columns are the current's
    m_nocur = torch.from_numpy(masked.echem_mask)[None]
    with torch.no_grad():
        routed = ens(x, e, echem_mask=m_nocur)["logits"]
        want = nets[1](x, torch.from_numpy(masked.echem)[None], echem_mask=m_nocur)["logits"]
    torch.testing.assert_close(routed, want)


def test_online_detector_with_a_routed_bundle_on_a_potential_only_log(tmp_path):
    """A potential-only log (no current column, as EC-Lab time/Ewe exports): the detector's
    streaming, batch and save/restore paths agree, and the rows are the current-free member's."""
    import json as _json

    from lisentry.datasets.pipeline import Pipeline, ProcessingConfig
    from lisentry.datasets.sim.run import simulate_run, to_run
    from lisentry.detector.online import OnlineDetector
    nets = members(n_ppm=1001, seeds=(0, 1))
    ens = LisentryEnsemble.from_members(nets, current_free=[False, True]).eval()
    card = {**CARD, "ppm_grid": {"min": -100.0, "max": 400.0, "step": 0.5},
            "processing": ProcessingConfig().to_dict(), "temperature": 0.05}
    b = load_bundle(save_bundle(tmp_path / "routed", ens, card))
    frames = to_run(simulate_run("hc_sulfide_overlithiation", 7, max_frames=10),
                    Pipeline(ProcessingConfig())).frames
    frames = [f.replace(current_A=float("nan"), charge_C=float("nan")) for f in frames]
    batch = OnlineDetector(b).label_frames(frames)
    det = OnlineDetector(b)
    for f in frames[:4]:
        det.update(f)
    js, tensors = det.state_dict()
    det = OnlineDetector(b).load_state_dict(_json.loads(_json.dumps(js)), tensors)
    rows = []
    for f in frames[4:]:
        det.update(f)
        rows.append(dict(det.last_row))
    for r, q in zip(rows, batch[4:]):
        assert r["label"] == q["label"]
        np.testing.assert_allclose([r[f"p_{c}"] for c in b.classes],
                                   [q[f"p_{c}"] for c in b.classes], atol=1e-6)
    # the current-free member alone (as a one-network bundle) gives the same probabilities
    solo = load_bundle(save_bundle(tmp_path / "solo", LisentryEnsemble.from_members(nets[1:]), card))
    alone = OnlineDetector(solo).label_frames(frames)
    np.testing.assert_allclose([[q[f"p_{c}"] for c in b.classes] for q in batch],
                               [[q[f"p_{c}"] for c in b.classes] for q in alone], atol=1e-6)
