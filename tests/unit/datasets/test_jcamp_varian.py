"""JCAMP-DX and Varian/Agilent readers and the format dispatcher.

Fixtures are real-format files written into tmp_path: JCAMP-DX 5.01 text written here by hand
(nmrglue has no JCAMP writer) and Varian ``fid`` + ``procpar`` written by nmrglue's writer.
Peaks are placed from the physics (line frequency = 0-ppm frequency x (1 + ppm 1e-6)) and
must come out of the pipeline within one 0.5 ppm grid step.
"""
from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import nmrglue as ng
import numpy as np
import pytest

from lisentry.datasets.errors import InputError
from lisentry.datasets.frame import RawFrame
from lisentry.datasets.io import nmr
from lisentry.datasets.io.jcamp import JcampFormatError, iter_jcamp_frames, read_jcamp
from lisentry.datasets.io.varian import (VarianFormatError, iter_varian_frames, read_varian,
                                         varian_ppm_reference)
from lisentry.datasets.loading import load_run
from lisentry.datasets.pipeline import Pipeline, ProcessingConfig

SF = 194.370000            # MHz, frequency of 0 ppm (7Li at 11.7 T)
SFO1 = SF * (1 + 150e-6)   # carrier at 150 ppm
SW = 200_000.0             # Hz
N = 4096                   # complex points
PEAKS = ((0.0, 1.0), (245.0, 0.5))   # (ppm, amplitude)
FWHM_PPM = 3.0


def _fid(peaks=PEAKS, sf=SF, sfo1=SFO1, sign=+1, n=N, sw=SW) -> np.ndarray:
    """Bruker-convention FID (sign=+1: exp(+2 pi i f t) for f above the carrier)."""
    t = np.arange(n) / sw
    out = np.zeros(n, complex)
    for ppm, amp in peaks:
        f = (sf * (1 + ppm * 1e-6) - sfo1) * 1e6
        r2 = np.pi * FWHM_PPM * sf
        out += amp * np.exp(sign * 2j * np.pi * f * t - r2 * t)
    return out


def _peak_near(spec: np.ndarray, grid: np.ndarray, ppm: float, win: float = 15.0) -> float:
    sel = np.flatnonzero(np.abs(grid - ppm) <= win)
    return float(grid[sel[np.nanargmax(spec[sel])]])


def _check_peaks(raw: RawFrame, peaks=PEAKS):
    pipe = Pipeline(ProcessingConfig())
    spec = pipe.process(raw)
    grid = pipe.ppm_grid
    for ppm, _ in peaks:
        assert abs(_peak_near(spec, grid, ppm) - ppm) <= 0.5, (ppm, raw.source)
    # the biggest point of the whole spectrum is the strongest line
    assert abs(grid[np.nanargmax(spec)] - max(peaks, key=lambda p: p[1])[0]) <= 0.5


# --------------------------------------------------------------------------------------
# JCAMP-DX writer (5.01, AFFN, X++(Y..Y))
# --------------------------------------------------------------------------------------
def _xy_lines(x0: float, dx: float, y: np.ndarray, per_line: int = 8, fmt="{:.6g}") -> list[str]:
    lines = []
    for i in range(0, y.size, per_line):
        vals = " ".join(fmt.format(v) for v in y[i:i + per_line])
        lines.append(f"{x0 + i * dx:.8g} {vals}")
    return lines


