"""JCAMP-DX 1D NMR files (``*.jdx``, ``*.dx``) -> :class:`RawFrame`.

Read through :func:`nmrglue.jcampdx.read` with warnings turned into errors (nmrglue warns and
goes on when a data line cannot be parsed, a factor is missing or no data table is found);
the number of values is then checked against ``##NPOINTS`` / ``##VAR_DIM``, so a truncated
file is an error, never a shorter spectrum.

Two data types (JCAMP-DX 5.01 NMR, ``##DATA TYPE=``):

* ``NMR SPECTRUM`` (``##XYDATA=(X++(Y..Y))`` or an ``NTUPLES`` real/imaginary table): the
  real part becomes ``RawFrame.spectrum`` with an ascending ppm axis ``spectrum_ppm``.
  ``##XUNITS=PPM``: the axis runs linearly from ``##FIRSTX`` to ``##LASTX``.
  ``##XUNITS=HZ``: the Hz values are divided by ``##$SF`` (TopSpin exports; the 0-ppm
  frequency) or else ``##.OBSERVE FREQUENCY`` (MHz); when ``##$OFFSET`` (TopSpin: ppm of the
  first point) is given, the axis is shifted so that the first point lies at it.
* ``NMR FID`` (``NTUPLES`` with real and imaginary pages, x in seconds): ``RawFrame.fid``.
  The FID is taken to follow TopSpin's sign convention (what TopSpin's JCAMP export
  writes): ``##$GRPDLY``/``##$DECIM``/``##$DSPFVS`` give the digital-filter delay, the
  spectral width is ``##$SW_h`` or 1 / dwell, ``SF`` is ``##$SF`` when given.

Nucleus from ``##.OBSERVE NUCLEUS`` (``^7Li`` -> ``7Li``), else ``##$NUC1``.

Times (``time_source``): ``##$DATE`` (TopSpin: seconds since the epoch, UTC) or ``##LONGDATE``
(``YYYY/MM/DD HH:MM:SS[.s] [+-hhmm]``; without a zone it is read in ``tz``, default the
machine's zone) give ``"jcamp_date"``; without either the file's modification time is used
(``"mtime"``, last resort: copies change it). The date is taken as the *end* of the
acquisition (TopSpin's ``DATE`` is written at the end); the start is the end minus the
nominal duration ``NS x (D1 + AQ)`` from ``##$NS``, ``##$D`` and the data size.

Series: a folder of JCAMP-DX files, one frame each. Frame order is the number in the file
name (the last digit group of the stem, e.g. ``li7_0012.jdx`` -> 12, which is then the
``expno``) when every file has a distinct one, else the acquisition time (``expno`` = the
1-based position). The errors yielded for unreadable files carry that number as
``InputError.frame`` (``-1`` when frames are numbered by time: an unreadable file has none).
"""
from __future__ import annotations

import dataclasses
import math
import re
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator
from zoneinfo import ZoneInfo

import nmrglue as ng
import numpy as np

from lisentry.datasets.errors import InputError
from lisentry.datasets.frame import AcquisitionParams, RawFrame

__all__ = ["JcampFormatError", "JCAMP_SUFFIXES", "read_jcamp", "list_jcamp_files",
           "iter_jcamp_frames", "normalise_nucleus"]

#: File name suffixes taken as JCAMP-DX (case-insensitive).
JCAMP_SUFFIXES = (".jdx", ".dx", ".jcamp")


class JcampFormatError(InputError):
    """A JCAMP-DX file is missing, truncated, corrupt or lacks a needed label."""


def normalise_nucleus(text: str) -> str:
    """``"^7Li"``, ``"<7Li>"``, ``"Li7"``, ``"7li"`` -> ``"7Li"`` (mass number, then symbol).

    Examples
    --------
    >>> normalise_nucleus("^7Li"), normalise_nucleus("Li7"), normalise_nucleus("<23Na>")
    ('7Li', '7Li', '23Na')
    """
    s = re.sub(r"[\s^<>'\"]", "", str(text))
    m = re.fullmatch(r"(\d+)([A-Za-z]{1,2})", s) or None
    if m:
        return m.group(1) + m.group(2).capitalize()
    m = re.fullmatch(r"([A-Za-z]{1,2})(\d+)", s)
    if m:
        return m.group(2) + m.group(1).capitalize()
    return s


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:120]


def _first(dic: dict, key: str) -> str | None:
    v = dic.get(key)
    if not v:
        return None
    return str(v[0]).strip()


# nmrglue's normalised keys -> the labels as the spec spells them (for messages)
_LABELS = {".OBSERVEFREQUENCY": ".OBSERVE FREQUENCY", ".OBSERVENUCLEUS": ".OBSERVE NUCLEUS",
           "$SWH": "$SW_h", "VARDIM": "VAR_DIM", "DATATYPE": "DATA TYPE"}


