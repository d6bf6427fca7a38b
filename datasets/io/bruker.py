"""Read Bruker TopSpin experiments (numbered experiment folders, pseudo-2D ``ser``, ``1r``).

All NMR file I/O goes through nmrglue (>= 0.12), but never through its silent fallbacks:
every nmrglue call runs under ``warnings.simplefilter("error")``, the binary file is named
explicitly (so nmrglue never looks two folders up for data), the expected sizes are checked
before and the shapes after reading, and every failure becomes a
:class:`~lisentry.datasets.errors.BrukerFormatError` naming the file and the problem.

Conventions (checked on the real TopSpin 2.1 run against TopSpin's own ``1r``)
-----------------------------------------------------------------------------
* The FID is returned as stored: complex, ``TD // 2`` points, the digital-filter group delay
  still in it (``acq.group_delay_pts``). ``np.fft.fftshift(np.fft.fft(fid))`` (which is
  ``nmrglue.proc_base.fft``) gives the spectrum in **ascending** frequency: point ``k`` lies at
  ``SFO1 + f_k`` with ``f_k = fftshift(fftfreq(n, 1 / SW_h))``. nmrglue's unit converter
  assumes the opposite (descending) order, so with it the spectrum must be reversed first.
* ppm = ``(F - SF) / SF * 1e6`` with ``SF = BF1 + SR`` (``acq.sr_Hz``; ``None`` when the
  experiment has no ``pdata/1/procs``).
* Times are timezone-aware UTC. ``audita.txt`` gives the window (``started at`` = start,
  the entry's WHEN = end); without it ``##$DATE`` (the END of acquisition, epoch seconds)
  minus the nominal duration ``(NS + DS) * (D1 + AQ)`` is used.
"""
from __future__ import annotations

import io
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import nmrglue as ng
from nmrglue.fileio import bruker as _ngb

from lisentry.datasets.errors import (BrukerFormatError, IncompleteAcquisition, InputError,
                                      NmrFolderError)
from lisentry.datasets.frame import AcquisitionParams, RawFrame

__all__ = [
    "read_experiment",
    "read_ser",
    "scan_series",
    "iter_raw_frames",
    "acquisition_state",
    "read_jcamp_params",
    "parse_audita",
    "AuditEntry",
    "SeriesListing",
    "group_delay_from_acqus",
    "block_padded_points",
]

#: TopSpin writes FIDs (and every row of a ``ser``) in blocks of 1024 bytes.
BLOCK_BYTES = 1024
_ITEMSIZE = {0: 4, 2: 8}  # DTYPA -> bytes per real number
_REQUIRED = ("NUC1", "SFO1", "BF1", "O1", "SW_h", "TD", "NS", "DTYPA", "BYTORDA")
_NUMERIC = ("SFO1", "BF1", "O1", "SW_h", "TD", "NS", "DS", "DTYPA", "BYTORDA", "DECIM",
            "DSPFVS", "GRPDLY", "DATE", "AQ_mod")


# --------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------
def block_padded_points(td: int, dtypa: int) -> int:
    """Number of real values TopSpin stores for ``td`` points: padded to 1024-byte blocks.

    Parameters
    ----------
    td : int
        TopSpin TD (real + imaginary values).
    dtypa : int
        0 for int32, 2 for float64.

    Returns
    -------
    int
        ``ceil(td * itemsize / 1024) * 1024 / itemsize``.

    Examples
    --------
    >>> block_padded_points(12288, 0), block_padded_points(1000, 0), block_padded_points(1000, 2)
    (12288, 1024, 1024)
    """
    per_block = BLOCK_BYTES // _ITEMSIZE[dtypa]
    return int(math.ceil(td / per_block) * per_block)


def read_jcamp_params(path: str | Path, *, kind: str = "Parameter file") -> dict:
    """Parse a TopSpin JCAMP-DX parameter file (``acqus``, ``acqu2s``, ``procs``) with nmrglue.

    nmrglue's warnings (unparsable or extraneous lines) become errors, the file must end with
    ``##END=`` (TopSpin writes it last, so a missing end means a truncated file), and array
    values must not run into the next parameter (a deleted continuation line).

    Parameters
    ----------
    path : str or Path
        The file.
    kind : str
        Expected start of the ``##TITLE=`` line.

    Returns
    -------
    dict
        nmrglue's dictionary (``"_coreheader"``, ``"_comments"`` and the ``$`` parameters).

    Raises
    ------
    BrukerFormatError
        Missing, unreadable or malformed file.
    """
    path = Path(path)
    return _parse_params(_read_text(path), path)


def _parse_params(text: str, path: Path) -> dict:
    """:func:`read_jcamp_params` of a file's text (``path`` names it in errors)."""
    if not text.lstrip().startswith("##TITLE="):
        raise BrukerFormatError(path, "not a JCAMP-DX parameter file (no ##TITLE= line)")
    if "##END=" not in text:
        raise BrukerFormatError(path, "truncated: no ##END= line")
    try:
        dic, problems = _parse_jcamp_text(text)
    except Exception as exc:  # nmrglue raises bare Exceptions and warnings (as errors)
        raise BrukerFormatError(path, f"malformed JCAMP-DX ({_short(exc)})") from None
    for key, problem in problems.items():
        if problem is not None:
            raise BrukerFormatError(path, f"array {key} {problem}")
    return dic


# JCAMP-DX parsing with a memo. The parameter files of a series differ in a few entries
# (DATE, YMAX_a, ...), and nmrglue's pure-Python parser costs ~1-4 ms per acqus: every
# distinct entry ("##..." line plus its continuation lines, "$$" comments included) is parsed
# by nmrglue's own ``parse_jcamp_file`` once and remembered, and so is the merged result of
# every run of 16 consecutive entries. An entry whose parse reads past its own lines
# (an array or string missing lines, running into the next entry), a blank line (where
# nmrglue stops) or text before the first "##" makes the whole file go through nmrglue's
# parser in one piece instead, so the result is always what nmrglue returns for the file.
_CHUNK = 16                      # entries per memoised run
_BLANK_LINE = re.compile(r"\n[^\S\n]*(?:\n|$)")     # a line nmrglue reads as EOF
_JCAMP_MEMO: dict[str, dict] = {}
_JCAMP_MEMO_MAX = 50_000
_PAST_END = "##END= >\n"


class _BlockReader:
    """Line reader over one entry. Past its end it returns ``##END= >``: nmrglue's top-level
    loop stops at it (read once); a string or array still wanting lines reads it again and
    again (the ``>`` ends a string, each copy adds array values), so more than one read past
    the end means the entry ran into the next one."""

    __slots__ = ("lines", "i", "past_end")

    def __init__(self, block: str):
        self.lines = block.split("\n")
        self.i = 0
        self.past_end = 0

    def readline(self) -> str:
        if self.i < len(self.lines):
            self.i += 1
            return self.lines[self.i - 1] + "\n"
        self.past_end += 1
        return _PAST_END


