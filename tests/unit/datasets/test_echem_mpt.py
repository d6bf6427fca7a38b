"""EC-Lab .mpt / text export / CSV reading, the .mpt writer, tz, clock offset, sign, follow."""
from __future__ import annotations

import sys
import time
from datetime import datetime, timezone

import numpy as np
import pytest

from lisentry.datasets.errors import EchemFormatError
from lisentry.datasets.io.biologic import append_mpt_rows, format_eclab_number, write_mpt
from lisentry.datasets.io.potentiostat import EchemFollower, read_echem

# A GCPL export in EC-Lab's exact layout (v11, French/German locale: decimal commas, cp1252
# "cm²", CRLF, column row ending with a tab, <I>/mA, three-digit exponents). "Nb header lines"
# counts every line up to and including the column row: here 17.
ECLAB_SNIPPET = (
    "EC-Lab ASCII FILE\r\n"
    "Nb header lines : 17                          \r\n"
    "\r\n"
    "Galvanostatic Cycling with Potential Limitation\r\n"
    "\r\n"
    "Run on channel : 1 (SN 15265)\r\n"
    "User : \r\n"
    "Ewe ctrl range : min = 0,00 V, max = 5,00 V\r\n"
    "Acquisition started on : 01/10/2024 11:02:29.886\r\n"
    "Device : SP-300 (SN 1854)\r\n"
    "EC-Lab for windows v11.50 (software)\r\n"
    "Electrode surface area : 0,001 cm²\r\n"
    "Cycle Definition : Charge/Discharge alternance\r\n"
    "Ns                  0                   1                   \r\n"
    "Is                  0,000               -30,000             \r\n"
    "unit Is             mA                  µA                  \r\n"
    "mode\tox/red\terror\tcontrol changes\tNs changes\tcounter inc.\tNs\ttime/s\tcontrol/V/mA\tEwe/V\t<I>/mA\t"
    "(Q-Qo)/mA.h\tcycle number\t\r\n"
    "3\t1\t0\t1\t0\t0\t0\t3,015299923827115E+001\t0,0000000E+000\t3,4228721E+000\t0,000000000000000E+000\t"
    "0,000000000000000E+000\t0,000000000000000E+000\r\n"
    "1\t0\t0\t0\t1\t0\t1\t4,015319898564485E+001\t-3,0000001E-002\t3,4233973E+000\t-2,954942528300747E-002\t"
    "-3,283269392947356E-009\t0,000000000000000E+000\r\n"
    "1\t0\t0\t0\t0\t0\t1\t4,115319896038272E+001\t-3,0000001E-002\t3,4178398E+000\t-3,000800421048619E-002\t"
    "-8,339448984608882E-006\t1,000000000000000E+000\r\n"
)


def test_handwritten_eclab_snippet(tmp_path):
    p = tmp_path / "gcpl.mpt"
    p.write_bytes(ECLAB_SNIPPET.encode("cp1252"))
    log = read_echem(p, tz="Europe/Paris")  # January: UTC+1
    start = datetime(2024, 1, 10, 10, 2, 29, 886000, tzinfo=timezone.utc)
    assert log.start == start
    np.testing.assert_allclose(log.t_utc_s - start.timestamp(), [30.15299923827115, 40.15319898564485,
                                                                 41.15319896038272], atol=1e-6)
    np.testing.assert_allclose(log.potential_V, [3.4228721, 3.4233973, 3.4178398])
    # EC-Lab <I> is negative (reduction = lithiation of the working electrode): ours is positive
    np.testing.assert_allclose(log.current_A, [0.0, 2.954942528300747e-05, 3.000800421048619e-05])
    np.testing.assert_array_equal(log.step, [0, 1, 1])
    np.testing.assert_array_equal(log.cycle, [0, 0, 1])
    assert log.notes == []


