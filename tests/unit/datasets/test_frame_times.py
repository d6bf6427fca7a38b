"""A frame whose audita.txt time is far out of line is the one skipped (not every later frame)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np

from lisentry.datasets.errors import BrukerFormatError, InputError
from lisentry.datasets.frame import AcquisitionParams, RawFrame
from lisentry.datasets.io import bruker
from lisentry.datasets.io import bruker_writer as bw
from lisentry.datasets.loading import RunAssembler, load_run, pipeline_for, LoadOptions

T0 = datetime(2023, 8, 11, 11, 0, 0, tzinfo=timezone.utc)


def _acq():
    bf1, o1 = 116.641914, 29000.0
    return AcquisitionParams(nucleus="7Li", sfo1_MHz=bf1 + o1 * 1e-6, bf1_MHz=bf1, o1_Hz=o1,
                             sw_Hz=93457.9439252336, td=1024, ns=8, ds=2, d1_s=0.5,
                             group_delay_pts=0.0, sr_Hz=None, extra={})


def _series(root, n=6):
    acq = _acq()
    t = np.arange(acq.td // 2) / acq.sw_Hz
    fid = np.exp(2j * np.pi * 500.0 * t) * np.exp(-np.pi * 150.0 * t)
    for i in range(1, n + 1):
        s = T0 + timedelta(seconds=300 * i)
        bw.write_experiment(root / str(i), fid, acq, s, s + timedelta(seconds=acq.duration_s))
    return acq


def _shift_year(audita):
    text = audita.read_text(encoding="latin-1")
    assert "2023-08-11" in text
    audita.write_text(text.replace("2023-08-11", "2024-08-11"), encoding="latin-1")


def test_one_wrong_audita_year_skips_only_that_frame(tmp_path):
    _series(tmp_path)
    _shift_year(tmp_path / "3" / "audita.txt")
    out = list(bruker.iter_raw_frames(tmp_path))
    assert [o.expno for o in out if isinstance(o, RawFrame)] == [1, 2, 4, 5, 6]
    errs = [o for o in out if isinstance(o, InputError)]
    assert len(errs) == 1 and isinstance(errs[0], BrukerFormatError)
    msg = str(errs[0])
    assert "3" in errs[0].path.parts and "audita.txt" in msg and "DATE" in msg and "\n" not in msg

    skipped = []
    run = load_run(tmp_path, on_skip=skipped.append, on_note=None)
    assert [f.expno for f in run.frames] == [1, 2, 4, 5, 6]
    assert [s[0] for s in run.skipped] == [3] and "DATE" in run.skipped[0][2]

    # streaming (watch): frame by frame, same decision without later frames
    asm = RunAssembler("r", pipeline_for(LoadOptions()), None, on_note=None)
    got = []
    for i in range(1, 7):
        try:
            got.append(asm.add(bruker.read_experiment(tmp_path / str(i))).expno)
        except InputError:
            pass
    assert got == [1, 2, 4, 5, 6]


def test_date_within_window_is_accepted(tmp_path):
    _series(tmp_path, n=2)
    fr = bruker.read_experiment(tmp_path / "2")
    assert fr.time_source == "audita"
