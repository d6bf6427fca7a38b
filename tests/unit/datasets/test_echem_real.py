"""The real Li|Li TEGDME operando run: EC-Lab text export, .mpr files, alignment with NMR.

What the files say (found by these tests, Europe/London = BST = UTC+1 in August):

* ``*_01_GCPL_C05.mpr``: LOG timestamp 2023-08-11 12:40:15 local (11:40:15 UTC), time/s
  0 ... 900 s (a 10-min step; no I column, only control/V/mA).
* ``*_02_GEIS_C05.mpr``: the same timestamp (it is the *sequence* start, not the
  technique's), time/s 900.7 ... 159643 s.
* ``*_03_GCPL_C05.txt`` (export, no header): time/s 907.63 ... 163243 s, i.e. on the same
  sequence clock, starting right after _01's end (900 s) and the first GEIS (900.7 s).
  So the export's ``--echem-start`` is the _01/_02 .mpr timestamp, 2023-08-11 12:40:15
  (Europe/London), and its first row is at 11:55:22.6 UTC.
* NMR expno 1 started at 12:27:36.139 +0100 (audita.txt), 12 min 38.9 s before the
  potentiostat sequence: the first frames have no potential (status ``no_potential``).
"""
from __future__ import annotations

import re
from datetime import datetime, timezone

import numpy as np
import pytest

from lisentry.datasets.errors import EchemFormatError
from lisentry.datasets.io.potentiostat import read_echem

pytestmark = pytest.mark.real

SEQ_START_LOCAL = "2023-08-11 12:40:15"  # .mpr LOG timestamp (Europe/London)
SEQ_START_UTC = datetime(2023, 8, 11, 11, 40, 15, tzinfo=timezone.utc)


def _one(run_dir, pattern):
    hits = sorted((run_dir / "echem").glob(pattern))
    if not hits:
        pytest.skip(f"no {pattern} in {run_dir}")
    return hits[0]


def _audita_window(path):
    """(start, end) of an acquisition from audita.txt, parsed here independently."""
    text = path.read_text(encoding="latin-1")
    end = re.search(r"\(\s*1,<([^>]+)>", text).group(1)
    start = re.search(r"started at ([0-9-]+ [0-9:.]+ [+-]\d{4})", text).group(1)
    fmt = "%Y-%m-%d %H:%M:%S.%f %z"
    return datetime.strptime(start, fmt), datetime.strptime(end, fmt)


@pytest.fixture(scope="module")
def export_log(real_run_dir):
    return read_echem(_one(real_run_dir, "*_03_GCPL_C05.txt"), start=SEQ_START_LOCAL, tz="Europe/London")


def test_text_export_with_start(real_run_dir, export_log):
    path = _one(real_run_dir, "*_03_GCPL_C05.txt")
    raw = path.read_bytes()
    rows = [r for r in raw.split(b"\r\n")[1:] if r.strip()]
    assert len(export_log) == len(rows) == 76807  # the last row has no line break but is complete
    assert np.all(np.diff(export_log.t_utc_s) > 0)
    first_t = float(rows[0].split(b"\t")[0])
    assert export_log.t_utc_s[0] == pytest.approx(SEQ_START_UTC.timestamp() + first_t, abs=1e-6)
    assert first_t == pytest.approx(907.63, abs=0.01)
    assert export_log.potential_V.min() > 0.0 and export_log.potential_V.max() < 0.7
    assert export_log.potential_V[-1] == pytest.approx(float(rows[-1].split(b"\t")[1]))
    assert np.isnan(export_log.current_A).all()
    # 10 s recording interval at most: no gaps
    assert export_log.window_stats(export_log.t_utc_s[0], export_log.t_utc_s[-1]).status == "ok"


def test_text_export_without_start_is_an_error(real_run_dir):
    with pytest.raises(EchemFormatError, match="--echem-start"):
        read_echem(_one(real_run_dir, "*_03_GCPL_C05.txt"))


def test_mpr_start_timestamps(real_run_dir, export_log):
    pytest.importorskip("galvani")
    gcpl1 = read_echem(_one(real_run_dir, "*_01_GCPL_C05.mpr"), tz="Europe/London")
    geis = read_echem(_one(real_run_dir, "*_02_GEIS_C05.mpr"), tz="Europe/London")
    prerun = read_echem(_one(real_run_dir, "*prerun_C05.mpr"), tz="Europe/London")
    assert gcpl1.start == SEQ_START_UTC and geis.start == SEQ_START_UTC
    assert prerun.start < SEQ_START_UTC  # the pre-run EIS came first (11:33:57 UTC)
    assert gcpl1.t_utc_s[0] == SEQ_START_UTC.timestamp()
    # _01 ends at ~900 s, the GEIS starts after it, the _03 export after the first GEIS
    assert gcpl1.t_utc_s[-1] - SEQ_START_UTC.timestamp() == pytest.approx(900.0, abs=0.01)
    assert gcpl1.t_utc_s[-1] < geis.t_utc_s[0] < export_log.t_utc_s[0]
    assert export_log.t_utc_s[0] - geis.t_utc_s[0] < 60.0
    assert np.isnan(gcpl1.current_A).all()  # this GCPL recorded no I column


def test_alignment_with_nmr_frames(real_run_dir, export_log):
    s1, e1 = _audita_window(real_run_dir / "nmr" / "1" / "audita.txt")
    assert s1 == datetime(2023, 8, 11, 11, 27, 36, 139000, tzinfo=timezone.utc)
    assert (SEQ_START_UTC - s1).total_seconds() == pytest.approx(758.861)
    assert export_log.window_stats(s1, e1).status == "no_potential"
    s100, e100 = _audita_window(real_run_dir / "nmr" / "100" / "audita.txt")
    w = export_log.window_stats(s100, e100)
    assert w.status == "ok" and w.n_samples > 10
    inside = (export_log.t_utc_s >= s100.timestamp()) & (export_log.t_utc_s <= e100.timestamp())
    assert export_log.potential_V[inside].min() <= w.potential_V <= export_log.potential_V[inside].max()
    # the last NMR frames run past the end of the log
    s600, e600 = _audita_window(real_run_dir / "nmr" / "600" / "audita.txt")
    assert export_log.window_stats(s600, e600).status == "no_potential"