def write_jcamp_spectrum(path: Path, *, peaks=PEAKS, xunits="HZ", nucleus="^7Li",
                         date: str | None = "##LONGDATE= 2024/05/01 10:05:00 +0000",
                         n: int = 4096, ppm_hi: float = 420.0, ppm_lo: float = -120.0,
                         yfactor: float = 1.0, extra: str = "", drop_lines: int = 0) -> Path:
    """A processed 1D spectrum, first point at the high-ppm end (as exported)."""
    ppm = np.linspace(ppm_hi, ppm_lo, n)
    hw = FWHM_PPM / 2
    y = sum(a * hw ** 2 / ((ppm - p) ** 2 + hw ** 2) for p, a in peaks) * 1e4
    ystored = np.round(y / yfactor)
    x = ppm * SF if xunits == "HZ" else ppm
    lines = _xy_lines(x[0], x[1] - x[0], ystored)
    if drop_lines:
        lines = lines[:-drop_lines]
    head = [
        f"##TITLE= {path.stem}", "##JCAMP-DX= 5.01", "##DATA TYPE= NMR SPECTRUM",
        "##DATA CLASS= XYDATA", "##ORIGIN= lisentry tests", "##OWNER= public domain",
        f"##.OBSERVE FREQUENCY= {SF:.6f}", f"##.OBSERVE NUCLEUS= {nucleus}",
        f"##XUNITS= {xunits}", "##YUNITS= ARBITRARY UNITS", "##XFACTOR= 1",
        f"##YFACTOR= {yfactor:g}", f"##FIRSTX= {x[0]:.8g}", f"##LASTX= {x[-1]:.8g}",
        f"##NPOINTS= {n}", f"##FIRSTY= {ystored[0]:.6g}",
    ]
    if date:
        head.append(date)
    if extra:
        head.append(extra)
    text = "\n".join(head + ["##XYDATA= (X++(Y..Y))"] + lines + ["##END="]) + "\n"
    path.write_text(text)
    return path


def write_jcamp_fid(path: Path, fid: np.ndarray, *, sw=SW, extra: str = "") -> Path:
    """An NTUPLES NMR FID (real and imaginary pages), TopSpin-export labels."""
    n = fid.size
    dt = 1 / sw
    scale = 1e6
    r, i = np.round(fid.real * scale), np.round(fid.imag * scale)
    head = [
        f"##TITLE= {path.stem}", "##JCAMP-DX= 5.01", "##DATA TYPE= NMR FID",
        "##DATA CLASS= NTUPLES", "##ORIGIN= lisentry tests", "##OWNER= public domain",
        f"##.OBSERVE FREQUENCY= {SFO1:.8f}", "##.OBSERVE NUCLEUS= ^7Li",
        f"##$SF= {SF:.8f}", f"##$BF1= {SF:.8f}", f"##$SW_h= {sw:g}", "##$NS= 16",
        "##$D= (0..3)\n0 2 0 0", "##$DATE= 1714557900",
    ]
    if extra:
        head.append(extra)
    head += [
        "##NTUPLES= NMR FID", "##VAR_NAME= TIME, FID/REAL, FID/IMAG, PAGE NUMBER",
        "##SYMBOL= X, R, I, N", "##VAR_TYPE= INDEPENDENT, DEPENDENT, DEPENDENT, PAGE",
        "##VAR_FORM= AFFN, AFFN, AFFN, AFFN", f"##VAR_DIM= {n}, {n}, {n}, 2",
        "##UNITS= SECONDS, ARBITRARY UNITS, ARBITRARY UNITS, ",
        f"##FIRST= 0, {r[0]:g}, {i[0]:g}, 1", f"##LAST= {(n - 1) * dt:.10g}, {r[-1]:g}, {i[-1]:g}, 2",
        f"##FACTOR= {dt:.10g}, {1 / scale:g}, {1 / scale:g}, 1",
        "##PAGE= N=1", "##DATA TABLE= (X++(R..R)), XYDATA",
        *_xy_lines(0, 1, r, fmt="{:.0f}"),
        "##PAGE= N=2", "##DATA TABLE= (X++(I..I)), XYDATA",
        *_xy_lines(0, 1, i, fmt="{:.0f}"),
        "##END NTUPLES= NMR FID", "##END=",
    ]
    path.write_text("\n".join(head) + "\n")
    return path


# --------------------------------------------------------------------------------------
# Varian writer (nmrglue)
# --------------------------------------------------------------------------------------
def _pp(name, values, string=False):
    p = ng.varian.create_pdic_param(name, [str(v) for v in values])
    if string:
        p["basictype"], p["subtype"] = "2", "1"
    return p