class _Overrun(Exception):
    pass


def _array_problem(value) -> str | None:
    """Why an array value of a parameter file is corrupt, or None (see read_jcamp_params)."""
    if not isinstance(value, list):
        return None
    strs = [v for v in value if isinstance(v, str)]
    if any(v.startswith("##") for v in strs):
        return "runs into the next parameter (lines missing)"
    if strs and len(strs) < len(value):
        return f"mixes numbers and text ({strs[0][:20]!r})"
    return None


def _parse_entry(block: str) -> tuple:
    """(coreheader lines, comment lines, ((key, value, problem), ...)) of one entry."""
    hit = _JCAMP_MEMO.get(block)
    if hit is None:
        f = _BlockReader(block)
        try:
            with warnings.catch_warnings():          # only where nmrglue runs (memo misses)
                warnings.simplefilter("error")
                dic = _ngb.parse_jcamp_file(f, {"_coreheader": [], "_comments": []})
        except Exception:
            if f.past_end > 1:
                raise _Overrun from None
            raise
        if f.past_end > 1:
            raise _Overrun
        core, comments = tuple(dic.pop("_coreheader")), tuple(dic.pop("_comments"))
        hit = (core, comments, tuple((k, v, _array_problem(v)) for k, v in dic.items()))
        if len(_JCAMP_MEMO) >= _JCAMP_MEMO_MAX:
            _JCAMP_MEMO.clear()
        _JCAMP_MEMO[block] = hit
    return hit


def _parse_chunk(parts: list[str], first: bool) -> tuple:
    """Merged ``(core, comments, {key: value}, {key: problem}, list keys)`` of consecutive
    entries (``parts``: the text between ``\\n##`` separators), memoised as a whole."""
    key = "\n##".join(parts)
    if first:
        key = "\x00" + key        # the file's first chunk starts with "##" already
    hit = _JCAMP_MEMO.get(key)
    if hit is None:
        core: list = []
        comments: list = []
        values: dict = {}
        problems: dict = {}
        for i, part in enumerate(parts):
            c, m, items = _parse_entry(part if (first and i == 0) else "##" + part)
            core.extend(c)
            comments.extend(m)
            for k, v, problem in items:
                values[k] = v
                problems[k] = problem
        lists = tuple(k for k, v in values.items() if isinstance(v, list))
        hit = (tuple(core), tuple(comments), values, problems, lists)
        if len(_JCAMP_MEMO) >= _JCAMP_MEMO_MAX:
            _JCAMP_MEMO.clear()
        _JCAMP_MEMO[key] = hit
    return hit


def _parse_jcamp_text(text: str) -> tuple[dict, dict]:
    """nmrglue's ``parse_jcamp_file`` result for ``text`` (universal newlines already applied),
    and ``{key: problem}`` for corrupt array values.

    Equal to ``nmrglue.bruker.read_jcamp`` of the file, memoised entry by entry and in runs of
    consecutive entries (see above). nmrglue's warnings are raised as errors.
    """
    end = text.find("\n##END=")
    head = text[: end if end >= 0 else len(text)]
    if head.startswith("##") and not _BLANK_LINE.search(head):
        out: dict = {"_coreheader": [], "_comments": []}
        problems: dict = {}
        parts = head.split("\n##")
        try:
            for i in range(0, len(parts), _CHUNK):
                core, comments, values, probs, lists = _parse_chunk(parts[i:i + _CHUNK], i == 0)
                out["_coreheader"].extend(core)
                out["_comments"].extend(comments)
                out.update(values)
                problems.update(probs)
                for k in lists:                      # callers get their own lists
                    out[k] = out[k].copy()
            return out, problems
        except _Overrun:
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dic = _ngb.parse_jcamp_file(io.StringIO(text), {"_coreheader": [], "_comments": []})
    return dic, {k: _array_problem(v) for k, v in dic.items() if not k.startswith("_")}


def _decode(data: bytes) -> str:
    """latin-1 text with universal newlines (what ``open(..., encoding="latin-1")`` reads)."""
    text = data.decode("latin-1")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _read_text(path: str | Path) -> str:
    """The file's text (latin-1, universal newlines) in one binary ``open`` (cheaper than a
    text-mode one): a missing file or a folder in its place is "missing", any other failure
    "cannot be read"."""
    try:
        with open(path, "rb") as f:
            return _decode(f.read())
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise BrukerFormatError(path, "missing") from None
    except OSError as exc:
        if os.path.isdir(path):                  # Windows: PermissionError on a folder
            raise BrukerFormatError(path, "missing") from None
        raise BrukerFormatError(path, f"cannot be read ({exc.strerror or exc})") from None


def _short(exc: BaseException) -> str:
    msg = " ".join(str(exc).split())
    return (msg[:120] + "...") if len(msg) > 120 else (msg or type(exc).__name__)


