"""Corrupted EC-Lab logs: garbage lines, shuffled rows, truncation mid-line.

The reader must never raise anything but EchemFormatError and must keep exactly the good
rows (compared with the pristine file, value for value).
"""
from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lisentry.datasets.errors import EchemFormatError
from lisentry.datasets.io.biologic import write_mpt
from lisentry.datasets.io.potentiostat import read_echem

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
START = datetime(2023, 8, 11, 12, 40, 15)

logs = st.builds(
    lambda dts, es, cs, comma: (np.cumsum(dts), np.array(es), np.array(cs), comma),
    st.lists(st.floats(0.01, 100.0), min_size=3, max_size=20).map(np.array),
    st.lists(st.floats(-1.0, 5.0), min_size=20, max_size=20),
    st.lists(st.floats(-1e-3, 1e-3), min_size=20, max_size=20),
    st.booleans(),
)
# junk that can never be a number: always contains a letter or symbol that no number has
junk = st.builds(lambda a, c, b: a + c + b, st.text("0123456789.,+-E abc", max_size=8),
                 st.sampled_from(["x", "#", "?", "NaN!", "--", "1.2.3"]),
                 st.text("0123456789.,+-E abc", max_size=8))


def _write(d: Path, log) -> tuple[Path, bytes, list[str]]:
    t, e, c, comma = log
    n = len(t)
    p = write_mpt(d / "run.mpt", t, e[:n], c[:n], start_local=START, tz="UTC", decimal_comma=comma)
    raw = p.read_bytes()
    return p, raw, raw.decode("cp1252").split("\r\n")


def _rows(log) -> set[tuple]:
    return set(zip(log.t_utc_s.tolist(), log.potential_V.tolist(), log.current_A.tolist()))


def _seq(log) -> list[tuple]:
    return list(zip(log.t_utc_s.tolist(), log.potential_V.tolist(), log.current_A.tolist()))


def _header_len(lines: list[str]) -> int:
    return int(lines[1].split(":")[1])


@SETTINGS
@given(log=logs, data=st.data())
def test_garbage_lines_are_dropped_and_noted(log, data):
    with tempfile.TemporaryDirectory() as d:
        p, raw, lines = _write(Path(d), log)
        ref = read_echem(p, tz="UTC")
        nh = _header_len(lines)
        body = lines[nh:-1]  # data rows (last element is "" after the final CRLF)
        good = list(body)
        cols = lines[nh - 1].rstrip("\t").split("\t")
        needed = [cols.index(c) for c in ("time/s", "Ewe/V", "I/mA")]
        n_bad = data.draw(st.integers(1, 6))
        for _ in range(n_bad):
            pos = data.draw(st.integers(0, len(body)))
            if data.draw(st.booleans()):  # a real-looking row with one field spoiled
                row = good[data.draw(st.integers(0, len(good) - 1))].split("\t")
                row[data.draw(st.sampled_from(needed))] = data.draw(junk)
                bad = "\t".join(row)
            else:
                bad = data.draw(junk)
            body.insert(pos, bad)
        p.write_bytes(("\r\n".join(lines[:nh] + body) + "\r\n").encode("cp1252"))
        got = read_echem(p, tz="UTC")
        assert _seq(got) == _seq(ref)
        dropped = [n for n in got.notes if "unreadable" in n]
        assert dropped, got.notes


@SETTINGS
@given(log=logs, seed=st.integers(0, 2**32 - 1))
def test_shuffled_rows_keep_an_increasing_subset(log, seed):
    with tempfile.TemporaryDirectory() as d:
        p, raw, lines = _write(Path(d), log)
        ref = read_echem(p, tz="UTC")
        nh = _header_len(lines)
        body = lines[nh:-1]
        order = np.random.default_rng(seed).permutation(len(body))
        p.write_bytes(("\r\n".join(lines[:nh] + [body[k] for k in order]) + "\r\n").encode("cp1252"))
        got = read_echem(p, tz="UTC")
        assert np.all(np.diff(got.t_utc_s) > 0)
        assert _rows(got) <= _rows(ref)
        # exactly the rows whose time exceeds every earlier row's (in file order)
        ref_seq = _seq(ref)
        expect, best = [], -np.inf
        for k in order:
            if ref_seq[k][0] > best:
                expect.append(ref_seq[k])
                best = ref_seq[k][0]
        assert _seq(got) == expect
        if len(expect) < len(ref_seq):
            assert any("non-monotonic" in n for n in got.notes)


@SETTINGS
@given(log=logs, frac=st.floats(0.0, 1.0))
def test_truncated_file_keeps_complete_rows(log, frac):
    with tempfile.TemporaryDirectory() as d:
        p, raw, lines = _write(Path(d), log)
        ref = _seq(read_echem(p, tz="UTC"))
        cut = int(frac * len(raw))
        p.write_bytes(raw[:cut])
        try:
            got = _seq(read_echem(p, tz="UTC"))
        except EchemFormatError:
            nh = _header_len(lines)
            header_bytes = len(("\r\n".join(lines[:nh]) + "\r\n").encode("cp1252"))
            # only a truncated header, or no complete data row
            assert cut < header_bytes + len(lines[nh]) + 2
            return
        text = raw[:cut].decode("cp1252")
        nh = _header_len(lines)
        complete = text.count("\r\n") - nh  # fully terminated data rows
        tail = text.rsplit("\r\n", 1)[-1].rstrip("\r")
        full_next = complete < len(ref) and tail == lines[nh + complete]
        assert got == ref[: complete + (1 if full_next else 0)]


@SETTINGS
@given(log=logs, data=st.data())
def test_any_mix_of_damage_only_raises_format_error(log, data):
    with tempfile.TemporaryDirectory() as d:
        p, raw, lines = _write(Path(d), log)
        ref = _rows(read_echem(p, tz="UTC"))
        b = bytearray(raw)
        for _ in range(data.draw(st.integers(0, 5))):
            pos = data.draw(st.integers(0, len(b)))
            b[pos:pos] = data.draw(junk).encode("cp1252") + data.draw(st.sampled_from([b"", b"\r\n", b"\n"]))
        if data.draw(st.booleans()):
            b = b[: data.draw(st.integers(0, len(b)))]
        p.write_bytes(bytes(b))
        try:
            got = read_echem(p, tz="UTC")
        except EchemFormatError:
            return
        assert np.all(np.diff(got.t_utc_s) > 0)
        # junk spliced into a row can only make it unreadable, or change an unused column,
        # or (mid-number) change the number itself; rows never appear from nowhere
        assert len(got) <= len(ref) + 5


def test_first_row_cut_in_its_exponent_is_dropped(tmp_path):
    # regression (found by hypothesis): with no earlier row to compare formats with, a first
    # data row cut inside its last number ("...E+0" of "...E+000") must not be kept
    p = write_mpt(tmp_path / "run.mpt", [1.0, 2.0], [0.1, 0.2], [1e-4, 1e-4], start_local=START, tz="UTC")
    raw = p.read_bytes()
    lines = raw.decode("cp1252").split("\r\n")
    nh = _header_len(lines)
    first = "\r\n".join(lines[:nh + 1])
    for drop in (2, 4):  # "E+0" and "0000000000000E" left of the last field
        p.write_bytes((first[:-drop]).encode("cp1252"))
        try:
            got = read_echem(p, tz="UTC")
        except EchemFormatError:
            continue
        assert len(got.t_utc_s) == 0
    p.write_bytes(first.encode("cp1252"))  # the whole first row, unterminated: kept
    got = read_echem(p, tz="UTC")
    assert got.potential_V.tolist() == [0.1]