@pytest.mark.parametrize("comma", [False, True])
def test_write_read_round_trip(tmp_path, comma):
    t = np.array([0.0, 10.0, 20.0, 30.5, 45.25, 100.0])
    e = np.array([0.30, 0.21, 0.123456, -0.0055, -0.02, 0.0125])
    i = np.array([1e-4, 1e-4, 1e-4, 0.0, -2.5e-5, -2.5e-5])  # ours: + lithiating
    p = write_mpt(tmp_path / "run.mpt", t, e, i, start_local=datetime(2023, 8, 11, 12, 40, 15, 250000),
                  tz="Europe/London", decimal_comma=comma)
    raw = p.read_bytes()
    assert raw.startswith(b"EC-Lab ASCII FILE\r\nNb header lines : ")
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    text = raw.decode("cp1252")
    lines = text.split("\r\n")
    n = int(lines[1].split(":")[1])
    assert lines[n - 1].startswith("mode\tox/red\terror\tcontrol changes\tNs changes\tcounter inc.\ttime/s")
    assert "Acquisition started on : 08/11/2023 12:40:15.250" in text
    assert ("E+001" in lines[n + 1]) and ("," in lines[n + 1]) == comma
    # EC-Lab's own sign in the file: I/mA = -current_A * 1e3
    cols = lines[n - 1].rstrip("\t").split("\t")
    first_i = float(lines[n].split("\t")[cols.index("I/mA")].replace(",", "."))
    assert first_i == pytest.approx(-0.1)

    log = read_echem(p, tz="Europe/London")  # BST = UTC+1
    start = datetime(2023, 8, 11, 11, 40, 15, 250000, tzinfo=timezone.utc)
    assert log.start == start
    np.testing.assert_allclose(log.t_utc_s - start.timestamp(), t, atol=1e-6)
    np.testing.assert_allclose(log.potential_V, e, rtol=1e-7)
    np.testing.assert_allclose(log.current_A, i, rtol=1e-12, atol=1e-18)
    assert log.notes == []


def test_written_file_reads_with_galvani(tmp_path):
    BioLogic = pytest.importorskip("galvani.BioLogic")
    t = np.arange(0.0, 60.0, 10.0)
    i = np.full(6, 2e-4)
    p = write_mpt(tmp_path / "g.mpt", t, 0.1 - 1e-3 * t, i, start_local=datetime(2023, 1, 5, 9, 0, 0), tz="UTC",
                  decimal_comma=True)
    with open(p, "rb") as fh:
        arr, comments = BioLogic.MPTfile(fh)
    np.testing.assert_allclose(arr["time/s"], t)
    np.testing.assert_allclose(arr["Ewe/V"], 0.1 - 1e-3 * t, rtol=1e-7)
    np.testing.assert_allclose(arr["I/mA"], -0.2)  # EC-Lab sign
    # (Q-Qo) in mA.h: -0.2 mA for 50 s
    assert arr["(Q-Qo)/mA.h"][-1] == pytest.approx(-0.2 * 50 / 3600)


def test_format_eclab_number():
    assert format_eclab_number(907.630177622922, 15) == "9.076301776229220E+002"
    assert format_eclab_number(1.6e-310 * 0 + 4.5698602e-2, 7) == "4.5698602E-002"
    assert format_eclab_number(-3.0e-2, 7, decimal_comma=True) == "-3,0000000E-002"
    assert format_eclab_number(0.0, 7) == "0.0000000E+000"


def test_tz_default_is_machine_zone(tmp_path, monkeypatch):
    p = write_mpt(tmp_path / "a.mpt", [0.0, 1.0], [0.1, 0.1], [0.0, 0.0],
                  start_local=datetime(2023, 8, 11, 12, 0, 0))
    monkeypatch.setenv("TZ", "Europe/London")
    time.tzset()
    try:
        log = read_echem(p)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert log.start == datetime(2023, 8, 11, 11, 0, 0, tzinfo=timezone.utc)
    # winter: London = UTC
    p2 = write_mpt(tmp_path / "b.mpt", [0.0, 1.0], [0.1, 0.1], [0.0, 0.0],
                   start_local=datetime(2023, 1, 11, 12, 0, 0))
    assert read_echem(p2, tz="Europe/London").start == datetime(2023, 1, 11, 12, 0, tzinfo=timezone.utc)
    assert read_echem(p2, tz="Asia/Tokyo").start == datetime(2023, 1, 11, 3, 0, tzinfo=timezone.utc)


def test_clock_offset_and_current_sign(tmp_path):
    p = write_mpt(tmp_path / "a.mpt", [0.0, 5.0, 10.0], [0.1, 0.2, 0.3], [1e-3, 1e-3, 1e-3],
                  start_local=datetime(2023, 8, 11, 12, 0, 0), tz="UTC")
    ref = read_echem(p, tz="UTC")
    # potentiostat clock 30 s ahead of the spectrometer: shift times back by 30 s
    shifted = read_echem(p, tz="UTC", clock_offset_s=30.0)
    np.testing.assert_allclose(shifted.t_utc_s, ref.t_utc_s - 30.0)
    assert shifted.start == datetime(2023, 8, 11, 11, 59, 30, tzinfo=timezone.utc)
    # window stats on the spectrometer clock follow the shift
    w = shifted.window_stats(ref.t_utc_s[0] - 30, ref.t_utc_s[0] - 30 + 5.0)
    assert w.potential_V == pytest.approx(0.15)  # mean of the 0.1 -> 0.2 V ramp
    assert ref.window_stats(ref.t_utc_s[0] - 30, ref.t_utc_s[0] - 30 + 5.0).status == "no_potential"
    assert np.all(ref.current_A == 1e-3)
    assert np.all(read_echem(p, tz="UTC", current_sign=1).current_A == -1e-3)
    with pytest.raises(ValueError):
        read_echem(p, tz="UTC", current_sign=2)