def _num(dic: dict, key: str, path: Path, *, required: bool = True, default=None):
    """A finite number from a JCAMP dict (error naming the file and the key otherwise)."""
    if key not in dic or dic[key] is None:
        if required:
            raise BrukerFormatError(path, f"{key} missing{_NEEDED.get(key, '')}")
        return default
    value = dic[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BrukerFormatError(path, f"{key} is not a number: {str(value)[:40]!r}")
    if not math.isfinite(value):
        raise BrukerFormatError(path, f"{key} is not finite: {value}")
    return value


_NEEDED = {
    "SW_h": " (needed for ppm axis)", "SFO1": " (needed for ppm axis)",
    "BF1": " (needed for ppm axis)", "O1": " (needed for ppm axis)",
    "TD": " (needed to read the fid)", "DTYPA": " (needed to read the fid)",
    "BYTORDA": " (needed to read the fid)", "NUC1": " (needed to check the nucleus)",
    "NS": " (needed for the acquisition time)",
}


def group_delay_from_acqus(acqus: dict, path: str | Path = "acqus") -> float:
    """Digital-filter group delay in complex points, as nmrglue's ``remove_digital_filter`` uses it.

    ``GRPDLY > 0`` is taken as is; otherwise (``GRPDLY`` -1, 0 or absent) nmrglue's
    ``bruker_dsp_table[DSPFVS][DECIM]`` is used (``DSPFVS >= 14``: 0); without DECIM/DSPFVS
    the data are analogue (0).

    Raises
    ------
    BrukerFormatError
        DECIM/DSPFVS not in the Bruker table.

    Examples
    --------
    >>> group_delay_from_acqus({"DECIM": 2, "DSPFVS": 10, "GRPDLY": -1})
    44.75
    >>> group_delay_from_acqus({"DECIM": 16, "DSPFVS": 20, "GRPDLY": 67.98})
    67.98
    """
    grpdly = acqus.get("GRPDLY")
    if isinstance(grpdly, (int, float)) and not isinstance(grpdly, bool) and grpdly > 0:
        return float(grpdly)
    decim, dspfvs = acqus.get("DECIM"), acqus.get("DSPFVS")
    if decim is None or dspfvs is None:
        return 0.0
    if dspfvs >= 14:
        return 0.0
    table = _ngb.bruker_dsp_table
    if dspfvs not in table or decim not in table[dspfvs]:
        raise BrukerFormatError(path, f"DECIM={decim}/DSPFVS={dspfvs} not in the Bruker "
                                      "group-delay table and GRPDLY not given")
    return float(table[dspfvs][decim])


def _topspin_version(dic: dict) -> str | None:
    head = " ".join(dic.get("_coreheader", [])[:1])
    m = re.search(r"(?:TOPSPIN|TopSpin|XWIN-NMR)\s*(?:Version\s*)?([0-9]+(?:\.[0-9]+)*(?:pl[0-9]+)?)",
                  head)
    return m.group(1) if m else None


# --------------------------------------------------------------------------------------
# audita.txt
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AuditEntry:
    """One entry of a TopSpin ``audita.txt``.

    Attributes
    ----------
    number : int
        Entry number.
    when : datetime
        The entry's time stamp (UTC); for a completed acquisition this is its end.
    process : str
        e.g. ``"go"``, ``"go4"``.
    what : str
        The free text (``created by zg`` / ``acquisition in progress`` ...).
    started : datetime | None
        The ``started at`` time (UTC) when the text has one.
    in_progress : bool
        True for TopSpin 4.3's ``acquisition in progress`` entry.
    """

    number: int
    when: datetime
    process: str
    what: str
    started: datetime | None
    in_progress: bool

    @property
    def is_acquisition_end(self) -> bool:
        """True for a completed acquisition entry (has a start, not in progress)."""
        return self.started is not None and not self.in_progress


_TIME_RE = (r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:\.\d+)?"
            r"\s*(?:[+-]\d{2}:?\d{2}|Z|UTC)?")
_ENTRY_RE = re.compile(r"\(\s*(\d+)\s*,\s*<([^>]*)>\s*,\s*<([^>]*)>\s*,\s*<([^>]*)>\s*,\s*<([^>]*)>"
                       r"\s*,\s*<([^>]*)>\s*,\s*<(.*?)>\s*\)", re.S)
_STARTED_RE = re.compile(r"started at\s+(" + _TIME_RE + ")")


def _parse_time(text: str) -> datetime:
    """Parse TopSpin's ``2023-08-11 12:42:10.909 +0100`` or ISO ``2024-05-02T10:11:12.345+0100``."""
    s = text.strip().replace("UTC", "+0000")
    if s.endswith("Z"):
        s = s[:-1] + "+0000"
    m = re.fullmatch(r"(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(\.\d+)?\s*([+-]\d{2}:?\d{2})?", s)
    if not m:
        raise ValueError(f"bad time {text!r}")
    frac = (m.group(3) or ".0")[1:7].ljust(6, "0")
    # fromisoformat on the matched fields: same result as strptime, ~10x cheaper per frame
    dt = datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}").replace(microsecond=int(frac))
    tz = m.group(4)
    if tz is None:
        raise ValueError(f"time without zone {text!r}")
    zone = _ZONES.get(tz)
    if zone is None:
        t = tz.replace(":", "")
        offset = timedelta(hours=int(t[1:3]), minutes=int(t[3:5])) * (1 if t[0] == "+" else -1)
        zone = timezone.utc if not offset else timezone(offset)
        _ZONES[tz] = zone
    if zone is timezone.utc:            # what astimezone(utc) gives, without the conversion
        return dt.replace(tzinfo=timezone.utc)
    return dt.replace(tzinfo=zone).astimezone(timezone.utc)


_ZONES: dict[str, timezone] = {}


def parse_audita(path: str | Path) -> list[AuditEntry]:
    """Parse a TopSpin ``audita.txt`` (TopSpin 2.x/3.x and 4.x time formats).

    Parameters
    ----------
    path : str or Path
        The ``audita.txt`` file.

    Returns
    -------
    list of AuditEntry
        In file order.

    Raises
    ------
    BrukerFormatError
        File unreadable, no ``##AUDIT TRAIL=`` block, no entry, or an unparsable time.
    """
    try:
        with open(path, "rb") as f:
            text = _decode(f.read())
    except OSError as exc:
        raise BrukerFormatError(path, f"cannot be read ({exc.strerror or exc})") from None
    start = text.find("##AUDIT TRAIL=")
    if start < 0:
        raise BrukerFormatError(path, "no ##AUDIT TRAIL= block")
    body = text[start:].split("\n", 1)[1] if "\n" in text[start:] else ""
    end = body.find("##END=")
    if end < 0:
        raise BrukerFormatError(path, "truncated: no ##END= after the audit trail")
    body = body[:end]
    entries = []
    for m in _ENTRY_RE.finditer(body):
        number, when, _who, _where, process, _version, what = m.groups()
        try:
            when_dt = _parse_time(when)
            sm = _STARTED_RE.search(what)
            started = _parse_time(sm.group(1)) if sm else None
        except ValueError as exc:
            raise BrukerFormatError(path, f"entry {number}: {exc}") from None
        entries.append(AuditEntry(int(number), when_dt, process, what, started,
                                  "in progress" in what.lower()))
    if not entries:
        raise BrukerFormatError(path, "no parsable audit entry")
    return entries


def _audita_window(entries: list[AuditEntry]) -> tuple[datetime, datetime] | None:
    """(start, end) of the first completed acquisition entry, or None when there is none."""
    for e in entries:
        if e.is_acquisition_end:
            return e.started, e.when
    return None


