"""What a dataset is, independent of the CPU it was built on.

A dataset's ``content_hash`` is a SHA-256 over the float32 bytes of its spectra, so it changes
with the last bit of any value. Those bits depend on the machine: numpy picks its SIMD kernels
(``exp``, ``sin``, ``cos`` ...) by CPU at run time, and rebuilding ``configs/dataset-smoke.yaml``
with numpy's AVX-512 and AVX2 kernels switched off (``NPY_DISABLE_CPU_FEATURES``) changed about 4 in a
million spectrum values by one float32 ulp (relative 1e-7), labels and latents identical, and
so the hash. The hash therefore says "these exact bytes", not "this data".

:class:`DataSketch` answers the second question. It keeps

* an exact hash of what rounding cannot touch: run ids, frame indices, labels, statuses, and
  the frame count of each run;
* additive float64 sums of the spectra (sum, sum of squares, sums against 8 fixed ±1 patterns
  over the ppm points, count of masked NaN points) and of every numeric frame column;
* (version 2) the same pattern sums and column sums with each frame weighted by ±1 signs drawn
  from a hash of its run id and frame index, so that data moved to another frame (two frames'
  spectra or potentials swapped, a run's frames reordered) changes them; plain sums over frames
  cannot see that. With 8 independent signs a swap of two different frames goes unseen with
  probability 2^-8 by the spectra and again by each column.

Two sketches agree when the exact part is equal and every sum agrees, relative to its own sum of
magnitudes, within 3e-7 for the spectra and 1e-9 for the frame columns. The spectra are stored as
float32, so a value rounded differently moves by one ulp, at most 1.2e-7 of itself: even if every
value of the dataset moved by two ulps the spectrum sums would stay within 3e-7. The frame columns
are float64 (rounding ~1e-16). In practice the rebuild above moved the sums by ~1e-15. A real
change (another seed, line width or phase error, a changed label or potential, one frame more) is
caught; a change smaller than 3e-7 of the whole dataset's spectral magnitude (one value of one
frame nudged) is not -- that is what the exact ``content_hash`` is for. Sums are additive, so
appending a measured run to a dataset updates its sketch without re-reading it.
"""
from __future__ import annotations

import hashlib
import json
import platform
from importlib.metadata import PackageNotFoundError, version

import numpy as np

N_PATTERNS = 8
SKETCH_VERSION = 2
#: relative tolerances of compare_sketches (see the module docstring for why)
RTOL_SPECTRA = 3e-7
RTOL_COLUMNS = 1e-9
# columns hashed exactly: strings and integers that no floating-point rounding can change
EXACT_COLUMNS = ("run_id", "index", "label", "status")


def _patterns(n_points: int) -> np.ndarray:
    """(n_points, N_PATTERNS) matrix of ±1, from integer arithmetic only (no float functions,
    whose last bit could depend on the CPU)."""
    i = np.arange(n_points, dtype=np.uint64)[:, None]
    k = np.arange(1, N_PATTERNS + 1, dtype=np.uint64)[None, :]
    bits = ((i * np.uint64(2654435761) + k * np.uint64(40503)) >> np.uint64(11)) & np.uint64(1)
    return np.where(bits == 1, 1.0, -1.0)


def _frame_signs(df, n: int) -> np.ndarray:
    """(n, N_PATTERNS) ±1 signs per frame from a SHA-256 of ``run_id:index`` (the frame's
    identity, not its position in the table, so the signs follow the frame wherever it is read)."""
    if n == 0:
        return np.zeros((0, N_PATTERNS))
    rid = df["run_id"].astype(str).tolist() if "run_id" in df.columns else [""] * n
    idx = df["index"].astype(str).tolist() if "index" in df.columns else [str(i) for i in range(n)]
    first = np.array([hashlib.sha256(f"{r}:{i}".encode()).digest()[0] for r, i in zip(rid, idx)],
                     dtype=np.uint8)
    bits = (first[:, None] >> np.arange(N_PATTERNS, dtype=np.uint8)[None, :]) & 1
    return np.where(bits == 1, 1.0, -1.0)


