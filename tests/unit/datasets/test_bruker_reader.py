"""Reader tests on real-format TopSpin folders written into tmp_path by our writer.

Expected values are computed independently from the acquisition parameters (SFO1, BF1, SW_h,
NS, D1, TD) and nmrglue, never taken from the reader itself.
"""
from __future__ import annotations

import math
import shutil
from datetime import datetime, timedelta, timezone

import nmrglue as ng
import numpy as np
import pytest

from lisentry.datasets.errors import BrukerFormatError, IncompleteAcquisition, InputError
from lisentry.datasets.frame import AcquisitionParams, RawFrame
from lisentry.datasets.io import bruker
from lisentry.datasets.io import bruker_writer as bw

T0 = datetime(2024, 3, 1, 12, 0, 0, 250000, tzinfo=timezone.utc)


def make_acq(td=1024, sw=93457.9439252336, o1=29000.0, bf1=116.641914, ns=8, ds=2, d1=0.5, gd=0.0,
             extra=None, sr=None):
    return AcquisitionParams(nucleus="7Li", sfo1_MHz=bf1 + o1 * 1e-6, bf1_MHz=bf1, o1_Hz=o1,
                             sw_Hz=sw, td=td, ns=ns, ds=ds, d1_s=d1, group_delay_pts=gd,
                             sr_Hz=sr, extra=extra or {})