def write_varian(d: Path, traces: np.ndarray, *, tn="Li7", sfrq=SFO1, tof=0.0, sw=SW,
                 ref0_MHz=SF, ref="rfl", time_run="20240501T100000",
                 time_complete="20240501T101000", nt=16, d1=2.0) -> Path:
    """``d`` (a ``.fid`` folder) with an Agilent-convention FID (one trace per row)."""
    traces = np.atleast_2d(traces)
    ntr, n = traces.shape
    udic = ng.fileiobase.create_blank_udic(1)
    udic[0]["size"], udic[0]["complex"] = n, True
    dic = ng.varian.create_dic(udic)
    dic["nblocks"] = ntr
    pp = dic["procpar"]
    for name, vals, s in [("tn", [tn], True), ("sfrq", [f"{sfrq:.8f}"], False),
                          ("tof", [tof], False), ("sw", [sw], False), ("nt", [nt], False),
                          ("d1", [d1], False), ("at", [n / sw], False),
                          ("seqfil", ["s2pul"], True)]:
        pp[name] = _pp(name, vals, s)
    if ref == "rfl":      # 0 ppm at ref0: rfl - rfp - sw/2 = (ref0 - sfrq) 1e6
        pp["rfp"] = _pp("rfp", [0])
        pp["rfl"] = _pp("rfl", [f"{sw / 2 + (ref0_MHz - sfrq) * 1e6:.6f}"])
    elif ref == "reffrq":
        pp["reffrq"] = _pp("reffrq", [f"{ref0_MHz:.8f}"])
    if time_run:
        pp["time_run"] = _pp("time_run", [time_run], True)
    if time_complete:
        pp["time_complete"] = _pp("time_complete", [time_complete], True)
    d.mkdir(parents=True, exist_ok=True)
    data = traces.astype(np.complex64)
    ng.varian.write_fid(str(d / "fid"), dic, data if ntr > 1 else data[0], overwrite=True)
    ng.varian.write_procpar(str(d / "procpar"), pp, overwrite=True)
    return d


# --------------------------------------------------------------------------------------
# JCAMP-DX
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("xunits", ["HZ", "PPM"])
def test_jcamp_spectrum_peaks_and_axis(tmp_path, xunits):
    p = write_jcamp_spectrum(tmp_path / "frame_7.jdx", xunits=xunits)
    raw = read_jcamp(p)
    assert raw.fid is None and raw.spectrum is not None
    assert raw.expno == 7 and raw.acq.nucleus == "7Li"
    assert np.all(np.diff(raw.spectrum_ppm) > 0)
    assert raw.spectrum_ppm[0] == pytest.approx(-120.0, abs=1e-3)
    assert raw.spectrum_ppm[-1] == pytest.approx(420.0, abs=1e-3)
    assert raw.time_source == "jcamp_date"
    assert raw.acq_end == datetime(2024, 5, 1, 10, 5, tzinfo=timezone.utc)
    _check_peaks(raw)


def test_jcamp_yfactor_applied_and_offset_label(tmp_path):
    a = read_jcamp(write_jcamp_spectrum(tmp_path / "a.jdx", yfactor=1.0))
    b = read_jcamp(write_jcamp_spectrum(tmp_path / "b.jdx", yfactor=0.5))
    np.testing.assert_allclose(b.spectrum, a.spectrum, atol=0.5)
    # TopSpin's ##$OFFSET (ppm of the first point) wins over FIRSTX / SF
    c = read_jcamp(write_jcamp_spectrum(tmp_path / "c.jdx", extra="##$OFFSET= 422.0"))
    assert c.spectrum_ppm[-1] == pytest.approx(422.0, abs=1e-6)
    assert c.spectrum_ppm[0] == pytest.approx(-118.0, abs=1e-3)