class DataSketch:
    """Additive, CPU-independent summary of a dataset's spectra and frame table.

    Use :meth:`update` once per run (spectra ``(n_frames, n_ppm)`` float32 with NaN for masked
    points, and the run's frame rows as dicts or a DataFrame), then :meth:`to_dict` for the
    manifest. :func:`compare_sketches` tells whether two sketches describe the same data.
    """

    def __init__(self, state: dict | None = None):
        s = state or {}
        self.n_frames = int(s.get("n_frames", 0))
        self.exact = s.get("exact", hashlib.sha256(b"lisentry-sketch-1").hexdigest())
        self.spectra_sum = float(s.get("spectra_sum", 0.0))
        self.spectra_abs = float(s.get("spectra_abs", 0.0))
        self.spectra_sq = float(s.get("spectra_sq", 0.0))
        self.spectra_nan = int(s.get("spectra_nan", 0))
        self.patterns = [float(v) for v in s.get("patterns", [0.0] * N_PATTERNS)]
        self.columns = {k: [float(v[0]), float(v[1])] for k, v in s.get("columns", {}).items()}
        self.frame_patterns = [float(v) for v in s.get("frame_patterns", [0.0] * N_PATTERNS)]
        self.frame_columns = {k: [float(x) for x in v] for k, v in s.get("frame_columns", {}).items()}

    def update(self, spectra: np.ndarray, rows) -> "DataSketch":
        import pandas as pd

        x = np.asarray(spectra, dtype=np.float64)
        nan = ~np.isfinite(x)
        x = np.where(nan, 0.0, x)
        df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        if len(df) != x.shape[0]:
            raise ValueError(f"sketch update: {x.shape[0]} spectra but {len(df)} frame rows")
        signs = _frame_signs(df, len(df))
        self.n_frames += int(x.shape[0])
        self.spectra_nan += int(nan.sum())
        self.spectra_sum += float(x.sum())
        self.spectra_abs += float(np.abs(x).sum())
        self.spectra_sq += float((x * x).sum())
        if x.size:
            per_frame = x @ _patterns(x.shape[1])  # (n_frames, N_PATTERNS)
            p = per_frame.sum(axis=0)
            self.patterns = [a + float(b) for a, b in zip(self.patterns, p)]
            q = (per_frame * signs).sum(axis=0)
            self.frame_patterns = [a + float(b) for a, b in zip(self.frame_patterns, q)]
        h = hashlib.sha256(self.exact.encode())
        exact = [c for c in EXACT_COLUMNS if c in df.columns]
        h.update(json.dumps(df[exact].astype(str).values.tolist()).encode())
        self.exact = h.hexdigest()
        for c in df.columns:
            if c in EXACT_COLUMNS:
                continue
            # coerce, so that a column of Nones in one run's rows and of NaNs in the stored
            # table give the same sketch; text columns (timestamps, paths) come out all-NaN
            v = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64)
            ok = np.isfinite(v)
            v, sg = v[ok], signs[ok]
            if not v.size:
                continue
            acc = self.columns.setdefault(c, [0.0, 0.0])
            acc[0] += float(v.sum())
            acc[1] += float(np.abs(v).sum())
            fc = self.frame_columns.setdefault(c, [0.0] * N_PATTERNS)
            for j, b in enumerate(v @ sg):
                fc[j] += float(b)
        return self

    def to_dict(self) -> dict:
        return {"version": SKETCH_VERSION, "n_frames": self.n_frames, "exact": self.exact,
                "spectra_sum": self.spectra_sum, "spectra_abs": self.spectra_abs,
                "spectra_sq": self.spectra_sq, "spectra_nan": self.spectra_nan,
                "patterns": self.patterns, "columns": dict(sorted(self.columns.items())),
                "frame_patterns": self.frame_patterns,
                "frame_columns": dict(sorted(self.frame_columns.items()))}