def line_fid(acq, offsets_hz, lb_hz=150.0):
    """Lines at ``offsets_hz`` from the carrier, in the stored convention exp(+2j pi nu t)."""
    t = np.arange(acq.td // 2) / acq.sw_Hz
    return sum(np.exp(2j * np.pi * nu * t) for nu in offsets_hz) * np.exp(-np.pi * lb_hz * t)


def ascending_ppm(acq, n, sf_mhz):
    f = np.fft.fftshift(np.fft.fftfreq(n, 1.0 / acq.sw_Hz))
    return (acq.sfo1_MHz * 1e6 + f - sf_mhz * 1e6) / sf_mhz


@pytest.mark.parametrize("topspin", ["2.1", "4.3"])
@pytest.mark.parametrize("bytorda", [0, 1])
@pytest.mark.parametrize("dtypa", [0, 2])
def test_peak_positions_in_ppm(tmp_path, dtypa, bytorda, topspin):
    acq = make_acq()
    # lines at 250 ppm and 0 ppm w.r.t. BF1: offset from the carrier in Hz
    want = [250.0, 0.0]
    offsets = [(p * 1e-6 * acq.bf1_MHz + acq.bf1_MHz - acq.sfo1_MHz) * 1e6 for p in want]
    bw.write_experiment(tmp_path / "5", line_fid(acq, offsets), acq, T0, T0 + timedelta(60),
                        dtypa=dtypa, bytorda=bytorda, topspin=topspin)
    fr = bruker.read_experiment(tmp_path / "5")
    assert fr.expno == 5 and fr.fid.shape == (acq.td // 2,) and fr.acq.sr_Hz is None
    spec = np.abs(ng.proc_base.fft(ng.proc_base.zf_size(fr.fid, 4096)))
    ppm = ascending_ppm(fr.acq, 4096, fr.acq.bf1_MHz)
    for p in want:
        win = np.abs(ppm - p) < 20
        assert abs(ppm[win][np.argmax(spec[win])] - p) < 0.5
    assert fr.acq.extra["DTYPA"] == dtypa and fr.acq.extra["BYTORDA"] == bytorda


def test_int32_roundtrip_and_nmrglue_agrees(tmp_path):
    acq = make_acq(td=1000)  # not a multiple of 256: the file is padded to 1024 values
    fid = line_fid(acq, [1234.0])
    bw.write_experiment(tmp_path / "1", fid, acq, T0, T0 + timedelta(seconds=60))
    fr = bruker.read_experiment(tmp_path / "1")
    assert (tmp_path / "1" / "fid").stat().st_size == 1024 * 4
    assert fr.fid.shape == (500,)
    scale = np.abs(fr.fid).max() / np.abs(fid).max()
    np.testing.assert_allclose(fr.fid / scale, fid, atol=2e-8 * np.abs(fid).max() + 1e-8)
    dic, data = ng.bruker.read(str(tmp_path / "1"), read_pulseprogram=False)  # plain nmrglue: padded, same values
    np.testing.assert_array_equal(data[:500], fr.fid)


def test_digital_filter_group_delay_table_and_removal(tmp_path):
    extra = {"DECIM": 2, "DSPFVS": 10, "GRPDLY": -1}
    acq = make_acq(td=2048, extra=extra, gd=44.75)
    clean = line_fid(acq, [3000.0, -8000.0])
    bw.write_experiment(tmp_path / "1", bw.add_digital_filter_delay(clean, 44.75), acq, T0,
                        T0 + timedelta(seconds=60), dtypa=2)
    fr = bruker.read_experiment(tmp_path / "1")
    assert fr.acq.group_delay_pts == ng.fileio.bruker.bruker_dsp_table[10][2] == 44.75
    assert fr.acq.extra["GRPDLY"] == -1
    assert np.abs(fr.fid[:30]).max() < 0.2 * np.abs(fr.fid).max()  # filter rise
    dic = {"acqus": {"DECIM": 2, "DSPFVS": 10, "GRPDLY": -1}}
    fixed = ng.bruker.remove_digital_filter(dic, ng.proc_base.fft(fr.fid), truncate=False,
                                            post_proc=True)
    ref = ng.proc_base.fft(clean)
    np.testing.assert_allclose(fixed, ref, atol=1e-9 * np.abs(ref).max())


def test_explicit_grpdly(tmp_path):
    acq = make_acq(gd=68.0)
    clean = line_fid(acq, [2000.0])
    bw.write_experiment(tmp_path / "1", bw.add_digital_filter_delay(clean, 68), acq, T0,
                        T0 + timedelta(seconds=9), dtypa=2)
    fr = bruker.read_experiment(tmp_path / "1")
    assert fr.acq.group_delay_pts == 68.0 and fr.acq.extra["GRPDLY"] == 68
    dic, _ = ng.bruker.read(str(tmp_path / "1"), read_pulseprogram=False)
    fixed = ng.bruker.remove_digital_filter(dic, ng.proc_base.fft(fr.fid), post_proc=True)
    np.testing.assert_allclose(fixed, ng.proc_base.fft(clean), atol=1e-9 * 512)


@pytest.mark.parametrize("topspin", ["2.1", "4.3"])
def test_window_from_audita_and_from_date(tmp_path, topspin):
    acq = make_acq()
    end = T0 + timedelta(seconds=47.5)
    bw.write_experiment(tmp_path / "2", line_fid(acq, [0.0]), acq, T0, end, topspin=topspin)
    fr = bruker.read_experiment(tmp_path / "2")
    assert fr.time_source == "audita"
    assert abs((fr.acq_start - T0).total_seconds()) < 1e-3
    assert abs((fr.acq_end - end).total_seconds()) < 1e-3
    assert fr.acq_start.tzinfo is not None and fr.acq_start.utcoffset() == timedelta(0)
    (tmp_path / "2" / "audita.txt").unlink()
    fr = bruker.read_experiment(tmp_path / "2")
    assert fr.time_source == "acqus_DATE"
    assert fr.acq_end == datetime.fromtimestamp(math.floor(end.timestamp()), timezone.utc)
    duration = (8 + 2) * (0.5 + 512 / 93457.9439252336)
    assert abs((fr.acq_end - fr.acq_start).total_seconds() - duration) < 1e-6


def test_audita_with_local_zone_and_in_progress_then_completed(tmp_path):
    acq = make_acq()
    # acqus DATE = the end the audita below gives (12:04:50 UTC)
    bw.write_experiment(tmp_path / "3", line_fid(acq, [0.0]), acq, T0, T0 + timedelta(seconds=290))
    (tmp_path / "3" / "audita.txt").write_text(
        "##TITLE= Audit trail, TopSpin 4.3.0\n##JCAMPDX= 5.01\n##ORIGIN= Bruker BioSpin GmbH\n"
        "##OWNER= nmr\n$$ x/3/audita.txt\n"
        "##AUDIT TRAIL=  $$ (NUMBER, WHEN, WHO, WHERE, PROCESS, VERSION, WHAT)\n"
        "(   1,<2024-03-01T14:00:00.100+0200>,<nmr>,<pc>,<go4>,<TopSpin 4.3.0>,\n"
        "      <acquisition in progress\n\tstarted at 2024-03-01T14:00:00.100+0200>)\n"
        "(   2,<2024-03-01T14:04:50.600+0200>,<nmr>,<pc>,<go4>,<TopSpin 4.3.0>,\n"
        "      <created by zg\n\tstarted at 2024-03-01T14:00:00.100+0200,\n"
        "\tPOWCHK enabled, PULCHK disabled>)\n##END=\n", encoding="latin-1")
    fr = bruker.read_experiment(tmp_path / "3")
    assert fr.acq_start == datetime(2024, 3, 1, 12, 0, 0, 100000, tzinfo=timezone.utc)
    assert fr.acq_end == datetime(2024, 3, 1, 12, 4, 50, 600000, tzinfo=timezone.utc)
    assert bruker.acquisition_state(tmp_path / "3") == "complete"


@pytest.mark.parametrize("topspin", ["2.1", "4.3"])
def test_begin_finish_and_acquisition_state(tmp_path, topspin):
    acq = make_acq()
    e = tmp_path / "7"
    assert bruker.acquisition_state(e) == "missing"
    bw.begin_experiment(e, acq, T0, topspin=topspin)
    assert (e / "fid").stat().st_size == acq.td * 4  # full size, zero-filled
    assert bruker.acquisition_state(e) == "in_progress"
    with pytest.raises(IncompleteAcquisition):
        bruker.read_experiment(e)
    # a later experiment having started is evidence that this one ended (or was aborted)
    bw.begin_experiment(tmp_path / "8", acq, T0 + timedelta(seconds=70), topspin=topspin)
    assert bruker.acquisition_state(e) == "complete"
    shutil.rmtree(tmp_path / "8")
    bw.finish_experiment(e, line_fid(acq, [0.0]), acq, T0, T0 + timedelta(seconds=60),
                         topspin=topspin)
    assert bruker.acquisition_state(e) == "complete"
    assert bruker.read_experiment(e).time_source == "audita"


def test_processed_1r_and_procs(tmp_path):
    acq = make_acq(sr=-1500.0)
    si = 2048
    spec = np.zeros(si)
    spec[700] = 5.0e6  # TopSpin order: point 0 = OFFSET (highest ppm)
    bw.write_experiment(tmp_path / "4", line_fid(acq, [0.0]), acq, T0, T0 + timedelta(60),
                        procs={"PHC0": 123.5, "PHC1": -40.25}, spectrum_1r=spec)
    fr = bruker.read_experiment(tmp_path / "4")
    assert fr.phase_deg == (123.5, -40.25)
    assert abs(fr.acq.sr_Hz - (-1500.0)) < 1e-3
    pr = bruker.read_experiment(tmp_path / "4", use_processed=True)
    assert pr.fid is None and pr.spectrum.shape == (si,)
    assert np.all(np.diff(pr.spectrum_ppm) > 0)
    sf = acq.bf1_MHz - 1500e-6
    offset = (acq.sfo1_MHz - sf) / sf * 1e6 + acq.sw_Hz / sf / 2
    expected_ppm = offset - 700 * acq.sw_Hz / sf / si
    i = int(np.argmax(pr.spectrum))
    assert abs(pr.spectrum_ppm[i] - expected_ppm) < 1e-6
    assert pr.spectrum[i] == pytest.approx(5.0e6, rel=1e-6)


def test_ser_partial_rows(tmp_path):
    acq = make_acq(td=512, ns=4, ds=0, d1=1.0)
    fids = np.stack([line_fid(acq, [500.0 * k]) for k in range(5)])
    d = 4 * (1.0 + 256 / 93457.9439252336)
    bw.write_ser(tmp_path / "1", fids, acq, T0, d, n_rows_total=8, complete=False,
                 topspin="4.3")
    rows = bruker.read_ser(tmp_path / "1")
    assert [r.expno for r in rows] == [1, 2, 3, 4, 5]
    for i, r in enumerate(rows):
        assert abs((r.acq_start - (T0 + timedelta(seconds=i * d))).total_seconds()) < 1e-3
        assert r.time_source == "ser_rows"
        k = np.argmax(np.abs(np.fft.fftshift(np.fft.fft(r.fid))))
        f = np.fft.fftshift(np.fft.fftfreq(256, 1 / acq.sw_Hz))[k]
        assert abs(f - 500.0 * i) < 2 * acq.sw_Hz / 256
    # completed ser, all 8 rows there, 30 s apart (a wait between rows): d from the audit
    # window / rows, each row acquired for the nominal (NS + DS)(D1 + AQ)
    all8 = np.stack([line_fid(acq, [500.0 * k]) for k in range(8)])
    bw.write_ser(tmp_path / "3", all8, acq, T0, 30.0)
    rows = bruker.read_ser(tmp_path / "3")
    nominal = timedelta(seconds=d)
    assert len(rows) == 8 and all(r.notes == () for r in rows)
    for i, r in enumerate(rows):
        assert r.acq_start == T0 + timedelta(seconds=30 * i)
        assert abs((r.acq_end - r.acq_start - nominal).total_seconds()) < 1e-6
    # completed ser whose file holds only 3 of the 8 rows + junk bytes: the complete rows are
    # read; window / 3 rows (30 s) disagrees with the nominal ~4 s and the window holds all 8
    # rows, so they are window / 8 apart, with a note saying so
    bw.write_ser(tmp_path / "2", fids[:3], acq, T0, 30.0, n_rows_total=8, truncate_file=True)
    with open(tmp_path / "2" / "ser", "ab") as fh:
        fh.write(b"\x01" * 100)
    rows = bruker.read_ser(tmp_path / "2")
    assert len(rows) == 3
    for i, r in enumerate(rows):
        assert abs((r.acq_start - (T0 + timedelta(seconds=90 / 8 * i))).total_seconds()) < 1e-3
        assert abs((r.acq_end - r.acq_start - nominal).total_seconds()) < 1e-6
        assert len(r.notes) == 1 and "rows 4..8 of 8" in r.notes[0]
    out = list(bruker.iter_raw_frames(tmp_path / "2"))
    assert [r.expno for r in out] == [1, 2, 3]
    # halted after 3 of 8 rows, 30 s apart (waits between rows): TopSpin's full-size file with
    # its last rows zero; the completed window covers the 3 rows, so they stay 30 s apart
    bw.write_ser(tmp_path / "4", fids[:3], acq, T0, 30.0, n_rows_total=8)
    rows = bruker.read_ser(tmp_path / "4")
    assert len(rows) == 3 and all(r.notes == () for r in rows)
    for i, r in enumerate(rows):
        assert abs((r.acq_start - (T0 + timedelta(seconds=30 * i))).total_seconds()) < 1e-3


def _series(root, n=4, **kw):
    acq = make_acq()
    for i in range(1, n + 1):
        s = T0 + timedelta(seconds=100 * i)
        bw.write_experiment(root / str(i), line_fid(acq, [0.0]), acq, s, s + timedelta(60), **kw)
    return acq


def test_scan_series_order_and_oddities(tmp_path):
    nmr = tmp_path / "run" / "nmr"
    acq = make_acq()
    for i in (1, 2, 9, 10):
        s = T0 + timedelta(seconds=100 * i)
        bw.write_experiment(nmr / str(i), line_fid(acq, [0.0]), acq, s, s + timedelta(60))
    (nmr / "11").mkdir()
    (nmr / "notes").mkdir()
    (nmr / "README.txt").write_text("x")
    for where in (nmr, tmp_path / "run"):
        lst = bruker.scan_series(where)
        assert [e for e, _ in lst.experiments] == [1, 2, 9, 10]
        assert [e for e, _ in lst.empty] == [11]
        assert sorted(p.name for p in lst.ignored) == ["README.txt", "notes"]
        assert lst.ser is None and lst.n_folders == 5
    frames = list(bruker.iter_raw_frames(tmp_path / "run"))
    assert [f.expno for f in frames] == [1, 2, 9, 10]  # trailing empty folder = in progress
    frames = list(bruker.iter_raw_frames(tmp_path / "run", skip_incomplete=False))
    assert isinstance(frames[-1], IncompleteAcquisition)
    with pytest.raises(BrukerFormatError):
        bruker.scan_series(tmp_path / "nope")


def test_iter_raw_frames_reports_bad_frames_and_goes_on(tmp_path):
    acq = _series(tmp_path, n=5)
    # 2: wrong nucleus; 3: all-zero fid (aborted, followed by good frames); 5: running
    txt = (tmp_path / "2" / "acqus").read_text(encoding="latin-1")
    (tmp_path / "2" / "acqus").write_text(txt.replace("<7Li>", "<23Na>"), encoding="latin-1")
    (tmp_path / "3" / "fid").write_bytes(bytes(acq.td * 4))
    shutil.rmtree(tmp_path / "5")
    bw.begin_experiment(tmp_path / "5", acq, T0 + timedelta(seconds=500), topspin="4.3")
    # 6: same start time as 4 (duplicated)
    s = T0 + timedelta(seconds=400)
    bw.write_experiment(tmp_path / "6", line_fid(acq, [0.0]), acq, s, s + timedelta(60))
    out = list(bruker.iter_raw_frames(tmp_path))
    kinds = [(type(o).__name__, o.expno if isinstance(o, RawFrame) else o.path.parts[-2:])
             for o in out]
    assert isinstance(out[0], RawFrame) and out[0].expno == 1
    assert isinstance(out[1], BrukerFormatError) and "23Na" in str(out[1])
    # 3's audita.txt records a completed acquisition: its zeros are no data, not "in progress"
    assert isinstance(out[2], BrukerFormatError) and "all zeros although audita.txt" in str(out[2])
    assert not isinstance(out[2], IncompleteAcquisition), kinds
    assert isinstance(out[3], RawFrame) and out[3].expno == 4
    assert isinstance(out[4], IncompleteAcquisition)  # 5 is followed by 6: reported
    assert isinstance(out[5], BrukerFormatError) and "not after" in str(out[5])
    assert len(out) == 6
    for err in out:
        if isinstance(err, InputError):
            assert "\n" not in str(err) and str(tmp_path) in str(err)


@pytest.mark.parametrize("case,needle", [
    ("no_sw", "SW_h missing"), ("dtypa7", "DTYPA=7"), ("trunc", "truncated"),
    ("nan", "non-finite"), ("zeros", "all zeros"), ("no_acqus", "acqus: missing"),
    ("no_fid", "fid: missing"), ("no_date", "DATE missing"), ("bad_audita", "audita.txt"),
])
def test_read_errors_name_file_and_problem(tmp_path, case, needle):
    acq = make_acq()
    e = tmp_path / "1"
    bw.write_experiment(e, line_fid(acq, [0.0]), acq, T0, T0 + timedelta(60),
                        dtypa=2 if case == "nan" else 0)
    acqus = e / "acqus"
    txt = acqus.read_text(encoding="latin-1")
    if case == "no_sw":
        acqus.write_text("\n".join(l for l in txt.splitlines() if not l.startswith("##$SW_h=")),
                         encoding="latin-1")
    elif case == "dtypa7":
        acqus.write_text(txt.replace("##$DTYPA= 0", "##$DTYPA= 7"), encoding="latin-1")
    elif case == "trunc":
        raw = (e / "fid").read_bytes()
        (e / "fid").write_bytes(raw[:1000])
    elif case == "nan":
        raw = bytearray((e / "fid").read_bytes())
        raw[80:88] = np.array([np.nan], "<f8").tobytes()
        (e / "fid").write_bytes(bytes(raw))
    elif case == "zeros":
        (e / "fid").write_bytes(bytes(acq.td * 4))
    elif case == "no_acqus":
        acqus.unlink()
    elif case == "no_fid":
        (e / "fid").unlink()
    elif case == "no_date":
        (e / "audita.txt").unlink()
        acqus.write_text(txt.replace("##$DATE=", "##$DATEX="), encoding="latin-1")
    elif case == "bad_audita":
        (e / "audita.txt").write_text("##TITLE= Audit trail\n##AUDIT TRAIL= \n(   1,<garbage>)\n"
                                      "##END=\n")
    with pytest.raises(BrukerFormatError) as info:
        bruker.read_experiment(e)
    msg = str(info.value)
    assert needle in msg and "\n" not in msg and str(e) in msg
    # (all zeros under a completed audita.txt: no data, not an acquisition in progress)
    assert not isinstance(info.value, IncompleteAcquisition)


def test_wrong_nucleus_can_be_allowed(tmp_path):
    acq = make_acq()
    bw.write_experiment(tmp_path / "1", line_fid(acq, [0.0]), acq, T0, T0 + timedelta(60))
    with pytest.raises(BrukerFormatError, match="expected 23Na"):
        bruker.read_experiment(tmp_path / "1", expected_nucleus="23Na")
    assert bruker.read_experiment(tmp_path / "1", expected_nucleus=None).acq.nucleus == "7Li"


def test_no_fallback_two_folders_up(tmp_path):
    acq = make_acq()
    bw.write_experiment(tmp_path / "1", line_fid(acq, [0.0]), acq, T0, T0 + timedelta(60))
    # an acqus-only folder two levels below a folder with a fid: nmrglue would read that fid
    sub = tmp_path / "1" / "pdata" / "9"
    sub.mkdir(parents=True)
    shutil.copy(tmp_path / "1" / "acqus", sub / "acqus")
    with pytest.raises(BrukerFormatError, match="fid: missing"):
        bruker.read_experiment(sub)


@pytest.mark.parametrize("bytorda", [0, 1])
@pytest.mark.parametrize("dtypa", [0, 2])
@pytest.mark.parametrize("td", [1024, 1000])          # block-padded on disk when 1000
def test_fid_values_equal_nmrglue_read(tmp_path, dtypa, bytorda, td):
    """The reader's one-pass fid read gives exactly nmrglue.bruker.read's values."""
    acq = make_acq(td=td)
    rng = np.random.default_rng(td + dtypa + bytorda)
    fid = line_fid(acq, [1000.0, -3000.0]) + 0.01 * (rng.standard_normal(td // 2)
                                                     + 1j * rng.standard_normal(td // 2))
    bw.write_experiment(tmp_path / "3", fid, acq, T0, T0 + timedelta(seconds=60),
                        dtypa=dtypa, bytorda=bytorda)
    fr = bruker.read_experiment(tmp_path / "3")
    size = (tmp_path / "3" / "fid").stat().st_size
    item = 8 if dtypa == 2 else 4
    _, ref = ng.bruker.read(str(tmp_path / "3"), bin_file="fid", read_acqus=False,
                            read_procs=False, read_pulseprogram=False,
                            shape=(size // item // 2,), cplex=True, big=bytorda == 1,
                            isfloat=dtypa == 2)
    assert fr.fid.dtype == np.complex128 and fr.fid.shape == (td // 2,)
    np.testing.assert_array_equal(fr.fid, ref[: td // 2])


def test_fid_odd_value_count_keeps_nmrglue_error(tmp_path):
    """A fid with an odd number of stored values goes through nmrglue (same error as before)."""
    acq = make_acq(td=1000)
    bw.write_experiment(tmp_path / "3", line_fid(acq, [500.0]), acq, T0,
                        T0 + timedelta(seconds=60))
    p = tmp_path / "3" / "fid"
    p.write_bytes(p.read_bytes()[: 1001 * 4])                 # >= TD values, odd count
    with pytest.raises(BrukerFormatError, match="nmrglue cannot read it"):
        bruker.read_experiment(tmp_path / "3")