def test_explicit_start_overrides_file(tmp_path):
    p = write_mpt(tmp_path / "a.mpt", [0.0, 5.0], [0.1, 0.2], [0.0, 0.0],
                  start_local=datetime(2023, 8, 11, 12, 0, 0), tz="UTC")
    log = read_echem(p, tz="UTC", start="2023-08-11T13:00:00+00:00")
    assert log.start == datetime(2023, 8, 11, 13, 0, tzinfo=timezone.utc)
    assert any("overrides" in n for n in log.notes)


def test_text_export_needs_start(tmp_path):
    p = tmp_path / "run_03_GCPL_C05.txt"
    p.write_bytes(b"time/s\tEwe/V\t\r\n9.0763017762292229E+002\t2.4352197E-002\r\n"
                  b"9.0763197762287750E+002\t8.7058559E-002\r\n")
    with pytest.raises(EchemFormatError, match="--echem-start"):
        read_echem(p)
    log = read_echem(p, start="2023-08-11 12:40:15", tz="Europe/London")
    assert log.t_utc_s[0] == pytest.approx(datetime(2023, 8, 11, 11, 40, 15, tzinfo=timezone.utc).timestamp()
                                           + 907.63017762292229)
    assert np.isnan(log.current_A).all()
    assert any("no current" in n for n in log.notes)


def test_generic_csv_battdat_names_and_iso_times(tmp_path):
    p = tmp_path / "cycler.csv"
    p.write_text("test_time,voltage,current,cycle_number\n0,0.5,-0.001,0\n10,0.45,-0.001,0\n20,0.40,-0.001,1\n")
    log = read_echem(p, start="2024-05-01T08:00:00+02:00")
    assert log.t_utc_s[0] == datetime(2024, 5, 1, 6, 0, tzinfo=timezone.utc).timestamp()
    np.testing.assert_allclose(log.potential_V, [0.5, 0.45, 0.40])
    # battdat: positive = charge (delithiating a half cell's working electrode) -> flipped
    np.testing.assert_allclose(log.current_A, [1e-3] * 3)
    np.testing.assert_array_equal(log.cycle, [0, 0, 1])

    q = tmp_path / "iso.csv"
    q.write_text("timestamp;potential_V;current_A\n2024-05-01T06:00:00Z;0,5;1E-3\n"
                 "2024-05-01T06:00:10Z;0,4;1E-3\n")
    log2 = read_echem(q)
    assert log2.t_utc_s[1] - log2.t_utc_s[0] == 10.0
    np.testing.assert_allclose(log2.potential_V, [0.5, 0.4])
    np.testing.assert_allclose(log2.current_A, [1e-3, 1e-3])  # our own column: sign kept

    r = tmp_path / "named.csv"
    r.write_text("secs,Vwe,Iwe_mA\n0,1.0,2.0\n1,1.1,2.0\n")
    log3 = read_echem(r, start="2024-05-01T06:00:00Z", time_col="secs", potential_col="Vwe",
                      current_col="Iwe_mA", current_sign=1)
    np.testing.assert_allclose(log3.current_A, [2e-3, 2e-3])
    with pytest.raises(EchemFormatError, match="did you mean 'Vwe'"):
        read_echem(r, start="2024-05-01T06:00:00Z", time_col="secs", potential_col="Vw")


@pytest.mark.parametrize("content,msg", [
    (b"", "empty"),
    (b"   \r\n", "empty"),
    (b"time/s\tI/mA\r\n1\t2\r\n", "potential"),
    (b"foo,bar\n1,2\n", "time"),
    (b"time/s\tEwe/V\r\n", "no usable"),
    (b"time/s\tEwe/V\r\nabc\tdef\r\n", "no usable"),
    (b"EC-Lab ASCII FILE\r\nNb header lines : 40\r\n\r\n", "header says 40"),
    (b"EC-Lab ASCII FILE\r\nNb header lines : x\r\n", "Nb header lines"),
])
def test_bad_files_raise_one_line_error(tmp_path, content, msg):
    p = tmp_path / "bad.txt"
    p.write_bytes(content)
    with pytest.raises(EchemFormatError, match=msg) as ei:
        read_echem(p, start="2024-01-01T00:00:00Z")
    assert "\n" not in str(ei.value) and str(p) in str(ei.value)


def test_missing_file(tmp_path):
    with pytest.raises(EchemFormatError, match="not found"):
        read_echem(tmp_path / "nope.mpt")


