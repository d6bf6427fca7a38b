"""Tests of lisentry.models.bundle: safetensors + JSON card, hashes, refusing mismatches."""
from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import pytest
import torch

from lisentry.datasets.errors import ConfigError, InputError
from lisentry.models.bundle import BundleError, bundle_hash, export_onnx, load_bundle, save_bundle
from lisentry.models.features import ECHEM_FEATURES, ECHEM_FEATURES_VERSION, N_ECHEM
from lisentry.models.net import LisentryNet

GRID = {"min": 0.0, "max": 31.5, "step": 0.5}  # 64 points
PROC = {"apodization_hz": 50.0, "zero_fill": 2, "phase": {"mode": "frozen", "p0": 12.5}}


def tiny(n_ppm: int = 64, seed: int = 0) -> LisentryNet:
    torch.manual_seed(seed)
    return LisentryNet(n_ppm=n_ppm, hidden=8, channels=(4, 4), pooled_bins=4,
                       echem_hidden=4).eval()


@pytest.fixture
def bundle_dir(tmp_path):
    net = tiny()
    d = save_bundle(tmp_path / "m1", net, {
        "ppm_grid": GRID, "processing": PROC, "temperature": 1.7, "ood_threshold": -2.5,
        "horizon_s": 3600, "metrics": {"macro_f1": np.float64(0.9), "ece": float("nan")},
        "training_data_hash": "abc123", "training_config": {"epochs": 3, "lr": 1e-3},
        "detector": {"horizon_s": 3600.0}, "training_split": {"val": ["r2"], "train": ["r1"]},
        "echem_features": {"names": list(ECHEM_FEATURES), "version": ECHEM_FEATURES_VERSION}})
    return d, net


def test_round_trip_gives_identical_outputs(bundle_dir):
    d, net = bundle_dir
    b = load_bundle(d, expect_grid=GRID, expect_nucleus="7Li", expect_processing=PROC)
    x = torch.randn(1, 5, 64)
    e = torch.randn(1, 5, N_ECHEM)
    with torch.no_grad():
        torch.testing.assert_close(b.model(x, e)["logits"], net(x, e)["logits"], atol=0, rtol=0)
    assert not b.model.training
    assert b.temperature == 1.7 and b.ood_threshold == -2.5
    assert b.classes == ("normal_lithiation", "cluster_growth", "plating_onset", "imminent_short")
    np.testing.assert_allclose(b.ppm_grid, np.arange(64) * 0.5)
    card = b.card
    assert card["model"] == {"name": "lisentry_net", "class": "LisentryNet", "kwargs": net.config}
    assert card["processing"] == PROC and card["nucleus"] == "7Li"
    assert card["metrics"] == {"macro_f1": 0.9, "ece": None}  # NaN is written as null
    assert card["inputs"]["echem_features"] == list(ECHEM_FEATURES)
    assert card["training_data_hash"] == "abc123" and card["horizon_s"] == 3600
    assert card["detector"] == {"horizon_s": 3600.0} and card["training_split"]["val"] == ["r2"]
    assert card["package_version"] and card["created"].endswith("+00:00")


