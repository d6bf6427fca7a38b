"""The dataset store: a folder holding many runs of processed frames.

Layout of a dataset folder::

    manifest.json      package version, processing config, ppm grid, scenario configs, seeds,
                       content hash and CPU-independent content sketch, build environment,
                       normalisation choice, per-split run lists
    spectra.f32        float32 array (n_frames, n_ppm), C order, read through np.memmap (lazy)
    frames.parquet     one row per frame: run_id, index, expno, t_s, timestamps, potential/current
                       stats, status, label (may be empty), latent_* columns (synthetic runs)
    runs.parquet       one row per run: run_id, family, source, n_frames, offset, t_short_s, ...

Splits are by run (never frames of one run on both sides), optionally leaving whole scenario
families out. Frames are stored in run order, so each run is a contiguous block of rows.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from lisentry.datasets.errors import ConfigError, InputError
from lisentry.datasets.fingerprint import DataSketch, environment
from lisentry.datasets.frame import CLASSES, Frame, Run

MANIFEST = "manifest.json"
SPECTRA = "spectra.f32"
FRAMES = "frames.parquet"
RUNS = "runs.parquet"
FORMAT_VERSION = 1

FRAME_COLUMNS = ("run_id", "index", "expno", "t_s", "acq_start", "acq_end", "potential_V",
                 "potential_min_V", "potential_max_V", "current_A", "current_min_A",
                 "current_max_A", "charge_C", "status", "label", "source", "sfo1_MHz", "nucleus")


def package_version() -> str:
    try:
        return version("lisentry")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


def frame_rows(run: Run) -> list[dict]:
    """Frame metadata rows (no spectra) of a run, in order."""
    rows = []
    for f in run.frames:
        row = {"run_id": run.run_id, "index": f.index, "expno": f.expno, "t_s": f.t_s,
               "acq_start": f.acq_start.isoformat(), "acq_end": f.acq_end.isoformat(),
               "potential_V": f.potential_V, "potential_min_V": f.potential_min_V,
               "potential_max_V": f.potential_max_V, "current_A": f.current_A,
               "current_min_A": f.current_min_A, "current_max_A": f.current_max_A,
               "charge_C": f.charge_C, "status": f.status, "label": f.label or "",
               "source": str(f.source), "sfo1_MHz": f.sfo1_MHz, "nucleus": f.nucleus}
        for k, v in (f.latent or {}).items():
            row[f"latent_{k}"] = float(v) if v is not None else np.nan
        rows.append(row)
    return rows


class DatasetWriter:
    """Builds a dataset folder run by run; :meth:`close` writes the tables and the manifest.

    Spectra are appended to ``spectra.f32`` as they come, so memory stays bounded by one run.
    The folder is built under a temporary name and renamed into place at the end, so a crash
    never leaves a half-written dataset behind under the final name.
    """

    def __init__(self, out_dir: str | Path, *, ppm_grid: np.ndarray, processing: dict,
                 overwrite: bool = False, meta: dict | None = None):
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and not overwrite:
            raise ConfigError(f"{self.out_dir}: exists already (use --overwrite to replace it)")
        self.tmp_dir = self.out_dir.with_name(f".{self.out_dir.name}.building")
        if self.tmp_dir.exists():
            shutil.rmtree(self.tmp_dir)
        self.tmp_dir.mkdir(parents=True)
        self.ppm_grid = np.asarray(ppm_grid, dtype=float)
        self.processing = processing
        self.meta = dict(meta or {})
        self._spectra = open(self.tmp_dir / SPECTRA, "wb")
        self._hash = hashlib.sha256()
        self._sketch = DataSketch()
        self._frames: list[dict] = []
        self._runs: list[dict] = []
        self._n = 0

    def add_run(self, run: Run, *, family: str = "measured", split: str | None = None,
                info: dict | None = None) -> None:
        """Append one run (spectra must be on this dataset's grid)."""
        if not len(run):
            return
        if run.ppm_grid.shape != self.ppm_grid.shape or not np.allclose(run.ppm_grid, self.ppm_grid):
            raise ConfigError(f"run {run.run_id}: ppm grid differs from the dataset's")
        if any(r["run_id"] == run.run_id for r in self._runs):
            raise ConfigError(f"run {run.run_id}: a run of that id is already in the dataset")
        spectra = np.ascontiguousarray(run.spectra(), dtype=np.float32)
        self._spectra.write(spectra.tobytes())
        self._hash.update(spectra.tobytes())
        rows = frame_rows(run)
        self._sketch.update(spectra, rows)
        self._frames.extend(rows)
        self._hash.update(json.dumps(rows, default=str, sort_keys=True).encode())
        self._runs.append({"run_id": run.run_id, "family": family, "split": split or "",
                           "n_frames": len(run), "offset": self._n,
                           "info": json.dumps(info or {}, default=_json_default, sort_keys=True),
                           "skipped": json.dumps(run.skipped)})
        self._n += len(run)

    def close(self) -> "Dataset":
        self._spectra.close()
        frames = pd.DataFrame(self._frames)
        runs = pd.DataFrame(self._runs, columns=["run_id", "family", "split", "n_frames", "offset",
                                                 "info", "skipped"])
        frames.to_parquet(self.tmp_dir / FRAMES, index=False)
        runs.to_parquet(self.tmp_dir / RUNS, index=False)
        manifest = {
            "format_version": FORMAT_VERSION,
            "package_version": package_version(),
            "n_frames": self._n, "n_runs": len(self._runs),
            "ppm_grid": {"min": float(self.ppm_grid[0]), "max": float(self.ppm_grid[-1]),
                         "n": int(len(self.ppm_grid))},
            "processing": self.processing,
            "normalisation": "per run: divided by the total absolute intensity of the first frame(s); "
                             "grid points a run does not cover are NaN (masked)",
            "classes": list(CLASSES),
            "content_hash": self._hash.hexdigest(),
            # the hash is of exact bytes, which depend on the CPU; the sketch is not
            # (lisentry.datasets.fingerprint)
            "content_sketch": self._sketch.to_dict(),
            "environment": environment(),
            **self.meta,
        }
        _write_json_atomic(self.tmp_dir / MANIFEST, manifest)
        if self.out_dir.exists():
            shutil.rmtree(self.out_dir)
        os.replace(self.tmp_dir, self.out_dir)
        return Dataset(self.out_dir)


@dataclass
class RunView:
    """One run of a dataset: lazy spectra and its frame table."""

    run_id: str
    family: str
    spectra: np.ndarray          # (n_frames, n_ppm) memmap slice
    frames: pd.DataFrame
    info: dict

    @property
    def labels(self) -> np.ndarray:
        return self.frames["label"].to_numpy()


class Dataset:
    """A dataset folder opened lazily (spectra are memory-mapped, never loaded whole).

    Examples
    --------
    >>> ds = Dataset("data/smoke")            # doctest: +SKIP
    >>> [r.run_id for r in ds.iter_runs(ds.split()["val"])]  # doctest: +SKIP
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise InputError(self.path, "dataset folder missing" if not self.path.exists()
                             else "not a folder (a dataset is a folder)")
        self.manifest = read_manifest(self.path)
        g = self.manifest["ppm_grid"]
        self.ppm_grid = np.linspace(g["min"], g["max"], g["n"])
        n = int(self.manifest["n_frames"])
        # The manifest is the commit point: rows past its counts are left by an interrupted
        # add-measured and are not part of the dataset.
        self.frames = _read_table(self.path / FRAMES, ("run_id", "label"), n, "n_frames")
        n_runs = self.manifest.get("n_runs")
        self.runs = _read_table(self.path / RUNS, _RUN_COLUMNS,
                                n_runs if isinstance(n_runs, int) else None, "n_runs")
        self.spectra = _open_spectra(self.path / SPECTRA, n, len(self.ppm_grid))
        end = (self.runs["offset"].astype(int) + self.runs["n_frames"].astype(int)).max() \
            if len(self.runs) else 0
        if end > n:
            raise InputError(self.path / RUNS, f"runs reach frame {end}, but the manifest has "
                                               f"n_frames={n} (damaged dataset)")

    def __len__(self) -> int:
        return len(self.runs)

    @property
    def run_ids(self) -> list[str]:
        return self.runs["run_id"].tolist()

    def run(self, run_id: str) -> RunView:
        row = self.runs.loc[self.runs["run_id"] == run_id]
        if row.empty:
            raise KeyError(run_id)
        r = row.iloc[0]
        a, n = int(r["offset"]), int(r["n_frames"])
        return RunView(run_id, r["family"], self.spectra[a:a + n],
                       self.frames.iloc[a:a + n].reset_index(drop=True), json.loads(r["info"]))

    def iter_runs(self, run_ids: Iterable[str] | None = None) -> Iterator[RunView]:
        for rid in (self.run_ids if run_ids is None else run_ids):
            yield self.run(rid)

    def split(self, *, val_frac: float = 0.15, test_frac: float = 0.15, seed: int = 0,
              leave_out_families: Sequence[str] = ()) -> dict[str, list[str]]:
        """Split run ids into train/val/test by run; ``leave_out`` holds whole families.

        A run whose ``split`` column is set at build time keeps it (e.g. measured runs
        reserved for evaluation).
        """
        unknown = set(leave_out_families) - set(self.runs["family"])
        if unknown:
            raise ConfigError(f"unknown families to leave out: {sorted(unknown)}; "
                              f"known: {sorted(set(self.runs['family']))}")
        rng = np.random.default_rng(seed)
        out = {"train": [], "val": [], "test": [], "leave_out": []}
        for fam, grp in self.runs.groupby("family", sort=True):
            ids = grp["run_id"].tolist()
            if fam in leave_out_families:
                out["leave_out"] += ids
                continue
            fixed = grp[grp["split"] != ""]
            for rid, sp in zip(fixed["run_id"], fixed["split"]):
                out.setdefault(sp, []).append(rid)
            free = [i for i in ids if i not in set(fixed["run_id"])]
            rng.shuffle(free)
            n_val = int(round(val_frac * len(free)))
            n_test = int(round(test_frac * len(free)))
            out["val"] += free[:n_val]
            out["test"] += free[n_val:n_val + n_test]
            out["train"] += free[n_val + n_test:]
        # Tiny datasets: rounding per family can leave a split empty; move whole runs over.
        for name, frac in (("val", val_frac), ("test", test_frac)):
            if frac > 0 and not out[name] and len(out["train"]) > 1:
                out[name].append(out["train"].pop(int(rng.integers(len(out["train"])))))
        return out

    def class_balance(self) -> pd.DataFrame:
        """Frames per class and family (rows: family, columns: classes + unlabelled)."""
        fam = self.frames["run_id"].map(dict(zip(self.runs["run_id"], self.runs["family"])))
        lab = self.frames["label"].replace("", "unlabelled")
        table = pd.crosstab(fam, lab)
        cols = [c for c in (*CLASSES, "unlabelled") if c in table.columns]
        return table[cols]


_RUN_COLUMNS = ("run_id", "family", "split", "n_frames", "offset", "info")


def _short(exc: BaseException, n: int = 100) -> str:
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return msg if len(msg) <= n else msg[:n] + "..."


def read_manifest(folder: Path) -> dict:
    """The checked ``manifest.json`` of a dataset folder (one-line :class:`InputError` otherwise)."""
    mf = Path(folder) / MANIFEST
    if not mf.exists():
        raise InputError(mf, "no dataset manifest (is this a dataset folder?)")
    try:
        m = json.loads(mf.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(mf, f"cannot be read ({_short(exc)})") from None
    except json.JSONDecodeError as exc:
        raise InputError(mf, f"not valid JSON ({_short(exc)}); the dataset is damaged") from None
    if not isinstance(m, dict):
        raise InputError(mf, f"not a JSON object (got a {type(m).__name__}); the dataset is damaged")
    for key in ("ppm_grid", "n_frames", "processing", "content_hash"):
        if key not in m:
            raise InputError(mf, f"key {key!r} missing; the dataset is damaged")
    g = m["ppm_grid"]
    ok = isinstance(g, dict) and all(isinstance(g.get(k), (int, float)) and not isinstance(g.get(k), bool)
                                     for k in ("min", "max", "n"))
    if not ok or not isinstance(g["n"], int) or g["n"] < 1 or not all(map(np.isfinite, (g["min"], g["max"]))):
        raise InputError(mf, f"ppm_grid must be {{min, max, n}} with finite numbers and n >= 1; "
                             f"got {str(g)[:60]}")
    n = m["n_frames"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise InputError(mf, f"n_frames must be an integer >= 0; got {str(n)[:40]!r}")
    if not isinstance(m["processing"], dict):
        raise InputError(mf, "processing must be an object")
    if not isinstance(m["content_hash"], str):
        raise InputError(mf, "content_hash must be a string")
    return m


def _read_table(path: Path, columns: Sequence[str], n: int | None, what: str) -> pd.DataFrame:
    if not path.exists():
        raise InputError(path, "missing; the dataset is damaged")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds
        raise InputError(path, f"cannot be read as parquet ({_short(exc)}); the dataset is damaged") from None
    missing = [c for c in columns if c not in df.columns]
    if missing and len(df):
        raise InputError(path, f"column(s) {missing} missing; the dataset is damaged")
    if n is not None:
        if len(df) < n:
            raise InputError(path, f"{len(df)} rows, but the manifest has {what}={n}; "
                                   "the dataset is damaged")
        if len(df) > n:
            df = df.iloc[:n].reset_index(drop=True)
    return df


def _open_spectra(path: Path, n: int, n_ppm: int) -> np.ndarray:
    if not n:
        return np.zeros((0, n_ppm), np.float32)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputError(path, "missing; the dataset is damaged") from None
    except OSError as exc:
        raise InputError(path, f"cannot be read ({_short(exc)})") from None
    need = n * n_ppm * 4
    if size < need:
        raise InputError(path, f"truncated: {size} bytes, expected {need} ({n} frames x {n_ppm} "
                               "float32 points); the dataset is damaged")
    try:
        return np.memmap(path, dtype=np.float32, mode="r", shape=(n, n_ppm))
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot be mapped ({_short(exc)})") from None


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2, default=_json_default)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
