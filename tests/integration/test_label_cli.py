"""``lisentry label`` end to end: columns, timing columns, skipped frames, provenance, atomic
writes, several runs (folders and manifest), log auto-discovery, --plot/--report."""
from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lisentry.models.bundle import bundle_hash

#: interfaces.md "Output columns", copied here on purpose (not imported from the code).
COLUMNS = ["frame", "timestamp", "t_s", "label", "p_normal_lithiation", "p_cluster_growth",
           "p_plating_onset", "p_imminent_short", "potential_V", "current_A", "ood_score",
           "cluster_amount", "cluster_shift_ppm", "metal_amount", "ce_amount", "status"]
CLASSES = ["normal_lithiation", "cluster_growth", "plating_onset", "imminent_short"]


def invoke(*args):
    from lisentry.detector.cli import app
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two finished runs written in the instrument formats: RUN/nmr/<expno> + RUN/echem/*.mpt."""
    from lisentry.datasets.sim.run import simulate_run, write_run
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, family, seed, n in (("runA", "hc_sulfide_overlithiation", 3, 8),
                                  ("runB", "hc_sulfide_hold", 5, 6)):
        sim = simulate_run(family, seed, max_frames=n, run_id=name)
        nmr, mpt = write_run(sim, root / name)
        out[name] = (sim, root / name, nmr, mpt)
    return out


def test_single_run_csv_columns_rows_times_provenance(runs, tiny_bundle, tmp_path, monkeypatch):
    sim, run_dir, nmr, mpt = runs["runA"]
    out = tmp_path / "sub" / "x.csv"                 # folder created on demand
    args = ["label", nmr, "--echem", mpt, "--echem-tz", "UTC", "--out", out, "--model", tiny_bundle]
    argv = ["lisentry", *map(str, args)]
    monkeypatch.setattr(sys, "argv", argv)           # what the console script sees
    res = invoke(*args)
    assert res.exit_code == 0, res.stdout + res.stderr
    df = pd.read_csv(out)
    assert list(df.columns) == COLUMNS
    assert len(df) == len(sim.raws)
    assert df["frame"].tolist() == [r.expno for r in sim.raws]
    t_first = sim.raws[0].acq_start
    for row, raw in zip(df.itertuples(), sim.raws):
        ts = datetime.fromisoformat(row.timestamp)
        assert ts.utcoffset().total_seconds() == 0
        mid = raw.acq_start + (raw.acq_end - raw.acq_start) / 2
        assert abs((ts - mid).total_seconds()) < 0.01             # audita keeps ms
        assert row.t_s == pytest.approx((mid - t_first).total_seconds(), abs=0.01)
        # potential: time average of the log over the acquisition window (independent calc)
        e = sim.echem
        tt = np.linspace(raw.acq_start.timestamp(), raw.acq_end.timestamp(), 4001)
        assert row.potential_V == pytest.approx(np.interp(tt, e.t_utc_s, e.potential_V).mean(),
                                                abs=2e-5)
        assert row.current_A == pytest.approx(np.interp(tt, e.t_utc_s, e.current_A).mean(),
                                              rel=1e-3)
        assert row.status == "ok"
        assert row.label in CLASSES
    np.testing.assert_allclose(df[COLUMNS[4:8]].sum(axis=1), 1.0, atol=1e-6)
    assert pd.read_csv(tmp_path / "sub" / "x.skipped.csv").columns.tolist() == ["frame", "path", "reason"]
    assert len(pd.read_csv(tmp_path / "sub" / "x.skipped.csv")) == 0
    prov = json.loads((tmp_path / "sub" / "x.json").read_text())
    assert prov["model"]["sha256"] == bundle_hash(tiny_bundle)
    assert prov["model"]["card"] == json.loads((tiny_bundle / "card.json").read_text())
    assert prov["pipeline"]["config"] == prov["model"]["card"]["processing"]
    assert len(prov["pipeline"]["state"]["norm_sums"]) >= 1     # the run's own normalisation
    assert prov["horizon_s"] == 5400.0                # the bundle card's H
    assert prov["package_version"] == importlib.metadata.version("lisentry")
    assert prov["command_line"] == " ".join(argv)
    assert Path(prov["inputs"]["nmr_dir"]) == nmr and Path(prov["inputs"]["echem"]) == mpt
    assert prov["run"]["n_frames"] == len(sim.raws)
    # the summary line goes to stderr, nothing to stdout
    assert "8 frames labelled, 0 skipped" in res.stderr and res.stdout == ""


def test_parquet_equals_csv(runs, tiny_bundle, tmp_path):
    sim, run_dir, nmr, mpt = runs["runB"]
    for ext in ("csv", "parquet"):
        res = invoke("label", nmr, "--echem", mpt, "--echem-tz", "UTC", "--out",
                     tmp_path / f"y.{ext}", "--model", tiny_bundle)
        assert res.exit_code == 0, res.stderr
    a, b = pd.read_csv(tmp_path / "y.csv"), pd.read_parquet(tmp_path / "y.parquet")
    assert list(b.columns) == COLUMNS and len(b) == len(sim.raws)
    assert b["frame"].dtype.kind == "i" and b["label"].tolist() == a["label"].tolist()
    pd.testing.assert_frame_equal(a[COLUMNS[4:15]], b[COLUMNS[4:15]], check_exact=False,
                                  rtol=1e-9, check_dtype=False)
    assert (tmp_path / "y.skipped.csv").exists() and (tmp_path / "y.json").exists()


def test_unreadable_frames_get_no_row_and_are_listed(runs, tiny_bundle, tmp_path):
    sim, run_dir, nmr, mpt = runs["runA"]
    bad = tmp_path / "bad"
    shutil.copytree(run_dir, bad)
    fid = bad / "nmr" / "3" / "fid"
    fid.write_bytes(fid.read_bytes()[:1000])                 # truncated
    (bad / "nmr" / "5" / "acqus").unlink()                   # acqus lost
    out = tmp_path / "bad.csv"
    res = invoke("label", bad, "--echem-tz", "UTC", "--out", out, "--model", tiny_bundle)
    assert res.exit_code == 0, res.stderr
    df = pd.read_csv(out)
    assert df["frame"].tolist() == [1, 2, 4, 6, 7, 8]
    sk = pd.read_csv(tmp_path / "bad.skipped.csv")
    assert sk["frame"].tolist() == [3, 5]
    assert Path(sk["path"][1]) == bad / "nmr" / "5" / "acqus"
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("skipped:")]
    assert len(lines) == 2 and str(bad / "nmr" / "3") in lines[0] and "acqus" in lines[1]
    # t_s still counts from the first readable frame
    assert df["t_s"][0] == pytest.approx((sim.raws[0].acq_end - sim.raws[0].acq_start).total_seconds() / 2,
                                         abs=0.01)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_atomic_write_no_partial_file(runs, tiny_bundle, tmp_path, monkeypatch):
    import lisentry.detector.outputs as outputs
    sim, run_dir, nmr, mpt = runs["runB"]
    out = tmp_path / "z.csv"
    out.write_text("previous content\n")
    real = outputs._write_and_sync

    def half_then_fail(fh, data):
        name = os.readlink(f"/proc/self/fd/{fh.fileno()}")    # the temp file being written
        if Path(name).name.startswith(".z.csv."):
            fh.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")
        real(fh, data)

    monkeypatch.setattr(outputs, "_write_and_sync", half_then_fail)
    res = invoke("label", nmr, "--echem", mpt, "--echem-tz", "UTC", "--out", out,
                 "--model", tiny_bundle)
    assert res.exit_code != 0
    assert "No space left on device" in res.stderr and "Traceback" not in res.stderr
    assert out.read_text() == "previous content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["z.csv"]   # no temp file left over
    out.unlink()
    res = invoke("label", nmr, "--echem", mpt, "--echem-tz", "UTC", "--out", out,
                 "--model", tiny_bundle)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_many_runs_folders_manifest_broken_run_and_halt(runs, tiny_bundle, tmp_path):
    (_, dir_a, nmr_a, mpt_a), (_, dir_b, nmr_b, mpt_b) = runs["runA"], runs["runB"]
    res = invoke("label", dir_a, dir_b, "--echem-tz", "UTC", "--out", tmp_path / "o1",
                 "--model", tiny_bundle)
    assert res.exit_code == 0, res.stderr
    for name, d in (("runA", dir_a), ("runB", dir_b)):
        assert (tmp_path / "o1" / f"{name}.csv").exists()
        prov = json.loads((tmp_path / "o1" / f"{name}.json").read_text())
        assert Path(prov["inputs"]["echem"]).parent == d / "echem"       # found by itself
    broken = tmp_path / "broken" / "nmr" / "1"
    broken.mkdir(parents=True)
    (broken / "fid").write_bytes(b"\x01" * 64)                          # no acqus: unreadable
    man = tmp_path / "runs.csv"
    man.write_text("run_id,nmr_dir,echem_log,clock_offset_s\n"
                   f"a,{nmr_a},{mpt_a},0\n"
                   "broken,broken/nmr,,\n"                               # relative to manifest
                   f"b,{nmr_b},{mpt_b},0\n")
    res = invoke("label", "--manifest", man, "--echem-tz", "UTC", "--out", tmp_path / "o2",
                 "--format", "parquet", "--model", tiny_bundle)
    assert res.exit_code == 0, res.stderr
    assert "2 of 3 runs labelled" in res.stderr
    assert any(ln.startswith("broken: FAILED:") for ln in res.stderr.splitlines())
    assert sorted(p.name for p in (tmp_path / "o2").glob("*.parquet")) == ["a.parquet", "b.parquet"]
    a1, a2 = pd.read_csv(tmp_path / "o1" / "runA.csv"), pd.read_parquet(tmp_path / "o2" / "a.parquet")
    assert a1["label"].tolist() == a2["label"].tolist()
    res = invoke("label", "--manifest", man, "--echem-tz", "UTC", "--out", tmp_path / "o3",
                 "--halt-on-error", "--model", tiny_bundle)
    assert (tmp_path / "o3" / "a.csv").exists() and not (tmp_path / "o3" / "b.csv").exists()
    assert "broken: FAILED" in res.stderr and "1 of 2 runs labelled" in res.stderr


def test_run_folder_autodiscovery_plot_and_report(runs, tiny_bundle, tmp_path):
    sim, run_dir, nmr, mpt = runs["runB"]
    out = tmp_path / "r.csv"
    res = invoke("label", run_dir, "--echem-tz", "UTC", "--out", out, "--model", tiny_bundle,
                 "--plot", "--report")
    assert res.exit_code == 0, res.stderr
    prov = json.loads((tmp_path / "r.json").read_text())
    assert Path(prov["inputs"]["echem"]) == mpt
    df = pd.read_csv(out)
    assert df["potential_V"].notna().all() and (df["status"] == "ok").all()
    png = (tmp_path / "r.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    html = (tmp_path / "r.html").read_text()
    assert "<html" in html and "data:image/png;base64," in html and "runB" in html


def test_bad_arguments_one_line_errors(runs, tiny_bundle, tmp_path):
    sim, run_dir, nmr, mpt = runs["runB"]
    res = invoke("label", nmr, "--out", tmp_path / "x.txt", "--model", tiny_bundle)
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
    res = invoke("label", nmr, "--out", tmp_path / "x.csv", "--model", tmp_path / "nomodel")
    assert res.exit_code != 0 and "card.json" in res.stderr and "Traceback" not in res.stderr
    res = invoke("label", tmp_path / "missing", "--out", tmp_path / "x.csv", "--model", tiny_bundle)
    assert res.exit_code != 0 and "missing" in res.stderr and res.exception is None or \
        isinstance(res.exception, SystemExit)


def test_runs_given_by_their_nmr_folders_keep_their_names(runs, tiny_bundle, tmp_path):
    """RUN/nmr is run RUN: two such folders must not both write nmr.csv (the second would
    overwrite the first); two inputs with one name are refused; a missing folder is one line."""
    (_, dir_a, nmr_a, _), (_, dir_b, nmr_b, _) = runs["runA"], runs["runB"]
    res = invoke("label", nmr_a, nmr_b, "--echem-tz", "UTC", "--out", tmp_path / "o",
                 "--model", tiny_bundle)
    assert res.exit_code == 0, res.stderr
    assert sorted(p.name for p in (tmp_path / "o").glob("*.csv")
                  if not p.name.endswith(".skipped.csv")) == ["runA.csv", "runB.csv"]
    res = invoke("label", nmr_a, dir_a, "--out", tmp_path / "o2", "--model", tiny_bundle)
    assert res.exit_code == 2 and "would both write" in res.stderr
    res = invoke("label", tmp_path / "nope" / "nmr", "--out", tmp_path / "x.csv",
                 "--model", tiny_bundle)
    assert res.exit_code == 1
    assert res.stderr.strip().splitlines() == [f"nope: FAILED: {tmp_path / 'nope' / 'nmr'}: NMR folder missing"]


@pytest.fixture(scope="module")
def li_li_run(tmp_path_factory):
    """A symmetric Li | Li run in the instrument formats (RUN/nmr + RUN/echem/*.mpt)."""
    from lisentry.datasets.sim.run import simulate_run, write_run
    root = tmp_path_factory.mktemp("lili")
    sim = simulate_run("li_plating_liquid_li", 2, max_frames=6, run_id="lili")
    nmr, mpt = write_run(sim, root / "lili")
    return sim, root / "lili", nmr, mpt


@pytest.fixture(scope="module")
def sign_free_bundle(tmp_path_factory):
    import torch

    from lisentry.datasets.pipeline import ProcessingConfig
    from lisentry.models.bundle import save_bundle
    from lisentry.models.net import LisentryNet
    torch.manual_seed(5)
    return save_bundle(tmp_path_factory.mktemp("bundle") / "sym",
                       LisentryNet(n_ppm=1001, hidden=16, channels=(8, 8)),
                       {"processing": ProcessingConfig().to_dict(), "temperature": 0.02,
                        "ood_threshold": 50.0, "horizon_s": 5400.0, "symmetric_cells": "sign_free",
                        "detector": {"enter": 0.6, "exit": 0.4, "min_consecutive": 2}})


def test_cell_symmetric_is_recorded_and_needs_a_sign_free_model(li_li_run, tiny_bundle,
                                                                 sign_free_bundle, tmp_path):
    sim, run_dir, nmr, mpt = li_li_run
    res = invoke("label", run_dir, "--echem-tz", "UTC", "--out", tmp_path / "s.csv",
                 "--model", sign_free_bundle, "--cell", "symmetric")
    assert res.exit_code == 0, res.stderr
    prov = json.loads((tmp_path / "s.json").read_text())
    assert prov["inputs"]["cell"] == "symmetric"
    df = pd.read_csv(tmp_path / "s.csv")
    assert len(df) == 6 and list(df.columns) == COLUMNS
    res = invoke("label", run_dir, "--echem-tz", "UTC", "--out", tmp_path / "h.csv",
                 "--model", sign_free_bundle)
    assert res.exit_code == 0 and json.loads((tmp_path / "h.json").read_text())["inputs"]["cell"] == "half"
    # a model that reads symmetric cells signed: one line, nothing written
    res = invoke("label", run_dir, "--echem-tz", "UTC", "--out", tmp_path / "t.csv",
                 "--model", tiny_bundle, "--cell", "symmetric")
    assert res.exit_code != 0 and not (tmp_path / "t.csv").exists()
    assert res.stderr.strip().splitlines() == [
        f"error: --cell symmetric needs a model trained with inputs.symmetric_cells: sign_free; "
        f"{tiny_bundle} reads symmetric cells signed (omit --cell to label with it as a half cell)"]
    res = invoke("label", run_dir, "--out", tmp_path / "u.csv", "--model", sign_free_bundle,
                 "--cell", "li")
    assert res.exit_code != 0 and "--cell must be one of half, symmetric. Got 'li'" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_manifest_cell_column(li_li_run, runs, sign_free_bundle, tmp_path):
    _, _, nmr_l, mpt_l = li_li_run
    _, _, nmr_a, mpt_a = runs["runA"]
    man = tmp_path / "runs.csv"
    man.write_text("run_id,nmr_dir,echem_log,clock_offset_s,cell\n"
                   f"l,{nmr_l},{mpt_l},0,symmetric\n"
                   f"a,{nmr_a},{mpt_a},0,\n")
    res = invoke("label", "--manifest", man, "--echem-tz", "UTC", "--out", tmp_path / "o",
                 "--model", sign_free_bundle)
    assert res.exit_code == 0, res.stderr
    assert json.loads((tmp_path / "o" / "l.json").read_text())["inputs"]["cell"] == "symmetric"
    assert json.loads((tmp_path / "o" / "a.json").read_text())["inputs"]["cell"] == "half"
    man.write_text("run_id,nmr_dir,echem_log,clock_offset_s,cell\n"
                   f"l,{nmr_l},{mpt_l},0,sym\n")
    res = invoke("label", "--manifest", man, "--out", tmp_path / "o2", "--model", sign_free_bundle)
    assert res.exit_code != 0 and len(res.stderr.strip().splitlines()) == 1
    assert f"{man}: column 'cell' of run 'l' must be one of half, symmetric. Got 'sym'" in res.stderr