def _float(dic: dict, key: str, path: Path, *, required: bool = False, what: str = ""):
    s = _first(dic, key)
    label = _LABELS.get(key, key)
    if s is None:
        if required:
            raise JcampFormatError(path, f"##{label} missing{what}")
        return None
    s = s.strip("<> ")
    try:
        v = float(s)
    except ValueError:
        raise JcampFormatError(path, f"##{label}={s[:30]!r} is not a number") from None
    if not math.isfinite(v):
        raise JcampFormatError(path, f"##{label}={s[:30]!r} is not finite")
    return v


def _list(dic: dict, key: str) -> list[str]:
    s = _first(dic, key)
    return [p.strip() for p in s.split(",")] if s else []


def _read_raw(path: Path) -> tuple[dict, object]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            dic, data = ng.jcampdx.read(str(path))
    except Exception as exc:
        raise JcampFormatError(path, f"nmrglue cannot read it ({_short(exc)})") from None
    if data is None:
        raise JcampFormatError(path, "no data table")
    return dic, data


def _nucleus(dic: dict, path: Path, expected: str | None) -> str:
    raw = _first(dic, ".OBSERVENUCLEUS") or _first(dic, "$NUC1")
    if not raw:
        raise JcampFormatError(path, "##.OBSERVE NUCLEUS missing (needed to check the nucleus)")
    nuc = normalise_nucleus(raw)
    if expected is not None and nuc != expected:
        raise JcampFormatError(path, f"nucleus {nuc}, expected {expected}")
    return nuc


_LONGDATE = re.compile(
    r"(\d{4})[/-](\d{1,2})[/-](\d{1,2})(?:[ T]+(\d{1,2}):(\d{2})(?::(\d{2})(\.\d+)?)?)?"
    r"\s*(Z|UTC|[+-]\d{2}:?\d{2})?")


def _parse_longdate(text: str, path: Path, tz) -> datetime:
    m = _LONGDATE.fullmatch(text.strip())
    if not m:
        raise JcampFormatError(path, f"##LONGDATE={text[:40]!r} not YYYY/MM/DD HH:MM:SS")
    y, mo, d, h, mi, s, frac, zone = m.groups()
    try:
        dt = datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0),
                      int(round(float(frac or 0) * 1e6)))
    except ValueError as exc:
        raise JcampFormatError(path, f"##LONGDATE={text[:40]!r}: {_short(exc)}") from None
    if zone in ("Z", "UTC"):
        dt = dt.replace(tzinfo=timezone.utc)
    elif zone:
        z = zone.replace(":", "")
        off = timedelta(hours=int(z[1:3]), minutes=int(z[3:5]))
        dt = dt.replace(tzinfo=timezone(off if z[0] == "+" else -off))
    else:
        dt = dt.replace(tzinfo=_zone(tz)) if tz is not None else dt.astimezone()
    return dt.astimezone(timezone.utc)


def _zone(tz):
    return ZoneInfo(tz) if isinstance(tz, str) else tz


def _date(dic: dict, path: Path, tz) -> tuple[datetime, str]:
    epoch = _float(dic, "$DATE", path)
    if epoch is not None and epoch > 0:
        return datetime.fromtimestamp(epoch, tz=timezone.utc), "jcamp_date"
    long = _first(dic, "LONGDATE")
    if long:
        return _parse_longdate(long, path, tz), "jcamp_date"
    return datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc), "mtime"


def _d1(dic: dict) -> float:
    s = _first(dic, "$D")
    if not s:
        return 0.0
    vals = re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", s.split(")", 1)[-1])
    try:
        return float(vals[1]) if len(vals) > 1 else 0.0
    except ValueError:
        return 0.0


def _check_n(values: np.ndarray, n: int | None, path: Path, what: str) -> None:
    if n is not None and values.size != n:
        raise JcampFormatError(path, f"{what}: {values.size} values, header says {n} "
                                     "(truncated or corrupt data lines)")
    if not np.all(np.isfinite(values)):
        raise JcampFormatError(path, f"{what}: non-finite values")


def _npoints(dic: dict, path: Path, ntuples: bool) -> int | None:
    if ntuples:
        dims = _list(dic, "VARDIM")
        if dims:
            try:
                return int(float(dims[0]))
            except ValueError:
                raise JcampFormatError(path, f"##VAR_DIM={dims[0]!r} is not a number") from None
        return None
    v = _float(dic, "NPOINTS", path)
    return None if v is None else int(v)


