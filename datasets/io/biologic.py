"""BioLogic EC-Lab files: ``.mpt`` exports, plain text exports, ``.mpr`` (via the optional
``galvani`` package) and an ``.mpt`` writer that reproduces EC-Lab's layout.

Sign convention
---------------
EC-Lab's current ``I`` is positive for an oxidation at the working electrode. For a
carbon (or other host) working electrode against a Li counter electrode, lithiation is a
reduction, so it is *negative* in EC-Lab. lisentry's current is positive when it
lithiates the working electrode, so the readers return ``current_A = -I/mA * 1e-3`` by
default (``current_sign=+1`` keeps EC-Lab's sign) and the writer writes
``I/mA = -current_A * 1e3``.

EC-Lab ``.mpt`` layout (what the reader expects and the writer writes)
---------------------------------------------------------------------
* cp1252 text, CRLF line ends, tab-separated columns;
* line 1 ``EC-Lab ASCII FILE`` (``BT-Lab ASCII FILE`` for BT-Lab), line 2
  ``Nb header lines : N`` where ``N`` counts every header line *including* the
  column-name row (so data start at line ``N + 1``);
* ``Acquisition started on : MM/DD/YYYY HH:MM:SS.fff`` in local time without zone:
  the origin of ``time/s`` (the sequence start);
* numbers as ``%.15E``/``%.7E`` with three-digit exponents (``9.0763017E+002``),
  decimal commas on some Windows locales.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from lisentry.datasets.errors import EchemFormatError
from lisentry.datasets.io.potentiostat import (
    START_HINT,
    reconcile_start,
    EchemLog,
    _decode,
    _gap_notes,
    _monotonic_keep,
    _parse_datetime_text,
    _split_complete,
    _start_parser,
    _zone,
    read_delimited,
)

__all__ = ["read_mpt", "read_eclab_text", "read_mpr", "parse_mpt_header", "write_mpt", "append_mpt_rows",
           "format_eclab_number", "MPT_COLUMNS"]

_MAGICS = ("EC-Lab ASCII FILE", "BT-Lab ASCII FILE")
_NB_RE = re.compile(r"Nb header lines\s*:\s*(\d+)")
_START_RE = re.compile(r"Acquisition started on\s*:\s*(.+?)\s*$")

#: Column row written by :func:`write_mpt` (EC-Lab's GCPL export, v11).
MPT_COLUMNS = ("mode", "ox/red", "error", "control changes", "Ns changes", "counter inc.", "time/s",
               "control/V/mA", "Ewe/V", "I/mA", "dq/mA.h", "(Q-Qo)/mA.h", "cycle number")


# --------------------------------------------------------------------------------------
# readers
# --------------------------------------------------------------------------------------


def parse_mpt_header(path: Path, raw: bytes, *, final: bool = True):
    """Parse the header of an ``.mpt`` file.

    Parameters
    ----------
    path : Path
        For error messages.
    raw : bytes
        The file's bytes (at least the whole header).
    final : bool
        ``True`` for a complete file (a short header is an error); ``False`` for a file
        still being written (returns ``None`` while the header is incomplete).

    Returns
    -------
    (header_lines, start, notes) or None
        ``header_lines`` is ``N`` (the column row is line ``N``), ``start`` the naive local
        "Acquisition started on" (or ``None``), ``notes`` remarks about the header.

    Raises
    ------
    EchemFormatError
        Not an EC-Lab file, or a bad/short "Nb header lines".
    """
    # EC-Lab writes cp1252; a file saved again as UTF-8 (with or without a BOM) is read as such
    text = _decode(raw, None)
    lines, tail = _split_complete(text)
    if final and tail is not None:
        lines = lines + [tail]
    if not lines or lines[0].strip().lstrip("\ufeff") not in _MAGICS:
        if not final and not lines:
            return None
        raise EchemFormatError(path, "not an EC-Lab .mpt file (first line is not 'EC-Lab ASCII FILE')")
    if len(lines) < 2:
        if final:
            raise EchemFormatError(path, "file ends before 'Nb header lines'")
        return None
    m = _NB_RE.search(lines[1])
    if not m:
        raise EchemFormatError(path, f"line 2 is not 'Nb header lines : N' (got {lines[1].strip()[:40]!r})")
    n = int(m.group(1))
    if n < 3:
        raise EchemFormatError(path, f"'Nb header lines : {n}' is too small (at least 3)")
    if len(lines) < n:
        if final:
            raise EchemFormatError(path, f"header says {n} lines but the file has only {len(lines)}")
        return None
    notes: list[str] = []
    start = None
    for line in lines[:n]:
        sm = _START_RE.search(line)
        if sm:
            start = _parse_datetime_text(sm.group(1))
            if start is None:
                notes.append(f"unreadable 'Acquisition started on : {sm.group(1)}'")
            break
    if "time/s" not in lines[n - 1] and "time" not in lines[n - 1].lower():
        notes.append(f"line {n} (column row per 'Nb header lines') has no time/s column")
    return n, start, notes


def read_mpt(path: str | Path, *, start=None, tz: str | None = None, clock_offset_s: float = 0.0,
             current_sign: int | None = None, time_col: str | None = None, potential_col: str | None = None,
             current_col: str | None = None) -> EchemLog:
    """Read an EC-Lab ``.mpt`` export.

    Uses ``time/s``, ``Ewe/V`` (or ``<Ewe>/V``, ``Ecell/V``), ``I/mA`` (or ``<I>/mA``),
    ``cycle number`` and ``Ns`` where present. The absolute start is the header's
    "Acquisition started on" (local time in ``tz``; default the machine's zone) unless
    ``start`` is given. Current: ``current_A = -I/mA * 1e-3`` by default (see the module
    docstring). Other parameters as :func:`lisentry.datasets.io.potentiostat.read_echem`.

    Raises
    ------
    EchemFormatError
        Bad header, missing time/potential column, or no usable row.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise EchemFormatError(path, f"cannot read file ({exc.strerror or exc})") from None
    n, file_start, notes = parse_mpt_header(path, raw, final=True)
    parser, start_utc, notes = _start_parser(
        path, raw, start=start, tz=tz, current_sign=current_sign, time_col=time_col,
        potential_col=potential_col, current_col=current_col, header_line=n, file_start=file_start,
        extra_notes=notes, encoding="cp1252", delim="\t", final=True)
    return parser.to_log(start_utc=start_utc, clock_offset_s=clock_offset_s, extra_notes=notes,
                         require_rows=True, start_hint=START_HINT)


def read_eclab_text(path: str | Path, *, start=None, tz: str | None = None, clock_offset_s: float = 0.0,
                    current_sign: int | None = None, time_col: str | None = None,
                    potential_col: str | None = None, current_col: str | None = None) -> EchemLog:
    """Read EC-Lab's plain text export (column row ``time/s\\tEwe/V...`` then rows, no header).

    Such a file has no absolute start: ``start`` (the time of ``time/s == 0``, i.e. the
    sequence start) is required. Raises :class:`EchemFormatError` without it.
    """
    return read_delimited(path, start=start, tz=tz, clock_offset_s=clock_offset_s,
                          current_sign=current_sign, time_col=time_col, potential_col=potential_col, current_col=current_col,
                          header_line=1, encoding="cp1252", delim=None)


_MPR_TIME = ("time/s",)
_MPR_POT = ("Ewe/V", "<Ewe>/V", "Ecell/V", "<Ecell>/V")
_MPR_CUR = ("I/mA", "<I>/mA")


def read_mpr(path: str | Path, *, start=None, tz: str | None = None, clock_offset_s: float = 0.0,
             current_sign: int | None = None) -> EchemLog:
    """Read an EC-Lab binary ``.mpr`` with ``galvani`` (optional: ``pip install lisentry[mpr]``).

    The absolute start is galvani's ``MPRfile.timestamp`` (from the LOG module, local time
    in ``tz``), which is the sequence start and the origin of ``time/s``; an explicit
    ``start`` overrides it. Files without a LOG module need ``start``. Columns: ``time/s``,
    ``Ewe/V`` (or ``<Ewe>/V``/``Ecell/V``), ``I/mA`` (or ``<I>/mA``; NaN when absent, as in
    GCPL files recorded without ``I``), ``cycle number``, ``Ns``. Current sign as
    :func:`read_mpt`.

    Raises
    ------
    EchemFormatError
        galvani missing, unreadable file, no time or potential column, no usable row.
    """
    path = Path(path)
    try:
        from galvani import BioLogic
    except ImportError:
        raise EchemFormatError(path, "reading .mpr needs galvani: pip install lisentry[mpr] "
                                     "(or export the data as .mpt in EC-Lab)") from None
    try:
        with open(path, "rb") as fh:
            mpr = BioLogic.MPRfile(fh)
            data = np.array(mpr.data)
    except OSError as exc:
        raise EchemFormatError(path, f"cannot read file ({exc.strerror or exc})") from None
    except Exception as exc:  # galvani raises ValueError/AssertionError/NotImplementedError...
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EchemFormatError(path, f"not a readable .mpr ({type(exc).__name__}: {msg})") from None
    names = data.dtype.names or ()
    tcol = next((c for c in _MPR_TIME if c in names), None)
    ecol = next((c for c in _MPR_POT if c in names), None)
    icol = next((c for c in _MPR_CUR if c in names), None)
    if tcol is None:
        raise EchemFormatError(path, f"no time/s column (columns: {', '.join(names)})")
    if ecol is None:
        raise EchemFormatError(
            path, f"no potential column (Ewe/V, <Ewe>/V, Ecell/V) (columns: {', '.join(names)})")
    notes: list[str] = []
    file_start = getattr(mpr, "timestamp", None)
    start_utc = reconcile_start(start, file_start, tz, notes)
    if start_utc is None:
        raise EchemFormatError(path, "the .mpr has no acquisition timestamp (no LOG module: EC-Lab "
                                     f"appends it when the experiment stops); {START_HINT}")
    if current_sign is not None and current_sign not in (1, -1):
        raise ValueError(f"The 'current_sign' parameter of read_mpr must be 1 or -1. Got {current_sign!r}.")
    sign = -1.0 if current_sign is None else float(current_sign)
    t = data[tcol].astype(np.float64)
    e = data[ecol].astype(np.float64)
    i = data[icol].astype(np.float64) * 1e-3 * sign if icol else np.full(len(t), np.nan)
    cyc = data["cycle number"].astype(np.float64) if "cycle number" in names else None
    stp = data["Ns"].astype(np.float64) if "Ns" in names else None
    good = np.isfinite(t) & np.isfinite(e) & (np.isfinite(i) if icol else True)
    if not good.all():
        bad = np.flatnonzero(~good)
        notes.append(f"dropped {len(bad)} record(s) with non-finite values (first at record {bad[0]})")
    if not good.any():
        raise EchemFormatError(path, "no usable data rows")
    rec = np.flatnonzero(good)
    t, e, i = t[good], e[good], i[good]
    cyc = cyc[good] if cyc is not None else None
    stp = stp[good] if stp is not None else None
    t = t + start_utc.timestamp() - clock_offset_s
    keep, more = _monotonic_keep(t, np.column_stack([e, i]), rec)
    notes.extend(m.replace("lines", "records") for m in more)
    t, e, i = t[keep], e[keep], i[keep]
    cyc = cyc[keep] if cyc is not None else None
    stp = stp[keep] if stp is not None else None
    if icol is None:
        notes.append("no current column (I/mA): current is NaN")
    notes.extend(_gap_notes(t))
    log_start = datetime.fromtimestamp(start_utc.timestamp() - clock_offset_s, timezone.utc)
    return EchemLog(t, e, i, cycle=cyc, step=stp, source=path, start=log_start, notes=notes)


# --------------------------------------------------------------------------------------
# writer
# --------------------------------------------------------------------------------------


def format_eclab_number(x: float, digits: int = 15, decimal_comma: bool = False) -> str:
    """Format ``x`` as EC-Lab does: ``%.<digits>E`` with a three-digit exponent.

    Examples
    --------
    >>> format_eclab_number(907.630177622922, 15)
    '9.076301776229220E+002'
    >>> format_eclab_number(-0.0243, 7, decimal_comma=True)
    '-2,4300000E-002'
    """
    s = f"{float(x):.{digits}E}"
    mant, exp = s.split("E")
    e = int(exp)
    out = f"{mant}E{'+' if e >= 0 else '-'}{abs(e):03d}"
    return out.replace(".", ",") if decimal_comma else out


def _dec(s: str, comma: bool) -> str:
    return s.replace(".", ",") if comma else s


def _local_start(start_local: datetime, tz: str | None) -> datetime:
    """Wall-clock time as EC-Lab writes it (naive, local in ``tz``)."""
    if start_local.tzinfo is None:
        return start_local
    zone = _zone(tz)
    return start_local.astimezone(zone).replace(tzinfo=None) if zone else \
        start_local.astimezone().replace(tzinfo=None)


def _hms(seconds: float, comma: bool) -> str:
    h = int(seconds // 3600)
    m = int((seconds - 3600 * h) // 60)
    s = seconds - 3600 * h - 60 * m
    return _dec(f"{h}:{m:02d}:{s:07.4f}", comma)


def _header_lines(path: Path, start_local: datetime, technique: str, comma: bool, current_mA: float,
                  duration_s: float, n_rows_hint: int) -> list[str]:
    ms = start_local.microsecond // 1000
    started = f"{start_local:%m/%d/%Y %H:%M:%S}.{ms:03d}"
    lines = [
        "EC-Lab ASCII FILE",
        "Nb header lines : {N}",
        "",
        technique,
        "",
        "Run on channel : 1 (SN 0001)",
        "User : ",
        "CE vs. WE compliance from -10 V to 10 V",
        "Electrode connection : standard",
        "Potential control : Ewe",
        _dec("Ewe ctrl range : min = -10.00 V, max = 10.00 V", comma),
        "Safety Limits :",
        "\tDo not start on E overload",
        f"Acquisition started on : {started}",
        "Loaded Setting File : NONE",
        "Saved on :",
        f"\tFile : {path.stem}.mpr",
        "\tDirectory : C:\\Users\\insitu\\Documents\\EC-Lab\\Data\\",
        "\tHost : 192.168.0.2",
        "Device : VSP (SN 0001)",
        "Address : 192.168.0.1",
        "EC-Lab for windows v11.50 (software)",
        "Internet server v11.50 (firmware)",
        "Command interpretor v11.50 (firmware)",
        "Electrode material : ",
        "Initial state : ",
        "Electrolyte : ",
        "Comments : written by lisentry (write_mpt)",
        "Cable : standard",
        _dec("Electrode surface area : 0.001 cm²", comma),
        _dec("Characteristic mass : 0.001 g", comma),
        "Cycle Definition : Charge/Discharge alternance",
    ]
    if "galvanostatic" in technique.lower():
        def row(key: str, val: str) -> str:
            return f"{key:<20}{val:<20}"
        lines += [
            row("Ns", "0"),
            row("Set I/C", "I"),
            row("Is", _dec(f"{current_mA:.3f}", comma)),
            row("unit Is", "mA"),
            row("vs.", "<None>"),
            row("N", _dec("1.00", comma)),
            row("I sign", "> 0"),
            row("t1 (h:m:s)", _hms(duration_s, comma)),
            row("I Range", "10 mA"),
            row("Bandwidth", "5"),
            row("dE1 (mV)", _dec("0.00", comma)),
            row("dt1 (s)", _dec("10.0000", comma)),
            row("EM (V)", "pass"),
            row("tM (h:m:s)", _dec("0:00:00.0000", comma)),
            row("E range min (V)", _dec("-10.000", comma)),
            row("E range max (V)", _dec("10.000", comma)),
            row("goto Ns'", "0"),
            row("nc cycles", "0"),
        ]
    lines.append("\t".join(MPT_COLUMNS) + "\t")  # EC-Lab ends the column row with a tab
    lines[1] = f"Nb header lines : {len(lines):<28d}"
    return lines


def _rows(t_s, potential_V, current_A, cycle, comma: bool, prev: dict | None) -> tuple[list[str], dict]:
    """Data rows in EC-Lab's format; ``prev`` carries state across appends."""
    t = np.asarray(t_s, dtype=np.float64)
    e = np.asarray(potential_V, dtype=np.float64)
    i_mA = -np.asarray(current_A, dtype=np.float64) * 1e3  # ours -> EC-Lab sign, A -> mA
    if not (t.shape == e.shape == i_mA.shape) or t.ndim != 1:
        raise ValueError("t_s, potential_V and current_A must be 1-D arrays of one length")
    if not (np.isfinite(t).all() and np.isfinite(e).all() and np.isfinite(i_mA).all()):
        raise ValueError("t_s, potential_V and current_A must be finite")
    cyc = np.zeros(len(t)) if cycle is None else np.asarray(cycle, dtype=np.float64)
    st = dict(prev) if prev else {"t": None, "i": None, "q": 0.0, "mode": None, "oxred": 0}
    if len(t) and st["t"] is not None and t[0] <= st["t"]:
        raise ValueError(f"time must increase: first new time {t[0]} s <= last written {st['t']} s")
    if len(t) > 1 and not np.all(np.diff(t) > 0):
        raise ValueError("t_s must be strictly increasing")
    out = []
    f15 = lambda v: format_eclab_number(v, 15, comma)  # noqa: E731
    f7 = lambda v: format_eclab_number(v, 7, comma)  # noqa: E731
    for k in range(len(t)):
        ik = i_mA[k]
        mode = 1 if ik != 0.0 else 3
        oxred = (1 if ik > 0 else 0) if ik != 0.0 else st["oxred"]
        if st["t"] is None:
            dq = 0.0
            changed = 1
        else:
            dq = 0.5 * (ik + st["i"]) * (t[k] - st["t"]) / 3600.0
            changed = int(mode != st["mode"] or oxred != st["oxred"])
        q = st["q"] + dq
        out.append("\t".join([str(mode), str(oxred), "0", str(changed), str(changed), "0", f15(t[k]), f7(ik),
                              f7(e[k]), f15(ik), f15(dq), f15(q), f15(cyc[k])]))
        st = {"t": float(t[k]), "i": float(ik), "q": q, "mode": mode, "oxred": oxred}
    return out, st


def write_mpt(path: str | Path, t_s: Sequence[float], potential_V: Sequence[float],
              current_A: Sequence[float], *,
              start_local: datetime, tz: str | None = None,
              technique: str = "Galvanostatic Cycling with Potential Limitation",
              decimal_comma: bool = False, cycle: Sequence[float] | None = None) -> Path:
    """Write an EC-Lab ``.mpt`` export as EC-Lab does (cp1252, CRLF, tab separated).

    Parameters
    ----------
    path : str or Path
        Output file.
    t_s : array
        ``time/s``: seconds from ``start_local`` (the sequence start), strictly increasing.
    potential_V : array
        ``Ewe/V``, volts.
    current_A : array
        Current in amperes, lisentry's sign (positive = lithiating the working electrode);
        written as EC-Lab's ``I/mA = -current_A * 1e3`` (positive = oxidation).
    start_local : datetime
        "Acquisition started on": naive local wall-clock time, or aware (converted to
        ``tz``).
    tz : str, optional
        IANA zone used to convert an aware ``start_local``; default the machine's zone.
    technique : str
        Technique name written in the header (a GCPL settings table is written for
        "Galvanostatic ..." techniques).
    decimal_comma : bool
        Write numbers with decimal commas, as EC-Lab on e.g. German/French Windows.
    cycle : array, optional
        ``cycle number`` column (default 0).

    Returns
    -------
    Path
        ``path``.

    Examples
    --------
    >>> from datetime import datetime
    >>> p = write_mpt(tmp / "a.mpt", [0.0, 10.0], [0.1, 0.09], [1e-4, 1e-4],
    ...               start_local=datetime(2023, 8, 11, 12, 40, 15), tz="Europe/London")  # doctest: +SKIP
    """
    path = Path(path)
    i_abs = np.abs(np.asarray(current_A, dtype=np.float64))
    t = np.asarray(t_s, dtype=np.float64)
    current_mA = float(np.median(i_abs[i_abs > 0]) * 1e3) if (i_abs > 0).any() else 0.0
    duration = float(t[-1] - t[0]) if len(t) else 0.0
    header = _header_lines(path, _local_start(start_local, tz), technique, decimal_comma, current_mA,
                           duration, len(t))
    rows, _ = _rows(t_s, potential_V, current_A, cycle, decimal_comma, None)
    text = "\r\n".join(header + rows) + "\r\n"
    path.write_bytes(text.encode("cp1252"))
    return path


def _last_state(path: Path) -> tuple[dict, bool]:
    """State after the last complete data row of an .mpt written like :func:`write_mpt`."""
    raw = path.read_bytes()
    info = parse_mpt_header(path, raw, final=True)
    n = info[0]
    lines, _ = _split_complete(_decode(raw, "cp1252"))
    cols = lines[n - 1].rstrip("\t").split("\t")
    idx = {c: cols.index(c) for c in ("mode", "ox/red", "time/s", "I/mA", "(Q-Qo)/mA.h") if c in cols}
    if len(idx) < 5:
        raise EchemFormatError(
            path, "append_mpt_rows needs the columns mode, ox/red, time/s, I/mA, (Q-Qo)/mA.h")
    data = [ln for ln in lines[n:] if ln.strip()]
    comma = any(re.search(r"\d,\d", ln) for ln in lines[2:n - 1])
    if not data:
        return {"t": None, "i": None, "q": 0.0, "mode": None, "oxred": 0}, comma
    f = data[-1].split("\t")
    num = lambda s: float(s.replace(",", "."))  # noqa: E731
    comma = comma or "," in f[idx["time/s"]]
    return {"t": num(f[idx["time/s"]]), "i": num(f[idx["I/mA"]]), "q": num(f[idx["(Q-Qo)/mA.h"]]),
            "mode": int(f[idx["mode"]]), "oxred": int(f[idx["ox/red"]])}, comma


def append_mpt_rows(path: str | Path, t_s, potential_V, current_A, *, cycle=None) -> None:
    """Append rows to an ``.mpt`` made by :func:`write_mpt` (a growing log for tests/demo).

    ``(Q-Qo)/mA.h`` continues from the last row; the decimal separator follows the file.
    Times must continue to increase (``ValueError`` otherwise).
    """
    path = Path(path)
    state, comma = _last_state(path)
    rows, _ = _rows(t_s, potential_V, current_A, cycle, comma, state)
    if rows:
        with open(path, "ab") as fh:
            fh.write(("\r\n".join(rows) + "\r\n").encode("cp1252"))
