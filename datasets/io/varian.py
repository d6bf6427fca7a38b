"""Varian/Agilent (VnmrJ) experiment folders ``name.fid/`` (``fid`` + ``procpar``) -> :class:`RawFrame`.

Read through :func:`nmrglue.varian.read_procpar` and :func:`nmrglue.varian.read` (``as_2d``:
one row per trace) with warnings turned into errors; the ``fid`` size is checked against its
own 32-byte file header and against ``procpar`` ``np`` before nmrglue sees it, so a truncated
file is an error, never fewer points.

Parameters used (``procpar``): ``tn`` (nucleus, ``Li7`` -> ``7Li``), ``sfrq`` (transmitter
frequency, MHz, ``tof`` included), ``tof`` (transmitter offset, Hz), ``sw`` (Hz), ``np``
(points, real + imaginary, = ``td``), ``nt`` (scans), ``d1`` (s), and for the reference
``rfl``/``rfp`` (Hz) or ``reffrq`` (MHz, frequency of 0 ppm).

Conventions, mapped onto lisentry's (Bruker) ones so that the same pipeline processes both:

* Sign: an Agilent FID rotates as ``exp(-2 pi i f t)`` for a line ``f`` Hz above the
  carrier (nmrglue's Varian examples transform with ``fftshift(fft(fid))`` and no
  reversal, where Bruker data need one); the reader returns ``conj(fid)``, TopSpin's sign.
  No digital-filter delay (``group_delay_pts = 0``).
* ppm axis: VnmrJ puts a line at ``x`` Hz from the right (low-frequency) edge of the window
  at ``x - rfl + rfp`` Hz on the referenced scale, so 0 ppm lies ``rfl - rfp - sw/2`` Hz from
  the carrier, i.e. at ``reffrq = sfrq - (sw/2 - rfl + rfp) 1e-6`` MHz. With
  ``sfo1 = sfrq``, ``bf1 = sfrq - tof 1e-6`` (the analogue of Bruker's BF1) and
  ``sr_Hz = tof + rfl - rfp - sw/2`` the pipeline's ``ppm = (F - SF) / SF``,
  ``SF = BF1 + SR`` puts 0 ppm at ``reffrq``. Without ``rfl``/``rfp`` (both absent or 0) the
  reader uses ``reffrq``; without either, ``sr_Hz`` is ``None`` (the pipeline's ``--sr-hz``
  then applies, default 0 ppm at ``sfrq - tof``).

Times: ``time_run`` (start) and ``time_complete`` (end), ``yyyymmddThhmmss`` in the
spectrometer's local time (read in ``tz``, default the machine's zone) ->
``time_source="procpar_time"``; with only one of them the other is the nominal duration
``nt x (d1 + at)`` per trace away; without both, the ``fid`` file's modification time is the
end (``"mtime"``). An arrayed FID (several traces) is one frame per trace, the window split
evenly between them (traces follow each other without gaps; documented assumption).

Series: a folder of ``*.fid`` folders; order by the number in the folder names when all are
distinct (``expno`` = that number), else by acquisition start (``expno`` = 1-based position).
A single (possibly arrayed) ``.fid`` folder gives ``expno`` = 1-based trace number. The errors
yielded for unreadable folders carry that number as ``InputError.frame`` (``-1`` when the
frames are numbered by position, or the whole experiment could not be read).
"""
from __future__ import annotations

import dataclasses
import math
import re
import struct
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator
from zoneinfo import ZoneInfo

import nmrglue as ng
import numpy as np

from lisentry.datasets.errors import InputError
from lisentry.datasets.frame import AcquisitionParams, RawFrame
from lisentry.datasets.io.jcamp import normalise_nucleus

__all__ = ["VarianFormatError", "is_varian_dir", "list_varian_dirs", "read_varian",
           "iter_varian_frames", "varian_ppm_reference"]


class VarianFormatError(InputError):
    """A Varian/Agilent ``fid`` or ``procpar`` is missing, truncated or inconsistent."""


def is_varian_dir(path: str | Path) -> bool:
    """True when ``path`` is a folder holding both ``fid`` and ``procpar``."""
    path = Path(path)
    return path.is_dir() and (path / "fid").is_file() and (path / "procpar").is_file()