def sketch_dataset(ds) -> dict:
    """Sketch of an existing :class:`~lisentry.datasets.store.Dataset` (reads it run by run)."""
    sk = DataSketch()
    for r in ds.iter_runs():
        sk.update(r.spectra, r.frames)
    return sk.to_dict()


def compare_sketches(a: dict, b: dict, *, rtol_spectra: float = RTOL_SPECTRA,
                     rtol_columns: float = RTOL_COLUMNS) -> tuple[bool, float, str]:
    """Whether two sketches describe the same data up to floating-point rounding.

    Returns ``(same, worst_relative_difference, reason)``; ``reason`` names the first thing that
    differs ("" when the sketches agree). Relative differences are taken against each sum's own
    sum of magnitudes, so a sum that cancels to ~0 is not over-weighted.

    A version-1 sketch (written before the per-frame signed sums existed) is compared with a newer
    one on the parts both have; the reason then says that frame order was not checked.
    """
    versions = {a.get("version"), b.get("version")}
    if not versions <= {1, 2}:
        return False, float("inf"), f"sketch versions differ ({a.get('version')} vs {b.get('version')})"
    per_frame = versions == {2}
    for key, what in (("n_frames", "frame count"), ("exact", "run ids, frame indices, labels or statuses"),
                      ("spectra_nan", "masked (NaN) spectrum points")):
        if a.get(key) != b.get(key):
            return False, float("inf"), f"{what} differ"
    s, c = rtol_spectra, rtol_columns
    pairs = [("spectra sum", a["spectra_sum"], b["spectra_sum"], a["spectra_abs"], s),
             ("spectra sum of magnitudes", a["spectra_abs"], b["spectra_abs"], a["spectra_abs"], s),
             # squares move by up to twice the relative rounding of the values
             ("spectra sum of squares", a["spectra_sq"], b["spectra_sq"], a["spectra_sq"], 2 * s)]
    pairs += [(f"spectra pattern {i}", x, y, a["spectra_abs"], s)
              for i, (x, y) in enumerate(zip(a["patterns"], b["patterns"]))]
    if sorted(a["columns"]) != sorted(b["columns"]):
        return False, float("inf"), "frame columns differ"
    pairs += [(f"column {k}", a["columns"][k][0], b["columns"][k][0], a["columns"][k][1], c)
              for k in a["columns"]]
    if per_frame:
        # the signed sums are bounded by the same sums of magnitudes as the plain ones
        pairs += [(f"spectra frame-signed pattern {i}", x, y, a["spectra_abs"], s)
                  for i, (x, y) in enumerate(zip(a["frame_patterns"], b["frame_patterns"]))]
        pairs += [(f"column {k} (frame-signed {j})", x, y, a["columns"][k][1], c)
                  for k in a["columns"]
                  for j, (x, y) in enumerate(zip(a["frame_columns"][k], b["frame_columns"][k]))]
    worst, reason = 0.0, ""
    for name, x, y, scale, rtol in pairs:
        rel = abs(x - y) / scale if scale > 0 else (0.0 if x == y else float("inf"))
        worst = max(worst, rel)
        if rel > rtol and not reason:
            reason = f"{name} differs by a relative {rel:.1e} (tolerance {rtol:g})"
    if not reason and not per_frame:
        return True, worst, "same up to rounding; a version-1 sketch cannot check frame order"
    return not reason, worst, reason


def environment() -> dict:
    """Library versions and CPU features that decide the last bits of a build or a training."""
    env = {"python": platform.python_version(), "machine": platform.machine(),
           "cpu": _cpu_model()}
    for pkg in ("numpy", "scipy", "nmrglue", "torch"):
        try:
            env[pkg] = version(pkg)
        except PackageNotFoundError:
            env[pkg] = None
    try:  # the SIMD kernels numpy dispatches to on this CPU
        from numpy._core._multiarray_umath import __cpu_features__ as feats
        env["numpy_simd"] = sorted(k for k, v in feats.items() if v and k.startswith(("AVX512_", "X86_V")))
    except ImportError:  # pragma: no cover - other numpy layouts
        env["numpy_simd"] = None
    return env


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None
