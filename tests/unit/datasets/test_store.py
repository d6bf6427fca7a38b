from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from lisentry.datasets.errors import ConfigError
from lisentry.datasets.frame import AcquisitionParams, Frame, Run
from lisentry.datasets.store import Dataset, DatasetWriter

GRID = np.arange(-100, 400.25, 0.5)
ACQ = AcquisitionParams("7Li", 194.4, 194.38, 0.0, 1e5, 8192, ns=16)


def _run(run_id: str, n: int, seed: int, label="normal_lithiation") -> Run:
    rng = np.random.default_rng(seed)
    t0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
    frames = []
    for i in range(n):
        a = t0 + timedelta(minutes=5 * i)
        frames.append(Frame(run_id, i, i + 1, a, a + timedelta(minutes=4), 120.0 + 300 * i, "7Li",
                            194.4, GRID, rng.normal(size=GRID.size).astype(np.float32), ACQ,
                            potential_V=0.1 - 0.01 * i, label=label,
                            latent={"cluster_amount": 0.01 * i, "metal_amount": 0.0}))
    return Run(run_id, frames)


def test_round_trip_is_lazy_and_exact(tmp_path):
    runs = [_run(f"r{k}", 3 + k, k) for k in range(4)]
    w = DatasetWriter(tmp_path / "ds", ppm_grid=GRID, processing={"lb_Hz": 50})
    for k, r in enumerate(runs):
        w.add_run(r, family="famA" if k % 2 else "famB")
    ds = w.close()
    assert isinstance(ds.spectra, np.memmap)
    assert len(ds) == 4 and ds.manifest["n_frames"] == sum(len(r) for r in runs)
    for r in runs:
        v = ds.run(r.run_id)
        np.testing.assert_array_equal(np.asarray(v.spectra), r.spectra())
        assert v.frames["expno"].tolist() == [f.expno for f in r.frames]
        np.testing.assert_allclose(v.frames["latent_cluster_amount"], [0.01 * i for i in range(len(r))])
    # same content -> same hash; different content -> different hash
    w2 = DatasetWriter(tmp_path / "ds2", ppm_grid=GRID, processing={"lb_Hz": 50})
    for k, r in enumerate(runs):
        w2.add_run(r, family="famA" if k % 2 else "famB")
    assert w2.close().manifest["content_hash"] == ds.manifest["content_hash"]
    w3 = DatasetWriter(tmp_path / "ds3", ppm_grid=GRID, processing={})
    w3.add_run(runs[0], family="famB")
    assert w3.close().manifest["content_hash"] != ds.manifest["content_hash"]


def test_splits_are_by_run_and_leave_family_out(tmp_path):
    w = DatasetWriter(tmp_path / "ds", ppm_grid=GRID, processing={})
    for k in range(20):
        w.add_run(_run(f"r{k}", 2, k), family=("famA", "famB")[k % 2])
    ds = w.close()
    sp = ds.split(seed=1)
    all_ids = sp["train"] + sp["val"] + sp["test"]
    assert sorted(all_ids) == sorted(ds.run_ids) and len(set(all_ids)) == 20
    lo = ds.split(leave_out_families=["famA"])
    assert set(lo["leave_out"]) == {f"r{k}" for k in range(0, 20, 2)}
    assert not set(lo["leave_out"]) & set(lo["train"] + lo["val"] + lo["test"])
    with pytest.raises(ConfigError, match="famC"):
        ds.split(leave_out_families=["famC"])


def test_refuses_other_grid_and_existing_folder(tmp_path):
    w = DatasetWriter(tmp_path / "ds", ppm_grid=GRID[:-2], processing={})
    with pytest.raises(ConfigError, match="grid"):
        w.add_run(_run("a", 2, 0))
    (tmp_path / "exists").mkdir()
    with pytest.raises(ConfigError, match="exists"):
        DatasetWriter(tmp_path / "exists", ppm_grid=GRID, processing={})


def test_class_balance(tmp_path):
    w = DatasetWriter(tmp_path / "ds", ppm_grid=GRID, processing={})
    w.add_run(_run("a", 3, 0, "cluster_growth"), family="f1")
    w.add_run(_run("b", 2, 1, "normal_lithiation"), family="f2")
    w.close()
    tab = Dataset(tmp_path / "ds").class_balance()
    assert tab.loc["f1", "cluster_growth"] == 3 and tab.loc["f2", "normal_lithiation"] == 2
