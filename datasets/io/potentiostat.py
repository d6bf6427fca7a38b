"""Potentiostat logs: the :class:`EchemLog` record, window averaging, the generic CSV
reader, the :func:`read_echem` dispatcher and :class:`EchemFollower` for growing logs.

Every reader returns an :class:`EchemLog` whose times are absolute POSIX seconds (UTC) on
the *spectrometer* clock and whose current follows the project convention: **positive
current lithiates the working electrode** (see ``shared/interfaces.md``).

Bad rows never stop a file: garbage lines, rows whose time does not increase and repeated
rows are dropped and described in :attr:`EchemLog.notes`. A file with no usable row, or
without a time or potential column, raises :class:`~lisentry.datasets.errors.EchemFormatError`.

Formats
-------
* BioLogic EC-Lab ``.mpt`` exports, EC-Lab text exports (``time/s``, ``Ewe/V``) and
  ``.mpr`` files (via the optional ``galvani`` package): see :mod:`lisentry.datasets.io.biologic`.
* Generic delimited text (``,``, ``;`` or tab): a header row, then rows. The time column
  holds seconds from ``start`` or absolute timestamps (ISO 8601 or EC-Lab's
  ``MM/DD/YYYY HH:MM:SS.fff``). Column names are autodetected (battdat's ``test_time``,
  ``voltage``, ``current``; Arbin's ``Test_Time(s)``, ``Voltage(V)``, ``Current(A)``;
  EC-Lab's ``time/s``, ``Ewe/V``, ``I/mA``...) or given with ``time_col`` /
  ``potential_col`` / ``current_col``.
"""
from __future__ import annotations

import difflib
import math
import re
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from lisentry.datasets.errors import ConfigError, EchemFormatError
from lisentry.datasets.frame import utc

__all__ = [
    "EchemLog",
    "WindowStats",
    "WindowStatsArray",
    "EchemFollower",
    "read_echem",
    "read_delimited",
    "to_utc_datetime",
]

#: Minimum default gap threshold in seconds (see :meth:`EchemLog.max_gap_default_s`).
MIN_GAP_S = 60.0

# --------------------------------------------------------------------------------------
# time helpers
# --------------------------------------------------------------------------------------

_ECLAB_DATE_FORMATS = (
    "%m/%d/%Y %H:%M:%S.%f",
    "%m/%d/%Y %H:%M:%S",
    "%m.%d.%Y %H:%M:%S.%f",
    "%m.%d.%Y %H:%M:%S",
    "%m-%d-%Y %H:%M:%S.%f",
    "%m-%d-%Y %H:%M:%S",
)


def _zone(tz: str | None):
    if tz is None:
        return None
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(tz)
    except Exception as exc:  # ZoneInfoNotFoundError, ValueError
        # ConfigError is a ValueError: one line at the command line, still caught as before
        raise ConfigError(f"unknown time zone {tz!r} (use an IANA name like 'Europe/London')") from exc


def to_utc_datetime(value: datetime | str, tz: str | None = None) -> datetime:
    """Return ``value`` as an aware UTC datetime.

    Parameters
    ----------
    value : datetime or str
        An aware datetime, a naive one (taken as local time in ``tz``), an ISO 8601
        string (with or without offset) or EC-Lab's ``MM/DD/YYYY HH:MM:SS(.fff)``.
    tz : str or None
        IANA zone name for naive values; ``None`` means the machine's local zone.

    Examples
    --------
    >>> to_utc_datetime("2023-08-11 12:40:15", tz="Europe/London").isoformat()
    '2023-08-11T11:40:15+00:00'
    """
    if isinstance(value, str):
        value = _parse_datetime_text(value.strip())
        if value is None:
            raise ValueError("not a recognised date/time")
    if value.tzinfo is not None:
        return value.astimezone(timezone.utc)
    zone = _zone(tz)
    if zone is None:
        return value.astimezone(timezone.utc)  # naive -> machine local time (DST aware)
    return value.replace(tzinfo=zone).astimezone(timezone.utc)


def _parse_datetime_text(s: str) -> datetime | None:
    s = s.strip()
    if not s or not s[0].isdigit():
        return None
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00") if s.endswith("Z") else s)
    except ValueError:
        pass
    s2 = s.replace(",", ".")
    for fmt in _ECLAB_DATE_FORMATS:
        try:
            return datetime.strptime(s2, fmt)
        except ValueError:
            continue
    return None


def _as_posix(values) -> np.ndarray:
    """Datetimes / datetime64 / floats (POSIX seconds) -> float64 POSIX seconds."""
    if isinstance(values, (datetime, float, int, np.floating, np.integer, np.datetime64)):
        values = [values]
    arr = np.asarray(values)
    if arr.dtype.kind == "M":
        return arr.astype("datetime64[ns]").astype(np.int64) / 1e9
    if arr.dtype.kind in "fiu":
        return arr.astype(np.float64)
    return np.array([utc(v).timestamp() if isinstance(v, datetime) else float(v) for v in arr.ravel()],
                    dtype=np.float64)


# --------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowStats:
    """Electrochemistry over one time window (e.g. an NMR acquisition).

    Attributes
    ----------
    potential_V : float
        Time-weighted mean working-electrode potential over the covered part of the
        window, volts (NaN when unknown).
    potential_min_V, potential_max_V : float
        Extremes over the samples in the window and the interpolated edge values, volts.
    current_A, current_min_A, current_max_A : float
        Time-weighted mean and extremes of the current, amperes, positive = lithiating
        the working electrode (NaN when the log has no current).
    charge_C : float
        Charge passed from the first sample of the log to the window midpoint, coulombs
        (trapezoid over all samples, lithiating positive).
    n_samples : int
        Number of log samples inside the window.
    status : str
        ``"ok"``; ``"no_potential"`` (window outside the log); ``"echem_gap"`` (a gap
        between samples longer than ``max_gap_s`` overlaps the window: values NaN);
        ``"echem_partial"`` (the log starts or ends inside the window, more than
        ``max_gap_s`` from its edge: values are over the covered part only).
    """

    potential_V: float
    potential_min_V: float
    potential_max_V: float
    current_A: float
    current_min_A: float
    current_max_A: float
    charge_C: float
    n_samples: int
    status: str