# --------------------------------------------------------------------------------------
# experiment folders
# --------------------------------------------------------------------------------------
def _acq_params(acqus: dict, path: Path, expected_nucleus: str | None,
                procs: dict | None) -> AcquisitionParams:
    for key in _REQUIRED:
        if key not in acqus:
            raise BrukerFormatError(path, f"{key} missing{_NEEDED.get(key, '')}")
    for key in _NUMERIC:
        v = acqus.get(key)
        if v is not None and not ((v.__class__ is float or v.__class__ is int)
                                  and math.isfinite(v)):
            _num(acqus, key, path, required=False)      # raises the error (or accepts)
    nucleus = acqus["NUC1"]
    if not isinstance(nucleus, str) or not nucleus.strip() or nucleus.strip() == "off":
        raise BrukerFormatError(path, f"NUC1 invalid: {str(nucleus)[:20]!r}")
    nucleus = nucleus.strip()
    if expected_nucleus is not None and nucleus != expected_nucleus:
        raise BrukerFormatError(path, f"nucleus NUC1={nucleus}, expected {expected_nucleus}")
    dtypa = int(_num(acqus, "DTYPA", path))
    if dtypa not in _ITEMSIZE:
        raise BrukerFormatError(path, f"DTYPA={dtypa} unsupported (0 = int32, 2 = float64)")
    bytorda = int(_num(acqus, "BYTORDA", path))
    if bytorda not in (0, 1):
        raise BrukerFormatError(path, f"BYTORDA={bytorda} unsupported (0 little, 1 big endian)")
    aq_mod = acqus.get("AQ_mod", 1)
    if aq_mod not in (1, 3):
        raise BrukerFormatError(path, f"AQ_mod={aq_mod}: only complex (qsim/DQD) data supported")
    td = _num(acqus, "TD", path)
    if int(td) != td or td < 2 or int(td) % 2:
        raise BrukerFormatError(path, f"TD={td} must be an even positive integer")
    sfo1, bf1, sw = (_num(acqus, k, path) for k in ("SFO1", "BF1", "SW_h"))
    if sfo1 <= 0 or bf1 <= 0 or sw <= 0:
        raise BrukerFormatError(path, f"SFO1={sfo1}, BF1={bf1}, SW_h={sw} must be positive")
    ns = _num(acqus, "NS", path)
    if ns < 1:
        raise BrukerFormatError(path, f"NS={ns} must be >= 1")
    ds = _num(acqus, "DS", path, required=False, default=0)
    d = acqus.get("D", [])
    if d and not _d_array_ok(d):
        raise BrukerFormatError(path, "D array malformed")
    d1 = float(d[1]) if d else 0.0
    gd = group_delay_from_acqus(acqus, path)
    sr = None
    extra = {k: acqus[k] for k in ("DECIM", "DSPFVS", "GRPDLY", "DTYPA", "BYTORDA", "PULPROG",
                                   "AQ_mod", "DATE", "RG", "DIGMOD") if k in acqus}
    extra["TOPSPIN"] = _topspin_version(acqus)
    if procs is not None:
        sf = procs.get("SF")
        if isinstance(sf, (int, float)) and math.isfinite(sf) and sf > 0:
            sr = (float(sf) - float(bf1)) * 1e6
            extra["SF"] = float(sf)
    return AcquisitionParams(
        nucleus=nucleus, sfo1_MHz=float(sfo1), bf1_MHz=float(bf1), o1_Hz=float(acqus["O1"]),
        sw_Hz=float(sw), td=int(td), ns=int(ns), ds=int(ds), d1_s=d1, group_delay_pts=gd,
        sr_Hz=sr, extra=extra)


_D_OK: set = set()       # D arrays already checked (the same in every frame of a run)


def _d_array_ok(d) -> bool:
    """A list of >= 2 finite numbers (remembered once seen: same values, same answer)."""
    if not isinstance(d, list):
        return False
    key = tuple(d)
    if key in _D_OK:
        return True
    ok = len(d) >= 2 and all(isinstance(v, (int, float)) and math.isfinite(v) for v in d)
    if ok:
        if len(_D_OK) > 1024:
            _D_OK.clear()
        _D_OK.add(key)
    return ok


def _listing(folder: Path) -> frozenset | None:
    """Names in ``folder`` (one system call), or None when it is not a readable folder."""
    try:
        return frozenset(os.listdir(folder))
    except OSError:
        return None


def _read_procs(expdir: str | Path) -> dict | None:
    p = os.path.join(expdir, "pdata", "1", "procs")
    try:
        text = _read_text(p)
    except BrukerFormatError:
        if not os.path.exists(p):
            return None
        raise
    procs = _parse_params(text, p)
    for key in ("SF", "PHC0", "PHC1", "SI", "OFFSET", "SW_p"):
        if key in procs:
            _num(procs, key, p)
    return procs


def _times(expdir: str | Path, acqus: dict, acq: AcquisitionParams,
           has_audita: bool | None = None) -> tuple[datetime, datetime, str]:
    audita = os.path.join(expdir, "audita.txt")
    if has_audita if has_audita is not None else os.path.exists(audita):
        entries = parse_audita(audita)
        win = _audita_window(entries)
        if win is None:
            raise IncompleteAcquisition(audita, "acquisition in progress (no completed entry)")
        start, end = win
        if end < start:
            raise BrukerFormatError(audita, f"end {end.isoformat()} before start {start.isoformat()}")
        _check_audita_vs_date(audita, start, end, acqus, acq)
        return start, end, "audita"
    acqus_path = os.path.join(expdir, "acqus")
    date = _num(acqus, "DATE", acqus_path, required=False)
    if date is None or date <= 0:
        raise BrukerFormatError(acqus_path,
                                "DATE missing and no audita.txt (acquisition time unknown)")
    end = datetime.fromtimestamp(float(date), tz=timezone.utc)
    return end - timedelta(seconds=acq.duration_s), end, "acqus_DATE"


#: Least tolerance (s) between audita.txt's window and acqus ``##$DATE``.
DATE_TOLERANCE_S = 600.0


def _check_audita_vs_date(audita, start: datetime, end: datetime, acqus: dict,
                          acq: AcquisitionParams) -> None:
    """Refuse a frame whose ``audita.txt`` window is far from its own ``acqus`` ``##$DATE``.

    TopSpin writes DATE at the end of the acquisition (at its start while it runs), so DATE
    lies within ``[start, end]`` up to a tolerance of ``max(duration, 600 s)``. A window far
    outside (a mistyped year, a copied audita.txt) would put this frame out of order and, if
    trusted, make every later frame look out of order: only this frame is refused. Decided from
    the frame's own files, so batch and streaming reading agree. No DATE: nothing to check.
    """
    date = acqus.get("DATE")
    if isinstance(date, bool) or not isinstance(date, (int, float)) or not math.isfinite(date) \
            or date <= 0:
        return
    tol = max(float(acq.duration_s) if math.isfinite(acq.duration_s) else 0.0, DATE_TOLERANCE_S)
    d = datetime.fromtimestamp(float(date), tz=timezone.utc)
    if (start - d).total_seconds() > tol or (d - end).total_seconds() > tol:
        off = min(abs((start - d).total_seconds()), abs((d - end).total_seconds()))
        raise BrukerFormatError(
            audita, f"acquisition window {start.isoformat()} .. {end.isoformat()} disagrees with "
                    f"acqus DATE {d.isoformat()} by {_human_s(off)} (more than {tol:.0f} s); "
                    "frame time unknown, frame skipped")


