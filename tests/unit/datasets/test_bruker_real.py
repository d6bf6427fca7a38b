"""The reader on the genuine TopSpin 2.1 run (600 frames); skips when ../shared/real is absent."""
from __future__ import annotations

import re
from datetime import datetime, timezone

import nmrglue as ng
import numpy as np
import pytest

from lisentry.datasets.frame import RawFrame
from lisentry.datasets.io import bruker

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def frames(real_run_dir):
    return list(bruker.iter_raw_frames(real_run_dir))


def _audita_times(path):
    txt = path.read_text(encoding="latin-1")
    when = re.search(r"\(\s+1,<([^>]+)>", txt).group(1)
    start = re.search(r"started at ([0-9-]+ [0-9:.]+ [+-]\d{4})", txt).group(1)
    f = "%Y-%m-%d %H:%M:%S.%f %z"
    return (datetime.strptime(start, f).astimezone(timezone.utc),
            datetime.strptime(when, f).astimezone(timezone.utc))


def test_all_600_frames_read(frames, real_run_dir):
    assert len(frames) == 600 and all(isinstance(f, RawFrame) for f in frames)
    assert [f.expno for f in frames] == list(range(1, 601))
    listing = bruker.scan_series(real_run_dir)
    assert listing.root == real_run_dir / "nmr" and listing.n_folders == 600


def test_parameters(frames, real_run_dir):
    table = ng.fileio.bruker.bruker_dsp_table[10][2]  # DECIM 2, DSPFVS 10, GRPDLY -1
    procs = (real_run_dir / "nmr" / "1" / "pdata" / "1" / "procs").read_text(encoding="latin-1")
    sf = float(re.search(r"##\$SF= ([0-9.]+)", procs).group(1))
    for f in frames:
        a = f.acq
        assert a.nucleus == "7Li" and a.td == 12288 and a.ns == 256
        assert f.fid.shape == (6144,) and np.isfinite(f.fid).all()
        assert a.group_delay_pts == table
        assert a.extra["BYTORDA"] == 1 and a.extra["DTYPA"] == 0
        assert abs(a.sr_Hz - (sf - 116.641914) * 1e6) < 1e-3
        assert f.phase_deg is not None
    assert abs(frames[0].acq.sw_Hz - 93457.9439) < 1e-3


def test_windows_from_audita(frames, real_run_dir):
    for f in frames:
        assert f.time_source == "audita"
    for f in frames[::37]:
        start, end = _audita_times(real_run_dir / "nmr" / str(f.expno) / "audita.txt")
        assert abs((f.acq_start - start).total_seconds()) < 1e-3
        assert abs((f.acq_end - end).total_seconds()) < 1e-3
        date = int(re.search(r"##\$DATE= (\d+)",
                             (f.source / "acqus").read_text(encoding="latin-1")).group(1))
        assert 0 <= f.acq_end.timestamp() - date < 3.0  # DATE = end (a second or two early)
    starts = np.array([f.acq_start.timestamp() for f in frames])
    assert np.all(np.diff(starts) > 250) and abs(np.median(np.diff(starts)) - 290) < 5
    durations = [(f.acq_end - f.acq_start).total_seconds() for f in frames]
    nominal = frames[0].acq.duration_s
    assert min(durations) >= nominal and abs(np.median(durations) - nominal - 14.6) < 2
    assert abs((frames[-1].acq_end - frames[0].acq_start).total_seconds() / 3600 - 48.7) < 0.3


def test_convention_and_1r(frames, real_run_dir):
    """The stored FID gives ascending frequency after fftshift(fft); the metal line of frame 1
    sits near 248 ppm (docs/real_run.md), as in TopSpin's 1r."""
    f = frames[0]
    n = f.fid.size
    t = np.arange(n) / f.acq.sw_Hz
    spec = np.fft.fftshift(np.fft.fft(f.fid * np.exp(-np.pi * 300 * t)))
    spec = ng.bruker.rm_dig_filter(spec, 2, 10, post_proc=True)
    sf = f.acq.bf1_MHz + f.acq.sr_Hz * 1e-6
    ppm = (f.acq.sfo1_MHz * 1e6 + np.fft.fftshift(np.fft.fftfreq(n, 1 / f.acq.sw_Hz))
           - sf * 1e6) / sf
    assert abs(ppm[np.argmax(np.abs(spec))] - 248) < 5
    p = bruker.read_experiment(real_run_dir / "nmr" / "1", use_processed=True)
    assert p.spectrum.shape == (8192,) and np.all(np.diff(p.spectrum_ppm) > 0)
    assert abs(p.spectrum_ppm[np.argmax(p.spectrum)] - 248) < 2
    assert bruker.acquisition_state(real_run_dir / "nmr" / "600") == "complete"