_STAT_FIELDS = ("potential_V", "potential_min_V", "potential_max_V", "current_A", "current_min_A",
                "current_max_A", "charge_C")


@dataclass(frozen=True, eq=False)
class WindowStatsArray:
    """:class:`WindowStats` for many windows, one array per field (see there)."""

    potential_V: np.ndarray
    potential_min_V: np.ndarray
    potential_max_V: np.ndarray
    current_A: np.ndarray
    current_min_A: np.ndarray
    current_max_A: np.ndarray
    charge_C: np.ndarray
    n_samples: np.ndarray
    status: np.ndarray

    def __len__(self) -> int:
        return len(self.status)

    def __getitem__(self, i: int) -> WindowStats:
        return WindowStats(*(float(getattr(self, f)[i]) for f in _STAT_FIELDS),
                           n_samples=int(self.n_samples[i]), status=str(self.status[i]))

    def __iter__(self):
        return (self[i] for i in range(len(self)))


@dataclass(frozen=True, eq=False)
class EchemLog:
    """A potentiostat log on absolute UTC time (spectrometer clock).

    Parameters
    ----------
    t_utc_s : np.ndarray
        float64 POSIX seconds (UTC), strictly increasing.
    potential_V : np.ndarray
        Working-electrode potential (EC-Lab ``Ewe``), volts.
    current_A : np.ndarray
        Current in amperes, **positive when it lithiates the working electrode**; NaN when
        the file has no current column.
    cycle, step : np.ndarray or None
        Cycle number and sequence step (EC-Lab ``Ns``) where the file has them.
    source : Path
        The file read.
    start : datetime or None
        UTC time of the log's time origin (``time/s == 0``) on the spectrometer clock,
        when known.
    notes : list of str
        Problems found while reading (dropped lines with their line numbers, non-monotonic
        time, repeated rows, gaps).

    Examples
    --------
    >>> import numpy as np
    >>> log = EchemLog(np.array([0.0, 10.0, 20.0]), np.array([1.0, 2.0, 3.0]),
    ...                np.full(3, np.nan))
    >>> log.window_stats(5.0, 15.0).potential_V
    2.0
    """

    t_utc_s: np.ndarray
    potential_V: np.ndarray
    current_A: np.ndarray
    cycle: np.ndarray | None = None
    step: np.ndarray | None = None
    source: Path = Path(".")
    start: datetime | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        t = np.ascontiguousarray(self.t_utc_s, dtype=np.float64)
        e = np.ascontiguousarray(self.potential_V, dtype=np.float64)
        i = np.ascontiguousarray(self.current_A, dtype=np.float64)
        if not (t.ndim == e.ndim == i.ndim == 1 and len(t) == len(e) == len(i)):
            raise ValueError("t_utc_s, potential_V and current_A must be 1-D arrays of one length")
        if len(t) > 1 and not np.all(np.diff(t) > 0):
            raise ValueError("t_utc_s must be strictly increasing")
        object.__setattr__(self, "t_utc_s", t)
        object.__setattr__(self, "potential_V", e)
        object.__setattr__(self, "current_A", i)
        object.__setattr__(self, "source", Path(self.source))
        for name in ("cycle", "step"):
            v = getattr(self, name)
            if v is not None:
                v = np.asarray(v)
                if len(v) != len(t):
                    raise ValueError(f"{name} must have the length of t_utc_s")
                object.__setattr__(self, name, v)

    # ---- basics ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.t_utc_s)

    @property
    def has_current(self) -> bool:
        """True when the log carries any finite current value."""
        return bool(np.isfinite(self.current_A).any())

    @property
    def t_first(self) -> datetime | None:
        """UTC time of the first sample (``None`` for an empty log)."""
        return datetime.fromtimestamp(self.t_utc_s[0], timezone.utc) if len(self) else None

    @property
    def t_last(self) -> datetime | None:
        """UTC time of the last sample (``None`` for an empty log)."""
        return datetime.fromtimestamp(self.t_utc_s[-1], timezone.utc) if len(self) else None

    def median_dt_s(self) -> float:
        """Median spacing between samples in seconds (NaN with fewer than 2 samples)."""
        return float(np.median(np.diff(self.t_utc_s))) if len(self) > 1 else float("nan")

    def max_gap_default_s(self) -> float:
        """Default gap threshold: ``max(60 s, 5 x median sample spacing)``."""
        m = self.median_dt_s()
        return MIN_GAP_S if not np.isfinite(m) else max(MIN_GAP_S, 5.0 * m)

    def slice(self, t0, t1) -> "EchemLog":
        """The samples with ``t0 <= t <= t1`` (datetimes or POSIX seconds) as a new log."""
        a, b = _as_posix(t0)[0], _as_posix(t1)[0]
        lo, hi = np.searchsorted(self.t_utc_s, a, "left"), np.searchsorted(self.t_utc_s, b, "right")
        sl = slice(lo, hi)
        return EchemLog(self.t_utc_s[sl], self.potential_V[sl], self.current_A[sl],
                        None if self.cycle is None else self.cycle[sl],
                        None if self.step is None else self.step[sl],
                        self.source, self.start, list(self.notes))

    # ---- window statistics -------------------------------------------------------------
    def window_stats(self, t0, t1, *, max_gap_s: float | None = None) -> WindowStats:
        """Potential and current over ``[t0, t1]``.

        Parameters
        ----------
        t0, t1 : datetime or float
            Window start and end (aware datetimes, naive = UTC, or POSIX seconds).
        max_gap_s : float, optional
            Longest spacing between samples that may be interpolated across, seconds.
            Default :meth:`max_gap_default_s`.

        Returns
        -------
        WindowStats
            The time-weighted mean is the trapezoid integral of the piecewise-linear log
            over the window divided by its covered duration; at the window edges the log is
            linearly interpolated between the neighbouring samples (which are then closer
            than ``max_gap_s``, otherwise the window has status ``echem_gap`` and NaN
            values). The log is never extrapolated beyond its first/last sample.
        """
        return self.window_stats_many([t0], [t1], max_gap_s=max_gap_s)[0]

    def window_stats_many(self, starts, ends, *, max_gap_s: float | None = None) -> WindowStatsArray:
        """Vectorised :meth:`window_stats` for many windows (``np.searchsorted`` on the
        sample times plus cumulative trapezoid integrals; O((n + m) log n)).

        Parameters
        ----------
        starts, ends : sequence of datetime, datetime64 or float
            Window edges (POSIX seconds for floats), same length.
        max_gap_s : float, optional
            See :meth:`window_stats`.
        """
        a = _as_posix(starts)
        b = _as_posix(ends)
        if a.shape != b.shape:
            raise ValueError("starts and ends must have the same length")
        if np.any(b < a):
            raise ValueError("every window must have end >= start")
        m = len(a)
        nan = np.full(m, np.nan)
        out = {f: nan.copy() for f in _STAT_FIELDS}
        n_samples = np.zeros(m, dtype=np.int64)
        status = np.full(m, "no_potential", dtype=object)
        n = len(self)
        if n == 0 or m == 0:
            return WindowStatsArray(**out, n_samples=n_samples, status=status)
        tol = float(max_gap_s) if max_gap_s is not None else self.max_gap_default_s()

        t0 = self.t_utc_s[0]
        t = self.t_utc_s - t0  # relative: better float precision
        aa, bb = a - t0, b - t0
        tN = t[-1]
        inside = (bb >= 0.0) & (aa <= tN)
        ca = np.clip(aa, 0.0, tN)
        cb = np.clip(bb, 0.0, tN)

        # gaps overlapping (ca, cb)
        dt = np.diff(t)
        gapc = np.concatenate([[0], np.cumsum(dt > tol)])  # gapc[j] = #gaps among intervals < j
        jl = np.searchsorted(t, ca, "right") - 1
        jh = np.searchsorted(t, cb, "left") - 1
        jl = np.clip(jl, 0, n - 1)
        jh = np.clip(jh, -1, n - 2)
        n_gap = np.where(jh >= jl, gapc[np.clip(jh + 1, 0, n - 1)] - gapc[jl], 0)
        has_gap = inside & (n_gap > 0)
        partial = inside & ~has_gap & (((ca - aa) > tol) | ((bb - cb) > tol))
        ok = inside & ~has_gap
        status[inside] = "ok"
        status[partial] = "echem_partial"
        status[has_gap] = "echem_gap"

        lo = np.searchsorted(t, ca, "left")
        hi = np.searchsorted(t, cb, "right")
        n_samples[inside] = (hi - lo)[inside]
        width = cb - ca
        for name, y in (("potential", self.potential_V), ("current", self.current_A)):
            Fa, ya = _integral_to(t, y, ca)
            Fb, yb = _integral_to(t, y, cb)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(width > 0, (Fb - Fa) / np.where(width > 0, width, 1.0), ya)
            ymin, ymax = _range_minmax(y, lo, hi)
            ymin = np.fmin(np.fmin(ymin, ya), yb)
            ymax = np.fmax(np.fmax(ymax, ya), yb)
            if name == "current" and not np.isfinite(y).any():
                continue
            out[f"{name}_V" if name == "potential" else "current_A"][ok] = mean[ok]
            out[f"{name}_min_V" if name == "potential" else "current_min_A"][ok] = ymin[ok]
            out[f"{name}_max_V" if name == "potential" else "current_max_A"][ok] = ymax[ok]

        # charge from the first sample to the window midpoint
        if np.isfinite(self.current_A).any():
            mid = 0.5 * (aa + bb)
            valid = (mid >= 0.0) & (mid <= tN + tol)
            Q, _ = _integral_to(t, self.current_A, np.clip(mid, 0.0, tN))
            out["charge_C"][valid] = Q[valid]
        return WindowStatsArray(**out, n_samples=n_samples, status=status)