def test_jcamp_fid_round_trip_through_pipeline(tmp_path):
    fid = _fid()
    raw = read_jcamp(write_jcamp_fid(tmp_path / "fid_1.jdx", fid))
    assert raw.spectrum is None and raw.fid.shape == (N,)
    np.testing.assert_allclose(raw.fid, np.round(fid * 1e6) / 1e6, atol=1e-6)
    assert raw.acq.sw_Hz == SW and raw.acq.sfo1_MHz == pytest.approx(SFO1)
    assert raw.acq.sr_Hz == pytest.approx(0.0)
    assert raw.acq.ns == 16 and raw.acq.d1_s == 2.0
    end = datetime.fromtimestamp(1714557900, tz=timezone.utc)
    assert raw.acq_end == end
    assert (raw.acq_end - raw.acq_start).total_seconds() == pytest.approx(16 * (2.0 + N / SW))
    _check_peaks(raw)


def test_jcamp_longdate_zone_and_mtime_fallback(tmp_path):
    p = write_jcamp_spectrum(tmp_path / "x.jdx", date="##LONGDATE= 2024/01/15 12:00:00")
    raw = read_jcamp(p, tz="Europe/Berlin")        # winter: UTC+1
    assert raw.acq_end == datetime(2024, 1, 15, 11, 0, tzinfo=timezone.utc)
    q = write_jcamp_spectrum(tmp_path / "y.jdx", date=None)
    os.utime(q, (1_700_000_000, 1_700_000_000))
    raw = read_jcamp(q)
    assert raw.time_source == "mtime"
    assert raw.acq_end == datetime.fromtimestamp(1_700_000_000, tz=timezone.utc)


def test_jcamp_errors_are_one_line_and_name_the_file(tmp_path):
    cases = {
        "trunc.jdx": (dict(drop_lines=3), "header says 4096"),
        "na.jdx": (dict(nucleus="^23Na"), "nucleus 23Na, expected 7Li"),
        "units.jdx": (dict(xunits="SECONDS"), "XUNITS"),
    }
    for name, (kw, needle) in cases.items():
        p = write_jcamp_spectrum(tmp_path / name, **kw)
        with pytest.raises(JcampFormatError) as ei:
            read_jcamp(p)
        msg = str(ei.value)
        assert "\n" not in msg and str(p) in msg and needle in msg, msg
    bad = tmp_path / "garbage.jdx"
    text = write_jcamp_spectrum(bad).read_text().splitlines()
    i = text.index("##XYDATA= (X++(Y..Y))")
    text[i + 1] = "abc def ghi"
    bad.write_text("\n".join(text) + "\n")
    with pytest.raises(JcampFormatError, match="garbage.jdx"):
        read_jcamp(bad)
    nofreq = tmp_path / "nofreq.jdx"
    nofreq.write_text("\n".join(line for line in write_jcamp_spectrum(nofreq).read_text().splitlines()
                                if not line.startswith("##.OBSERVE FREQUENCY")) + "\n")
    with pytest.raises(JcampFormatError, match="OBSERVE FREQUENCY missing"):
        read_jcamp(nofreq)
    # a FID without its imaginary page
    fid_only_real = tmp_path / "f.jdx"
    lines = write_jcamp_fid(fid_only_real, _fid(n=64)).read_text().splitlines()
    cut = lines.index("##PAGE= N=2")
    fid_only_real.write_text("\n".join(lines[:cut] + lines[-2:]) + "\n")
    with pytest.raises(JcampFormatError):
        read_jcamp(fid_only_real)