def test_mpr_without_galvani(tmp_path, monkeypatch):
    p = tmp_path / "x.mpr"
    p.write_bytes(b"BIO-LOGIC MODULAR FILE\x1a" + b"\0" * 64)
    monkeypatch.setitem(sys.modules, "galvani", None)
    with pytest.raises(EchemFormatError, match=r"pip install lisentry\[mpr\]"):
        read_echem(p)


def test_corrupt_mpr_is_format_error(tmp_path):
    pytest.importorskip("galvani")
    p = tmp_path / "x.mpr"
    p.write_bytes(b"BIO-LOGIC MODULAR FILE\x1a" + b"\x07" * 100)
    with pytest.raises(EchemFormatError, match="not a readable .mpr"):
        read_echem(p)


def test_follower_reads_appended_rows_and_ignores_partial_line(tmp_path):
    p = tmp_path / "live.mpt"
    f = EchemFollower(p, tz="UTC")
    assert len(f.poll()) == 0  # not there yet
    write_mpt(p, [0.0, 10.0], [0.3, 0.29], [1e-4, 1e-4], start_local=datetime(2023, 8, 11, 12, 0, 0), tz="UTC")
    assert len(f.poll()) == 2
    append_mpt_rows(p, [20.0, 30.0], [0.28, 0.27], [1e-4, 1e-4])
    log = f.poll()
    assert len(log) == 4
    # EC-Lab is mid-way through writing a row: the partial line is left for later
    full_row = p.read_bytes().split(b"\r\n")[-2]  # last complete row as a template
    with open(p, "ab") as fh:
        fh.write(full_row[:15])
    assert len(f.poll()) == 4
    # finish the file with a proper row (rewrite the partial bytes)
    data = p.read_bytes()[: -15]
    p.write_bytes(data)
    append_mpt_rows(p, [40.0], [0.26], [1e-4])
    log = f.poll()
    ref = read_echem(p, tz="UTC")
    np.testing.assert_array_equal(log.t_utc_s, ref.t_utc_s)
    np.testing.assert_array_equal(log.potential_V, ref.potential_V)
    assert len(log) == 5
    # (Q-Qo) continues across appends: 0.1 mA (EC-Lab sign -0.1) for 40 s
    last = p.read_bytes().decode("cp1252").split("\r\n")[-2].split("\t")
    assert float(last[11]) == pytest.approx(-0.1 * 40 / 3600)


def test_follower_csv_and_header_in_pieces(tmp_path):
    p = tmp_path / "live.csv"
    f = EchemFollower(p, start="2024-01-01T00:00:00Z")
    p.write_bytes(b"test_time,volt")
    assert len(f.poll()) == 0
    with open(p, "ab") as fh:
        fh.write(b"age,current\n0,1.0,0\n1,1.1,0\n2,1.")
    log = f.poll()
    assert len(log) == 2 and log.potential_V[-1] == 1.1
    with open(p, "ab") as fh:
        fh.write(b"2,0\n")
    assert f.poll().potential_V[-1] == pytest.approx(1.2)


def test_follower_mpr_keeps_last_good(tmp_path):
    pytest.importorskip("galvani")
    p = tmp_path / "live.mpr"
    p.write_bytes(b"BIO-LOGIC MODULAR FILE\x1a")
    f = EchemFollower(p)
    log = f.poll()
    assert len(log) == 0 and "not readable yet" in log.notes[0]


def test_unterminated_last_line(tmp_path):
    p = tmp_path / "a.csv"
    start = "2024-01-01T00:00:00Z"
    # a finished file without a final line break: the last row is whole
    p.write_text("test_time,voltage\n0,0.5\n1,0.45\n2,0.4")
    np.testing.assert_allclose(read_echem(p, start=start).potential_V, [0.5, 0.45, 0.4])
    p.write_text("test_time,voltage\n0,0.5")
    assert len(read_echem(p, start=start)) == 1
    # fixed-format columns: a row cut while being written loses decimals -> ignored, noted
    p.write_text("test_time,voltage\n0.0,0.500\n1.0,0.450\n2.0,0.4")
    log = read_echem(p, start=start)
    np.testing.assert_allclose(log.potential_V, [0.5, 0.45])
    assert any("incomplete last line (line 4)" in n for n in log.notes)
    # EC-Lab exponents: "4.5698602E-00" is a cut "4.5698602E-002"
    q = tmp_path / "b.txt"
    q.write_bytes(b"time/s\tEwe/V\t\r\n1.0E+000\t2.4352197E-002\r\n2.0E+000\t4.5698602E-00")
    assert len(read_echem(q, start=start)) == 1
    q.write_bytes(b"time/s\tEwe/V\t\r\n1.0E+000\t2.4352197E-002\r\n2.0E+000\t4.5698602E-002")
    assert len(read_echem(q, start=start)) == 2