def _human_s(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds:.0f} s"


def _read_binary(expdir: Path, name: str, acq: AcquisitionParams, n_rows: int | None
                 ) -> np.ndarray:
    """Read ``fid`` (n_rows None) or ``ser`` with nmrglue; returns (rows, TD//2) or (TD//2,)."""
    path = expdir / name
    dtypa, big = int(acq.extra["DTYPA"]), int(acq.extra["BYTORDA"]) == 1
    item = _ITEMSIZE[dtypa]
    padded = block_padded_points(acq.td, dtypa)
    size = path.stat().st_size
    what = f"TD={acq.td}, DTYPA={dtypa}"
    if n_rows is None:
        if size % item or size < acq.td * item:
            raise BrukerFormatError(path, f"truncated: {size} bytes, expected {acq.td * item} "
                                          f"or {padded * item} ({what})")
        if size > padded * item:
            raise BrukerFormatError(path, f"{size} bytes is more than one FID of {what} "
                                          f"({padded * item} bytes); a ser without acqu2s?")
        shape = (size // item // 2,)
    else:
        shape = (n_rows, padded // 2)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            if n_rows is None or size == n_rows * padded * item:
                _, data = ng.bruker.read(str(expdir), bin_file=name, read_acqus=False,
                                         read_procs=False, read_pulseprogram=False, shape=shape,
                                         cplex=True, big=big, isfloat=dtypa == 2)
            else:  # partially written ser: read the complete rows only
                with open(path, "rb") as f:
                    flat = _ngb.get_trace(f, n_rows * padded, big, dtypa == 2)
                data = _ngb.complexify_data(flat).reshape(shape)
    except Exception as exc:
        raise BrukerFormatError(path, f"nmrglue cannot read it ({_short(exc)})") from None
    if data.shape != shape:
        raise BrukerFormatError(path, f"read shape {data.shape}, expected {shape}")
    return data[..., : acq.td // 2]


def _read_fid(path: str, acq: AcquisitionParams) -> np.ndarray:
    """Read a ``fid`` (complex128, ``TD // 2`` points); not finite or all zeros -> error.

    Opened once: the size checks of :func:`_read_binary` use the open file's size, and the
    values are those of ``nmrglue.bruker.read`` (``get_data`` + ``complexify_data``: the
    stored reals, interleaved real/imaginary, as complex128; a test checks equality), formed
    with one conversion and a view instead of nmrglue's strided sum. Sizes nmrglue would
    refuse go through :func:`_read_binary`, so the errors stay nmrglue's.
    """
    dtypa, big = int(acq.extra["DTYPA"]), int(acq.extra["BYTORDA"]) == 1
    item = _ITEMSIZE[dtypa]
    padded = block_padded_points(acq.td, dtypa)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size % item or size < acq.td * item or size > padded * item \
                    or (size // item) % 2:
                buf = None
            else:
                buf = f.read()
    except OSError as exc:
        raise BrukerFormatError(path, f"cannot be read ({exc.strerror or exc})") from None
    if buf is None or len(buf) != size:     # bad size (or changed while read): full checks
        fid = _read_binary(Path(path).parent, "fid", acq, None)
        _check_finite(fid, path)
        if not fid.any():
            raise IncompleteAcquisition(path, "all zeros: acquisition started, no data yet")
        return fid
    dtype = (">" if big else "<") + ("f8" if dtypa == 2 else "i4")
    stored = np.frombuffer(buf, dtype=dtype, count=acq.td)
    if not stored.any():
        raise IncompleteAcquisition(path, "all zeros: acquisition started, no data yet")
    fid = stored.astype(np.float64).view(np.complex128)
    if dtypa == 2:
        _check_finite(fid, path)
    return fid


def _check_finite(data: np.ndarray, path: Path) -> None:
    # the sum is finite only when every value is (NaN/inf propagate): one cheap reduction
    # on the usual path, the full count only when it is not (or overflowed)
    if np.isfinite(data.sum()):
        return
    if not np.isfinite(data).all():
        n = int(np.size(data) - np.isfinite(data).sum())
        raise BrukerFormatError(path, f"{n} non-finite (NaN/inf) values")


def _expno(expdir: Path) -> int:
    try:
        return int(expdir.name)
    except ValueError:
        return 1


def read_experiment(expdir: str | Path, *, use_processed: bool = False,
                    expected_nucleus: str | None = "7Li") -> RawFrame:
    """Read one numbered TopSpin experiment folder (``fid`` + ``acqus`` [+ ``audita.txt``]).

    Parameters
    ----------
    expdir : str or Path
        The experiment folder, e.g. ``run/nmr/12``.
    use_processed : bool
        Return TopSpin's processed ``pdata/1/1r`` (``spectrum`` + ascending ``spectrum_ppm``
        in ppm, referenced with SF) instead of the FID.
    expected_nucleus : str or None
        Required ``NUC1`` (``None`` accepts any).

    Returns
    -------
    RawFrame
        ``fid`` is complex128 with ``TD // 2`` points (group delay still in it); the window is
        UTC from ``audita.txt`` (``time_source="audita"``) or from ``##$DATE`` minus the nominal
        duration (``"acqus_DATE"``). ``acq.sr_Hz`` and ``phase_deg`` come from
        ``pdata/1/procs`` when it exists.

    Raises
    ------
    IncompleteAcquisition
        The fid is all zeros (TopSpin creates it full-size and zero-filled at the start) or
        ``audita.txt`` has only an ``acquisition in progress`` entry.
    BrukerFormatError
        Any missing, truncated or inconsistent file, wrong nucleus, unknown DTYPA, NaN/inf.
    """
    expdir = Path(expdir)
    names = _listing(expdir)             # one listing instead of an exists() per file
    if names is None:
        if expdir.is_dir():
            raise BrukerFormatError(expdir, "experiment folder cannot be listed (no permission?)")
        raise BrukerFormatError(expdir, "experiment folder missing")
    if "ser" in names and "fid" not in names:
        raise BrukerFormatError(expdir / "ser", "pseudo-2D ser: read it with read_ser")
    if "acqus" not in names:
        if "fid" in names:
            raise BrukerFormatError(expdir / "acqus", "missing")
        raise IncompleteAcquisition(expdir, "no acqus and no fid yet")
    d = os.fspath(expdir)
    acqus_path = os.path.join(d, "acqus")       # strings: Path objects only in errors
    acqus = _parse_params(_read_text(acqus_path), acqus_path)
    procs = _read_procs(d) if "pdata" in names else None
    acq = _acq_params(acqus, acqus_path, expected_nucleus, procs)
    phase = None
    if procs is not None and "PHC0" in procs and "PHC1" in procs:
        phase = (float(procs["PHC0"]), float(procs["PHC1"]))
    fid = spectrum = ppm = None
    if use_processed:
        spectrum, ppm = _read_1r(expdir, procs)
    else:
        path = os.path.join(d, "fid")
        if "fid" not in names:
            raise BrukerFormatError(path, "missing")
        try:
            fid = _read_fid(path, acq)
        except IncompleteAcquisition as err:
            win = _completed_window(d) if "audita.txt" in names else None
            if win is None:
                raise
            raise BrukerFormatError(path, f"{err.reason.split(':')[0]} although audita.txt records "
                                          f"a completed acquisition ({win[0].isoformat()} .. "
                                          f"{win[1].isoformat()}): no data") from None
    start, end, source = _times(d, acqus, acq, "audita.txt" in names)
    return RawFrame(source=expdir, expno=_expno(expdir), acq=acq, acq_start=start, acq_end=end,
                    fid=fid, spectrum=spectrum, spectrum_ppm=ppm, time_source=source,
                    phase_deg=phase)


def _completed_window(expdir: str | Path) -> tuple[datetime, datetime] | None:
    """The completed acquisition window of ``audita.txt``, or None (none, or unreadable)."""
    try:
        return _audita_window(parse_audita(os.path.join(expdir, "audita.txt")))
    except InputError:
        return None


def _read_1r(expdir: Path, procs: dict | None) -> tuple[np.ndarray, np.ndarray]:
    pdir = expdir / "pdata" / "1"
    path = pdir / "1r"
    if procs is None:
        raise BrukerFormatError(pdir / "procs", "missing (needed to read 1r)")
    if not path.exists():
        raise BrukerFormatError(path, "missing (use_processed=True)")
    p = pdir / "procs"
    si = int(_num(procs, "SI", p))
    for key in ("SF", "SW_p", "OFFSET"):
        _num(procs, key, p)
    dtypp = int(procs.get("DTYPP", 0))
    if dtypp not in _ITEMSIZE:
        raise BrukerFormatError(p, f"DTYPP={dtypp} unsupported")
    size = path.stat().st_size
    if size != si * _ITEMSIZE[dtypp]:
        raise BrukerFormatError(path, f"{size} bytes, expected {si * _ITEMSIZE[dtypp]} (SI={si})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _, data = ng.bruker.read_pdata(str(pdir), bin_files=["1r"], read_acqus=False,
                                           shape=(si,), submatrix_shape=(si,),
                                           big=procs.get("BYTORDP", 0) == 1, isfloat=dtypp == 2)
    except Exception as exc:
        raise BrukerFormatError(path, f"nmrglue cannot read it ({_short(exc)})") from None
    data = np.asarray(data, dtype=float)
    if data.shape != (si,):
        raise BrukerFormatError(path, f"read shape {data.shape}, expected ({si},)")
    _check_finite(data, path)
    ppm = float(procs["OFFSET"]) - np.arange(si) * float(procs["SW_p"]) / float(procs["SF"]) / si
    return data[::-1].copy(), ppm[::-1].copy()


# --------------------------------------------------------------------------------------
# pseudo-2D ser
# --------------------------------------------------------------------------------------
def read_ser(path: str | Path, *, expected_nucleus: str | None = "7Li") -> list[RawFrame]:
    """Read a pseudo-2D ``ser`` (one row per frame; ``acqu2s`` TD = number of rows).

    Only complete rows are returned: rows past the end of a partially written file and
    trailing all-zero rows (TopSpin creates the ``ser`` full-size, zero-filled) are not
    acquired yet.

    Row times (assumption, documented): TopSpin records no per-row times, so rows are taken as
    evenly spaced, each acquired for the nominal row duration ``T = (NS + DS) * (D1 + AQ)``.
    With a completed ``audita.txt`` entry, row ``i`` (0-based) starts at ``start + i*d`` with
    spacing ``d = (end - start) / n_acquired`` and ends ``min(T, d)`` later (a pulse program
    may wait between rows: the spacing then includes the wait, the acquisition does not).
    When rows are missing (file cut short, trailing rows zero) and that spacing disagrees with
    ``T`` by more than 20 %, the spacing is decided by :func:`_ser_row_spacing` and a note
    says so (``RawFrame.notes``); otherwise ``d = T`` and the rows follow each other, anchored at the audita start, or,
    without audita, so that the last acquired row ends at ``##$DATE``.

    Parameters
    ----------
    path : str or Path
        The ``ser`` file or the experiment folder holding it.
    expected_nucleus : str or None
        Required ``NUC1``.

    Returns
    -------
    list of RawFrame
        ``expno`` = 1-based row number, ``time_source="ser_rows"``.

    Raises
    ------
    IncompleteAcquisition
        No row acquired yet.
    BrukerFormatError
        Missing/corrupt ``acqus``/``acqu2s``, non-finite data, wrong nucleus...
    """
    path = Path(path)
    expdir = path.parent if path.name == "ser" else path
    ser = expdir / "ser"
    if not ser.is_file():
        raise BrukerFormatError(ser, "missing")
    acqus = read_jcamp_params(expdir / "acqus")
    acqu2s = read_jcamp_params(expdir / "acqu2s")
    procs = _read_procs(expdir)
    acq = _acq_params(acqus, expdir / "acqus", expected_nucleus, procs)
    td2 = _num(acqu2s, "TD", expdir / "acqu2s")
    if int(td2) != td2 or td2 < 1:
        raise BrukerFormatError(expdir / "acqu2s", f"TD={td2} must be a positive integer")
    td2 = int(td2)
    dtypa = int(acq.extra["DTYPA"])
    row_bytes = block_padded_points(acq.td, dtypa) * _ITEMSIZE[dtypa]
    size = ser.stat().st_size
    n_rows = min(size // row_bytes, td2)
    if size > td2 * row_bytes:
        raise BrukerFormatError(ser, f"{size} bytes is more than TD2={td2} rows of {row_bytes}")
    if n_rows == 0:
        raise IncompleteAcquisition(ser, "no complete row yet")
    data = _read_binary(expdir, "ser", acq, n_rows)
    _check_finite(data, ser)
    nonzero = np.flatnonzero(np.any(data != 0, axis=1))
    n_acq = int(nonzero[-1]) + 1 if nonzero.size else 0
    if n_acq == 0:
        raise IncompleteAcquisition(ser, "all rows zero: acquisition started, no data yet")
    d_nominal = acq.duration_s
    audita = expdir / "audita.txt"
    notes: tuple[str, ...] = ()
    if audita.exists():
        entries = parse_audita(audita)
        win = _audita_window(entries)
        if win is not None:
            start, end = win
            # a file shorter than TD2 rows was cut (a copy); a full-size one whose last rows
            # are zero was halted, and its window covers only the rows acquired
            cut = size // row_bytes < td2
            d, note = _ser_row_spacing((end - start).total_seconds(), n_acq, td2, d_nominal,
                                       file_cut=cut)
            if note:
                notes = (f"warning: {ser}: {note}",)
        else:
            starts = [e.started for e in entries if e.started is not None]
            if not starts:
                raise BrukerFormatError(audita, "no start time")
            start, d = starts[0], d_nominal
    else:
        date = _num(acqus, "DATE", expdir / "acqus", required=False)
        if date is None or date <= 0:
            raise BrukerFormatError(expdir / "acqus", "DATE missing and no audita.txt")
        d = d_nominal
        start = datetime.fromtimestamp(float(date), tz=timezone.utc) - timedelta(seconds=n_acq * d)
    phase = None
    if procs is not None and "PHC0" in procs and "PHC1" in procs:
        phase = (float(procs["PHC0"]), float(procs["PHC1"]))
    step = timedelta(seconds=d)
    length = timedelta(seconds=min(d_nominal, d)) if d_nominal > 0 else step
    return [RawFrame(source=ser, expno=i + 1, acq=acq, acq_start=start + i * step,
                     acq_end=start + i * step + length, fid=data[i].copy(),
                     time_source="ser_rows", phase_deg=phase, notes=notes) for i in range(n_acq)]


#: Relative disagreement between a ``ser``'s row spacing from ``audita.txt`` and the nominal
#: row duration beyond which the spacing is not trusted (see :func:`_ser_row_spacing`).
SER_SPACING_TOLERANCE = 0.2


def _ser_row_spacing(window_s: float, n_acq: int, td2: int, nominal_s: float,
                     file_cut: bool = True) -> tuple[float, str | None]:
    """Row spacing (s) of a ``ser`` with a completed ``audita.txt`` window, and a note.

    The window divided by the acquired rows is used when all ``td2`` rows are there (it is
    then measured: a wait between rows is part of it), when the file is full-size and only its
    last rows are zero (``file_cut`` False: TopSpin creates the file full-size, so the
    acquisition was halted and the window covers the acquired rows, waits included), or when
    it agrees with the nominal row duration within :data:`SER_SPACING_TOLERANCE`. Otherwise,
    with rows missing from a file shorter than ``td2`` rows (a copy cut short):

    * the window can hold all ``td2`` planned rows (window / ``td2`` at least the nominal
      duration, less the tolerance): a completed acquisition ran them all, so the spacing is
      window / ``td2`` (without this the acquired rows would be spread over the whole window,
      each ``td2 / n_acq`` times too long);
    * else the nominal duration.

    Either way the note says what was decided and why.

    Examples
    --------
    >>> _ser_row_spacing(2000.0, 7, 20, 100.0)[0]     # 20 rows of 100 s, 7 left in the file
    100.0
    >>> _ser_row_spacing(700.0, 7, 20, 100.0)         # halted after 7 rows
    (100.0, None)
    """
    d = window_s / n_acq
    if n_acq >= td2 or not nominal_s > 0 or not file_cut:
        return d, None
    tol = SER_SPACING_TOLERANCE
    if abs(d - nominal_s) <= tol * nominal_s:
        return d, None
    missing = (f"rows {n_acq + 1}..{td2} of {td2} missing or all zero although audita.txt "
               f"records a completed acquisition of {window_s:.0f} s; window / {n_acq} acquired "
               f"rows = {d:.1f} s per row disagrees with the nominal {nominal_s:.1f} s (NS, DS, "
               "D1, AQ) by more than {:.0f} %".format(100 * tol))
    d_all = window_s / td2
    if d_all >= (1 - tol) * nominal_s:
        return d_all, f"{missing}: the window holds all {td2} rows, rows taken {d_all:.1f} s apart"
    return nominal_s, f"{missing}: rows taken {nominal_s:.1f} s apart (nominal)"


# --------------------------------------------------------------------------------------
# series
# --------------------------------------------------------------------------------------
@dataclass
class SeriesListing:
    """What :func:`scan_series` found in an NMR folder.

    Attributes
    ----------
    root : Path
        The folder holding the experiment folders (``RUN/nmr`` when given ``RUN``).
    experiments : list of (int, Path)
        Numeric experiment folders with at least one file, in numeric order.
    empty : list of (int, Path)
        Numeric folders with nothing in them.
    ignored : list of Path
        Non-numeric entries (folders and files) that are not experiments.
    ser : Path | None
        A pseudo-2D ``ser`` (in ``root`` or in the single experiment folder) when present.
    """

    root: Path
    experiments: list[tuple[int, Path]] = field(default_factory=list)
    empty: list[tuple[int, Path]] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)
    ser: Path | None = None

    @property
    def n_folders(self) -> int:
        return len(self.experiments) + len(self.empty)


def scan_series(nmr_dir: str | Path) -> SeriesListing:
    """List the experiments of a TopSpin data set.

    Parameters
    ----------
    nmr_dir : str or Path
        A folder of numbered experiment folders, a run folder containing ``nmr/``, or an
        experiment folder holding a pseudo-2D ``ser``.

    Returns
    -------
    SeriesListing

    Raises
    ------
    NmrFolderError
        The folder does not exist, or is one experiment folder (``acqus``/``fid`` in it, no
        numbered folder): the folder that holds the experiments is expected.
    """
    root = Path(nmr_dir)
    if not root.is_dir():
        raise NmrFolderError(root, "NMR folder missing")
    if (root / "nmr").is_dir() and not any(p.name.isdigit() for p in root.iterdir()):
        root = root / "nmr"
    listing = SeriesListing(root=root)
    if (root / "ser").is_file():
        listing.ser = root / "ser"
        return listing
    with os.scandir(root) as entries:          # names and types without a stat per entry
        for e in entries:
            p = root / e.name
            if e.name.isdigit() and e.is_dir():
                try:
                    with os.scandir(e.path) as it:
                        has_files = next(it, None) is not None
                except OSError:
                    has_files = False
                (listing.experiments if has_files else listing.empty).append((int(e.name), p))
            else:
                listing.ignored.append(p)
    listing.experiments.sort()
    listing.empty.sort()
    listing.ignored.sort()
    if not listing.n_folders:
        found = [n for n in ("acqus", "fid", "audita.txt") if (root / n).is_file()]
        if found:
            raise NmrFolderError(root, f"is one experiment folder ({found[0]} found); give the "
                                       "folder that holds the numbered experiments, "
                                       f"{root.parent}{os.sep}")
    if len(listing.experiments) == 1 and (listing.experiments[0][1] / "ser").is_file():
        listing.ser = listing.experiments[0][1] / "ser"
    return listing


def iter_raw_frames(nmr_dir: str | Path, *, use_processed: bool = False,
                    expected_nucleus: str | None = "7Li", skip_incomplete: bool = True
                    ) -> Iterator[RawFrame | InputError]:
    """Yield a :class:`RawFrame` or the :class:`InputError` for every experiment, in expno order.

    Never stops on a bad frame. A frame whose acquisition start is not after the previous
    good frame's start is yielded as a ``BrukerFormatError`` (duplicated or out-of-order
    times). With ``skip_incomplete`` the :class:`IncompleteAcquisition` errors (and empty
    folders) *after the last readable frame* — the acquisition still running — are dropped;
    incomplete frames followed by readable ones (aborted acquisitions) are always yielded.

    Parameters
    ----------
    nmr_dir : str or Path
        See :func:`scan_series`.
    use_processed : bool
        Read ``pdata/1/1r`` instead of the FID.
    expected_nucleus : str or None
        Required ``NUC1``.
    skip_incomplete : bool
        Drop the trailing in-progress frames.

    Yields
    ------
    RawFrame or InputError
    """
    try:
        listing = scan_series(nmr_dir)
    except InputError as err:
        yield err
        return
    if listing.ser is not None:
        try:
            rows = read_ser(listing.ser, expected_nucleus=expected_nucleus)
        except IncompleteAcquisition as err:
            if not skip_incomplete:
                err.frame = -1 if err.frame is None else err.frame   # no row read: none
                yield err
            return
        except InputError as err:
            err.frame = -1 if err.frame is None else err.frame       # the whole ser
            yield err
            return
        yield from _ordered(rows)
        return
    candidates = sorted(listing.experiments + listing.empty)
    pending: list[InputError] = []
    last: RawFrame | None = None
    for expno, path in candidates:
        try:
            if (expno, path) in listing.empty:
                raise IncompleteAcquisition(path, "empty experiment folder")
            frame = read_experiment(path, use_processed=use_processed,
                                    expected_nucleus=expected_nucleus)
        except IncompleteAcquisition as err:
            err.frame = expno
            pending.append(err)
            continue
        except InputError as err:
            err.frame = expno
            yield from pending
            pending.clear()
            yield err
            continue
        except Exception as exc:  # never let an unexpected error stop the series
            yield from pending
            pending.clear()
            yield BrukerFormatError(path, f"unexpected {type(exc).__name__}: {_short(exc)}",
                                    frame=expno)
            continue
        yield from pending
        pending.clear()
        if last is not None and frame.acq_start <= last.acq_start:
            yield BrukerFormatError(path, f"acquisition start {frame.acq_start.isoformat()} not "
                                          f"after that of expno {last.expno} "
                                          f"({last.acq_start.isoformat()})", frame=expno)
            continue
        last = frame
        yield frame
    if not skip_incomplete:
        yield from pending


def _ordered(frames: list[RawFrame]) -> Iterator[RawFrame | InputError]:
    last = None
    for f in frames:
        if last is not None and f.acq_start <= last.acq_start:
            yield BrukerFormatError(f.source, f"row {f.expno}: start not after row {last.expno}",
                                    frame=f.expno)
            continue
        last = f
        yield f


# --------------------------------------------------------------------------------------
# live state
# --------------------------------------------------------------------------------------
def _all_zero(path: Path) -> bool:
    try:
        data = path.read_bytes()
    except OSError:
        return True
    return not data or data.count(0) == len(data)


def _successor_started(expdir: Path) -> bool:
    try:
        n = int(expdir.name)
    except ValueError:
        return False
    parent = expdir.parent
    try:
        later = [p for p in parent.iterdir() if p.name.isdigit() and int(p.name) > n]
    except OSError:
        return False
    return any((p / "acqus").exists() or (p / "fid").exists() or (p / "ser").exists()
               for p in later)


def acquisition_state(expdir: str | Path) -> str:
    """Whether TopSpin has finished an experiment: ``"missing"``, ``"in_progress"`` or ``"complete"``.

    Decision rule (file size proves nothing: TopSpin creates ``fid``/``ser`` full-size and
    zero-filled when the acquisition starts):

    1. No folder, or neither ``acqus`` nor ``fid``/``ser`` in it: ``"missing"``.
    2. ``audita.txt`` has a completed acquisition entry (a ``started at`` time and an end,
       not TopSpin 4.3's ``acquisition in progress``): ``"complete"`` once the data file is
       there too. TopSpin writes audita last, but a copy or mirror of the folder (``rsync``
       goes alphabetically: ``audita.txt`` before ``fid``) may bring it first; until the data
       file arrives the state is ``"in_progress"``, unless rule 3 applies.
    3. A later experiment number has started (its ``acqus`` or data file exists): ``"complete"``
       (TopSpin runs one acquisition at a time, so this one ended or was aborted).
    4. ``audita.txt`` exists but has only an in-progress entry (or cannot be parsed yet, e.g.
       half-written): ``"in_progress"``.
    5. No ``audita.txt`` (older TopSpin versions or copied data): ``"complete"`` when ``acqus``
       has a ``##$DATE`` and the data file is not all zeros, else ``"in_progress"``.

    Parameters
    ----------
    expdir : str or Path
        The experiment folder.

    Returns
    -------
    str
    """
    expdir = Path(expdir)
    if not expdir.is_dir():
        return "missing"
    data = expdir / "fid" if (expdir / "fid").exists() else expdir / "ser"
    acqus = expdir / "acqus"
    if not acqus.exists() and not data.exists():
        return "missing"
    audita = expdir / "audita.txt"
    audita_entries = None
    if audita.exists():
        try:
            audita_entries = parse_audita(audita)
        except InputError:
            audita_entries = None
        if audita_entries is not None and _audita_window(audita_entries) is not None:
            if data.exists():   # (a lost acqus is reported by the reader, not waited for)
                return "complete"
            return "complete" if _successor_started(expdir) else "in_progress"
    if _successor_started(expdir):
        return "complete"
    if audita.exists():
        return "in_progress"
    if not data.exists() or _all_zero(data) or not acqus.exists():
        return "in_progress"
    try:
        text = acqus.read_text(encoding="latin-1")
    except OSError:
        return "in_progress"
    return "complete" if re.search(r"^##\$DATE=\s*[1-9]", text, re.M) and "##END=" in text \
        else "in_progress"
