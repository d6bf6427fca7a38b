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


def _build(path, runs, processing=None):
    w = DatasetWriter(path, ppm_grid=GRID, processing=processing or {})
    for r in runs:
        w.add_run(r, family="famA")
    return w.close()


def test_content_sketch_survives_rounding_but_not_a_real_change(tmp_path):
    from lisentry.datasets.fingerprint import compare_sketches, sketch_dataset
    runs = [_run(f"r{k}", 4, k) for k in range(3)]
    ds = _build(tmp_path / "ds", runs)
    sk = ds.manifest["content_sketch"]
    assert sk["n_frames"] == 12
    env = ds.manifest["environment"]
    assert env["numpy"] == np.__version__ and isinstance(env["numpy_simd"], list)
    # the sketch written while building equals one computed from the stored folder
    again = sketch_dataset(ds)
    assert again["exact"] == sk["exact"] and compare_sketches(sk, again) == (True, 0.0, "")

    def rebuilt(change):
        frames = [f for r in runs for f in r.frames]
        f = frames[5]
        new = [Run(r.run_id, [change(x) if x is f else x for x in r.frames]) for r in runs]
        return _build(tmp_path / f"ds{len(list(tmp_path.iterdir()))}", new).manifest

    # one float32 ulp in one value (what another CPU's SIMD kernels do): bytes differ, data same
    def ulp(f):
        y = f.intensity.copy()
        y[100] = np.nextafter(y[100], np.float32(np.inf))
        return f.replace(intensity=y)
    m = rebuilt(ulp)
    assert m["content_hash"] != ds.manifest["content_hash"]
    same, worst, why = compare_sketches(sk, m["content_sketch"])
    assert same and 0 < worst < 1e-9 and why == ""

    # one frame 0.1 % stronger, or shifted by one grid point, is a different dataset
    for change in (lambda f: f.replace(intensity=f.intensity * np.float32(1.001)),
                   lambda f: f.replace(intensity=np.roll(f.intensity, 1))):
        same, worst, why = compare_sketches(sk, rebuilt(change)["content_sketch"])
        assert not same and worst > 1e-6 and "spectra" in why and "differs by a relative" in why

    # a changed label is caught exactly, whatever the floats do
    same, _, why = compare_sketches(sk, rebuilt(lambda f: f.replace(label="cluster_growth"))["content_sketch"])
    assert not same and "labels" in why

    # a shifted potential (frame table, not spectra) is caught too
    same, _, why = compare_sketches(
        sk, rebuilt(lambda f: f.replace(potential_V=f.potential_V + 0.01))["content_sketch"])
    assert not same and "potential_V" in why


def test_content_sketch_sees_data_moved_between_frames(tmp_path):
    """Sums over frames are blind to which frame holds what; the frame-signed sums are not."""
    from lisentry.datasets.fingerprint import compare_sketches
    runs = [_run(f"r{k}", 4, k) for k in range(2)]
    sk = _build(tmp_path / "ds", runs).manifest["content_sketch"]
    assert sk["version"] == 2 and len(sk["frame_patterns"]) == 8

    def swapped(field):
        fr = list(runs[0].frames)
        a, b = getattr(fr[1], field), getattr(fr[2], field)
        fr[1], fr[2] = fr[1].replace(**{field: b}), fr[2].replace(**{field: a})
        return _build(tmp_path / f"sw_{field}", [Run(runs[0].run_id, fr), runs[1]]).manifest

    m = swapped("intensity")
    # the plain sums cannot tell: every version-1 part agrees
    v1 = {k: v for k, v in sk.items() if not k.startswith("frame_")} | {"version": 1}
    same, _, why = compare_sketches(v1, m["content_sketch"])
    assert same and "cannot check frame order" in why
    same, worst, why = compare_sketches(sk, m["content_sketch"])
    assert not same and worst > 1e-6 and "frame-signed" in why

    same, _, why = compare_sketches(sk, swapped("potential_V")["content_sketch"])
    assert not same and "potential_V (frame-signed" in why


def test_frame_signs_follow_the_frame_not_its_row():
    """A frame's sign comes from its run id and index, so re-reading the same frames in another
    row order gives the same signed sums (the exact part, which hashes the order, does differ)."""
    from lisentry.datasets.fingerprint import DataSketch
    import pandas as pd
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 64)).astype(np.float32)
    rows = pd.DataFrame({"run_id": ["a"] * 6 + ["b"] * 4, "index": list(range(6)) + list(range(4)),
                         "potential_V": rng.normal(size=10)})
    perm = rng.permutation(10)
    a = DataSketch().update(x, rows).to_dict()
    b = DataSketch().update(x[perm], rows.iloc[perm].reset_index(drop=True)).to_dict()
    np.testing.assert_allclose(a["frame_patterns"], b["frame_patterns"], rtol=1e-12)
    np.testing.assert_allclose(a["frame_columns"]["potential_V"], b["frame_columns"]["potential_V"],
                               rtol=1e-12)
    assert a["exact"] != b["exact"]
    with pytest.raises(ValueError, match="10 spectra but 9 frame rows"):
        DataSketch().update(x, rows[:9])


@pytest.mark.parametrize("damage,name,needle", [
    (lambda d: (d / "spectra.f32").write_bytes((d / "spectra.f32").read_bytes()[:100]), "spectra.f32", "truncated"),
    (lambda d: (d / "spectra.f32").unlink(), "spectra.f32", "missing"),
    (lambda d: (d / "manifest.json").write_text("{\n"), "manifest.json", "not valid JSON"),
    (lambda d: (d / "manifest.json").write_text("{}"), "manifest.json", "'ppm_grid' missing"),
    (lambda d: (d / "manifest.json").write_text("[]"), "manifest.json", "not a JSON object"),
    (lambda d: (d / "frames.parquet").write_bytes((d / "frames.parquet").read_bytes()[:50]),
     "frames.parquet", "cannot be read as parquet"),
    (lambda d: (d / "frames.parquet").unlink(), "frames.parquet", "missing"),
    (lambda d: (d / "runs.parquet").unlink(), "runs.parquet", "missing"),
])
def test_damaged_dataset_is_one_line_naming_the_file(tmp_path, damage, name, needle):
    from lisentry.datasets.errors import InputError
    w = DatasetWriter(tmp_path / "ds", ppm_grid=GRID, processing={})
    w.add_run(_run("r0", 3, 0), family="famA")
    w.close()
    damage(tmp_path / "ds")
    with pytest.raises(InputError) as ei:
        Dataset(tmp_path / "ds")
    msg = str(ei.value)
    assert name in msg and needle in msg and "\n" not in msg
