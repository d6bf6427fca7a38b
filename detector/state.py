"""The state ``watch`` keeps between restarts (:class:`WatchState`).

Saved as JSON (``state.json``) plus, when there are arrays, one safetensors file beside it
whose name carries a hash of its content (``state.3fa9c1d2e0b4.safetensors``). Never pickle.

Kill safety: :meth:`WatchState.save` writes the arrays file first (atomically, under its new
hashed name), then the JSON atomically (the commit point; it names the arrays file and its
SHA-256), then removes arrays files that no JSON refers to any more. A crash at any moment
leaves a JSON file and the arrays file it names, both complete: the previous state or the new
one. An orphan arrays file from a crash is cleaned up by the next save.

JSON here is Python's: NaN and infinities are written as ``NaN``/``Infinity`` so that opaque
detector and pipeline states round-trip exactly.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from lisentry.datasets.errors import InputError
from lisentry.detector.outputs import atomic_write_bytes

__all__ = ["WatchState", "StateFileError", "STATE_VERSION"]

#: Version written by this lisentry; files with a larger version are refused.
STATE_VERSION = 1

_FORMAT = "lisentry-watch-state"
_TENSOR_GROUPS = ("detector", "pipeline")


class StateFileError(InputError):
    """The watch state file cannot be used (corrupt, from a newer lisentry, arrays missing)."""


def _check_json_safe(obj: Any, where: str) -> None:
    """Raise TypeError when ``obj`` holds anything other than JSON builtins."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: mapping key {k!r} is not a str")
            _check_json_safe(v, f"{where}.{k}")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_json_safe(v, f"{where}[{i}]")
        return
    raise TypeError(f"{where}: {type(obj).__name__} is not JSON-safe (arrays go in the "
                    "tensors dict)")


def _as_numpy(name: str, value: Any) -> np.ndarray:
    if hasattr(value, "detach"):          # a torch tensor: no torch import needed here
        value = value.detach().cpu().numpy()
    arr = np.ascontiguousarray(value)
    if arr.dtype == object or arr.dtype.kind in "USV":
        raise TypeError(f"tensor {name!r} has dtype {arr.dtype}; only numeric arrays are stored")
    return arr


def _key_from_json(k: Any) -> Any:
    return tuple(_key_from_json(x) for x in k) if isinstance(k, list) else k


def _key_to_json(k: Any) -> Any:
    if isinstance(k, (np.integer,)):
        return int(k)
    if isinstance(k, (tuple, list)):
        return [_key_to_json(x) for x in k]
    if isinstance(k, (int, str)) and not isinstance(k, bool):
        return k
    raise TypeError(f"frame key {k!r} must be an int, a str or a tuple of them")