def _integral_to(t: np.ndarray, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integral of the piecewise-linear ``y(t)`` from ``t[0]`` to each ``x`` (clipped to the
    sample range) and the interpolated value ``y(x)``."""
    n = len(t)
    if n == 1:
        return np.zeros_like(x), np.full_like(x, y[0])
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (y[1:] + y[:-1]) * np.diff(t))])
    k = np.clip(np.searchsorted(t, x, "right") - 1, 0, n - 2)
    h = x - t[k]
    slope = (y[k + 1] - y[k]) / (t[k + 1] - t[k])
    yx = y[k] + slope * h
    return cum[k] + y[k] * h + 0.5 * slope * h * h, yx


def _range_minmax(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """min/max of ``y[lo:hi]`` per window (NaN where empty) via ``ufunc.reduceat``."""
    m = len(lo)
    ymin = np.full(m, np.nan)
    ymax = np.full(m, np.nan)
    nonempty = hi > lo
    if not nonempty.any():
        return ymin, ymax
    ext = np.append(y, np.nan)
    idx = np.empty(2 * int(nonempty.sum()), dtype=np.intp)
    idx[0::2] = lo[nonempty]
    idx[1::2] = hi[nonempty]
    ymin[nonempty] = np.minimum.reduceat(ext, idx)[0::2]
    ymax[nonempty] = np.maximum.reduceat(ext, idx)[0::2]
    return ymin, ymax


# --------------------------------------------------------------------------------------
# delimited text tables (shared by EC-Lab .mpt/.txt and generic CSV)
# --------------------------------------------------------------------------------------

_NUM_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")

_TIME_ALIASES = ("time/s", "time_s", "test_time", "test_time(s)", "test time (s)", "test_time_s",
                 "elapsed_time", "elapsed time (s)", "time (s)", "time(s)", "t/s", "time",
                 "time/min", "time/h", "t")
_ABS_TIME_ALIASES = ("timestamp", "date_time", "datetime", "date time", "date_time_utc", "abs_time",
                     "absolute time", "time_utc")
_POTENTIAL_ALIASES = ("ewe/v", "<ewe>/v", "<ewe/v>", "ecell/v", "<ecell>/v", "potential_v", "potential/v",
                      "potential (v)", "potential", "voltage", "voltage(v)", "voltage (v)", "voltage/v",
                      "voltage_v", "e/v", "ewe", "ecell", "ewe/mv", "voltage/mv", "v")
_CURRENT_ALIASES = ("i/ma", "<i>/ma", "current_a", "current", "current(a)", "current (a)", "current/a",
                    "i/a", "current_ma", "current(ma)", "current (ma)", "current/ma", "<i>/a",
                    "i/ua", "<i>/ua", "current_ua", "current(ua)", "current (ua)", "current/ua",
                    "i/na", "<i>/na", "current (na)", "i")
_CYCLE_ALIASES = ("cycle number", "cycle_number", "cycle", "cycle_index", "cycle index", "cycle_count")
_STEP_ALIASES = ("ns", "step", "step_index", "step index", "ns changes_index")

#: current columns whose instrument sign is "positive = lithiating the working electrode"
#: already (our own exports); everything else is positive = oxidation/charge -> flipped.
_OUR_SIGN_NAMES = ("current_a",)


def _clip(text: str, n: int = 80) -> str:
    """What an error quotes of a file's content: printable, at most ``n`` characters."""
    text = "".join(c if c.isprintable() else "?" for c in str(text))
    return text if len(text) <= n else text[:n] + f"... ({len(text)} characters)"


def _canon(name: str) -> str:
    """A column name for matching: outer quotes and spaces off, lower case, µ as u, a unit in
    brackets as in parentheses (``"Time [s]"`` -> ``time (s)``)."""
    n = name.strip().strip('"\'').strip()
    n = n.replace("\u00c2\u00b5", "u").replace("µ", "u").replace("μ", "u").lower()  # (Âµ: UTF-8 µ read as cp1252)
    n = n.replace("[", "(").replace("]", ")")
    return " ".join(n.split())


def _unit_scale(name: str, base: str) -> float:
    """Scale to SI for a column name ending in a unit (``/mA``, ``(mA)``, ``_mA``, ``[mA]``)."""
    low = _canon(name)
    for prefix, scale in (("m", 1e-3), ("u", 1e-6), ("n", 1e-9), ("k", 1e3), ("", 1.0)):
        unit = prefix + base
        for pat in (f"/{unit}", f"({unit})", f"_{unit}", f"[{unit}]", f" {unit}"):
            if low.endswith(pat) or low.endswith(pat + ">"):
                return scale
    return 1.0


def _time_scale(name: str) -> float:
    low = _canon(name)
    for unit, scale in (("min", 60.0), ("h", 3600.0), ("ms", 1e-3), ("s", 1.0)):
        for pat in (f"/{unit}", f"({unit})", f"_{unit}", f"[{unit}]", f" {unit}"):
            if low.endswith(pat):
                return scale
    return 1.0


@dataclass
class _Layout:
    """Where the columns are and how to read them."""

    delim: str
    time_idx: int
    pot_idx: int
    cur_idx: int | None
    cyc_idx: int | None
    step_idx: int | None
    time_scale: float
    pot_scale: float
    cur_scale: float
    cur_sign: float
    decimal_comma_ok: bool
    names: list[str]


def _sniff_delim(header: str) -> str:
    counts = {d: header.count(d) for d in ("\t", ";", ",")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > 0 else "\t"


def _find_col(names: list[str], wanted: str | None, aliases: Sequence[str], path: Path, what: str,
              required: bool) -> int | None:
    stripped = [n.strip().strip('"\'').strip() for n in names]
    if wanted is not None:
        if wanted in stripped:
            return stripped.index(wanted)
        low = [n.lower() for n in stripped]
        if wanted.lower() in low:
            return low.index(wanted.lower())
        close = difflib.get_close_matches(wanted, [n for n in stripped if n], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        cols = ", ".join(n for n in stripped if n)
        raise EchemFormatError(path, f"{what} column {_clip(wanted)!r} not found{hint} (columns: {_clip(cols)})")
    low = [_canon(n) for n in stripped]
    for alias in aliases:
        if alias in low:
            return low.index(alias)
    if required:
        cols = ", ".join(n for n in stripped if n) or "none"
        raise EchemFormatError(path, f"no {what} column found (columns: {_clip(cols)}); "
                                     f"name it with {what}_col=...")
    return None


def _make_layout(path: Path, header: str, *, delim: str | None, time_col, potential_col, current_col,
                 current_sign: int | None) -> _Layout:
    delim = delim or _sniff_delim(header)
    names = header.split(delim)
    ti = _find_col(names, time_col, _TIME_ALIASES + _ABS_TIME_ALIASES, path, "time", True)
    pi = _find_col(names, potential_col, _POTENTIAL_ALIASES, path, "potential", True)
    ci = _find_col(names, current_col, _CURRENT_ALIASES, path, "current", False)
    cy = _find_col(names, None, _CYCLE_ALIASES, path, "cycle", False)
    st = _find_col(names, None, _STEP_ALIASES, path, "step", False)
    cur_scale = _unit_scale(names[ci], "a") if ci is not None else 1.0
    if current_sign is not None:
        if current_sign not in (1, -1):
            raise ValueError("The 'current_sign' parameter of read_echem must be 1 or -1. "
                             f"Got {current_sign!r}.")
        sign = float(current_sign)
    else:
        sign = 1.0 if (ci is not None and names[ci].strip().lower() in _OUR_SIGN_NAMES) else -1.0
    return _Layout(delim=delim, time_idx=ti, pot_idx=pi, cur_idx=ci, cyc_idx=cy, step_idx=st,
                   time_scale=_time_scale(names[ti]), pot_scale=_unit_scale(names[pi], "v"),
                   cur_scale=cur_scale, cur_sign=sign, decimal_comma_ok=(delim != ","),
                   names=[n.strip().strip('"\'').strip() for n in names])


def _field_sig(s: str) -> tuple:
    """Shape of a number's text: exponent width, or decimals when there is no exponent."""
    s = s.strip()
    k = max(s.find("E"), s.find("e"))
    if k >= 0:
        return ("e", len(s) - k - 1 - (1 if s[k + 1:k + 2] in "+-" else 0))
    d = max(s.find("."), s.find(","))
    return ("f", -1 if d < 0 else len(s) - d - 1)


class _TableParser:
    """Incremental parser of the data rows of a delimited log (row-wise, in file order).

    Keeps every parsed raw row (relative or absolute time, values, line number); cleaning
    (monotonic time, repeats) is done on the whole set by :meth:`to_log`.
    """

    def __init__(self, path: Path, layout: _Layout, *, tz: str | None):
        self.path = path
        self.layout = layout
        self.tz = tz
        self.time_mode: str | None = None  # "rel" | "abs"
        self.t: list[float] = []
        self.e: list[float] = []
        self.i: list[float] = []
        self.cyc: list[float] = []
        self.stp: list[float] = []
        self.lines: list[int] = []
        self.garbage: list[int] = []
        self.blank = 0
        self.partial_dropped: int | None = None
        self._recent: deque[list[str]] = deque(maxlen=20)  # last good rows' fields

    def _num(self, s: str) -> float | None:
        s = s.strip()
        if s[:1] == '"':
            s = s.strip('"').strip()
        if self.layout.decimal_comma_ok and "," in s:
            s = s.replace(",", ".")
        if not _NUM_RE.fullmatch(s):
            return None
        return float(s)

    def _time(self, s: str) -> tuple[float | None, str | None]:
        """(value, mode) of a time field; no side effects (the mode is fixed by the first
        valid row)."""
        if self.time_mode != "abs":
            v = self._num(s)
            if v is not None:
                return v * self.layout.time_scale, "rel"
            if self.time_mode == "rel":
                return None, None
        dt = _parse_datetime_text(s)
        if dt is None:
            return None, None
        return to_utc_datetime(dt, self.tz).timestamp(), "abs"

    def feed_lines(self, lines: Iterable[str], first_lineno: int, *, last_unterminated: str | None = None):
        """Parse complete ``lines`` (numbered from ``first_lineno``); ``last_unterminated`` is
        a final line without line break, kept only when it looks complete."""
        lineno = self._rows(lines, first_lineno)
        if last_unterminated is not None and last_unterminated.strip():
            if self._looks_complete(last_unterminated):
                self._row(last_unterminated, lineno)
            else:
                self.partial_dropped = lineno
        return lineno

    def _looks_complete(self, line: str) -> bool:
        """Whether an unterminated last line is a whole row (not one cut while being written).

        It must have as many fields as the rows before it, and each column that was written
        in a fixed format in the recent rows (EC-Lab: ``%.7E`` with a three-digit exponent;
        fixed decimals) must keep that format; a cut number loses exponent digits or
        decimals. Columns with varying decimals cannot tell, and are accepted.
        """
        lay = self.layout
        fields = line.rstrip("\r").split(lay.delim)
        idx = [k for k in (lay.time_idx, lay.pot_idx, lay.cur_idx, lay.cyc_idx, lay.step_idx)
               if k is not None]
        recent = self._recent
        if not recent:
            if len(fields) < sum(1 for n in lay.names if n):
                return False
            # No earlier row to compare with (the first data row): a cut can only be in the
            # line's last field, so it must keep the exponent format of the row's other fields
            # (EC-Lab writes every number as %.nE with a three-digit exponent).
            sigs = {_field_sig(f) for f in fields[:-1] if f.strip() and _field_sig(f)[0] == "e"}
            if len(sigs) == 1 and _field_sig(fields[-1]) not in sigs:
                return False
            return True
        if len(fields) != len(recent[-1]) or len(fields) <= max(idx):
            return False
        for k in idx:
            sigs = {_field_sig(r[k]) for r in recent if len(r) > k}
            if len(sigs) == 1 and _field_sig(fields[k]) not in sigs:
                return False
            if sigs and all(sg[0] == "e" for sg in sigs) and _field_sig(fields[k])[0] != "e":
                return False
        return True

    def _row(self, line: str, lineno: int):
        self._rows([line], lineno)

    def _rows(self, lines: Iterable[str], lineno: int) -> int:
        """Parse rows (hot loop: locals only). Returns the next line number."""
        lay = self.layout
        delim = lay.delim
        ti, pi, ci, yi, si = lay.time_idx, lay.pot_idx, lay.cur_idx, lay.cyc_idx, lay.step_idx
        need = max(k for k in (ti, pi, ci, yi, si) if k is not None)
        comma = lay.decimal_comma_ok
        match = _NUM_RE.fullmatch
        isfinite = math.isfinite
        nan = float("nan")
        pscale, cscale = lay.pot_scale, lay.cur_scale * lay.cur_sign
        T, E, I, C, S, L, G = self.t, self.e, self.i, self.cyc, self.stp, self.lines, self.garbage
        time_of = self._time
        remember = self._recent.append

        def num(x: str):
            x = x.strip()
            if x[:1] == '"':                 # quoted CSV field
                x = x.strip('"').strip()
            if comma and "," in x:
                x = x.replace(",", ".")
            return float(x) if match(x) else None

        for line in lines:
            n = lineno
            lineno += 1
            if not line.strip():
                self.blank += 1
                continue
            f = line.rstrip("\r\n").split(delim)
            if len(f) <= need:
                G.append(n)
                continue
            t, mode = time_of(f[ti])
            e = num(f[pi])
            if t is None or e is None or not isfinite(t) or not isfinite(e):
                G.append(n)
                continue
            if ci is not None:
                c = num(f[ci])
                if c is None or not isfinite(c):
                    G.append(n)
                    continue
            else:
                c = nan
            cy = num(f[yi]) if yi is not None else None
            st = num(f[si]) if si is not None else None
            if self.time_mode is None:
                self.time_mode = mode
            T.append(t)
            E.append(e * pscale)
            I.append(c * cscale)
            C.append(nan if cy is None else cy)
            S.append(nan if st is None else st)
            L.append(n)
            remember(f)
        return lineno

    def to_log(self, *, start_utc: datetime | None, clock_offset_s: float, extra_notes: list[str],
               require_rows: bool, start_hint: str) -> EchemLog:
        path = self.path
        notes = list(extra_notes)
        if self.garbage:
            notes.append(f"dropped {len(self.garbage)} unreadable line(s): {_fmt_lines(self.garbage)}")
        if self.partial_dropped is not None:
            notes.append(f"ignored an incomplete last line (line {self.partial_dropped})")
        if not self.t:
            if require_rows:
                raise EchemFormatError(path, "no usable data rows")
            return _empty_log(path, start_utc, notes)
        if self.time_mode == "rel":
            if start_utc is None:
                raise EchemFormatError(
                    path, f"the log has relative times (time/s) and no absolute start; {start_hint}")
            base = start_utc.timestamp()
        else:
            base = 0.0
        t = np.asarray(self.t) + base - clock_offset_s
        e = np.asarray(self.e)
        i = np.asarray(self.i)
        cyc = np.asarray(self.cyc)
        stp = np.asarray(self.stp)
        lines = np.asarray(self.lines)
        keep, more = _monotonic_keep(t, np.column_stack([e, i]), lines)
        notes.extend(more)
        if not keep.all():
            t, e, i, cyc, stp = t[keep], e[keep], i[keep], cyc[keep], stp[keep]
        if self.layout.cur_idx is None:
            notes.append("no current column: current is NaN")
        log_start = None
        if start_utc is not None:
            log_start = datetime.fromtimestamp(start_utc.timestamp() - clock_offset_s, timezone.utc)
        notes.extend(_gap_notes(t))
        return EchemLog(t, e, i,
                        cycle=None if self.layout.cyc_idx is None else cyc,
                        step=None if self.layout.step_idx is None else stp,
                        source=path, start=log_start, notes=notes)


def _empty_log(path, start_utc, notes) -> EchemLog:
    z = np.zeros(0)
    return EchemLog(z, z, z, source=path, start=start_utc, notes=notes)


def _fmt_lines(lines: Sequence[int], limit: int = 10) -> str:
    head = ", ".join(str(x) for x in lines[:limit])
    return "lines " + head + (f", ... ({len(lines) - limit} more)" if len(lines) > limit else "")


def _monotonic_keep(t: np.ndarray, values: np.ndarray, lines: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Keep rows whose time exceeds every earlier row's; report repeats and backward steps."""
    prev_max = np.concatenate([[-np.inf], np.maximum.accumulate(t)[:-1]])
    keep = t > prev_max
    notes = []
    if keep.all():
        return keep, notes
    dropped = np.flatnonzero(~keep)
    # a repeat: same time and same values as the row holding the running maximum
    argmax_prev = np.maximum.accumulate(np.where(keep, np.arange(len(t)), 0))
    holder = np.concatenate([[0], argmax_prev[:-1]])
    same_t = t[dropped] == prev_max[dropped]
    same_v = np.all((values[dropped] == values[holder[dropped]]) |
                    (np.isnan(values[dropped]) & np.isnan(values[holder[dropped]])), axis=1)
    rep = dropped[same_t & same_v]
    back = dropped[~(same_t & same_v)]
    if len(rep):
        notes.append(f"dropped {len(rep)} duplicated row(s): {_fmt_lines(list(lines[rep]))}")
    if len(back):
        notes.append(f"dropped {len(back)} row(s) whose time did not increase (non-monotonic time): "
                     f"{_fmt_lines(list(lines[back]))}")
    return keep, notes


def _gap_notes(t: np.ndarray) -> list[str]:
    if len(t) < 3:
        return []
    dt = np.diff(t)
    thr = max(MIN_GAP_S, 5.0 * float(np.median(dt)))
    big = np.flatnonzero(dt > thr)
    if not len(big):
        return []
    k = big[np.argmax(dt[big])]
    when = datetime.fromtimestamp(t[k], timezone.utc).isoformat()
    return [f"{len(big)} gap(s) longer than {thr:.0f} s between samples "
            f"(largest {dt[k]:.0f} s after {when})"]


# --------------------------------------------------------------------------------------
# text decoding and the generic reader
# --------------------------------------------------------------------------------------


def _decode(raw: bytes, encoding: str | None) -> str:
    if encoding:
        return raw.decode(encoding, errors="replace")
    if raw.startswith(b"\xef\xbb\xbf"):
        return raw[3:].decode("utf-8", errors="replace")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def _split_complete(text: str) -> tuple[list[str], str | None]:
    """Complete lines (terminator removed) and the unterminated tail (or None)."""
    if not text:
        return [], None
    parts = text.split("\n")
    tail = parts.pop()
    return [p.rstrip("\r") for p in parts], (tail if tail != "" else None)


def reconcile_start(start, file_start, tz: str | None, notes: list[str]) -> datetime | None:
    """The log's UTC start: the caller's ``start`` wins over the file's own (noted in
    ``notes`` when they differ), else the file's, else None."""
    start_utc = _resolve_start(start, tz) if start is not None else None
    if start_utc is not None and file_start is not None:
        fs = to_utc_datetime(file_start, tz)
        if abs(fs.timestamp() - start_utc.timestamp()) > 1e-3:
            notes.append(f"start given by the caller ({start_utc.isoformat()}) overrides the "
                         f"file's ({fs.isoformat()})")
    elif file_start is not None:
        start_utc = to_utc_datetime(file_start, tz)
    return start_utc


def _resolve_start(start, tz) -> datetime | None:
    if start is None:
        return None
    try:
        return to_utc_datetime(start, tz)
    except ValueError as exc:
        raise ConfigError(f"cannot read the echem start {start!r}: {exc}") from None


START_HINT = "pass the time of time/s = 0 with start=... (command line: --echem-start ISO)"


def read_delimited(path: str | Path, *, start=None, tz: str | None = None, clock_offset_s: float = 0.0,
                   current_sign: int | None = None, time_col: str | None = None,
                   potential_col: str | None = None, current_col: str | None = None,
                   header_line: int = 1, file_start: datetime | None = None,
                   extra_notes: Sequence[str] = (), encoding: str | None = None,
                   delim: str | None = None) -> EchemLog:
    """Read a delimited log whose column-name row is line ``header_line`` (1-based).

    Used for generic CSV (``header_line=1``), EC-Lab text exports and the data part of
    ``.mpt`` files. Parameters are those of :func:`read_echem`; ``file_start`` is the
    absolute start found in the file's own header (naive = local time in ``tz``), which an
    explicit ``start`` overrides.

    Raises
    ------
    EchemFormatError
        Empty file, no header, no time or potential column, no usable row, or relative
        times without any absolute start.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise EchemFormatError(path, f"cannot read file ({exc.strerror or exc})") from None
    parser, start_utc, notes = _start_parser(path, raw, start=start, tz=tz, current_sign=current_sign,
                                             time_col=time_col, potential_col=potential_col,
                                             current_col=current_col, header_line=header_line,
                                             file_start=file_start, extra_notes=extra_notes,
                                             encoding=encoding, delim=delim, final=True)
    return parser.to_log(start_utc=start_utc, clock_offset_s=clock_offset_s, extra_notes=notes,
                         require_rows=True, start_hint=START_HINT)


def _start_parser(path, raw, *, start, tz, current_sign, time_col, potential_col, current_col,
                  header_line, file_start, extra_notes, encoding, delim, final):
    """Build a parser from the file's bytes and feed it every data line in ``raw``.

    Returns ``(parser, start_utc, notes)``. With ``final=False`` an unterminated last line
    is left for later; with ``final=True`` it is kept when it looks complete.
    """
    text = _decode(raw, encoding)
    if not text.strip():
        raise EchemFormatError(path, "file is empty")
    lines, tail = _split_complete(text)
    if final and tail is not None:
        lines_all = lines + [tail]
    else:
        lines_all = lines
    if len(lines_all) < header_line:
        raise EchemFormatError(
            path, f"header ends at line {header_line} but the file has {len(lines_all)} line(s)")
    header = lines_all[header_line - 1]
    layout = _make_layout(path, header, delim=delim, time_col=time_col, potential_col=potential_col,
                          current_col=current_col, current_sign=current_sign)
    parser = _TableParser(path, layout, tz=tz)
    notes = list(extra_notes)
    start_utc = reconcile_start(start, file_start, tz, notes)
    data = lines[header_line:] if len(lines) >= header_line else []
    if final:
        last = tail if (tail is not None and len(lines) >= header_line) else None
        parser.feed_lines(data, header_line + 1, last_unterminated=last)
    else:
        parser.feed_lines(data, header_line + 1)
    return parser, start_utc, notes


def _sniff_kind(path: Path, head: bytes) -> str:
    if head.startswith(b"BIO-LOGIC MODULAR FILE"):
        return "mpr"
    h = head.lstrip(b"\xef\xbb\xbf")
    if h.startswith(b"EC-Lab ASCII FILE") or h.startswith(b"BT-Lab ASCII FILE"):
        return "mpt"
    if path.suffix.lower() == ".mpr":
        return "mpr"
    first = h.split(b"\n", 1)[0]
    if b"time/s" in first or b"Ewe/V" in first or b"<Ewe>/V" in first or b"Ecell/V" in first:
        return "eclab_txt"
    return "csv"


def read_echem(path: str | Path, *, start: datetime | str | None = None, tz: str | None = None,
               clock_offset_s: float = 0.0, current_sign: int | None = None, time_col: str | None = None,
               potential_col: str | None = None, current_col: str | None = None) -> EchemLog:
    """Read a potentiostat log of any supported format into an :class:`EchemLog`.

    The format is chosen from the content: BioLogic ``.mpr`` (magic bytes), EC-Lab
    ``.mpt`` ("EC-Lab ASCII FILE"), EC-Lab text export (first line with ``time/s``/
    ``Ewe/V``), else generic delimited text.

    Parameters
    ----------
    path : str or Path
        The log file.
    start : datetime or str, optional
        Absolute time of the log's time origin (``time/s == 0``, i.e. EC-Lab's
        "Acquisition started on", the sequence start). Required for logs without their own
        absolute start (EC-Lab text exports, CSV with seconds); overrides the file's own.
        Naive values are local time in ``tz``.
    tz : str, optional
        IANA zone of naive times (EC-Lab writes local time without a zone). Default: the
        machine's local zone.
    clock_offset_s : float
        Potentiostat clock minus spectrometer clock, seconds; log times are shifted by
        ``-clock_offset_s`` onto the spectrometer clock.
    current_sign : {1, -1}, optional
        Multiplier from the instrument's current to ours (positive = lithiating the
        working electrode). Default: ``-1`` for EC-Lab (``I`` is positive for oxidation at
        the working electrode, so lithiating a carbon working electrode against Li is
        negative there: ``current_A = -I/mA * 1e-3``) and for cycler-style ``current``
        columns (battdat/Arbin: positive = charge); ``+1`` for a ``current_A`` column
        (lisentry's own convention).
    time_col, potential_col, current_col : str, optional
        Column names for delimited text when autodetection does not fit.

    Returns
    -------
    EchemLog

    Raises
    ------
    EchemFormatError
        The file is missing, empty, has no time or potential column, no usable rows, or
        relative times and no start (message tells to pass ``--echem-start``).

    Examples
    --------
    >>> log = read_echem("run_03_GCPL_C05.txt", start="2023-08-11 12:40:15",
    ...                  tz="Europe/London")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise EchemFormatError(path, "file not found" if not path.exists() else "not a regular file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        raise EchemFormatError(path, f"cannot read file ({exc.strerror or exc})") from None
    if not head.strip():
        raise EchemFormatError(path, "file is empty")
    kind = _sniff_kind(path, head)
    common = dict(start=start, tz=tz, clock_offset_s=clock_offset_s, current_sign=current_sign)
    from lisentry.datasets.io import biologic

    if kind == "mpr":
        return biologic.read_mpr(path, **common)
    if kind == "mpt":
        return biologic.read_mpt(path, time_col=time_col, potential_col=potential_col,
                                 current_col=current_col, **common)
    if kind == "eclab_txt":
        return biologic.read_eclab_text(path, time_col=time_col, potential_col=potential_col,
                                        current_col=current_col, **common)
    return read_delimited(path, time_col=time_col, potential_col=potential_col, current_col=current_col,
                          **common)


# --------------------------------------------------------------------------------------
# following a growing log
# --------------------------------------------------------------------------------------


class EchemFollower:
    """Follow a potentiostat log that is still being written.

    Text logs (``.mpt``, EC-Lab ``.txt`` exports, CSV) are read incrementally: only the
    bytes appended since the last :meth:`poll` are parsed, an incomplete last line is left
    for the next poll. ``.mpr`` files are re-read whole when they changed (cheap). The file
    may not exist yet, or have an incomplete header: :meth:`poll` then returns an empty log.

    Parameters
    ----------
    path : str or Path
        The growing log.
    **read_kwargs
        As for :func:`read_echem` (``start``, ``tz``, ``clock_offset_s``, ``current_sign``,
        ``time_col``, ``potential_col``, ``current_col``).

    Examples
    --------
    >>> f = EchemFollower("live.mpt", tz="Europe/London")  # doctest: +SKIP
    >>> log = f.poll()  # doctest: +SKIP
    """

    def __init__(self, path: str | Path, **read_kwargs):
        self.path = Path(path)
        self.read_kwargs = dict(read_kwargs)
        allowed = {"start", "tz", "clock_offset_s", "current_sign", "time_col", "potential_col",
                   "current_col"}
        unknown = set(self.read_kwargs) - allowed
        if unknown:
            raise TypeError(f"unknown argument(s) for EchemFollower: {', '.join(sorted(unknown))}")
        self._reset()

    def _reset(self):
        self._offset = 0
        self._kind: str | None = None
        self._parser: _TableParser | None = None
        self._start_utc: datetime | None = None
        self._notes: list[str] = []
        self._next_lineno = 0
        self._last: EchemLog | None = None
        self._mpr_sig: tuple | None = None

    def poll(self) -> EchemLog:
        """Return the whole log read so far (including rows appended since the last call)."""
        p = self.path
        kw = self.read_kwargs
        try:
            st = p.stat()
        except OSError:
            return self._last or _empty_log(p, None, ["file does not exist yet"])
        if self._kind is None:
            with open(p, "rb") as fh:
                head = fh.read(64)
            if not head:
                return _empty_log(p, None, [])
            self._kind = _sniff_kind(p, head)
        if self._kind == "mpr":
            return self._poll_mpr(st)
        if st.st_size < self._offset:  # truncated or replaced: start over
            self._reset()
            self._kind = None
            log = self.poll()
            log.notes.append("file shrank; re-read from the start")
            return log
        with open(p, "rb") as fh:
            fh.seek(self._offset)
            new = fh.read(st.st_size - self._offset)
        cut = new.rfind(b"\n")
        if cut < 0:
            return self._current()
        chunk = new[: cut + 1]
        if self._parser is None:
            # header still to parse: need the complete header
            from lisentry.datasets.io import biologic

            raw = chunk  # offset is 0 here
            if self._kind == "mpt":
                info = biologic.parse_mpt_header(p, raw, final=False)
                if info is None:  # header not complete yet
                    return self._current()
                header_line, file_start, notes = info
            else:
                header_line, file_start, notes = 1, None, []
            eclab = self._kind in ("mpt", "eclab_txt")
            parser, start_utc, notes = _start_parser(
                p, raw, start=kw.get("start"), tz=kw.get("tz"), current_sign=kw.get("current_sign"),
                time_col=kw.get("time_col"), potential_col=kw.get("potential_col"),
                current_col=kw.get("current_col"), header_line=header_line, file_start=file_start,
                extra_notes=notes, encoding="cp1252" if eclab else None,
                delim="\t" if self._kind == "mpt" else None,
                final=False)
            self._parser, self._start_utc, self._notes = parser, start_utc, notes
            self._next_lineno = chunk.count(b"\n") + 1
        else:
            text = _decode(chunk, "cp1252" if self._kind in ("mpt", "eclab_txt") else None)
            lines, _ = _split_complete(text)
            self._next_lineno = self._parser.feed_lines(lines, self._next_lineno)
        self._offset += len(chunk)
        return self._current()

    def _current(self) -> EchemLog:
        if self._parser is None:
            return _empty_log(self.path, None, [])
        log = self._parser.to_log(start_utc=self._start_utc,
                                  clock_offset_s=float(self.read_kwargs.get("clock_offset_s", 0.0)),
                                  extra_notes=self._notes, require_rows=False, start_hint=START_HINT)
        self._last = log
        return log

    def _poll_mpr(self, st) -> EchemLog:
        sig = (st.st_size, st.st_mtime_ns)
        if sig == self._mpr_sig and self._last is not None:
            return self._last
        from lisentry.datasets.io import biologic

        keys = ("start", "tz", "clock_offset_s", "current_sign")
        kw = {k: v for k, v in self.read_kwargs.items() if k in keys}
        try:
            log = biologic.read_mpr(self.path, **kw)
        except EchemFormatError as exc:
            if self._last is None:
                return _empty_log(self.path, None, [f"not readable yet: {exc.reason}"])
            self._last.notes.append(f"latest re-read failed ({exc.reason}); kept the previous data")
            return self._last
        self._mpr_sig = sig
        self._last = log
        return log