def list_varian_dirs(folder: str | Path) -> list[Path]:
    """Sub-folders of ``folder`` that are Varian experiments (``*.fid`` or fid + procpar)."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir()
                  if p.is_dir() and (p.suffix.lower() == ".fid" or is_varian_dir(p)))


def _short(exc: BaseException) -> str:
    return (" ".join(str(exc).split()) or type(exc).__name__)[:120]


def _param(pp: dict, name: str, path: Path, *, required: bool = True, what: str = ""):
    entry = pp.get(name)
    vals = entry.get("values") if isinstance(entry, dict) else None
    if not vals:
        if required:
            raise VarianFormatError(path, f"{name} missing{what}")
        return None
    return vals


def _num(pp: dict, name: str, path: Path, *, required: bool = True, what: str = ""):
    vals = _param(pp, name, path, required=required, what=what)
    if vals is None:
        return None
    try:
        v = float(vals[0])
    except (TypeError, ValueError):
        raise VarianFormatError(path, f"{name}={str(vals[0])[:30]!r} is not a number") from None
    if not math.isfinite(v):
        raise VarianFormatError(path, f"{name}={vals[0]!r} is not finite")
    return v


def _text(pp: dict, name: str, path: Path, *, required: bool = False) -> str | None:
    vals = _param(pp, name, path, required=required)
    return None if vals is None else str(vals[0]).strip()


def varian_ppm_reference(sfrq_MHz: float, tof_Hz: float, sw_Hz: float,
                         rfl_Hz: float | None, rfp_Hz: float | None,
                         reffrq_MHz: float | None) -> tuple[float, float | None]:
    """``(bf1_MHz, sr_Hz)`` that give lisentry's ``(F - SF) / SF`` axis VnmrJ's referencing.

    Parameters
    ----------
    sfrq_MHz : float
        Transmitter frequency (``sfrq``), MHz.
    tof_Hz : float
        Transmitter offset (``tof``), Hz.
    sw_Hz : float
        Spectral width, Hz.
    rfl_Hz, rfp_Hz : float or None
        VnmrJ reference line position from the right edge and its referenced value, Hz.
    reffrq_MHz : float or None
        Frequency of 0 ppm, MHz (used when rfl/rfp are absent or both 0).

    Returns
    -------
    tuple
        ``bf1_MHz = sfrq - tof 1e-6`` and ``sr_Hz`` (``None`` when nothing references the data).

    Examples
    --------
    >>> bf1, sr = varian_ppm_reference(194.4, 1000.0, 100000.0, 60000.0, 0.0, None)
    >>> round((bf1 + sr * 1e-6 - (194.4 + (60000.0 - 50000.0) * 1e-6)) * 1e6, 6)  # SF = 0 ppm
    0.0
    """
    bf1 = sfrq_MHz - tof_Hz * 1e-6
    if rfl_Hz is not None and rfp_Hz is not None and (rfl_Hz != 0 or rfp_Hz != 0):
        return bf1, tof_Hz + rfl_Hz - rfp_Hz - sw_Hz / 2.0
    if reffrq_MHz is not None and reffrq_MHz > 0:
        return bf1, (reffrq_MHz - bf1) * 1e6
    return bf1, None


_TIME = re.compile(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})")


def _time(pp: dict, name: str, path: Path, tz) -> datetime | None:
    s = _text(pp, name, path)
    if not s:
        return None
    m = _TIME.fullmatch(s)
    if not m:
        raise VarianFormatError(path, f"{name}={s[:30]!r} not yyyymmddThhmmss")
    try:
        dt = datetime(*(int(g) for g in m.groups()))
    except ValueError as exc:
        raise VarianFormatError(path, f"{name}={s!r}: {_short(exc)}") from None
    if tz is None:
        dt = dt.astimezone()
    else:
        dt = dt.replace(tzinfo=ZoneInfo(tz) if isinstance(tz, str) else tz)
    return dt.astimezone(timezone.utc)


def _read_procpar(path: Path) -> dict:
    if not path.is_file():
        raise VarianFormatError(path, "missing")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            pp = ng.varian.read_procpar(str(path))
    except Exception as exc:
        raise VarianFormatError(path, f"nmrglue cannot read it ({_short(exc)})") from None
    if not isinstance(pp, dict) or not pp:
        raise VarianFormatError(path, "no parameters")
    return pp


def _check_fid_file(path: Path, np_: int) -> tuple[int, int]:
    """Check the 32-byte header and the size; returns (nblocks, ntraces)."""
    if not path.is_file():
        raise VarianFormatError(path, "missing")
    size = path.stat().st_size
    if size < 32:
        raise VarianFormatError(path, f"truncated: {size} bytes, no 32-byte file header")
    with open(path, "rb") as f:
        nblocks, ntraces, npts, ebytes, tbytes, bbytes, _, status, nbheaders = \
            struct.unpack(">6lhhl", f.read(32))
    if nblocks < 1 or ntraces < 1 or npts < 2 or ebytes not in (2, 4) or nbheaders < 0:
        raise VarianFormatError(path, f"corrupt file header (nblocks={nblocks}, ntraces={ntraces}, "
                                      f"np={npts}, ebytes={ebytes})")
    if tbytes != npts * ebytes or bbytes != ntraces * tbytes + 28 * nbheaders:
        raise VarianFormatError(path, f"corrupt file header (tbytes={tbytes}, bbytes={bbytes} "
                                      f"for np={npts}, ebytes={ebytes}, ntraces={ntraces})")
    if npts != np_:
        raise VarianFormatError(path, f"file header np={npts} but procpar np={np_}")
    expected = 32 + nblocks * bbytes
    if size != expected:
        what = "truncated" if size < expected else "too long"
        raise VarianFormatError(path, f"{what}: {size} bytes, header says {expected} "
                                      f"({nblocks} blocks of {bbytes})")
    return nblocks, ntraces


def read_varian(fid_dir: str | Path, *, expected_nucleus: str | None = "7Li", tz=None
                ) -> list[RawFrame]:
    """Read one Varian/Agilent experiment folder; one :class:`RawFrame` per trace.

    Parameters
    ----------
    fid_dir : str or Path
        The ``name.fid`` folder (or its ``fid`` file).
    expected_nucleus : str or None
        Required nucleus (``tn``), e.g. ``"7Li"``; ``None`` accepts any.
    tz : str, tzinfo or None
        Zone of ``time_run``/``time_complete`` (default: the machine's zone).

    Returns
    -------
    list of RawFrame
        ``fid`` complex128 of ``np // 2`` points in TopSpin's sign convention, ``expno`` =
        1-based trace number, ``time_source`` ``"procpar_time"`` or ``"mtime"``.

    Raises
    ------
    VarianFormatError
        Missing/corrupt/truncated ``fid`` or ``procpar``, wrong nucleus, bad parameters.
    """
    d = Path(fid_dir)
    if d.name == "fid" and d.is_file():
        d = d.parent
    if not d.is_dir():
        raise VarianFormatError(d, "experiment folder missing")
    pp_path, fid_path = d / "procpar", d / "fid"
    pp = _read_procpar(pp_path)
    tn = _text(pp, "tn", pp_path, required=True)
    nucleus = normalise_nucleus(tn)
    if expected_nucleus is not None and nucleus != expected_nucleus:
        raise VarianFormatError(pp_path, f"nucleus tn={tn}, expected {expected_nucleus}")
    axis = " (needed for the ppm axis)"
    sfrq = _num(pp, "sfrq", pp_path, what=axis)
    sw = _num(pp, "sw", pp_path, what=axis)
    np_ = _num(pp, "np", pp_path, what=" (needed to read the fid)")
    if sfrq <= 0 or sw <= 0:
        raise VarianFormatError(pp_path, f"sfrq={sfrq}, sw={sw} must be positive")
    if np_ < 2 or int(np_) != np_ or int(np_) % 2:
        raise VarianFormatError(pp_path, f"np={np_} must be an even positive integer")
    np_ = int(np_)
    tof = _num(pp, "tof", pp_path, required=False) or 0.0
    nt = _num(pp, "nt", pp_path, required=False) or 1.0
    d1 = _num(pp, "d1", pp_path, required=False) or 0.0
    bf1, sr = varian_ppm_reference(sfrq, tof, sw, _num(pp, "rfl", pp_path, required=False),
                                   _num(pp, "rfp", pp_path, required=False),
                                   _num(pp, "reffrq", pp_path, required=False))
    nblocks, ntraces = _check_fid_file(fid_path, np_)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _, data = ng.varian.read(str(d), as_2d=True)
    except Exception as exc:
        raise VarianFormatError(fid_path, f"nmrglue cannot read it ({_short(exc)})") from None
    shape = (nblocks * ntraces, np_ // 2)
    data = np.asarray(data)
    if data.shape != shape:
        raise VarianFormatError(fid_path, f"read shape {data.shape}, expected {shape}")
    if not np.all(np.isfinite(data)):
        raise VarianFormatError(fid_path, "non-finite (NaN/inf) values")
    nonzero = np.flatnonzero(np.any(data != 0, axis=1))
    if nonzero.size == 0:
        raise VarianFormatError(fid_path, "all zeros: no data acquired")
    n = int(nonzero[-1]) + 1                       # trailing zero traces: not acquired yet
    extra = {k: _text(pp, k, pp_path) for k in ("seqfil", "array", "time_run", "time_complete",
                                                 "rfl", "rfp", "reffrq", "tof", "at")
             if k in pp}
    acq = AcquisitionParams(nucleus=nucleus, sfo1_MHz=sfrq, bf1_MHz=bf1, o1_Hz=tof, sw_Hz=sw,
                            td=np_, ns=max(int(nt), 1), d1_s=d1, group_delay_pts=0.0,
                            sr_Hz=sr, extra=extra)
    at = _num(pp, "at", pp_path, required=False) or acq.aq_s
    per = acq.ns * (d1 + at)                       # nominal seconds per trace
    start, end = _time(pp, "time_run", pp_path, tz), _time(pp, "time_complete", pp_path, tz)
    source = "procpar_time"
    if start is not None and end is not None:
        if end < start:
            raise VarianFormatError(pp_path, f"time_complete {end.isoformat()} before "
                                             f"time_run {start.isoformat()}")
        step = (end - start) / n
    elif start is not None:
        step = timedelta(seconds=per)
    elif end is not None:
        step = timedelta(seconds=per)
        start = end - n * step
    else:
        end = datetime.fromtimestamp(fid_path.stat().st_mtime, tz=timezone.utc)
        step = timedelta(seconds=per)
        start = end - n * step
        source = "mtime"
    return [RawFrame(source=d, expno=i + 1, acq=acq, acq_start=start + i * step,
                     acq_end=start + (i + 1) * step, fid=np.conj(data[i]).astype(np.complex128),
                     time_source=source) for i in range(n)]


def _number(path: Path) -> int | None:
    groups = re.findall(r"\d+", path.name[:-4] if path.name.lower().endswith(".fid") else path.name)
    return int(groups[-1]) if groups else None


def iter_varian_frames(nmr_dir: str | Path, *, expected_nucleus: str | None = "7Li", tz=None
                       ) -> Iterator[RawFrame | InputError]:
    """Yield a :class:`RawFrame` or the :class:`InputError` of every frame, in order.

    ``nmr_dir`` is one experiment folder (arrayed: one frame per trace) or a folder of
    ``*.fid`` folders (see the module docstring for the order). A frame whose start is not
    after the previous frame's is yielded as a :class:`VarianFormatError`.

    Yields
    ------
    RawFrame or InputError
    """
    root = Path(nmr_dir)
    if is_varian_dir(root) or (root.is_dir() and root.suffix.lower() == ".fid"):
        try:
            frames: list = read_varian(root, expected_nucleus=expected_nucleus, tz=tz)
        except InputError as err:
            err.frame = -1 if err.frame is None else err.frame   # the whole experiment
            yield err
            return
        yield from _ordered(frames)
        return
    if not root.is_dir():
        yield VarianFormatError(root, "Varian folder missing", frame=-1)
        return
    dirs = list_varian_dirs(root)
    if not dirs:
        yield VarianFormatError(root, "no Varian experiment (*.fid folder with fid + procpar)",
                                frame=-1)
        return
    nums = [_number(p) for p in dirs]
    by_number = None not in nums and len(set(nums)) == len(nums)
    if by_number:
        dirs = [p for _, p in sorted(zip(nums, dirs))]
    good: list[RawFrame] = []
    items: list = []
    folder_of: dict[int, Path] = {}          # id(error) -> its experiment folder
    for p in dirs:
        try:
            rows = read_varian(p, expected_nucleus=expected_nucleus, tz=tz)
        except InputError as err:
            items.append(err)
            folder_of[id(err)] = p
            continue
        except Exception as exc:  # never let one folder stop the series
            items.append(VarianFormatError(p, f"unexpected {type(exc).__name__}: {_short(exc)}"))
            folder_of[id(items[-1])] = p
            continue
        items.extend(rows)
        good.extend(rows)
    single = all(sum(1 for r in good if r.source == g.source) == 1 for g in good)
    for item in items:       # frame number of an unreadable folder: its number, when frames
        if isinstance(item, InputError) and item.frame is None:     # are numbered so
            item.frame = _number(folder_of[id(item)]) if by_number and single else -1
    if by_number and single:
        items = [dataclasses.replace(r, expno=_number(r.source)) if isinstance(r, RawFrame) else r
                 for r in items]
    else:
        bad = [i for i in items if not isinstance(i, RawFrame)]
        if not by_number:
            good = sorted(good, key=lambda r: r.acq_start)
        items = bad + [dataclasses.replace(r, expno=k + 1) for k, r in enumerate(good)]
    yield from _ordered(items)


def _ordered(items: list) -> Iterator[RawFrame | InputError]:
    last = None
    for item in items:
        if isinstance(item, RawFrame):
            if last is not None and item.acq_start <= last.acq_start:
                yield VarianFormatError(item.source, f"frame {item.expno}: acquisition start "
                                                     f"{item.acq_start.isoformat()} not after "
                                                     f"that of frame {last.expno}",
                                        frame=item.expno)
                continue
            last = item
        yield item
