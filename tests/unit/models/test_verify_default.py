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
