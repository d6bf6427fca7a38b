"""benchmarks/verify_default.py: comparing two bundles' weights, and the data-hash check."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

from lisentry.models.bundle import save_bundle
from lisentry.models.net import LisentryNet

_PATH = Path(__file__).resolve().parents[3] / "benchmarks" / "verify_default.py"
_spec = importlib.util.spec_from_file_location("verify_default", _PATH)
vd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vd)

GRID = {"min": 0.0, "max": 31.5, "step": 0.5}


def _bundle(path, seed, hidden=8, data_hash="abc"):
    torch.manual_seed(seed)
    net = LisentryNet(n_ppm=64, hidden=hidden, channels=(4, 4), pooled_bins=4, echem_hidden=4)
    return save_bundle(path, net, {"ppm_grid": GRID, "training_data_hash": data_hash})


def test_weight_difference(tmp_path):
    a = _bundle(tmp_path / "a", 0)
    assert vd.weight_difference(a, _bundle(tmp_path / "a2", 0)) == 0.0
    assert 0.0 < vd.weight_difference(a, _bundle(tmp_path / "b", 1)) < float("inf")
    assert vd.weight_difference(a, _bundle(tmp_path / "c", 0, hidden=12)) == float("inf")


def test_side_file_difference_covers_the_presence_gate(tmp_path):
    import numpy as np

    from lisentry.models.bundle import attach_presence_gate
    from lisentry.models.presence import PresenceGate
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 16))
    amount = np.where(X[:, 0] > 0, 0.1, 0.0)
    a, a2 = _bundle(tmp_path / "a", 0), _bundle(tmp_path / "a2", 0)
    for d in (a, a2):
        attach_presence_gate(d, PresenceGate(["cluster_amount"]).fit(X, {"cluster_amount": amount}))
    assert vd.weight_difference(a, a2, "presence.safetensors") == 0.0
    b = _bundle(tmp_path / "b", 0)
    attach_presence_gate(b, PresenceGate(["cluster_amount"], C=0.01).fit(X, {"cluster_amount": amount}))
    assert 0.0 < vd.weight_difference(a, b, "presence.safetensors") < float("inf")
    assert vd.same_params(a, a2, "presence.json") and not vd.same_params(a, b, "presence.json")
    # a bundle without the gate cannot match one with it
    assert vd.weight_difference(a, _bundle(tmp_path / "c", 0), "presence.safetensors") == float("inf")


def test_data_hash_check_exit_status(tmp_path, capsys):
    b = _bundle(tmp_path / "m", 0, data_hash="feed")
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "manifest.json").write_text(json.dumps({"content_hash": "feed"}))
    assert vd.main(["--bundle", str(b), "--dataset", str(ds)]) == 0
    (ds / "manifest.json").write_text(json.dumps({"content_hash": "beef"}))
    assert vd.main(["--bundle", str(b), "--dataset", str(ds)]) == 1
    assert "DIFFERENT" in capsys.readouterr().out
    assert vd.main(["--bundle", str(tmp_path / "none"), "--dataset", str(ds)]) == 2


def _dataset(path, bump=1.0, ulp=False):
    """A tiny dataset folder written by the real DatasetWriter (content hash, sketch, env)."""
    from datetime import datetime, timedelta, timezone

    import numpy as np

    from lisentry.datasets.frame import AcquisitionParams, Frame, Run
    from lisentry.datasets.store import DatasetWriter
    grid = np.arange(-100, 400.25, 0.5)
    acq = AcquisitionParams("7Li", 194.4, 194.38, 0.0, 1e5, 8192, ns=16)
    rng = np.random.default_rng(0)
    t0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
    frames = []
    for i in range(5):
        y = rng.normal(size=grid.size).astype(np.float32) * np.float32(bump if i == 2 else 1.0)
        if ulp and i == 3:
            y[7] = np.nextafter(y[7], np.float32(np.inf))
        a = t0 + timedelta(minutes=5 * i)
        frames.append(Frame("r0", i, i + 1, a, a + timedelta(minutes=4), 120.0 + 300 * i, "7Li",
                            194.4, grid, y, acq, potential_V=0.1, label="normal_lithiation"))
    w = DatasetWriter(path, ppm_grid=grid, processing={})
    w.add_run(Run("r0", frames), family="famA")
    return w.close().manifest


def test_data_check_passes_rounding_and_fails_real_change(tmp_path, capsys):
    trained = _dataset(tmp_path / "trained")
    env = dict(trained["environment"], cpu="Some Other CPU", numpy_simd=["X86_V2", "X86_V3"])
    torch.manual_seed(0)
    net = LisentryNet(n_ppm=64, hidden=8, channels=(4, 4), pooled_bins=4, echem_hidden=4)
    b = save_bundle(tmp_path / "m", net, {"ppm_grid": GRID,
                                          "training_data_hash": trained["content_hash"],
                                          "training_data_sketch": trained["content_sketch"],
                                          "training_environment": env})
    assert json.loads((b / "card.json").read_text())["training_environment"]["cpu"] == "Some Other CPU"
    # one float32 ulp off (another CPU's rounding): other bytes, same data -> passes
    _dataset(tmp_path / "rounded", ulp=True)
    assert vd.main(["--bundle", str(b), "--dataset", str(tmp_path / "rounded")]) == 0
    out = capsys.readouterr().out
    assert "same data up to floating-point rounding" in out
    assert "cpu: bundle trained with 'Some Other CPU'" in out
    # one frame 1 % stronger: a different dataset -> fails and says what differs
    _dataset(tmp_path / "changed", bump=1.01)
    assert vd.main(["--bundle", str(b), "--dataset", str(tmp_path / "changed")]) == 1
    assert "DIFFERENT data: spectra" in capsys.readouterr().out


def test_identical_retrain_passes_even_when_the_data_bytes_differ(tmp_path, capsys, monkeypatch):
    import shutil
    import subprocess
    b = _bundle(tmp_path / "m", 0, data_hash="feed")
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "manifest.json").write_text(json.dumps({"content_hash": "beef"}))
    out = tmp_path / "retrained"

    def fake_train(cmd, **kw):     # stands in for `lisentry train`: reproduces or not
        assert "train" in cmd and f"out={out}" in cmd
        shutil.copytree(b if fake_train.same else _bundle(tmp_path / "other", 1), out,
                        dirs_exist_ok=True)
        return subprocess.CompletedProcess(cmd, 0)
    monkeypatch.setattr(vd.subprocess, "run", fake_train)
    fake_train.same = True
    args = ["--bundle", str(b), "--dataset", str(ds), "--retrain", "--out", str(out)]
    assert vd.main(args) == 0
    text = capsys.readouterr().out
    assert "DIFFERENT bytes" in text and "reproduces the bundle bit for bit" in text
    assert "shipped" in text and "retrained" in text
    fake_train.same = False
    shutil.rmtree(out)
    assert vd.main(args) == 1
    assert "weights: largest difference" in capsys.readouterr().out
