"""Output files of ``label`` and ``watch``: labels tables, skipped frames, provenance, events.

Every whole-file output is written **atomically**: to a temporary file in the same folder,
flushed and ``fsync``-ed, then moved over the target with :func:`os.replace` (atomic on POSIX
and on Windows/NTFS), so a crash leaves either the old file or the new one, never half of one.
The events file of ``watch`` is **append-only** JSON lines (:class:`EventLog`): one line per
event, flushed and ``fsync``-ed before ``append`` returns, so a killed watcher loses at most the
line it was writing, and a restarted one finds out which frames are already recorded.

JSON written here is standard JSON: NaN and infinities become ``null``; numpy scalars and
arrays, paths and datetimes are converted to builtins / ISO 8601 strings (:func:`to_jsonable`).
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import sys
import tempfile
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from lisentry.datasets.errors import ConfigError, InputError
from lisentry.datasets.frame import CLASSES

__all__ = ["LABEL_COLUMNS", "PROBA_COLUMNS", "SKIPPED_COLUMNS", "write_labels_atomic",
           "write_skipped", "write_provenance", "atomic_write_bytes", "output_stem",
           "to_jsonable", "EventLog", "EventLogError"]

#: Probability columns, in class (severity) order.
PROBA_COLUMNS: tuple[str, ...] = tuple(f"p_{c}" for c in CLASSES)

#: The columns of every labels file and of every ``watch`` frame event (interfaces.md).
LABEL_COLUMNS: tuple[str, ...] = (
    "frame", "timestamp", "t_s", "label", *PROBA_COLUMNS, "potential_V", "current_A",
    "ood_score", "cluster_amount", "cluster_shift_ppm", "metal_amount", "ce_amount", "status")

#: Columns of ``<stem>.skipped.csv``.
SKIPPED_COLUMNS: tuple[str, ...] = ("frame", "path", "reason")

_STR_COLUMNS = ("timestamp", "label", "status")
_INT_COLUMNS = ("frame",)
_OUTPUT_SUFFIXES = (".csv", ".parquet", ".pq", ".jsonl", ".json", ".tsv")


class EventLogError(InputError):
    """An events file has a corrupt line that is not a torn last line."""


# ---------------------------------------------------------------------------------------
# atomic whole-file writes
# ---------------------------------------------------------------------------------------
def _write_and_sync(fh, data: bytes) -> None:
    """Write all of ``data`` to the open binary file ``fh``, flush and fsync it."""
    fh.write(data)
    fh.flush()
    os.fsync(fh.fileno())


def _fsync_dir(folder: Path) -> None:
    """fsync a folder so a rename in it survives power loss (no-op where unsupported)."""
    if os.name == "nt":  # Windows cannot open folders; NTFS journals the rename itself
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _replace(src: str, dst: Path) -> None:
    """os.replace with a short retry: on Windows a reader (antivirus, Excel, an indexer)
    holding the target open makes the rename fail with PermissionError for a moment."""
    delays = (0.05, 0.1, 0.2, 0.4, 0.8) if os.name == "nt" else ()
    for d in delays:
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            time.sleep(d)
    os.replace(src, dst)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Replace ``path`` by ``data`` atomically (temp file in the same folder, fsync, rename).

    Parameters
    ----------
    path : str or Path
        Target file; its folder must exist.
    data : bytes
        The complete new content.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        When the folder does not exist or cannot be written. The old file, if any, is intact
        and no temporary file is left behind.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(path, f"folder {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise InputError(path, f"cannot write in {folder}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            _write_and_sync(fh, data)
        _replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise InputError(path, f"cannot write: {exc.strerror or exc}") from None
        raise
    _fsync_dir(folder)
    return path


def output_stem(path: str | Path) -> Path:
    """The stem that sidecars hang on: ``out/run7.csv`` -> ``out/run7``.

    Only known output suffixes (``.csv .parquet .pq .jsonl .json .tsv``) are removed, so
    ``run.1`` stays ``run.1``.
    """
    path = Path(path)
    return path.with_suffix("") if path.suffix.lower() in _OUTPUT_SUFFIXES else path


# ---------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------
def to_jsonable(obj: Any) -> Any:
    """Convert ``obj`` to JSON builtins: NaN/inf -> None, numpy -> python, Path -> str,
    datetime -> ISO 8601, tuples/sets -> lists, mapping keys -> str.

    Raises
    ------
    TypeError
        For objects with no faithful JSON form (never silently ``str()``-ed).

    Examples
    --------
    >>> to_jsonable({"a": float("nan"), "b": np.int64(3), "c": (1.5, np.float32(2))})
    {'a': None, 'b': 3, 'c': [1.5, 2.0]}
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, np.bool_):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Mapping):
        return {str(k) if not isinstance(k, str) else k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [to_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (datetime, date)):
        return obj.isoformat()
    if isinstance(obj, pd.Timestamp):
        return obj.isoformat()
    if obj is pd.NA or obj is pd.NaT:
        return None
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable: {obj!r}")


def _dumps_line(event: Mapping[str, Any]) -> bytes:
    return (json.dumps(to_jsonable(event), allow_nan=False, ensure_ascii=False,
                       separators=(",", ":")) + "\n").encode("utf-8")


# ---------------------------------------------------------------------------------------
# labels / skipped / provenance
# ---------------------------------------------------------------------------------------
_INT_TYPES = frozenset({int, np.int64, np.int32})
_NUM_TYPES = _INT_TYPES | {float, np.float64, np.float32}


def _str_cell(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def _labels_frame_fast(rows: list) -> pd.DataFrame | None:
    """The table of :func:`_labels_frame` built column by column, for the usual input (every
    row has the same keys, including all ``LABEL_COLUMNS``; ints in the int columns, numbers
    or None in the float columns); None otherwise (the general path decides)."""
    keys = tuple(rows[0])
    if any(c not in rows[0] for c in LABEL_COLUMNS) or any(tuple(r) != keys for r in rows):
        return None
    extra = [c for c in keys if c not in LABEL_COLUMNS]
    cols: dict = {}
    for c in LABEL_COLUMNS:
        values = [r[c] for r in rows]
        if c in _INT_COLUMNS:
            if not all(v.__class__ in _INT_TYPES for v in values):
                return None
            cols[c] = np.asarray(values, dtype=np.int64)
        elif c in _STR_COLUMNS:
            arr = np.empty(len(values), dtype=object)
            arr[:] = [_str_cell(v) for v in values]
            cols[c] = arr
        else:
            if not all(v is None or v.__class__ in _NUM_TYPES for v in values):
                return None
            cols[c] = np.asarray([math.nan if v is None else v for v in values], dtype=np.float64)
    for c in extra:
        cols[c] = [r[c] for r in rows]
    df = pd.DataFrame(cols, columns=list(LABEL_COLUMNS) + extra)
    for c in _STR_COLUMNS:                  # object, as the general path leaves them
        df[c] = df[c].astype(object)
    return df


def _labels_frame(rows_or_df: Any) -> pd.DataFrame:
    if isinstance(rows_or_df, pd.DataFrame):
        df = rows_or_df.reset_index(drop=True).copy()
    else:
        rows = list(rows_or_df)
        if rows and isinstance(rows[0], Mapping):
            fast = _labels_frame_fast(rows)
            if fast is not None:
                return fast
        df = pd.DataFrame.from_records([dict(r) for r in rows]) if rows else pd.DataFrame(
            columns=list(LABEL_COLUMNS))
    missing = [c for c in LABEL_COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(f"Labels table lacks column(s) {missing}; required: "
                          f"{list(LABEL_COLUMNS)}.")
    extra = [c for c in df.columns if c not in LABEL_COLUMNS]
    df = df[list(LABEL_COLUMNS) + extra]
    for c in LABEL_COLUMNS:
        if c in _INT_COLUMNS:
            df[c] = df[c].astype("int64")
        elif c in _STR_COLUMNS:
            df[c] = df[c].map(_str_cell)
            df[c] = df[c].astype(object)
        else:
            df[c] = pd.to_numeric(df[c], errors="raise").astype("float64")
    return df


def write_labels_atomic(path: str | Path, rows_or_df: Any) -> Path:
    """Write a labels table (``LABEL_COLUMNS`` first, extra columns after) atomically.

    Parameters
    ----------
    path : str or Path
        ``*.csv`` (UTF-8, ``\\n`` line ends, NaN as an empty field, floats round-trip exactly)
        or ``*.parquet`` / ``*.pq``.
    rows_or_df : DataFrame or iterable of mappings
        One row per frame with at least the ``LABEL_COLUMNS`` keys.

    Returns
    -------
    Path

    Raises
    ------
    ConfigError
        Unknown extension or missing columns.
    InputError
        The folder cannot be written (the old file stays intact).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise ConfigError(f"{path}: labels output must end in .csv or .parquet "
                          f"(got {path.suffix or 'no extension'!r}).")
    df = _labels_frame(rows_or_df)
    if suffix == ".csv":
        data = df.to_csv(index=False, lineterminator="\n", na_rep="",
                         float_format=None).encode("utf-8")
    else:
        buf = io.BytesIO()
        pdf = df.copy()
        for c in _STR_COLUMNS:
            pdf[c] = pdf[c].astype("string")
        pdf.to_parquet(buf, index=False, engine="pyarrow")
        data = buf.getvalue()
    return atomic_write_bytes(path, data)


def write_skipped(path_stem: str | Path, skipped: Iterable[Any]) -> Path:
    """Write ``<stem>.skipped.csv`` (columns ``frame, path, reason``) atomically.

    The file is written even when nothing was skipped (header only), so its presence says
    that the run was checked.

    Parameters
    ----------
    path_stem : str or Path
        The output stem or the labels file itself (see :func:`output_stem`).
    skipped : iterable of (frame, path, reason) tuples or mappings with those keys
        ``Run.skipped`` has this shape.
    """
    recs = []
    for s in skipped:
        if isinstance(s, Mapping):
            recs.append({k: s.get(k) for k in SKIPPED_COLUMNS})
        else:
            frame, p, reason = s
            recs.append({"frame": frame, "path": p, "reason": reason})
    df = pd.DataFrame.from_records(recs, columns=list(SKIPPED_COLUMNS))
    df["frame"] = df["frame"].astype("Int64")
    df["path"] = df["path"].map(str).astype(object)
    df["reason"] = df["reason"].map(lambda r: " ".join(str(r).split())).astype(object)
    out = Path(f"{output_stem(path_stem)}.skipped.csv")
    return atomic_write_bytes(out, df.to_csv(index=False, lineterminator="\n").encode("utf-8"))


def write_provenance(path_stem: str | Path, info: Mapping[str, Any]) -> Path:
    """Write the provenance sidecar ``<stem>.json`` atomically (indented, UTF-8, NaN -> null).

    Parameters
    ----------
    path_stem : str or Path
        The output stem or the labels file itself (see :func:`output_stem`).
    info : mapping
        Model bundle hash and card, pipeline config, H, package version, command line, input
        paths (the caller decides; anything :func:`to_jsonable` accepts).
    """
    out = Path(f"{output_stem(path_stem)}.json")
    text = json.dumps(to_jsonable(info), indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    return atomic_write_bytes(out, text.encode("utf-8"))


# ---------------------------------------------------------------------------------------
# append-only events
# ---------------------------------------------------------------------------------------
def _hashable_key(v: Any) -> Any:
    v = to_jsonable(v)
    if isinstance(v, list):
        return tuple(_hashable_key(x) for x in v)
    return v


def _exclusive_lock(lock_path: Path, for_path: Path):
    """Open ``lock_path`` and take an exclusive, non-blocking lock on it; the open file is the
    lock (close it to release; the OS releases it when the process dies). Raises
    :class:`EventLogError` naming ``for_path`` when another process holds it."""
    try:
        fh = open(lock_path, "a+b")
    except OSError as exc:
        raise EventLogError(lock_path, f"cannot create the lock file: {exc.strerror}") from None
    try:
        if os.name == "nt":
            import msvcrt
            fh.seek(0)
            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise EventLogError(for_path, f"another process is writing it (lock {lock_path.name} is "
                                      "held): stop that watcher, or give another --events file") \
            from None
    return fh


class EventLog:
    """Append-only JSON-lines file of ``watch`` events; safe against kill -9.

    One process at a time: opening takes an exclusive lock on ``<path>.lock`` (released by
    :meth:`close` or when the process ends, however it ends); a second writer is refused with
    :class:`EventLogError`.

    On opening an existing file it reads every line to learn which frames are already
    recorded (:meth:`already_logged`). A last line without its newline (the watcher was killed
    mid-write; trailing NUL bytes after a power cut count as part of it) is cut away, and one
    line saying so goes to stderr; ``torn_bytes`` tells how many bytes were dropped. Any other
    unreadable line raises :class:`EventLogError` (file and line number).

    Parameters
    ----------
    path : str or Path
        The events file (created, with its folder's entry fsync-ed, when missing).
    key : str
        The event field that identifies a frame (``"frame"``: the expno / ser row).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "ev.jsonl"
    >>> with EventLog(p) as log:
    ...     log.append({"frame": 3, "label": "normal_lithiation", "t_s": float("nan")})
    >>> EventLog(p).already_logged(3), p.read_text()
    (True, '{"frame":3,"label":"normal_lithiation","t_s":null}\\n')
    """

    def __init__(self, path: str | Path, key: str = "frame"):
        self.path = Path(path)
        self.key = key
        self.torn_bytes = 0
        self._keys: dict[Any, set] = {}     # frame key -> set of "event" kinds seen
        self._n = 0
        self._last: dict | None = None
        self._fh = None
        self._lock = None
        if not self.path.parent.is_dir():
            raise EventLogError(self.path, f"folder {self.path.parent} does not exist")
        # one writer per file: a second watcher on the same events would repeat every frame
        # and fire every alarm twice (the lock goes with the process, kill -9 included)
        self._lock = _exclusive_lock(Path(f"{self.path}.lock"), self.path)
        try:
            existed = self.path.exists()
            if existed:
                self._recover()
            try:
                self._fh = open(self.path, "ab")
            except OSError as exc:
                raise EventLogError(self.path, f"cannot open for appending: {exc.strerror}") from None
            if not existed:
                _fsync_dir(self.path.parent)
        except BaseException:
            self._release()
            raise

    # reading back ---------------------------------------------------------------------
    def _recover(self) -> None:
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise EventLogError(self.path, f"cannot read: {exc.strerror}") from None
        end = data.rfind(b"\n") + 1            # bytes up to and including the last newline
        tail = data[end:]
        if tail:
            self.torn_bytes = len(tail)
            try:
                with open(self.path, "r+b") as fh:
                    fh.truncate(end)
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as exc:
                raise EventLogError(self.path, f"cannot cut torn last line: {exc.strerror}") \
                    from None
            print(f"lisentry: {self.path}: dropped a torn last line ({len(tail)} bytes, "
                  "writer was interrupted)", file=sys.stderr)
        for lineno, raw in enumerate(data[:end].splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                ev = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                msg = getattr(exc, "msg", None) or str(exc)
                raise EventLogError(self.path, f"line {lineno} is not valid JSON ({msg})") \
                    from None
            if not isinstance(ev, dict):
                raise EventLogError(self.path, f"line {lineno} is not a JSON object")
            self._remember(ev)

    def _remember(self, ev: Mapping[str, Any]) -> None:
        self._n += 1
        self._last = dict(ev)
        if self.key in ev:
            kind = ev.get("event", "frame")
            self._keys.setdefault(_hashable_key(ev[self.key]), set()).add(kind)

    def already_logged(self, frame_key: Any, event: str | None = None) -> bool:
        """Whether an event for ``frame_key`` is in the file.

        Parameters
        ----------
        frame_key : int, str or tuple
            Value of the ``key`` field (numpy integers are fine).
        event : str, optional
            Only count events whose ``"event"`` field equals this (events without the field
            count as ``"frame"``); ``None`` counts any event.
        """
        kinds = self._keys.get(_hashable_key(frame_key))
        if not kinds:
            return False
        return True if event is None else event in kinds

    @property
    def logged_keys(self) -> list:
        """Frame keys recorded so far, in first-seen order."""
        return list(self._keys)

    @property
    def n_events(self) -> int:
        return self._n

    @property
    def last_event(self) -> dict | None:
        return None if self._last is None else dict(self._last)

    # writing --------------------------------------------------------------------------
    def append(self, event: Mapping[str, Any]) -> None:
        """Append one event as one line; returns after the line is on disk (flush + fsync).

        Raises
        ------
        TypeError
            When the event holds something with no JSON form (nothing is written then).
        EventLogError
            When the file is closed or the disk write fails.
        """
        if self._fh is None or self._fh.closed:
            raise EventLogError(self.path, "event log is closed")
        line = _dumps_line(event)
        try:
            _write_and_sync(self._fh, line)
        except OSError as exc:
            raise EventLogError(self.path, f"cannot append: {exc.strerror or exc}") from None
        self._remember(json.loads(line))

    def close(self) -> None:
        if self._fh is not None and not self._fh.closed:
            self._fh.close()
        self._release()

    def _release(self) -> None:
        lock, self._lock = getattr(self, "_lock", None), None
        if lock is not None:
            with contextlib.suppress(OSError):
                lock.close()          # closing the descriptor drops the lock

    def __enter__(self) -> "EventLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        return f"EventLog({str(self.path)!r}, events={self._n})"