def test_jcamp_series_order_by_number_then_by_time(tmp_path):
    d = tmp_path / "numbered"
    d.mkdir()
    for k, minute in ((10, 20), (2, 5), (3, 10)):   # lexical order would be 10, 2, 3
        write_jcamp_spectrum(d / f"li7_{k}.jdx",
                             date=f"##LONGDATE= 2024/05/01 10:{minute:02d}:00 +0000")
    items = list(iter_jcamp_frames(d))
    assert [r.expno for r in items] == [2, 3, 10]
    e = tmp_path / "named"
    e.mkdir()
    write_jcamp_spectrum(e / "late.dx", date="##LONGDATE= 2024/05/01 11:00:00 +0000")
    write_jcamp_spectrum(e / "early.dx", date="##LONGDATE= 2024/05/01 10:00:00 +0000")
    write_jcamp_spectrum(e / "bad.dx", nucleus="^1H")
    items = list(iter_jcamp_frames(e))
    assert isinstance(items[0], JcampFormatError) and "bad.dx" in str(items[0])
    assert [(r.source.name, r.expno) for r in items[1:]] == [("early.dx", 1), ("late.dx", 2)]


def test_load_run_reads_a_jcamp_folder(tmp_path):
    d = tmp_path / "run_jdx"
    d.mkdir()
    t0 = datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)
    for k in range(1, 4):
        end = t0 + timedelta(minutes=5 * k)
        write_jcamp_spectrum(d / f"spec{k:03d}.jdx",
                             date=f"##LONGDATE= {end:%Y/%m/%d %H:%M:%S} +0000",
                             peaks=((0.0, 1.0), (245.0, 0.5), (265.0, 0.1 * k)))
    (d / "notes.txt").write_text("not a spectrum")
    src = nmr.detect_format(d)
    assert (src.format, src.n_sources) == ("jcamp", 3)
    run = load_run(d, on_skip=None)
    assert len(run) == 3 and not run.skipped
    assert [f.expno for f in run] == [1, 2, 3]
    assert np.diff(run.t_s()) == pytest.approx([300.0, 300.0], abs=1.0)
    grid = run.ppm_grid
    i = int(np.argmin(np.abs(grid - 265.0)))
    growth = [float(f.intensity[i]) for f in run]
    assert growth[0] < growth[1] < growth[2]       # per-run normalisation keeps the growth


# --------------------------------------------------------------------------------------
# Varian / Agilent
# --------------------------------------------------------------------------------------
def test_varian_reference_formula_matches_vnmrj_reffrq():
    sfrq, tof, sw, rfl, rfp = 194.4, 1234.0, 100_000.0, 61_000.0, 500.0
    reffrq = sfrq - (sw / 2 - rfl + rfp) * 1e-6                 # VnmrJ's relation
    bf1, sr = varian_ppm_reference(sfrq, tof, sw, rfl, rfp, None)
    assert bf1 + sr * 1e-6 == pytest.approx(reffrq, abs=1e-9)
    bf1b, sr2 = varian_ppm_reference(sfrq, tof, sw, None, None, reffrq)
    assert bf1b + sr2 * 1e-6 == pytest.approx(reffrq, abs=1e-9)
    assert varian_ppm_reference(sfrq, tof, sw, 0.0, 0.0, None) == (pytest.approx(bf1), None)


@pytest.mark.parametrize("ref,tof", [("rfl", 0.0), ("reffrq", 2500.0)])
def test_varian_fid_round_trip_through_pipeline(tmp_path, ref, tof):
    sfrq = SFO1 + tof * 1e-6
    fid = np.conj(_fid(sfo1=sfrq))                   # Agilent sign convention
    d = write_varian(tmp_path / "exp1.fid", fid, sfrq=sfrq, tof=tof, ref=ref)
    (raw,) = read_varian(d, tz="UTC")
    assert raw.acq.nucleus == "7Li" and raw.acq.td == 2 * N and raw.acq.ns == 16
    assert raw.acq.bf1_MHz + raw.acq.sr_Hz * 1e-6 == pytest.approx(SF, abs=1e-9)
    assert raw.time_source == "procpar_time"
    assert raw.acq_start == datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)
    assert raw.acq_end == datetime(2024, 5, 1, 10, 10, tzinfo=timezone.utc)
    _check_peaks(raw)
    # the mirror image (no conjugation) would put the 245 ppm line elsewhere
    pipe = Pipeline(ProcessingConfig())
    wrong = RawFrame(source=raw.source, expno=1, acq=raw.acq, acq_start=raw.acq_start,
                     acq_end=raw.acq_end, fid=np.conj(raw.fid))
    spec = pipe.process(wrong)
    grid = pipe.ppm_grid
    assert abs(grid[np.nanargmax(spec)] - 0.0) > 5


