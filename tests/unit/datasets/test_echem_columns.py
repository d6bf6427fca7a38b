"""Column names in µA, quoted or with bracketed units; .mpt saved with a BOM; errors on binary
or huge one-line files quote a short piece only."""
from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from lisentry.datasets.errors import EchemFormatError
from lisentry.datasets.io.biologic import write_mpt
from lisentry.datasets.io.potentiostat import read_echem

T = np.arange(0.0, 300.0, 30.0)
E = 0.1 - 1e-4 * T
I_A = np.full(T.size, 1e-3)          # ours: positive = lithiating the working electrode


def _mpt(tmp_path, name="a.mpt"):
    return write_mpt(tmp_path / name, T, E, I_A, start_local=datetime(2023, 8, 11, 12, 0, 0), tz="UTC")


def _recode(p, mutate, encoding="cp1252", bom=False):
    text = p.read_bytes().decode("cp1252")
    data = mutate(text).encode(encoding)
    p.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return p


def _micro(text):
    # I/mA -> I/µA with values x1000 (same current)
    lines = text.split("\r\n")
    k = next(i for i, l in enumerate(lines) if l.startswith("mode\t"))
    cols = lines[k].split("\t")
    j = cols.index("I/mA")
    cols[j] = "I/µA"
    lines[k] = "\t".join(cols)
    for i in range(k + 1, len(lines)):
        f = lines[i].split("\t")
        if len(f) > j and f[j]:
            f[j] = repr(float(f[j]) * 1000.0)
            lines[i] = "\t".join(f)
    return "\r\n".join(lines)


@pytest.mark.parametrize("encoding,bom", [("cp1252", False), ("utf-8", False), ("utf-8", True)])
def test_mpt_current_in_microampere(tmp_path, encoding, bom):
    p = _recode(_mpt(tmp_path), _micro, encoding, bom)
    log = read_echem(p, tz="UTC")
    np.testing.assert_allclose(log.current_A, I_A, rtol=1e-6)
    assert not any("current" in n for n in log.notes)


def test_mpt_with_bom(tmp_path):
    p = _recode(_mpt(tmp_path), lambda t: t, "utf-8", bom=True)
    log = read_echem(p, tz="UTC")
    np.testing.assert_allclose(log.potential_V, E, atol=1e-6)


@pytest.mark.parametrize("header,fmt", [
    ('"Time (s)","Voltage (V)","Current (A)"', '"{t}","{e}","{i}"'),
    ("Time [s],Voltage [V],Current [mA]", "{t},{e},{i_mA}"),
    ("time/s,Ewe/V,I/uA", "{t},{e},{i_uA}"),
])
def test_csv_quoted_and_bracketed_headers(tmp_path, header, fmt):
    rows = [fmt.format(t=t, e=e, i=-i, i_mA=-i * 1e3, i_uA=-i * 1e6) for t, e, i in zip(T, E, I_A)]
    p = tmp_path / "log.csv"
    p.write_text(header + "\n" + "\n".join(rows) + "\n")
    log = read_echem(p, start="2023-08-11T12:00:00+00:00")
    np.testing.assert_allclose(log.potential_V, E, atol=1e-9)
    np.testing.assert_allclose(log.current_A, I_A, rtol=1e-9)


@pytest.mark.parametrize("content", [b"x" * 100_000, bytes(range(256)) * 400])
def test_errors_quote_little_of_the_file(tmp_path, content):
    p = tmp_path / "bad.csv"
    p.write_bytes(content)
    with pytest.raises(EchemFormatError) as ei:
        read_echem(p, start="2023-08-11T12:00:00+00:00")
    msg = str(ei.value)
    assert str(p) in msg and len(msg) < 400 + len(str(p)) and "\n" not in msg