def test_weights_are_plain_safetensors_with_the_card_hash(bundle_dir):
    d, net = bundle_dir
    raw = (d / "weights.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]  # safetensors: u64 header length + JSON header
    header = json.loads(raw[8:8 + n])
    assert set(header) - {"__metadata__"} == set(net.state_dict())
    card = json.loads((d / "card.json").read_text())
    assert card["weights_sha256"] == hashlib.sha256(raw).hexdigest()
    expect = hashlib.sha256(b"card.json\0" + (d / "card.json").read_bytes()
                            + b"weights.safetensors\0" + raw).hexdigest()
    assert bundle_hash(d) == expect == load_bundle(d).sha256
    assert not list(d.glob("*.tmp"))


def test_grid_mismatch_message(tmp_path):
    d = save_bundle(tmp_path / "b", tiny(n_ppm=1001))  # default grid -100..400/0.5
    with pytest.raises(BundleError) as ei:
        load_bundle(d, expect_grid=(-50, 300, 1))
    assert str(ei.value) == (f"{d}/card.json: ppm grid -100..400/0.5 does not match "
                             "the data's -50..300/1")
    assert isinstance(ei.value, InputError)
    # the data's axis itself is accepted too
    load_bundle(d, expect_grid=np.linspace(-100, 400, 1001))
    with pytest.raises(BundleError, match="does not match the data's -100..399.5/0.5"):
        load_bundle(d, expect_grid=np.linspace(-100, 399.5, 1000))


def test_nucleus_and_processing_mismatch(bundle_dir):
    d, _ = bundle_dir
    with pytest.raises(BundleError, match=r"card.json: nucleus 7Li does not match the data's 23Na"):
        load_bundle(d, expect_nucleus="23Na")
    other = {**PROC, "zero_fill": 4, "phase": {"mode": "auto", "p0": 12.5}}
    with pytest.raises(BundleError) as ei:
        load_bundle(d, expect_processing=other)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(f"{d}/card.json: processing config differs")
    assert "phase.mode (card 'frozen', data 'auto')" in msg and "zero_fill (card 2, data 4)" in msg
    load_bundle(d, expect_processing={**PROC, "apodization_hz": 50.0 + 1e-12})  # float noise ok


def test_corrupt_or_missing_files(bundle_dir, tmp_path):
    d, _ = bundle_dir
    w = d / "weights.safetensors"
    raw = bytearray(w.read_bytes())
    raw[-1] ^= 0xFF
    w.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="weights.safetensors: SHA-256 does not match"):
        load_bundle(d)
    with pytest.raises(BundleError, match="card.json: missing"):
        load_bundle(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "card.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(tmp_path / "bad")


def test_card_that_names_an_unknown_model(bundle_dir):
    d, _ = bundle_dir
    card = json.loads((d / "card.json").read_text())
    card["model"]["name"] = "lisentry_nett"
    (d / "card.json").write_text(json.dumps(card))
    with pytest.raises(BundleError, match="Did you mean 'lisentry_net'"):
        load_bundle(d)
    card["model"]["name"] = "lisentry_net"
    card["model"]["kwargs"]["hidden"] = 9  # weights no longer fit the architecture
    (d / "card.json").write_text(json.dumps(card))
    with pytest.raises(BundleError, match="weights.safetensors: cannot load weights"):
        load_bundle(d)


def test_save_validates_card_extra(tmp_path):
    with pytest.raises(ConfigError, match="key 'temprature'. Did you mean 'temperature'"):
        save_bundle(tmp_path / "x", tiny(), {"ppm_grid": GRID, "temprature": 2.0})
    with pytest.raises(ConfigError, match="has 1001 points; the model takes 64"):
        save_bundle(tmp_path / "x", tiny())  # default grid, 64-point model
    with pytest.raises(ConfigError, match="echem features"):
        save_bundle(tmp_path / "x", tiny(), {"ppm_grid": GRID, "echem_features": ["potential_V"]})
    with pytest.raises(ConfigError, match="not in MODELS"):
        save_bundle(tmp_path / "x", torch.nn.Linear(2, 2), {"ppm_grid": GRID})


def test_models_uri_resolution(bundle_dir, tmp_path, monkeypatch):
    import sys
    import types

    d, _ = bundle_dir
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if mlflow were not installed
    with pytest.raises(BundleError, match="needs mlflow"):
        load_bundle("models:/lisentry@champion")
    seen = []

    def download_artifacts(artifact_uri):
        seen.append(artifact_uri)
        return str(d.parent)  # the registered artifact holds the bundle one level down

    fake = types.SimpleNamespace(artifacts=types.SimpleNamespace(
        download_artifacts=download_artifacts))
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    b = load_bundle("models:/lisentry@champion", expect_grid=GRID)
    assert seen == ["models:/lisentry@champion"] and b.path == d


def test_onnx_export_streams_like_the_model(tmp_path):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from lisentry.models.onnx_export import check_onnx, read_metadata
    net = tiny()
    card = {"classes": ["normal_lithiation", "cluster_growth", "plating_onset", "imminent_short"],
            "ppm_grid": GRID, "temperature": 1.3, "weights_sha256": "ab12"}
    p = export_onnx(net, tmp_path / "m.onnx", card=card)
    # one self-contained file, no external weights beside it
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m.onnx"]
    meta = read_metadata(p)
    assert meta["classes"] == card["classes"] and meta["ppm_grid"] == GRID
    assert meta["temperature"] == 1.3 and meta["weights_sha256"] == "ab12"
    # the same frames streamed through ONNX Runtime and PyTorch (NaN edges, missing echem)
    r = check_onnx(net, p, n_frames=25)
    assert r["frames"] == 25 and r["argmax_agree"] == 1.0
    assert r["max_abs_logit_diff"] < 1e-4 and r["max_abs_aux_diff"] < 1e-4
    # a different network in the same file layout is told apart by the check
    torch.manual_seed(123)
    other = tiny()
    with torch.no_grad():
        for prm in other.parameters():
            prm.add_(torch.randn_like(prm))
    assert check_onnx(other, p, n_frames=5)["max_abs_logit_diff"] > 1e-3


def test_a_failed_onnx_save_leaves_nothing_behind(tmp_path, monkeypatch):
    pytest.importorskip("onnxscript")
    import onnx

    def full_disk(*a, **k):
        open(a[1], "wb").write(b"half")   # what a save that dies midway leaves
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(onnx, "save_model", full_disk)
    with pytest.raises(OSError, match="No space"):
        export_onnx(tiny(), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("variant", [
    {"descriptors": True},
    {"heads": "factored", "branch_channels": (4, 4), "branch_hidden": 6}])
def test_onnx_export_of_descriptor_and_factored_models(tmp_path, variant):
    # the descriptors' medians are sorts (the exporter cannot translate aten.median)
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from lisentry.models.onnx_export import check_onnx
    torch.manual_seed(0)
    net = LisentryNet(n_ppm=1001, hidden=8, channels=(4, 4), pooled_bins=4, echem_hidden=4,
                      ppm_min=-100.0, ppm_step=0.5, **variant).eval()
    r = check_onnx(net, export_onnx(net, tmp_path / "v.onnx"), n_frames=12)
    assert r["argmax_agree"] == 1.0 and r["max_abs_logit_diff"] < 1e-4


def test_descriptor_model_round_trip_and_grid_check(tmp_path):
    torch.manual_seed(0)
    net = LisentryNet(n_ppm=64, hidden=8, channels=(4, 4), pooled_bins=4, echem_hidden=4,
                      descriptors=True, ppm_min=GRID["min"], ppm_step=GRID["step"]).eval()
    card = {"ppm_grid": GRID, "processing": PROC, "temperature": 1.0, "horizon_s": 3600,
            "echem_features": {"names": list(ECHEM_FEATURES), "version": ECHEM_FEATURES_VERSION}}
    d = save_bundle(tmp_path / "desc", net, card)
    b = load_bundle(d, expect_grid=GRID)
    x, e = torch.rand(1, 6, 64), torch.randn(1, 6, N_ECHEM)
    with torch.no_grad():
        torch.testing.assert_close(b.model(x, e)["logits"], net(x, e)["logits"], atol=0, rtol=0)
    # the same weights under a card with another grid step are refused, naming the grid
    other = LisentryNet(n_ppm=64, hidden=8, channels=(4, 4), pooled_bins=4, echem_hidden=4,
                        descriptors=True, ppm_min=GRID["min"], ppm_step=1.0).eval()
    d2 = save_bundle(tmp_path / "desc2", other, card)
    with pytest.raises(BundleError, match="descriptor grid"):
        load_bundle(d2)


def test_factored_model_round_trip_streams_like_the_saved_one(tmp_path):
    grid = {"min": -100.0, "max": 375.0, "step": 5.0}  # covers both branch windows
    torch.manual_seed(0)
    net = LisentryNet(n_ppm=96, hidden=8, channels=(4, 4), pooled_bins=4, echem_hidden=4,
                      heads="factored", branch_channels=(4, 4), branch_hidden=6,
                      ppm_min=grid["min"], ppm_step=grid["step"]).eval()
    card = {"ppm_grid": grid, "processing": PROC, "temperature": 1.0, "horizon_s": 3600,
            "echem_features": {"names": list(ECHEM_FEATURES), "version": ECHEM_FEATURES_VERSION}}
    b = load_bundle(save_bundle(tmp_path / "fact", net, card), expect_grid=grid)
    assert b.model.heads == "factored"
    x, e = torch.rand(1, 5, 96), torch.randn(1, 5, N_ECHEM)
    with torch.no_grad():
        want = net(x, e)["logits"]
        st = b.model.init_state(1)
        got = []
        for t in range(5):
            o, st = b.model.step(x[:, t], e[:, t], st)
            got.append(o["logits"])
    torch.testing.assert_close(torch.stack(got, 1), want, atol=1e-5, rtol=0)


def test_same_weights_give_the_same_weights_file_and_hash(tmp_path):
    """Identical weights must give identical bytes (and ``weights_sha256``): the hash is how a
    retrained default is checked against the shipped one."""
    net = tiny()
    extra = {"ppm_grid": GRID, "processing": PROC}
    hashes, blobs = set(), set()
    for k in range(8):
        d = save_bundle(tmp_path / f"m{k}", net, dict(extra))
        hashes.add(json.loads((d / "card.json").read_text())["weights_sha256"])
        blobs.add((d / "weights.safetensors").read_bytes())
    assert len(hashes) == 1 and len(blobs) == 1


@pytest.mark.parametrize("field, value, message", [
    ("temperature", 0, "'temperature' must be a number > 0"),
    ("temperature", -1, "'temperature' must be a number > 0"),
    ("temperature", "abc", "'temperature' must be a number > 0"),
    ("format_version", "abc", "'format_version' must be an int >= 1. Got 'abc'."),
    ("ppm_grid", "x", "'ppm_grid' must be a mapping"),
    ("ppm_grid", {"min": 0.0, "max": 31.5, "n": 64}, "'ppm_grid.step' missing"),
    ("ppm_grid", {"min": 0.0, "max": 31.5, "step": "a", "n": 64}, "'ppm_grid.step' must be a finite number"),
    ("ppm_grid", {"min": 0.0, "max": 31.5, "step": 0.5, "n": 10}, "'ppm_grid.n' must be"),
    ("model", 5, "'model' must be a mapping"),
    ("model", {"name": 3}, "'model.name' must be"),
    ("model", {"name": "lisentry_net", "kwargs": "x"}, "'model.kwargs' must be a mapping"),
    ("classes", "abc", "'classes' must be a list"),
    ("nucleus", 7, "'nucleus' must be"),
    ("inputs", "x", "'inputs' must be a mapping"),
    ("detector", [1], "'detector' must be a mapping or null"),
    ("ood_threshold", "x", "'ood_threshold' must be a finite number or null"),
])
def test_tampered_card_fields_are_one_line_errors(bundle_dir, field, value, message):
    """A hand-edited card gives one BundleError line naming the card and the field, never a
    traceback (ValueError, KeyError, TypeError, AttributeError) or silent garbage (T <= 0)."""
    d, _ = bundle_dir
    card = json.loads((d / "card.json").read_text())
    card[field] = value
    (d / "card.json").write_text(json.dumps(card))
    with pytest.raises(BundleError) as ei:
        load_bundle(d)
    msg = str(ei.value)
    assert msg.startswith(f"{d}/card.json: ") and message in msg and "\n" not in msg


def test_card_grid_must_have_the_models_points(bundle_dir):
    d, _ = bundle_dir
    card = json.loads((d / "card.json").read_text())
    card["ppm_grid"] = {"min": 0.0, "max": 63.0, "step": 0.5, "n": 127}
    (d / "card.json").write_text(json.dumps(card))
    with pytest.raises(BundleError, match="'ppm_grid' has 127 points; the model takes 64"):
        load_bundle(d)


def test_resaving_removes_a_previous_ood_scorer(tmp_path):
    """A new bundle written over an old one that had a feature OOD scorer must not keep the
    old scorer's files: they belong to other weights and would count in bundle_hash."""
    d = tmp_path / "m"
    d.mkdir()
    (d / "ood.safetensors").write_bytes(b"old scorer")
    (d / "ood.json").write_text("{}")
    save_bundle(d, tiny(), {"ppm_grid": GRID})
    assert not (d / "ood.safetensors").exists() and not (d / "ood.json").exists()
    expect = hashlib.sha256(b"card.json\0" + (d / "card.json").read_bytes() + b"weights.safetensors\0"
                            + (d / "weights.safetensors").read_bytes()).hexdigest()
    assert bundle_hash(d) == expect == load_bundle(d).sha256


def test_binned_echem_edges_travel_with_the_weights(tmp_path):
    torch.manual_seed(0)
    net = LisentryNet(n_ppm=64, hidden=8, channels=(4, 4), pooled_bins=4, echem_hidden=4,
                      echem_bins=3).eval()
    values = np.random.default_rng(0).normal(2.0, 5.0, size=(300, N_ECHEM))
    net.fit_echem_edges(values, np.ones_like(values, bool))
    card = {"ppm_grid": GRID, "processing": PROC, "temperature": 1.0, "horizon_s": 3600,
            "echem_features": {"names": list(ECHEM_FEATURES), "version": ECHEM_FEATURES_VERSION}}
    b = load_bundle(save_bundle(tmp_path / "binned", net, card), expect_grid=GRID)
    torch.testing.assert_close(b.model.echem_edges, net.echem_edges, atol=0, rtol=0)
    x, e = torch.rand(1, 6, 64), torch.randn(1, 6, N_ECHEM) * 5
    with torch.no_grad():
        torch.testing.assert_close(b.model(x, e)["logits"], net(x, e)["logits"], atol=0, rtol=0)


def test_onnx_export_of_a_binned_echem_model(tmp_path):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from lisentry.models.onnx_export import check_onnx
    torch.manual_seed(0)
    net = LisentryNet(n_ppm=1001, hidden=8, channels=(4, 4), pooled_bins=4, echem_hidden=4,
                      echem_bins=4).eval()
    values = np.random.default_rng(1).normal(size=(200, N_ECHEM))
    net.fit_echem_edges(values, np.ones_like(values, bool))
    r = check_onnx(net, export_onnx(net, tmp_path / "b.onnx"), n_frames=12)
    assert r["argmax_agree"] == 1.0 and r["max_abs_logit_diff"] < 1e-4


def test_symmetric_cells_reading_is_recorded_and_checked(bundle_dir, tmp_path):
    d, _ = bundle_dir
    assert load_bundle(d).symmetric_cells == "signed"           # bundles from before the option
    assert "symmetric_cells" not in json.loads((d / "card.json").read_text())["inputs"]
    s = save_bundle(tmp_path / "s", tiny(), {"ppm_grid": GRID, "symmetric_cells": "sign_free"})
    assert load_bundle(s).symmetric_cells == "sign_free"
    with pytest.raises(ConfigError, match="'symmetric_cells' card value must be one of"):
        save_bundle(tmp_path / "b", tiny(), {"ppm_grid": GRID, "symmetric_cells": "abs"})
    card = json.loads((s / "card.json").read_text())
    card["inputs"]["symmetric_cells"] = "abs"
    (s / "card.json").write_text(json.dumps(card))
    with pytest.raises(BundleError, match="inputs.symmetric_cells 'abs' is not one of signed, sign_free"):
        load_bundle(s)