def read_jcamp(path: str | Path, *, expected_nucleus: str | None = "7Li",
               expno: int | None = None, tz=None) -> RawFrame:
    """Read one 1D JCAMP-DX NMR file (processed spectrum or complex FID).

    Parameters
    ----------
    path : str or Path
        The ``.jdx``/``.dx`` file.
    expected_nucleus : str or None
        Required nucleus (``"7Li"``); ``None`` accepts any.
    expno : int or None
        Frame number to store; default the number in the file name, else 1.
    tz : str, tzinfo or None
        Zone of a ``##LONGDATE`` without an offset (default: the machine's zone).

    Returns
    -------
    RawFrame
        ``spectrum`` (float64) + ascending ``spectrum_ppm`` (ppm) for ``NMR SPECTRUM``, or
        ``fid`` (complex128, TopSpin sign convention) for ``NMR FID``; ``time_source`` is
        ``"jcamp_date"`` or ``"mtime"``.

    Raises
    ------
    JcampFormatError
        Missing file or label, unreadable or truncated data, wrong nucleus, unknown units.
    """
    path = Path(path)
    if not path.is_file():
        raise JcampFormatError(path, "missing")
    dic, data = _read_raw(path)
    nucleus = _nucleus(dic, path, expected_nucleus)
    dtype = (_first(dic, "DATATYPE") or "").upper().replace(" ", "")
    ntuples = (_first(dic, "DATACLASS") or "").upper().replace(" ", "") == "NTUPLES"
    sfo1 = _float(dic, ".OBSERVEFREQUENCY", path, required=True,
                  what=" (needed for the ppm axis)")
    if sfo1 <= 0:
        raise JcampFormatError(path, f"##.OBSERVE FREQUENCY={sfo1} must be positive")
    sf = _float(dic, "$SF", path)
    bf1 = _float(dic, "$BF1", path) or sfo1
    if isinstance(data, list):
        if len(data) != 2 or data[0] is None or data[1] is None:
            raise JcampFormatError(path, "NTUPLES table without both real and imaginary parts")
        re_, im_ = (np.asarray(d, dtype=float) for d in data)
    else:
        re_, im_ = np.asarray(data, dtype=float), None
    n = _npoints(dic, path, ntuples)
    _check_n(re_, n, path, "real part")
    if im_ is not None:
        _check_n(im_, re_.size, path, "imaginary part")
    if re_.size < 8:
        raise JcampFormatError(path, f"only {re_.size} points")
    if ntuples:
        firsts, lasts, units = _list(dic, "FIRST"), _list(dic, "LAST"), _list(dic, "UNITS")
        try:
            x0, x1 = float(firsts[0]), float(lasts[0])
        except (IndexError, ValueError):
            raise JcampFormatError(path, "##FIRST/##LAST of the x column missing or not numbers") \
                from None
        xunit = (units[0] if units else "").upper()
    else:
        x0 = _float(dic, "FIRSTX", path, required=True)
        x1 = _float(dic, "LASTX", path, required=True)
        xunit = (_first(dic, "XUNITS") or "").upper()
    if x1 == x0:
        raise JcampFormatError(path, f"FIRSTX = LASTX = {x0}: no x range")
    ns = int(_float(dic, "$NS", path) or 1)
    d1 = _d1(dic)
    extra = {"JCAMP_DATA_TYPE": dtype, "TITLE": _first(dic, "TITLE") or ""}
    fid = spectrum = ppm = None
    if "FID" in dtype:
        if im_ is None:
            raise JcampFormatError(path, "NMR FID without an imaginary part")
        if not xunit.startswith("SEC"):
            raise JcampFormatError(path, f"NMR FID x units {xunit or 'missing'!r}, expected SECONDS")
        sw = _float(dic, "$SWH", path) or (re_.size - 1) / abs(x1 - x0)
        fid = re_ + 1j * im_
        o1 = _float(dic, "$O1", path)
        o1 = (sfo1 - bf1) * 1e6 if o1 is None else o1
        gd = _group_delay(dic, path)
        sr = None if sf is None else (sf - bf1) * 1e6
        td = 2 * re_.size
    elif "SPECTRUM" in dtype:
        x = np.linspace(x0, x1, re_.size)
        if xunit == "PPM":
            ppm = x
            sw = abs(x1 - x0) * re_.size / (re_.size - 1) * (sf or sfo1)
        elif xunit in ("HZ", "HERTZ"):
            ppm = x / (sf or sfo1)
            sw = abs(x1 - x0) * re_.size / (re_.size - 1)
        else:
            raise JcampFormatError(path, f"##XUNITS={xunit or 'missing'}: expected HZ or PPM")
        offset = _float(dic, "$OFFSET", path)
        if offset is not None:
            ppm = ppm + (offset - ppm[0])
        spectrum = re_
        if ppm[0] > ppm[-1]:
            ppm, spectrum = ppm[::-1], spectrum[::-1]
        ppm, spectrum = np.ascontiguousarray(ppm), np.ascontiguousarray(spectrum)
        o1 = (sfo1 - bf1) * 1e6
        gd = 0.0
        sr = None if sf is None else (sf - bf1) * 1e6
        td = int(_float(dic, "$TD", path) or 2 * re_.size)
    else:
        raise JcampFormatError(path, f"##DATA TYPE={_first(dic, 'DATATYPE')!r}: "
                                     "expected NMR SPECTRUM or NMR FID")
    acq = AcquisitionParams(nucleus=nucleus, sfo1_MHz=sfo1, bf1_MHz=bf1, o1_Hz=o1, sw_Hz=sw,
                            td=td, ns=max(ns, 1), d1_s=d1, group_delay_pts=gd, sr_Hz=sr,
                            extra=extra)
    end, source = _date(dic, path, tz)
    start = end - timedelta(seconds=acq.duration_s)
    return RawFrame(source=path, expno=expno if expno is not None else (_number(path) or 1),
                    acq=acq, acq_start=start, acq_end=end, fid=fid, spectrum=spectrum,
                    spectrum_ppm=ppm, time_source=source)