def test_varian_arrayed_fid_gives_rows(tmp_path):
    amps = [0.05, 0.1, 0.2]
    traces = np.stack([np.conj(_fid(peaks=((0.0, 1.0), (270.0, a)))) for a in amps])
    d = write_varian(tmp_path / "array.fid", traces, time_run="20240501T120000",
                     time_complete="20240501T123000")
    rows = read_varian(d, tz=ZoneInfo("Europe/Berlin"))      # summer: UTC+2
    assert [r.expno for r in rows] == [1, 2, 3]
    assert rows[0].acq_start == datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)
    assert [r.acq_end - r.acq_start for r in rows] == [timedelta(minutes=10)] * 3
    assert rows[2].acq_end == datetime(2024, 5, 1, 10, 30, tzinfo=timezone.utc)
    for k, r in enumerate(rows):
        np.testing.assert_allclose(r.fid, traces[k].conj(), rtol=0, atol=1e-6)
    run = load_run(d, on_skip=None)
    assert len(run) == 3
    i = int(np.argmin(np.abs(run.ppm_grid - 270.0)))
    vals = [float(f.intensity[i]) for f in run]
    assert vals[0] < vals[1] < vals[2]


def test_varian_series_folder_with_load_run(tmp_path):
    root = tmp_path / "vnmr_run"
    for k in (1, 2, 11):
        start = datetime(2024, 5, 1, 10, 0) + timedelta(minutes=10 * k)
        write_varian(root / f"li7_{k}.fid", np.conj(_fid()),
                     time_run=f"{start:%Y%m%dT%H%M%S}",
                     time_complete=f"{start + timedelta(minutes=5):%Y%m%dT%H%M%S}")
    (root / "li7_12.fid").mkdir()                 # aborted: no fid, no procpar
    src = nmr.detect_format(root)
    assert (src.format, src.n_sources) == ("varian", 4)
    run = load_run(root, on_skip=None)
    assert [f.expno for f in run] == [1, 2, 11]
    assert len(run.skipped) == 1
    assert run.skipped[0][1].endswith("li7_12.fid/procpar") and run.skipped[0][2] == "missing"
    local = datetime(2024, 5, 1, 10, 10).astimezone()     # procpar times: machine's zone
    assert run.frames[0].acq_start == local.astimezone(timezone.utc)
    assert run.t_s() == pytest.approx([150.0, 750.0, 6150.0])


def test_varian_errors_are_one_line_and_name_the_file(tmp_path):
    good = write_varian(tmp_path / "ok.fid", np.conj(_fid(n=256)))
    fid_bytes = (good / "fid").read_bytes()
    trunc = write_varian(tmp_path / "trunc.fid", np.conj(_fid(n=256)))
    (trunc / "fid").write_bytes(fid_bytes[:-100])
    na = write_varian(tmp_path / "na.fid", np.conj(_fid(n=256)), tn="Na23")
    nopp = write_varian(tmp_path / "nopp.fid", np.conj(_fid(n=256)))
    (nopp / "procpar").unlink()
    badtime = write_varian(tmp_path / "badtime.fid", np.conj(_fid(n=256)), time_run="yesterday")
    mism = write_varian(tmp_path / "mism.fid", np.conj(_fid(n=256)))
    later = write_varian(tmp_path / "big.fid", np.conj(_fid(n=512)), time_run="20240501T110000",
                         time_complete="20240501T111000")
    (mism / "fid").write_bytes((later / "fid").read_bytes())    # fid of 512 points, np=512
    cases = [(trunc, "trunc.fid/fid", "truncated"), (na, "na.fid/procpar", "tn=Na23"),
             (nopp, "nopp.fid/procpar", "missing"), (badtime, "badtime.fid/procpar", "time_run"),
             (mism, "mism.fid/fid", "procpar np=512")]
    for d, where, needle in cases:
        with pytest.raises(VarianFormatError) as ei:
            read_varian(d)
        msg = str(ei.value)
        assert "\n" not in msg and where in msg and needle in msg, msg
    zero = write_varian(tmp_path / "zero.fid", np.zeros(256, complex))
    with pytest.raises(VarianFormatError, match="all zeros"):
        read_varian(zero)
    items = list(iter_varian_frames(tmp_path))
    errors = [i for i in items if isinstance(i, InputError)]
    assert [i.source.name for i in items if isinstance(i, RawFrame)] == ["ok.fid", "big.fid"]
    assert len(errors) == 6


