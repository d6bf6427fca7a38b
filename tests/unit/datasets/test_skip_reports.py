"""Skip reports carry the frame's real number, and nothing read is dropped without a word:
a zeroed ``ser`` row, a ``ser`` cut short under a completed ``audita.txt``, a trailing all-zero
fid despite a completed ``audita.txt``, a trailing empty folder, a single experiment folder
given as the NMR folder. Fixtures are written by our TopSpin writer into tmp_path."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from lisentry.datasets.errors import NmrFolderError
from lisentry.datasets.frame import AcquisitionParams
from lisentry.datasets.io import bruker
from lisentry.datasets.io import bruker_writer as bw
from lisentry.datasets.loading import check_nmr_path, load_run

T0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
ACQ = AcquisitionParams(nucleus="7Li", sfo1_MHz=116.641914 + 0.029, bf1_MHz=116.641914,
                        o1_Hz=29000.0, sw_Hz=93457.9439252336, td=512, ns=8, ds=0, d1_s=1.0,
                        group_delay_pts=0.0, sr_Hz=0.0)
NOMINAL = ACQ.duration_s          # (NS + DS)(D1 + AQ), about 8.02 s


def _fid(k=0):
    t = np.arange(ACQ.td // 2) / ACQ.sw_Hz
    return np.exp(2j * np.pi * (300.0 + 100 * k) * t - np.pi * 150.0 * t)


def _series(root, n, period=60.0):
    for e in range(1, n + 1):
        start = T0 + timedelta(seconds=period * (e - 1))
        bw.write_experiment(root / str(e), _fid(e), ACQ, start, start + timedelta(seconds=NOMINAL),
                            procs={})


def test_zeroed_ser_row_is_reported_by_its_row(tmp_path):
    fids = np.stack([_fid(k) for k in range(5)])
    fids[2] = 0                                   # row 3 zeroed, rows 4 and 5 acquired
    bw.write_ser(tmp_path / "nmr" / "7", fids, ACQ, T0, NOMINAL, procs={})
    run = load_run(tmp_path / "nmr", on_skip=None, on_note=None)
    assert [f.expno for f in run] == [1, 2, 4, 5]
    assert [s[0] for s in run.skipped] == [3]     # the row, not the folder's 7


def test_cut_ser_rows_keep_their_times_and_say_so(tmp_path):
    fids = np.stack([_fid(k) for k in range(7)])
    # 20 rows acquired (completed audita over 20 rows), the file cut to the first 7
    bw.write_ser(tmp_path / "1", fids, ACQ, T0, NOMINAL * 20 / 7, n_rows_total=20,
                 truncate_file=True, procs={})
    notes = []
    run = load_run(tmp_path, on_skip=None, on_note=notes.append)
    assert len(run) == 7
    starts = [(f.acq_start - T0).total_seconds() for f in run]
    assert np.diff(starts) == pytest.approx([NOMINAL] * 6, abs=1e-3)   # not 20/7 of it
    assert len(notes) == 1 and "rows 8..20 of 20" in notes[0] and "\n" not in notes[0]
    assert run.meta["notes"] == notes
    # halted after 7 rows (window of 7 nominal rows): spacing from the window, no note
    bw.write_ser(tmp_path / "2", fids, ACQ, T0, NOMINAL, n_rows_total=20, procs={})
    rows = bruker.read_ser(tmp_path / "2")
    assert [r.notes for r in rows] == [()] * 7
    assert (rows[1].acq_start - rows[0].acq_start).total_seconds() == pytest.approx(NOMINAL, abs=1e-3)


def test_trailing_all_zero_fid_with_completed_audita_is_skipped(tmp_path):
    _series(tmp_path, 4)
    bw.write_experiment(tmp_path / "5", np.zeros(ACQ.td // 2, complex), ACQ,
                        T0 + timedelta(seconds=240), T0 + timedelta(seconds=240 + NOMINAL))
    run = load_run(tmp_path, on_skip=None, on_note=None)
    assert len(run) == 4
    assert [s[0] for s in run.skipped] == [5]
    assert "all zeros" in run.skipped[0][2] and "audita.txt" in run.skipped[0][2]


def test_trailing_folder_not_acquired_is_noted_not_skipped(tmp_path):
    _series(tmp_path, 3)
    (tmp_path / "4").mkdir()                                  # about to start
    bw.begin_experiment(tmp_path / "5", ACQ, T0 + timedelta(seconds=300), topspin="4.3")
    notes = []
    run = load_run(tmp_path, on_skip=None, on_note=notes.append)
    assert len(run) == 3 and run.skipped == []
    assert [n for n, _, _ in run.meta["not_acquired"]] == [4, 5]
    assert len(notes) == 1 and "2 trailing" in notes[0] and "frame 4, 5" in notes[0]


def test_single_experiment_folder_is_refused_in_one_line(tmp_path):
    _series(tmp_path / "nmr", 2)
    with pytest.raises(NmrFolderError) as ei:
        load_run(tmp_path / "nmr" / "2", on_skip=None, on_note=None)
    msg = str(ei.value)
    assert "one experiment folder (acqus found)" in msg and str(tmp_path / "nmr") in msg
    with pytest.raises(NmrFolderError, match="is a file"):
        check_nmr_path(tmp_path / "nmr" / "2" / "acqus")
    with pytest.raises(NmrFolderError, match="missing"):
        check_nmr_path(tmp_path / "nope")