@dataclass
class WatchState:
    """Everything a restarted ``watch`` needs to go on where it stopped.

    Parameters
    ----------
    processed : list
        Frame keys already handled, in order (expnos, ``ser`` rows, or tuples of ints/strs).
    t0 : datetime or None
        Run start: acquisition start of the run's first readable frame (UTC); ``t_s`` of every
        later frame is measured from it.
    detector_state : dict
        Opaque JSON-safe state of the online detector (e.g. ``HysteresisLabeller.state_dict``).
    detector_tensors : dict of str to ndarray
        Arrays of the detector state (e.g. a GRU hidden state); numeric dtypes only.
    pipeline_state : dict
        Opaque JSON-safe state of the processing pipeline (normalisation reference, phase...).
    pipeline_tensors : dict of str to ndarray
        Arrays of the pipeline state.
    echem_offsets : dict of str to int
        Per potentiostat file: how far it has been read (bytes or rows, the follower decides).
    extra : dict
        Anything else JSON-safe.
    version : int
        Format version (``STATE_VERSION``).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "state.json"
    >>> s = WatchState.load(p)          # missing file: fresh start
    >>> s.mark_processed(5); s.detector_tensors["h"] = np.zeros(3, np.float32)
    >>> _ = s.save(p)
    >>> WatchState.load(p).is_processed(5)
    True
    """

    processed: list = field(default_factory=list)
    t0: datetime | None = None
    detector_state: dict = field(default_factory=dict)
    detector_tensors: dict = field(default_factory=dict)
    pipeline_state: dict = field(default_factory=dict)
    pipeline_tensors: dict = field(default_factory=dict)
    echem_offsets: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    version: int = STATE_VERSION

    def __post_init__(self):
        self.processed = [_key_from_json(_key_to_json(k)) for k in self.processed]
        self._seen = set(self.processed)

    # -- processed frames ---------------------------------------------------------------
    def mark_processed(self, key: Any) -> None:
        """Record ``key`` as handled (once; repeated keys are ignored)."""
        k = _key_from_json(_key_to_json(key))
        if k not in self._seen:
            self._seen.add(k)
            self.processed.append(k)

    def is_processed(self, key: Any) -> bool:
        return _key_from_json(_key_to_json(key)) in self._seen

    # -- (de)serialisation ---------------------------------------------------------------
    def _tensors(self) -> dict[str, np.ndarray]:
        out = {}
        for group in _TENSOR_GROUPS:
            for name, value in getattr(self, f"{group}_tensors").items():
                if not isinstance(name, str):
                    raise TypeError(f"{group}_tensors key {name!r} is not a str")
                out[f"{group}/{name}"] = _as_numpy(name, value)
        return out

    def to_json_dict(self, tensors_file: str | None = None,
                     tensors_sha256: str | None = None) -> dict:
        """The JSON document :meth:`save` writes (arrays are referenced, not included)."""
        for name in ("detector_state", "pipeline_state", "extra"):
            _check_json_safe(getattr(self, name), name)
        offsets = {}
        for k, v in self.echem_offsets.items():
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"echem_offsets[{k!r}] must be an int. Got {v!r}.")
            offsets[str(k)] = int(v)
        t0 = None
        if self.t0 is not None:
            t0 = (self.t0 if self.t0.tzinfo else self.t0.replace(tzinfo=timezone.utc)) \
                .astimezone(timezone.utc).isoformat()
        return {
            "format": _FORMAT,
            "version": STATE_VERSION,
            "saved_at": datetime.now(timezone.utc).isoformat(),
            "processed": [_key_to_json(k) for k in self.processed],
            "t0": t0,
            "detector_state": self.detector_state,
            "pipeline_state": self.pipeline_state,
            "echem_offsets": offsets,
            "extra": self.extra,
            "tensors_file": tensors_file,
            "tensors_sha256": tensors_sha256,
        }

    def save(self, path: str | Path) -> Path:
        """Save atomically to ``path`` (JSON) and, when there are arrays, a hashed
        ``<stem>.<hash>.safetensors`` beside it.

        Raises
        ------
        TypeError
            A state dict holds something that is not JSON-safe, or an array is not numeric
            (nothing is written then).
        InputError
            The folder cannot be written (the previous state stays intact).
        """
        from safetensors.numpy import save as st_save

        path = Path(path)
        tensors = self._tensors()
        doc = self.to_json_dict()      # validates before anything is written
        tensors_file = sha = None
        if tensors:
            blob = st_save(tensors, metadata={"format": _FORMAT, "version": str(STATE_VERSION)})
            sha = hashlib.sha256(blob).hexdigest()
            tensors_file = f"{path.stem}.{sha[:12]}.safetensors"
            target = path.with_name(tensors_file)
            if not (target.exists() and _sha256(target) == sha):
                atomic_write_bytes(target, blob)
            doc["tensors_file"], doc["tensors_sha256"] = tensors_file, sha
        text = json.dumps(doc, indent=1, allow_nan=True, ensure_ascii=False) + "\n"
        atomic_write_bytes(path, text.encode("utf-8"))
        own = re.compile(re.escape(path.stem) + r"\.[0-9a-f]{12}\.safetensors")
        for old in path.parent.glob(f"{path.stem}.*.safetensors"):
            if old.name != tensors_file and own.fullmatch(old.name):
                with contextlib.suppress(OSError):
                    old.unlink()
        # temp files of writes killed mid-way (the state file has one writer: watch)
        for pattern in (f".{path.name}.*.tmp", f".{path.stem}.*.safetensors.*.tmp"):
            for tmp in path.parent.glob(pattern):
                with contextlib.suppress(OSError):
                    tmp.unlink()
        return path

    @classmethod
    def load(cls, path: str | Path) -> "WatchState":
        """Load a saved state; a missing file gives a fresh ``WatchState()``.

        Raises
        ------
        StateFileError
            The file is not a lisentry watch state, is truncated or corrupt, comes from a newer
            lisentry, or its arrays file is missing or does not match its hash.
        """
        path = Path(path)
        if not path.exists():
            return cls()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise StateFileError(path, f"cannot read state file ({exc})") from None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StateFileError(path, f"corrupt state file ({exc.msg} at line {exc.lineno}); "
                                       "delete it to start afresh") from None
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
            raise StateFileError(path, "not a lisentry watch state file")
        version = doc.get("version")
        if not isinstance(version, int) or version > STATE_VERSION:
            raise StateFileError(path, f"state version {version!r} is newer than this lisentry "
                                       f"understands ({STATE_VERSION})")
        try:
            t0 = doc.get("t0")
            state = cls(
                processed=[_key_from_json(k) for k in doc.get("processed", [])],
                t0=None if t0 is None else datetime.fromisoformat(t0).astimezone(timezone.utc),
                detector_state=dict(doc.get("detector_state") or {}),
                pipeline_state=dict(doc.get("pipeline_state") or {}),
                echem_offsets={str(k): int(v) for k, v in
                               (doc.get("echem_offsets") or {}).items()},
                extra=dict(doc.get("extra") or {}),
                version=version,
            )
        except (TypeError, ValueError) as exc:
            raise StateFileError(path, f"malformed state field ({exc})") from None
        tensors_file = doc.get("tensors_file")
        if tensors_file:
            tpath = path.with_name(str(tensors_file))
            if Path(str(tensors_file)).name != str(tensors_file):
                raise StateFileError(path, f"tensors_file {tensors_file!r} must be a file name")
            if not tpath.exists():
                raise StateFileError(path, f"arrays file {tensors_file} is missing")
            blob = tpath.read_bytes()
            if hashlib.sha256(blob).hexdigest() != doc.get("tensors_sha256"):
                raise StateFileError(tpath, "arrays file does not match the SHA-256 in "
                                            f"{path.name}")
            from safetensors.numpy import load as st_load
            try:
                arrays = st_load(blob)
            except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
                raise StateFileError(tpath, f"corrupt safetensors file ({exc})") from None
            for key, arr in arrays.items():
                group, _, name = key.partition("/")
                if group not in _TENSOR_GROUPS or not name:
                    raise StateFileError(tpath, f"unexpected array {key!r}")
                getattr(state, f"{group}_tensors")[name] = arr
        return state

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WatchState):
            return NotImplemented
        a, b = self.to_json_dict(), other.to_json_dict()
        a.pop("saved_at"), b.pop("saved_at")
        if json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
            return False
        ta, tb = self._tensors(), other._tensors()
        return ta.keys() == tb.keys() and all(
            ta[k].dtype == tb[k].dtype and ta[k].shape == tb[k].shape
            and np.array_equal(ta[k], tb[k], equal_nan=ta[k].dtype.kind in "fc")
            for k in ta)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()