def test_dispatcher_keeps_bruker_and_rejects_nothing_silently(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert nmr.detect_format(empty).format == "bruker"
    (items,) = [list(nmr.iter_raw_frames(tmp_path / "nope"))]
    assert len(items) == 1 and isinstance(items[0], InputError)
    run_dir = tmp_path / "RUN"
    write_jcamp_spectrum((run_dir / "nmr").mkdir(parents=True) or run_dir / "nmr" / "s1.jdx")
    src = nmr.detect_format(run_dir)
    assert src.format == "jcamp" and src.root == run_dir / "nmr"
    single = write_jcamp_spectrum(tmp_path / "one_5.jdx")
    (raw,) = list(nmr.iter_raw_frames(single))
    assert isinstance(raw, RawFrame) and raw.expno == 5


def test_skipped_jcamp_and_varian_frames_carry_their_numbers(tmp_path):
    d = tmp_path / "jdx"
    d.mkdir()
    for k in (1, 2, 3):
        write_jcamp_spectrum(d / f"li7_{k:04d}.jdx", nucleus="^1H" if k == 2 else "^7Li",
                             date=f"##LONGDATE= 2024/05/01 10:{5 * k:02d}:00 +0000")
    run = load_run(d, on_skip=None, on_note=None)
    assert [f.expno for f in run] == [1, 3]
    assert [s[0] for s in run.skipped] == [2]                  # was -1
    # numbered by time (no number in the names): an unreadable file has none
    e = tmp_path / "2024"
    e.mkdir()
    write_jcamp_spectrum(e / "early.dx", date="##LONGDATE= 2024/05/01 10:00:00 +0000")
    write_jcamp_spectrum(e / "bad.dx", nucleus="^1H")
    run = load_run(e, on_skip=None, on_note=None)
    assert [s[0] for s in run.skipped] == [-1]                 # not the 2024 of the folder
    root = tmp_path / "vnmr"
    for k in (3, 7):
        start = datetime(2024, 5, 1, 10, 0) + timedelta(minutes=10 * k)
        write_varian(root / f"li7_{k}.fid", np.conj(_fid(n=256)), tn="Na23" if k == 7 else "Li7",
                     time_run=f"{start:%Y%m%dT%H%M%S}",
                     time_complete=f"{start + timedelta(minutes=5):%Y%m%dT%H%M%S}")
    run = load_run(root, on_skip=None, on_note=None)
    assert [f.expno for f in run] == [3] and [s[0] for s in run.skipped] == [7]


def test_single_jcamp_file_as_nmr_dir_is_read_by_inspect(tmp_path):
    from typer.testing import CliRunner
    from lisentry.detector.cli import app
    f = write_jcamp_spectrum(tmp_path / "one_5.jdx")
    res = CliRunner().invoke(app, ["inspect", str(f)])
    assert res.exit_code == 0, res.output
    assert "1 folders, 1 frames read, 0 skipped" in res.stdout
    other = tmp_path / "notes.txt"
    other.write_text("x")
    res = CliRunner().invoke(app, ["inspect", str(other)])
    assert res.exit_code == 2 and "is a file, not an NMR folder" in res.stderr
