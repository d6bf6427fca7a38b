"""Write real-format Bruker TopSpin experiments: ``acqus``, ``audita.txt``, ``fid``/``ser``,
``acqu2s`` and ``pdata/1/procs`` + ``1r``.

Used by the tests, the simulator and the demo. The files follow what TopSpin writes, quirks
included: JCAMP-DX parameter files (from a genuine TopSpin ``acqus`` when a template text is
given, otherwise from the generic templates in ``templates/``), int32 FIDs scaled to a good
part of the int32 range (or float64 with ``dtypa=2``), data padded to 1024-byte blocks, both
byte orders, the TopSpin 2.x (``2023-08-11 12:42:10.909 +0100``) and 4.3 (ISO, with an
``acquisition in progress`` entry while running) audit trails.

FID convention: the array passed in is the FID as the spectrometer stores it (see
:mod:`lisentry.datasets.io.bruker`): a line ``nu`` Hz above the carrier is
``exp(+2j*pi*nu*t)``, so that ``fftshift(fft(fid))`` runs in ascending frequency. Add the
digital-filter delay with :func:`add_digital_filter_delay` first when wanted.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from nmrglue.fileio import bruker as _ngb

from lisentry.datasets.frame import AcquisitionParams, utc
from lisentry.datasets.io.bruker import block_padded_points

__all__ = [
    "write_experiment",
    "begin_experiment",
    "finish_experiment",
    "write_ser",
    "add_digital_filter_delay",
    "render_acqus",
    "TOPSPIN_VERSIONS",
]

TEMPLATES = Path(__file__).resolve().parent / "templates"
#: Supported TopSpin dialects.
TOPSPIN_VERSIONS = ("2.1", "4.3")
_INT32_TARGET = 2**29  # peak |value| of a written int32 FID (TopSpin fills the ADC range)


# --------------------------------------------------------------------------------------
# digital filter
# --------------------------------------------------------------------------------------
def add_digital_filter_delay(fid: np.ndarray, group_delay_pts: float) -> np.ndarray:
    """Return ``fid`` as a Bruker digital filter leaves it: delayed by ``group_delay_pts`` points.

    Implemented as the frequency-domain linear phase that
    ``nmrglue.bruker.remove_digital_filter(dic, nmrglue.proc_base.fft(fid), post_proc=True)``
    removes: ``ifft(ifftshift(fftshift(fft(fid)) * exp(-2j*pi*g*k/n)))`` with ``k = 0..n-1``.
    The result is a circular delay by ``g`` points (the first ``~g`` points carry the filter's
    rise, the decayed tail wraps to the start) times the constant phase ``exp(-1j*pi*g)``.
    nmrglue's default ``truncate=True`` removes ``floor(g)``; for an integer ``g`` (or with
    ``truncate=False``) it undoes this function exactly.

    Parameters
    ----------
    fid : np.ndarray
        Complex FID (last axis = time), undelayed.
    group_delay_pts : float
        Group delay in complex points (e.g. 44.75 for DECIM 2 / DSPFVS 10, ~68-76 for DSPFVS 20+).

    Returns
    -------
    np.ndarray
        complex128 array of the same shape.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.zeros(16, complex); x[0] = 1
    >>> int(np.argmax(np.abs(add_digital_filter_delay(x, 3))))
    3
    """
    x = np.asarray(fid, dtype=complex)
    n = x.shape[-1]
    spec = np.fft.fftshift(np.fft.fft(x, axis=-1), axes=-1)
    spec = spec * np.exp(-2j * np.pi * float(group_delay_pts) * np.arange(n) / n)
    return np.fft.ifft(np.fft.ifftshift(spec, axes=-1), axis=-1)


# --------------------------------------------------------------------------------------
# JCAMP-DX text
# --------------------------------------------------------------------------------------
def _fmt(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return f"<{value}>"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    v = float(value)
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


def _fmt_array(values: Sequence) -> str:
    lines, line = [], ""
    for v in values:
        tok = _fmt(v)
        if line and len(line) + 1 + len(tok) > 72:
            lines.append(line)
            line = tok
        else:
            line = f"{line} {tok}" if line else tok
    lines.append(line)
    return "\n".join(lines)


def _set_params(text: str, values: Mapping[str, object]) -> str:
    """Replace (or add before ``##END=``) the ``##$KEY=`` entries of a JCAMP-DX text.

    Arrays (``(0..n)`` followed by continuation lines) and multi-line strings are replaced
    as whole blocks; every other line is kept verbatim.
    """
    lines = text.splitlines()
    out: list[str] = []
    done: set[str] = set()
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"##\$([^=]+)=", line)
        if m and m.group(1) in values:
            key = m.group(1)
            # skip the rest of this parameter's block
            j = i + 1
            rest = line[m.end():].strip()
            if rest.startswith("<") and ">" not in rest:  # multi-line string: up to ">"
                while j < len(lines) and ">" not in lines[j]:
                    j += 1
                j = min(j + 1, len(lines))
            else:
                while j < len(lines) and not lines[j].startswith(("##", "$$")):
                    j += 1
            out.extend(_param_lines(key, values[key], lines[i + 1:j]))
            done.add(key)
            i = j
            continue
        if line.startswith("##END="):
            for key in values:
                if key not in done:
                    out.extend(_param_lines(key, values[key]))
                    done.add(key)
        out.append(line)
        i += 1
    return "\n".join(out) + "\n"


def _param_lines(key: str, value, old_rows: Sequence[str] = ()) -> list[str]:
    if isinstance(value, (list, tuple, np.ndarray)):
        value = list(value)
        counts = [len(r.split()) for r in old_rows]
        if counts and sum(counts) == len(value):  # keep TopSpin's own line layout
            rows, k = [], 0
            for c in counts:
                rows.append(" ".join(_fmt(v) for v in value[k:k + c]))
                k += c
        else:
            rows = _fmt_array(value).split("\n")
        return [f"##${key}= (0..{len(value) - 1})"] + rows
    return [f"##${key}= {_fmt(value)}"]


def _title_version(topspin: str) -> str:
    return "TOPSPIN\t\tVersion 2.1" if topspin.startswith("2") else f"TopSpin {topspin}.0"


def _stamp(dt: datetime, topspin: str) -> str:
    """TopSpin time stamp: ``2023-08-11 12:42:10.909 +0000`` (2.x/3.x) or ISO (4.3)."""
    dt = utc(dt)
    ms = f"{dt.microsecond // 1000:03d}"
    if topspin.startswith("2") or topspin.startswith("3"):
        return dt.strftime("%Y-%m-%d %H:%M:%S.") + ms + " +0000"
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + ms + "+0000"


def _generic(name: str, topspin: str, owner: str, path: Path, stamp: datetime) -> str:
    text = (TEMPLATES / name).read_text(encoding="latin-1")
    return (text.replace("{TITLE_VERSION}", _title_version(topspin)).replace("{OWNER}", owner)
            .replace("{PATH}", str(path)).replace("{STAMP}", _stamp(stamp, "2.1")))


def _acqus_values(acq: AcquisitionParams, date: datetime, dtypa: int, bytorda: int,
                  template_d: Sequence | None, data_minmax: tuple[int, int] | None) -> dict:
    extra = dict(acq.extra)
    gd = float(acq.group_delay_pts)
    if "DECIM" in extra and "DSPFVS" in extra:
        decim, dspfvs = extra["DECIM"], extra["DSPFVS"]
        grpdly = extra.get("GRPDLY", -1 if dspfvs < 20 else gd)
    elif gd > 0:
        decim, dspfvs, grpdly = extra.get("DECIM", 16), 20, gd
    else:
        decim, dspfvs, grpdly = 1, 20, 0
    d = list(template_d) if template_d else [0.0] * 64
    if len(d) < 2:
        d = d + [0.0] * (2 - len(d))
    d[1] = float(acq.d1_s)
    values = {
        "AQ_mod": 1, "BF1": acq.bf1_MHz, "BYTORDA": int(bytorda), "D": d,
        "DATE": int(math.floor(utc(date).timestamp())), "DECIM": decim, "DS": int(acq.ds),
        "DSPFVS": dspfvs, "DTYPA": int(dtypa), "GRPDLY": grpdly, "NS": int(acq.ns),
        "NUC1": acq.nucleus, "O1": acq.o1_Hz, "SFO1": acq.sfo1_MHz,
        "SW": acq.sw_Hz / acq.sfo1_MHz, "SW_h": acq.sw_Hz, "TD": int(acq.td),
    }
    if "PULPROG" in extra:
        values["PULPROG"] = str(extra["PULPROG"])
    if data_minmax is not None:
        values["YMAX_a"], values["YMIN_a"] = data_minmax
    return values


def render_acqus(acq: AcquisitionParams, date: datetime, *, dtypa: int = 0, bytorda: int = 0,
                 topspin: str = "2.1", acqus_template: str | None = None, owner: str = "lisentry",
                 path: str | Path = "acqus", data_minmax: tuple[int, int] | None = None) -> str:
    """Text of a TopSpin ``acqus`` for ``acq`` with ``##$DATE`` = ``date`` (epoch seconds).

    With ``acqus_template`` (e.g. a genuine TopSpin 2.1 acqus) every line is kept verbatim
    except the values of NUC1, SFO1, BF1, O1, SW, SW_h, TD, NS, DS, D (D[1] = recycle delay),
    DATE, DTYPA, BYTORDA, DECIM, DSPFVS, GRPDLY, AQ_mod (and YMAX_a/YMIN_a, PULPROG when known).
    """
    if acqus_template is None:
        text = _generic("acqus", topspin, owner, Path(path), date)
    else:
        text = acqus_template
    template_d = None
    m = re.search(r"^##\$D= \(0\.\.(\d+)\)\n((?:[^#$].*\n)+)", text, re.M)
    if m:
        template_d = [float(v) for v in m.group(2).split()]
    return _set_params(text, _acqus_values(acq, date, dtypa, bytorda, template_d, data_minmax))


# --------------------------------------------------------------------------------------
# audita.txt
# --------------------------------------------------------------------------------------
def _md5_block(data: bytes) -> str:
    h = hashlib.md5(data).hexdigest().upper()
    return " ".join(h[i:i + 2] for i in range(0, 32, 2))


def _size_label(n_values: int) -> str:
    return f"{n_values // 1024}K" if n_values % 1024 == 0 else str(n_values)


def render_audita(start: datetime, end: datetime | None, *, topspin: str = "2.1",
                  owner: str = "lisentry", host: str = "lisentry", path: str | Path = "audita.txt",
                  data: bytes = b"", n_values: int = 0, audita_template: str | None = None) -> str:
    """Text of a TopSpin ``audita.txt`` for one acquisition.

    ``end=None`` writes TopSpin 4.3's ``acquisition in progress`` entry (WHEN = start);
    otherwise the completed ``created by zg`` entry with WHEN = ``end`` and
    ``started at`` = ``start``. With ``audita_template`` its header lines are kept.
    """
    v4 = not topspin.startswith(("2", "3"))
    if end is None and not v4:
        raise ValueError("TopSpin 2.x/3.x write no audita.txt until the acquisition ends")
    if audita_template is not None and "##AUDIT TRAIL=" in audita_template:
        header = audita_template[: audita_template.index("##AUDIT TRAIL=")]
        header = re.sub(r"^\$\$ .*audita\.txt$", f"$$ {path}", header, flags=re.M)
    else:
        title = ("Audit trail, TOPSPIN\t\tVersion 2.1" if not v4
                 else f"Audit trail, TopSpin {topspin}.0")
        origin = "Bruker BioSpin GmbH" if not v4 else "Bruker BioSpin GmbH & Co. KG"
        header = (f"##TITLE= {title}\n##JCAMPDX= 5.01\n##ORIGIN= {origin}\n##OWNER= {owner}\n"
                  f"$$ {path}\n")
    version = "TOPSPIN 2.1" if not v4 else f"TopSpin {topspin}.0"
    process = "go" if not v4 else "go4"
    if end is None:
        when, what = start, (f"acquisition in progress\n\tstarted at {_stamp(start, topspin)}")
    else:
        when = end
        what = (f"created by zg\n\tstarted at {_stamp(start, topspin)},\n"
                f"\tPOWCHK disabled, PULCHK disabled,\n"
                f"       configuration hash MD5:\n       {_md5_block(owner.encode())}\n"
                f"       data hash MD5: {_size_label(n_values)}\n       {_md5_block(data)}")
    body = (f"##AUDIT TRAIL=  $$ (NUMBER, WHEN, WHO, WHERE, PROCESS, VERSION, WHAT)\n"
            f"(   1,<{_stamp(when, topspin)}>,<{owner}>,<{host}>,<{process}>,<{version}>,\n"
            f"      <{what}>)\n##END=\n")
    text = header + body
    return text + f"\n$$ hash MD5\n$$ {_md5_block(text.encode('latin-1'))}\n"


# --------------------------------------------------------------------------------------
# binary data
# --------------------------------------------------------------------------------------
def _to_values(fid: np.ndarray, dtypa: int, int_scale: float | None = None
               ) -> tuple[np.ndarray, tuple[int, int] | None]:
    """Interleave (re, im) and scale to int32 (or keep float64); returns values and min/max.

    ``int_scale`` fixes the int32 scale factor (a constant receiver gain over a run: frames keep
    their relative intensities); by default each FID is scaled so its peak is 2**29."""
    x = np.asarray(fid)
    if not np.iscomplexobj(x):
        raise ValueError("fid must be complex")
    if dtypa == 0:
        peak = float(np.max(np.abs(np.concatenate([x.real.ravel(), x.imag.ravel()])), initial=0))
        scale = int_scale if int_scale else (_INT32_TARGET / peak if peak > 0 else 1.0)
        xs = x * scale
        vals = _ngb.uncomplexify_data(np.round(xs.real) + 1j * np.round(xs.imag), isfloat=False)
        return vals, (int(vals.max(initial=0)), int(vals.min(initial=0)))
    if dtypa == 2:
        return _ngb.uncomplexify_data(x.astype(complex), isfloat=True), None
    raise ValueError(f"dtypa must be 0 (int32) or 2 (float64), got {dtypa}")


def _padded(values: np.ndarray, td: int, dtypa: int) -> np.ndarray:
    """Pad each row (last axis, ``td`` real values) with zeros to 1024-byte blocks."""
    n = block_padded_points(td, dtypa)
    out = np.zeros(values.shape[:-1] + (n,), dtype=values.dtype)
    out[..., : values.shape[-1]] = values
    return out


def _bytes(values: np.ndarray, dtypa: int, bytorda: int) -> bytes:
    dt = (">" if bytorda == 1 else "<") + ("i4" if dtypa == 0 else "f8")
    return np.ascontiguousarray(values).astype(dt).tobytes()


def _atomic_write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    if isinstance(data, str):
        data = data.encode("latin-1")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _check_args(acq: AcquisitionParams, n_points: int, dtypa: int, bytorda: int, topspin: str):
    if n_points != acq.td // 2:
        raise ValueError(f"fid has {n_points} complex points but acq.td={acq.td} needs {acq.td // 2}")
    if dtypa not in (0, 2):
        raise ValueError(f"dtypa must be 0 or 2, got {dtypa}")
    if bytorda not in (0, 1):
        raise ValueError(f"bytorda must be 0 or 1, got {bytorda}")
    if topspin not in TOPSPIN_VERSIONS:
        raise ValueError(f"topspin must be one of {TOPSPIN_VERSIONS}, got {topspin!r}")


# --------------------------------------------------------------------------------------
# public writers
# --------------------------------------------------------------------------------------
def write_experiment(expdir: str | Path, fid: np.ndarray, acq: AcquisitionParams,
                     acq_start: datetime, acq_end: datetime, *, dtypa: int = 0, bytorda: int = 0,
                     topspin: str = "2.1", acqus_template: str | None = None,
                     audita_template: str | None = None, procs: Mapping | None = None,
                     spectrum_1r: np.ndarray | None = None, owner: str = "lisentry",
                     int_scale: float | None = None) -> Path:
    """Write one finished TopSpin experiment folder.

    Files are written in TopSpin's order, ``audita.txt`` (the completion marker) last:
    ``fid``, ``pdata/1/procs`` (+ ``1r``), ``acqus`` (DATE = ``acq_end``), ``audita.txt``.

    Parameters
    ----------
    expdir : str or Path
        The experiment folder (created).
    fid : np.ndarray
        Complex FID with ``acq.td // 2`` points in the spectrometer's convention (module doc).
    acq : AcquisitionParams
        Parameters written to ``acqus``. ``acq.extra`` may give DECIM/DSPFVS/GRPDLY and
        PULPROG; otherwise GRPDLY = ``acq.group_delay_pts`` with DSPFVS 20. ``acq.sr_Hz``
        sets SF = BF1 + SR in ``procs``.
    acq_start, acq_end : datetime
        Acquisition window (aware; naive is taken as UTC).
    dtypa : {0, 2}
        0: int32 (scaled so the peak is 2**29), 2: float64.
    bytorda : {0, 1}
        0 little-endian, 1 big-endian.
    topspin : {"2.1", "4.3"}
        Dialect of the generic templates and of ``audita.txt``.
    acqus_template, audita_template : str or None
        Genuine TopSpin texts to start from (kept verbatim apart from the replaced values).
    procs : Mapping or None
        Write ``pdata/1/procs`` with these values overriding the defaults (SF from SR, SI,
        SW_p, OFFSET of the first point, PHC0/PHC1 = 0). Also written when ``spectrum_1r``
        is given.
    spectrum_1r : np.ndarray or None
        Real processed spectrum in TopSpin order (point 0 = OFFSET = highest ppm), written as
        int32 ``1r`` with NC_proc scaling.
    owner : str
        ``##OWNER=`` and audit-trail user.

    Returns
    -------
    Path
        ``expdir``.
    """
    expdir = Path(expdir)
    fid = np.asarray(fid)
    _check_args(acq, fid.shape[-1], dtypa, bytorda, topspin)
    expdir.mkdir(parents=True, exist_ok=True)
    values, minmax = _to_values(fid, dtypa, int_scale)
    raw = _bytes(_padded(values, acq.td, dtypa), dtypa, bytorda)
    _atomic_write(expdir / "fid", raw)
    if procs is not None or spectrum_1r is not None:
        _write_pdata(expdir, acq, dict(procs or {}), spectrum_1r, topspin, owner, acq_end)
    _atomic_write(expdir / "acqus", render_acqus(
        acq, acq_end, dtypa=dtypa, bytorda=bytorda, topspin=topspin,
        acqus_template=acqus_template, owner=owner, path=expdir / "acqus", data_minmax=minmax))
    _atomic_write(expdir / "audita.txt", render_audita(
        acq_start, acq_end, topspin=topspin, owner=owner, path=expdir / "audita.txt",
        data=raw, n_values=acq.td, audita_template=audita_template))
    return expdir


def begin_experiment(expdir: str | Path, acq: AcquisitionParams, acq_start: datetime, *,
                     dtypa: int = 0, bytorda: int = 0, topspin: str = "2.1",
                     acqus_template: str | None = None, audita_template: str | None = None,
                     owner: str = "lisentry") -> Path:
    """Write what TopSpin leaves on disk while an acquisition runs.

    ``acqus`` (DATE = ``acq_start``, as written when ``zg`` starts), a full-size zero-filled
    ``fid`` and, for TopSpin 4.3, an ``audita.txt`` with an ``acquisition in progress`` entry.
    :func:`~lisentry.datasets.io.bruker.acquisition_state` then says ``"in_progress"`` and the
    reader raises ``IncompleteAcquisition``. Finish with :func:`finish_experiment`.
    """
    expdir = Path(expdir)
    _check_args(acq, acq.td // 2, dtypa, bytorda, topspin)
    expdir.mkdir(parents=True, exist_ok=True)
    n = block_padded_points(acq.td, dtypa)
    zeros = np.zeros(n, dtype=np.int32 if dtypa == 0 else np.float64)
    _atomic_write(expdir / "acqus", render_acqus(
        acq, acq_start, dtypa=dtypa, bytorda=bytorda, topspin=topspin,
        acqus_template=acqus_template, owner=owner, path=expdir / "acqus"))
    _atomic_write(expdir / "fid", _bytes(zeros, dtypa, bytorda))
    if not topspin.startswith(("2", "3")):
        _atomic_write(expdir / "audita.txt", render_audita(
            acq_start, None, topspin=topspin, owner=owner, path=expdir / "audita.txt",
            audita_template=audita_template))
    return expdir


def finish_experiment(expdir: str | Path, fid: np.ndarray, acq: AcquisitionParams,
                      acq_start: datetime, acq_end: datetime, **kwargs) -> Path:
    """Complete an experiment started with :func:`begin_experiment`.

    Writes the data, ``acqus`` with the final DATE and the completed audit entry (replacing
    TopSpin 4.3's in-progress entry); takes :func:`write_experiment`'s keyword arguments.
    """
    return write_experiment(expdir, fid, acq, acq_start, acq_end, **kwargs)


def _write_pdata(expdir: Path, acq: AcquisitionParams, procs: dict, spectrum_1r, topspin: str,
                 owner: str, stamp: datetime) -> None:
    pdir = expdir / "pdata" / "1"
    sf = acq.bf1_MHz + (acq.sr_Hz or 0.0) * 1e-6
    si = int(len(spectrum_1r)) if spectrum_1r is not None else int(procs.get("SI", acq.td // 2))
    sf = float(procs.get("SF", sf))
    sw_p = float(procs.get("SW_p", acq.sw_Hz))
    carrier_ppm = (acq.sfo1_MHz - sf) / sf * 1e6
    values = {"SF": sf, "SR": (sf - acq.bf1_MHz) * 1e6, "SI": si, "SW_p": sw_p,
              "OFFSET": carrier_ppm + sw_p / sf / 2, "PHC0": 0.0, "PHC1": 0.0,
              "AXNUC": acq.nucleus, "BYTORDP": 0, "DTYPP": 0, "NC_proc": 0}
    values.update(procs)
    if spectrum_1r is not None:
        spec = np.asarray(spectrum_1r, dtype=float)
        if spec.ndim != 1:
            raise ValueError("spectrum_1r must be 1D")
        peak = float(np.max(np.abs(spec), initial=0))
        nc = int(math.ceil(math.log2(peak / _INT32_TARGET))) if peak > 0 else 0
        ints = np.round(spec / 2.0**nc).astype(np.int64)
        values.update({"NC_proc": nc, "DTYPP": 0, "YMAX_p": int(ints.max()),
                       "YMIN_p": int(ints.min())})
        _atomic_write(pdir / "1r", _bytes(ints, 0, int(values["BYTORDP"])))
    text = _generic("procs", topspin, owner, pdir / "procs", stamp)
    _atomic_write(pdir / "procs", _set_params(text, values))


def write_ser(expdir: str | Path, fids_2d: np.ndarray, acq: AcquisitionParams,
              start: datetime, row_duration_s: float, *, n_rows_total: int | None = None,
              complete: bool = True, truncate_file: bool = False, dtypa: int = 0,
              bytorda: int = 0, topspin: str = "2.1", acqus_template: str | None = None,
              audita_template: str | None = None, owner: str = "lisentry",
              int_scale: float | None = None, procs: Mapping | None = None) -> Path:
    """Write a pseudo-2D experiment: ``ser`` + ``acqus`` + ``acqu2s`` (+ ``pdata/1/procs``,
    ``audita.txt``).

    Parameters
    ----------
    expdir : str or Path
        The experiment folder.
    fids_2d : np.ndarray
        (rows acquired, TD // 2) complex FIDs.
    acq : AcquisitionParams
        Direct-dimension parameters.
    start : datetime
        Acquisition start of row 1.
    row_duration_s : float
        Duration of one row in seconds; the end is ``start + rows * row_duration_s``.
    n_rows_total : int or None
        TD of ``acqu2s`` (rows planned); rows beyond ``fids_2d`` are zero-filled (TopSpin
        creates the ``ser`` full-size), or left out with ``truncate_file``.
    complete : bool
        Write the completed audit entry / final DATE (False: the acquisition still runs;
        DATE = start and, for 4.3, an in-progress entry).
    truncate_file : bool
        Write only the acquired rows (no zero-filled rest).
    procs : Mapping or None
        Write ``pdata/1/procs`` (one for all rows) with these values overriding the defaults
        (SF from ``acq.sr_Hz``, PHC0/PHC1 = 0), as for :func:`write_experiment`. Without it
        the ppm axis of a reader has no referencing.

    Returns
    -------
    Path
        ``expdir``.
    """
    expdir = Path(expdir)
    fids_2d = np.atleast_2d(np.asarray(fids_2d))
    rows = fids_2d.shape[0]
    total = rows if n_rows_total is None else int(n_rows_total)
    if total < rows:
        raise ValueError("n_rows_total is smaller than the number of rows given")
    _check_args(acq, fids_2d.shape[-1], dtypa, bytorda, topspin)
    expdir.mkdir(parents=True, exist_ok=True)
    values, minmax = _to_values(fids_2d, dtypa, int_scale)
    padded = _padded(values, acq.td, dtypa)
    if not truncate_file and total > rows:
        padded = np.concatenate([padded, np.zeros((total - rows, padded.shape[-1]), padded.dtype)])
    raw = _bytes(padded, dtypa, bytorda)
    _atomic_write(expdir / "ser", raw)
    end = utc(start) + timedelta(seconds=rows * float(row_duration_s))
    date = end if complete else start
    if procs is not None:
        _write_pdata(expdir, acq, dict(procs), None, topspin, owner, date)
    _atomic_write(expdir / "acqus", render_acqus(
        acq, date, dtypa=dtypa, bytorda=bytorda, topspin=topspin, acqus_template=acqus_template,
        owner=owner, path=expdir / "acqus", data_minmax=minmax))
    a2 = _generic("acqu2s", topspin, owner, expdir / "acqu2s", date)
    _atomic_write(expdir / "acqu2s", _set_params(a2, {
        "TD": total, "NUC1": acq.nucleus, "BF1": acq.bf1_MHz, "SFO1": acq.sfo1_MHz}))
    if complete or not topspin.startswith(("2", "3")):
        _atomic_write(expdir / "audita.txt", render_audita(
            start, end if complete else None, topspin=topspin, owner=owner,
            path=expdir / "audita.txt", data=raw, n_values=acq.td * total,
            audita_template=audita_template))
    return expdir
