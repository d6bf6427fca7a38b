"""add-measured is all or nothing, and its interval labels are checked (one line each)."""
from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from lisentry.datasets import build
from lisentry.datasets.build import add_measured, read_intervals
from lisentry.datasets.errors import ConfigError, InputError
from lisentry.datasets.frame import AcquisitionParams, Frame, Run
from lisentry.datasets.io import bruker_writer as bw
from lisentry.datasets.loading import LoadOptions
from lisentry.datasets.pipeline import Pipeline
from lisentry.datasets.store import Dataset, DatasetWriter

T0 = datetime(2023, 8, 11, 11, 0, 0, tzinfo=timezone.utc)


def _acq():
    bf1, o1 = 116.641914, 29000.0
    return AcquisitionParams(nucleus="7Li", sfo1_MHz=bf1 + o1 * 1e-6, bf1_MHz=bf1, o1_Hz=o1,
                             sw_Hz=93457.9439252336, td=1024, ns=8, ds=2, d1_s=0.5,
                             group_delay_pts=0.0, sr_Hz=-3000.0, extra={})


@pytest.fixture
def setup(tmp_path):
    pipe = Pipeline()
    grid = pipe.ppm_grid
    w = DatasetWriter(tmp_path / "ds", ppm_grid=grid, processing=pipe.config.to_dict())
    acq = _acq()
    frames = [Frame("sim", i, i + 1, T0, T0, 300.0 * i, "7Li", acq.sfo1_MHz, grid,
                    np.full(grid.size, 0.1 * i, np.float32), acq, label="normal_lithiation")
              for i in range(3)]
    w.add_run(Run("sim", frames), family="famA")
    w.close()
    t = np.arange(acq.td // 2) / acq.sw_Hz
    fid = np.exp(2j * np.pi * 500.0 * t) * np.exp(-np.pi * 150.0 * t)
    for i in range(1, 5):
        s = T0 + timedelta(seconds=300 * i)
        bw.write_experiment(tmp_path / "nmr" / str(i), fid, acq, s,
                            s + timedelta(seconds=acq.duration_s), procs={"PHC0": 0.0, "PHC1": 0.0})
    return tmp_path


def _labels(tmp_path, text, name="iv.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def _state(d):
    ds = Dataset(d)
    return (ds.manifest["n_frames"], len(ds.frames), len(ds.runs),
            os.path.getsize(d / "spectra.f32"), (d / "frames.parquet").read_bytes())


def test_failed_append_leaves_dataset_unchanged_and_retry_adds_once(setup, monkeypatch):
    d = setup / "ds"
    iv = _labels(setup, "start,end,label\n0,700,normal_lithiation\n700,5000,plating_onset\n")
    before = _state(d)
    real_replace = os.replace

    def failing(src, dst, *a, **k):
        if str(dst).endswith("manifest.json"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(build.os, "replace", failing)
    with pytest.raises(InputError) as ei:
        add_measured(d, setup / "nmr", iv, LoadOptions())
    assert "manifest.json" in str(ei.value) and "\n" not in str(ei.value)
    monkeypatch.setattr(build.os, "replace", real_replace)
    after = _state(d)
    assert after[:3] == before[:3] and after[4] == before[4]
    assert not [p for p in d.iterdir() if p.name.startswith(".")]

    ds = add_measured(d, setup / "nmr", iv, LoadOptions())
    assert ds.manifest["n_frames"] == 3 + 4 == len(ds.frames)
    assert len(ds.runs) == 2 and ds.spectra.shape[0] == 7


def test_leftover_rows_of_an_interrupted_append_are_ignored(setup):
    import pandas as pd
    d = setup / "ds"
    ds = Dataset(d)
    # a crash after frames.parquet was replaced but before the manifest
    pd.concat([ds.frames, ds.frames], ignore_index=True).to_parquet(d / "frames.parquet")
    assert len(Dataset(d).frames) == 3
    iv = _labels(setup, "start,end,label\n0,5000,normal_lithiation\n")
    ds = add_measured(d, setup / "nmr", iv, LoadOptions())
    assert len(ds.frames) == ds.manifest["n_frames"] == 7


@pytest.mark.parametrize("text,needle", [
    ("start,end,label\n0,1800,normal_lithiation\n1000,3000,plating_onset\n", "rows 2 and 3 overlap"),
    ("start,end,label\n0,1800,normal_lithiation\n0,1800,plating_onset\n", "rows 2 and 3 overlap"),
    ("start,end,label\n", "no interval rows"),
    ("", "empty"),
    ("start,end,label\n0,1800,normal_lithiation,extra\n", "row 2: 4 fields, expected 3"),
    ("start,end,label\n100000,200000,plating_onset\n", "wholly outside the run"),
    ("start,end,label\n-500,-100,plating_onset\n", "wholly outside the run"),
    ("start,end,label\n2023-08-11T12:00:00,2023-08-11T13:00:00,plating_onset\n", "no UTC offset"),
    ("start,end,label\nnan,100,plating_onset\n", "not finite"),
])
def test_bad_intervals_are_one_line(tmp_path, text, needle):
    p = _labels(tmp_path, text)
    with pytest.raises(InputError) as ei:
        read_intervals(p, T0, t_end_s=3600.0)
    msg = str(ei.value)
    assert needle in msg and str(p) in msg and "\n" not in msg


def test_naive_iso_times_follow_echem_tz(tmp_path):
    p = _labels(tmp_path, "start,end,label\n2023-08-11T12:00:00,2023-08-11T12:30:00,plating_onset\n")
    (a, b, lab), = read_intervals(p, T0, tz="Europe/London", t_end_s=7200.0)
    assert (a, b) == (0.0, 1800.0)      # 12:00 BST = 11:00 UTC = T0
    p2 = _labels(tmp_path, "\ufeffstart,end,label\n2023-08-11T12:00:00+01:00,1800,plating_onset\n", "b.csv")
    assert read_intervals(p2, T0)[0][:2] == (0.0, 1800.0)


def test_split_must_be_one_of_the_datasets(setup):
    iv = _labels(setup, "start,end,label\n0,5000,normal_lithiation\n")
    with pytest.raises(ConfigError, match="tset.*'test'"):
        add_measured(setup / "ds", setup / "nmr", iv, LoadOptions(), split="tset")
    ds = add_measured(setup / "ds", setup / "nmr", iv, LoadOptions(), split="val")
    assert ds.runs["split"].tolist()[-1] == "val"