def _group_delay(dic: dict, path: Path) -> float:
    from lisentry.datasets.errors import BrukerFormatError
    from lisentry.datasets.io.bruker import group_delay_from_acqus
    params = {}
    for key in ("GRPDLY", "DECIM", "DSPFVS"):
        v = _float(dic, "$" + key, path)
        if v is not None:
            params[key] = v if key == "GRPDLY" else int(v)
    try:
        return group_delay_from_acqus(params, path)
    except BrukerFormatError as err:
        raise JcampFormatError(path, err.reason) from None


def _number(path: Path) -> int | None:
    groups = re.findall(r"\d+", path.stem)
    return int(groups[-1]) if groups else None


def list_jcamp_files(folder: str | Path) -> list[Path]:
    """The JCAMP-DX files (:data:`JCAMP_SUFFIXES`) directly in ``folder``, sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in JCAMP_SUFFIXES)


def iter_jcamp_frames(folder: str | Path, *, expected_nucleus: str | None = "7Li", tz=None
                      ) -> Iterator[RawFrame | InputError]:
    """Yield a :class:`RawFrame` or the :class:`InputError` of every JCAMP-DX file, in order.

    Order: the number in the file names when all are distinct, else acquisition start
    (unreadable files then come first). A frame whose start is not after the previous
    frame's is yielded as a :class:`JcampFormatError`. ``folder`` may also be one file.

    Parameters
    ----------
    folder : str or Path
        Folder of ``*.jdx``/``*.dx`` files, or one such file.
    expected_nucleus : str or None
        Required nucleus.
    tz : str, tzinfo or None
        Zone of ``##LONGDATE`` values without an offset.

    Yields
    ------
    RawFrame or InputError
    """
    folder = Path(folder)
    if folder.is_file():
        files = [folder]
    elif folder.is_dir():
        files = list_jcamp_files(folder)
    else:
        yield JcampFormatError(folder, "JCAMP-DX folder missing", frame=-1)
        return
    if not files:
        yield JcampFormatError(folder, "no JCAMP-DX file (*.jdx, *.dx)", frame=-1)
        return
    nums = [_number(p) for p in files]
    by_number = None not in nums and len(set(nums)) == len(nums)
    items: list[tuple] = []
    for pos, p in enumerate(sorted(files, key=lambda q: _number(q)) if by_number else files):
        try:
            item = read_jcamp(p, expected_nucleus=expected_nucleus,
                              expno=_number(p) if by_number else None, tz=tz)
        except InputError as err:
            item = err
        except Exception as exc:  # never let one file stop the series
            item = JcampFormatError(p, f"unexpected {type(exc).__name__}: {_short(exc)}")
        if isinstance(item, InputError) and item.frame is None:
            # the frame number of an unreadable file: the number in its name, or none (-1)
            # when frames are numbered by acquisition time
            item.frame = _number(p) if by_number else -1
        items.append(item)
    if not by_number:
        good = sorted((i for i in items if isinstance(i, RawFrame)), key=lambda r: r.acq_start)
        bad = [i for i in items if not isinstance(i, RawFrame)]
        good = [dataclasses.replace(r, expno=k + 1) for k, r in enumerate(good)]
        items = bad + good
    last = None
    for item in items:
        if isinstance(item, RawFrame):
            if last is not None and item.acq_start <= last.acq_start:
                yield JcampFormatError(item.source, f"acquisition start {item.acq_start.isoformat()} "
                                                    f"not after that of frame {last.expno}",
                                       frame=item.expno)
                continue
            last = item
        yield item

