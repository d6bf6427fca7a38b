"""The feature baseline's hand-made causal window features, in batch and streaming form.

These 31 quantities are what a careful analyst reads off an operando 7Li series: integrals over
the cluster (10-130 ppm), new-metal (255-285 ppm) and counter-electrode (235-275 ppm) windows
against the run's first frames, where the largest increases peak, their rates per hour over the
last 1 and 3 frames, noise-scaled SNRs of the new signal, and the electrochemistry features of
:mod:`lisentry.models.features` with a few potential summaries. The scikit-learn feature
baseline (:class:`lisentry.training.baselines.FeatureBaseline`) classifies from them alone; a
model trained with ``inputs.window_features: true`` reads the 20 computed from the spectra
(:data:`MODEL_FEATURES`) next to its own spectrum encoder and echem features (appended to its
echem input, see :class:`WindowInputs`).

Every feature of frame ``t`` depends only on frames ``0..t`` (the run's reference lines are the
mean of its first ``ref_frames`` frames *seen so far*), so the batch function
:func:`window_features` and the streaming :class:`WindowFeatureState` give the same values
(tested); the streaming state keeps the first ``ref_frames`` spectra, the last three frames'
rate inputs and the running potential minimum.

Amounts are in units of the run's initial total 7Li signal (spectra normalised per run so that
the first frame integrates to 1 over the ppm axis); rates are per hour; NaN where a feature is
undefined (masked echem, no positive peak).
"""
from __future__ import annotations

import math
import warnings
from collections import deque
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from lisentry.models.descriptors import BASELINE_WINDOW, CE_WINDOW, CLUSTER_WINDOW, METAL_WINDOW
from lisentry.models.features import ECHEM_FEATURES, N_ECHEM

__all__ = ["spectral_descriptors", "reference_lines", "causal_rate", "window_features", "WindowFeatureState",
           "WindowInputs", "FEATURE_NAMES", "MODEL_FEATURES", "FEATURE_SETS", "WINDOW_FEATURES_VERSION",
           "CURRENT_FEATURES", "current_columns", "HISTORY_FEATURES",
           "DEFAULT_GRID"]

DEFAULT_GRID = (-100.0, 400.0, 0.5)  #: (min, max, step) ppm, the datasets' default grid
#: Bumped whenever a feature's definition changes (stored in model cards).
WINDOW_FEATURES_VERSION = 2  # 2: models read the 20 spectral features only

# ---------------------------------------------------------------------------- helpers
def _grid(n_points: int, ppm_grid: np.ndarray | None) -> np.ndarray:
    if ppm_grid is not None:
        g = np.asarray(ppm_grid, dtype=float)
        if g.shape != (n_points,):
            raise ValueError(f"ppm_grid has {g.size} points but the spectra have {n_points}.")
        return g
    lo, hi, step = DEFAULT_GRID
    n = int(round((hi - lo) / step)) + 1
    if n != n_points:
        raise ValueError(f"spectra have {n_points} points, not the default grid's {n}; "
                         "pass ppm_grid.")
    return np.linspace(lo, hi, n)


def _causal_reference(spectra: np.ndarray, ref_frames: int) -> np.ndarray:
    """``(T, P)``: mean of frames ``0..min(t, ref_frames - 1)`` for each frame ``t`` (NaN-aware)."""
    k = min(ref_frames, len(spectra))
    head = np.nan_to_num(spectra[:k], nan=0.0)
    cnt = np.cumsum(np.isfinite(spectra[:k]), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cum = np.cumsum(head, axis=0) / cnt
    ref = np.empty_like(spectra)
    ref[:k] = cum
    ref[k:] = cum[-1]
    return ref


def _boxcar(x: np.ndarray, width: int) -> np.ndarray:
    """Moving average along the last axis (NaN treated as 0), same length."""
    if width <= 1:
        return x
    ker = np.ones(width) / width
    x0 = np.nan_to_num(x, nan=0.0)
    pad = width // 2
    xp = np.pad(x0, [(0, 0)] * (x.ndim - 1) + [(pad, width - 1 - pad)], mode="edge")
    c = np.cumsum(np.concatenate([np.zeros(x.shape[:-1] + (1,)), xp], axis=-1), axis=-1)
    return (c[..., width:] - c[..., :-width]) / width if width > 1 else x0


def causal_rate(x: np.ndarray, t_s: np.ndarray, lag: int) -> np.ndarray:
    """Rate per hour of ``x`` over the last ``lag`` frames: ``(x_t - x_{t-lag}) / Δt``.

    Frames with fewer than ``lag`` predecessors use frame 0; frame 0 (and Δt = 0) give 0.

    Parameters
    ----------
    x : np.ndarray
        ``(T,)`` values (any unit); NaN propagates.
    t_s : np.ndarray
        ``(T,)`` frame times, s.
    lag : int
        Number of frames back (>= 1).

    Returns
    -------
    np.ndarray
        ``(T,)`` rate, unit of ``x`` per hour.

    Examples
    --------
    >>> causal_rate(np.array([0.0, 1.0, 3.0]), np.array([0.0, 3600.0, 7200.0]), 1).tolist()
    [0.0, 1.0, 2.0]
    """
    x = np.asarray(x, dtype=float)
    t = np.asarray(t_s, dtype=float)
    idx = np.maximum(np.arange(len(x)) - int(lag), 0)
    dt_h = (t - t[idx]) / 3600.0
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (x - x[idx]) / dt_h
    return np.where(dt_h > 0, r, 0.0)


def _row_nanmedian(X: np.ndarray) -> np.ndarray:
    """``np.nanmedian(X, axis=1)`` row by row (the same values: numpy's own path for large
    arrays; its masked-array path for small ones, one frame while streaming, is 10x slower)."""
    out = np.full(len(X), np.nan)
    for i, row in enumerate(X):
        v = row[~np.isnan(row)]
        if v.size:
            out[i] = np.median(v)
    return out


def _baseline_corrected(S: np.ndarray, mb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows minus their median over the line-free baseline window, and their robust noise."""
    with np.errstate(all="ignore"):
        base = _row_nanmedian(S[:, mb]) if mb.any() else np.zeros(len(S))
        mad = (_row_nanmedian(np.abs(S[:, mb] - base[:, None])) * 1.4826
               if mb.any() else np.zeros(len(S)))
    base = np.nan_to_num(base, nan=0.0)
    return S - base[:, None], mad


def reference_lines(spectra: np.ndarray, ppm_grid: np.ndarray | None = None, *,
                    ref_frames: int = 3) -> np.ndarray:
    """``(P,)`` a run's initial lines as :func:`spectral_descriptors` sees them from frame
    ``ref_frames - 1`` on: the NaN-aware mean of its first ``ref_frames`` baseline-corrected
    frames."""
    S = np.asarray(spectra, dtype=float)[:ref_frames]
    g = _grid(S.shape[1], ppm_grid)
    B, _ = _baseline_corrected(S, (g >= BASELINE_WINDOW[0]) & (g <= BASELINE_WINDOW[1]))
    return _causal_reference(B, ref_frames)[-1]


def spectral_descriptors(spectra: np.ndarray, ppm_grid: np.ndarray | None = None, *,
                         ref_frames: int = 3, smooth_points: int = 5,
                         reference: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Causal per-frame window descriptors of one run's spectra.

    Parameters
    ----------
    spectra : np.ndarray
        ``(T, P)`` per-run-normalised intensities on ``ppm_grid`` (NaN where not covered).
    ppm_grid : np.ndarray, optional
        ``(P,)`` ascending ppm axis; default -100..400 ppm step 0.5.
    ref_frames : int
        The run's initial lines are the mean of its first ``ref_frames`` frames (frame ``t``
        uses only those among ``0..t``).
    smooth_points : int
        Boxcar width (grid points) applied before positive-part integrals and peak picking.
    reference : np.ndarray, optional
        ``(P,)`` the run's baseline-corrected initial lines (:func:`reference_lines`), used for
        every row instead of the causal mean of the rows' own first frames (streaming).

    Returns
    -------
    dict of str to np.ndarray
        ``(T,)`` arrays. Amounts are integrals (intensity x ppm, i.e. fractions of the initial
        total signal) above the per-frame baseline (median over 150-215 ppm):

        * ``cluster``: cluster window 10-130 ppm; ``cluster_rel``: minus the reference's;
        * ``cluster_peak_ppm``: position of the maximum of the smoothed cluster-window
          difference to the reference (ppm, NaN when that maximum is not positive);
        * ``metal_extra``: positive part of the smoothed (frame - reference) over 255-285 ppm
          (new metal beyond the initial electrode lines), minus the positive-part bias of pure
          noise (so about 0 without new metal); ``metal_diff``: the signed difference;
        * ``metal_peak_ppm``: position of the largest increase in 235-285 ppm;
        * ``ce_frac``: 235-275 ppm integral relative to the reference's (1 = no loss);
        * ``noise``: robust noise of the frame in the baseline region (intensity units);
        * ``total``: integral over the whole grid.
    """
    S = np.asarray(spectra, dtype=float)
    if S.ndim != 2:
        raise ValueError(f"spectra must be (T, P). Got shape {S.shape}.")
    g = _grid(S.shape[1], ppm_grid)
    step = float(np.median(np.diff(g))) if len(g) > 1 else 1.0
    win = lambda lo, hi: (g >= lo) & (g <= hi)  # noqa: E731
    mb, mc, mm, me = (win(*BASELINE_WINDOW), win(*CLUSTER_WINDOW), win(*METAL_WINDOW),
                      win(*CE_WINDOW))
    mmp = win(235.0, 285.0)
    B, mad = _baseline_corrected(S, mb)
    R = _causal_reference(B, ref_frames) if reference is None else reference[None, :]
    D = B - R
    Ds = _boxcar(D, smooth_points)

    def integ(X, m):
        return np.nansum(X[:, m], axis=1) * step

    cluster = integ(B, mc)
    cluster_rel = integ(D, mc)
    dc = Ds[:, mc]
    k = np.argmax(dc, axis=1)
    cpk = np.where(dc[np.arange(len(S)), k] > 0, g[mc][k], np.nan)
    # positive part of the smoothed difference, minus its expectation for pure noise
    # (E[max(0, X)] = sigma / sqrt(2 pi) per point), sigma from the empty baseline region
    with np.errstate(all="ignore"):
        sd = (_row_nanmedian(np.abs(Ds[:, mb] - _row_nanmedian(Ds[:, mb])[:, None])) * 1.4826
              if mb.any() else np.zeros(len(S)))
    sd = np.nan_to_num(sd, nan=0.0)
    metal_extra = (integ(np.clip(Ds, 0, None), mm)
                   - np.isfinite(Ds[:, mm]).sum(axis=1) * step * sd / math.sqrt(2 * math.pi))
    metal_diff = integ(D, mm)
    dm = Ds[:, mmp]
    k2 = np.argmax(dm, axis=1)
    mpk = np.where(dm[np.arange(len(S)), k2] > 0, g[mmp][k2], np.nan)
    ce_ref = integ(R, me)
    with np.errstate(invalid="ignore", divide="ignore"):
        ce_frac = np.where(np.abs(ce_ref) > 1e-6, integ(B, me) / ce_ref, 1.0)
    return {"cluster": cluster, "cluster_rel": cluster_rel, "cluster_peak_ppm": cpk,
            "metal_extra": metal_extra, "metal_diff": metal_diff, "metal_peak_ppm": mpk,
            "ce_frac": ce_frac, "noise": np.nan_to_num(mad, nan=0.0),
            "total": integ(S, np.ones(len(g), bool))}


_DESC_KEYS = ("cluster", "cluster_rel", "cluster_peak_ppm", "metal_extra", "metal_diff",
              "metal_peak_ppm", "ce_frac", "noise")
_RATE_KEYS = ("cluster", "cluster_peak_ppm", "metal_extra", "metal_diff", "ce_frac")
_ECHEM_KEYS = ("potential_V", "current_asinh", "dVdt_asinh", "charge_asinh",
               "log1p_h_since_step", "potential_noise_asinh", "dlnI_dt_asinh", "dlnI_dt_3_asinh")
FEATURE_NAMES: tuple[str, ...] = (
    _DESC_KEYS
    + tuple(f"d{lag}_{k}_per_h" for lag in (1, 3) for k in _RATE_KEYS)
    + ("metal_snr", "cluster_snr")
    + _ECHEM_KEYS
    + ("dV_3_frames_V", "potential_min_so_far_V", "abs_current_rate_3_per_h"))

N_WINDOW_FEATURES = len(FEATURE_NAMES)
assert _ECHEM_KEYS == ECHEM_FEATURES  # the echem columns are the model's echem features
#: Window features computed from the potentiostat's data (NaN without a potential log).
POTENTIOSTAT_FEATURES: tuple[str, ...] = _ECHEM_KEYS + (
    "dV_3_frames_V", "potential_min_so_far_V", "abs_current_rate_3_per_h")
#: The window features a model reads (:class:`WindowInputs`): the 20 read off the spectra. The
#: potentiostat's are left to the model's own echem input: with them a model trained on
#: simulated liquid Li | Li cycling (whose potential swings both ways) read the one-way galvanostatic
#: real run's always-positive potential minimum as "no plating" for 26 h
#: (docs/results/journal.md, 2026-12-06, fourth part).
MODEL_FEATURES: tuple[str, ...] = tuple(n for n in FEATURE_NAMES if n not in POTENTIOSTAT_FEATURES)
N_MODEL_FEATURES = len(MODEL_FEATURES)


#: The window-feature sets a model may read (config ``inputs.window_feature_set``): the 20 read
#: off the spectra, or all 31 (with the potentiostat's 11; on simulated data only, that set
#: misread the measured one-way run before a one-way family was simulated).
#: ``"all_but_minimum"``: all but the running potential minimum, the one summary whose meaning
#: differs between chemistries (a positive minimum says "no plating yet" in a carbon or graphite
#: cell, nothing in a Li | Li cell stripped one way, as the measured run is).
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "spectral": MODEL_FEATURES, "all": FEATURE_NAMES,
    "all_but_minimum": tuple(n for n in FEATURE_NAMES if n != "potential_min_so_far_V")}


def _appended_features(n_columns: int) -> tuple[str, ...]:
    """The window features appended to an echem input of ``n_columns`` columns: a set of
    :data:`FEATURE_SETS` when the width is ``N_ECHEM`` plus that set's size, else none."""
    return next((names for names in FEATURE_SETS.values() if n_columns == N_ECHEM + len(names)), ())


def potentiostat_columns(n_columns: int) -> np.ndarray:
    """Which columns of a model's echem input come from the potentiostat.

    With ``N_ECHEM + 20`` columns (the spectral window features appended) the first ``N_ECHEM``;
    with ``N_ECHEM + 31`` (all window features) those and the appended potentiostat features;
    any other width is an echem input without window features, all of whose columns do.
    """
    appended = _appended_features(n_columns)
    if not appended:
        return np.ones(n_columns, bool)
    return np.array([True] * N_ECHEM + [n in POTENTIOSTAT_FEATURES for n in appended])


#: Echem features undefined without a current column (EC-Lab exports of time and Ewe only, as
#: the measured run's): the potential's own features stay.
CURRENT_FEATURES: tuple[str, ...] = ("current_asinh", "charge_asinh", "log1p_h_since_step",
                                     "dlnI_dt_asinh", "dlnI_dt_3_asinh")


def current_columns(n_columns: int) -> np.ndarray:
    """Which columns of a model's echem input need the current (and charge): the echem block's
    :data:`CURRENT_FEATURES` and, with all 31 window features appended, their copies and
    ``abs_current_rate_3_per_h``. Masking these reproduces a potential-only log (but for that
    rate's first frame, which is 0 rather than undefined: no rate yet)."""
    appended = _appended_features(n_columns) or ("",) * (n_columns - N_ECHEM)
    need = [n in CURRENT_FEATURES for n in ECHEM_FEATURES]
    need += [n in CURRENT_FEATURES or n == "abs_current_rate_3_per_h" for n in appended]
    return np.array(need[:n_columns], bool)


def _feature_index(names: Sequence[str]) -> np.ndarray:
    """Column indices of ``names`` in :func:`window_features`' output."""
    return np.array([FEATURE_NAMES.index(n) for n in names])


def _snr_columns(metal_extra, cluster_rel, noise):
    """Noise-scaled new metal and cluster signal (integrated SNR over each window)."""
    n_pts = lambda lo, hi: max(1.0, (hi - lo) / 0.5)  # noqa: E731
    with np.errstate(invalid="ignore", divide="ignore"):
        noise_int = np.maximum(noise, 1e-9) * 0.5
        return (metal_extra / (noise_int * math.sqrt(n_pts(*METAL_WINDOW))),
                cluster_rel / (noise_int * math.sqrt(n_pts(*CLUSTER_WINDOW))))


def window_features(spectra: np.ndarray, t_s: Sequence[float], echem: np.ndarray,
                    echem_mask: np.ndarray, ppm_grid: np.ndarray | None = None, *,
                    ref_frames: int = 3) -> np.ndarray:
    """Hand-made causal features of every frame of one run, columns :data:`FEATURE_NAMES`.

    Parameters
    ----------
    spectra : np.ndarray
        ``(T, P)`` per-run-normalised intensities on ``ppm_grid`` (NaN where not covered).
    t_s : sequence of float
        ``(T,)`` frame times, s.
    echem, echem_mask : np.ndarray
        ``(T, n_echem)`` features of :func:`lisentry.models.features.echem_features` and
        their mask (1 = valid).
    ppm_grid : np.ndarray, optional
        The spectra's ppm axis (default -100..400 ppm step 0.5).
    ref_frames : int
        Frames that define the run's initial lines.

    Returns
    -------
    np.ndarray
        float64 ``(T, 31)``; NaN where undefined (masked echem, no peak).
    """
    d = spectral_descriptors(spectra, ppm_grid, ref_frames=ref_frames)
    e = np.where(np.asarray(echem_mask) > 0, echem, np.nan).astype(float)
    e = {name: e[:, j] for j, name in enumerate(ECHEM_FEATURES)}
    t = np.asarray(t_s, dtype=float)
    cols = [d[k] for k in _DESC_KEYS]
    for lag in (1, 3):
        cols += [causal_rate(d[k], t, lag) for k in _RATE_KEYS]
    cols += list(_snr_columns(d["metal_extra"], d["cluster_rel"], d["noise"]))
    cols += [e[k] for k in _ECHEM_KEYS]
    cols += _log_history(e["potential_V"], e["current_asinh"], t)
    return np.column_stack(cols).astype(float)


#: The window features that summarize the potentiostat log's past frames (a log that starts
#: late has not seen the frames before its start).
HISTORY_FEATURES: tuple[str, ...] = ("dV_3_frames_V", "potential_min_so_far_V",
                                     "abs_current_rate_3_per_h")


def _log_history(v: np.ndarray, current_asinh: np.ndarray, t: np.ndarray) -> list[np.ndarray]:
    """The :data:`HISTORY_FEATURES` columns from the potential (V, NaN where no log), the
    asinh-scaled current and the frame times (s)."""
    idx = np.maximum(np.arange(len(t)) - 3, 0)
    vmin = np.fmin.accumulate(np.where(np.isfinite(v), v, np.inf))
    return [v - v[idx], np.where(np.isfinite(vmin), vmin, np.nan),
            causal_rate(np.abs(np.sinh(current_asinh)), t, 3)]


class WindowFeatureState:
    """Streaming form of :func:`window_features`: one ``update`` per frame, same values.

    Keeps the first ``ref_frames`` spectra (the run's reference lines), the rate inputs and
    times of the last three frames, the last three potentials and the running potential
    minimum. JSON-safe through :meth:`to_dict` / :meth:`from_dict` (the reference spectra as
    lists).

    Parameters
    ----------
    ppm_grid : np.ndarray
        The spectra's ppm axis.
    ref_frames : int
        Frames that define the run's initial lines (as in :func:`window_features`).
    """

    _LAGS = (1, 3)

    def __init__(self, ppm_grid: np.ndarray, ref_frames: int = 3) -> None:
        self.ppm_grid = np.asarray(ppm_grid, dtype=float)
        self.ref_frames = int(ref_frames)
        self.reset()

    def reset(self) -> None:
        self._head: list[np.ndarray] = []     # first ref_frames spectra (float64)
        self._ref: np.ndarray | None = None    # their reference lines, once all are seen
        self._hist: deque = deque(maxlen=max(self._LAGS))  # (t_s, rate inputs) of earlier frames
        self._pots: deque = deque(maxlen=3)    # potentials of the last 3 earlier frames
        self._vmin = math.inf
        self.n_seen = 0

    def update(self, spectrum: np.ndarray, t_s: float, echem: np.ndarray,
               echem_mask: np.ndarray) -> np.ndarray:
        """Features ``(31,)`` float64 of the next frame (NaN where undefined)."""
        s = np.asarray(spectrum, dtype=float)
        if len(self._head) < self.ref_frames:
            self._head.append(s.copy())
            # the last row of the head sees exactly the causal reference of frame n_seen
            d = {k: v[-1] for k, v in spectral_descriptors(np.stack(self._head), self.ppm_grid,
                                                            ref_frames=self.ref_frames).items()}
        else:
            if self._ref is None:    # the same mean the batch form takes for later frames
                self._ref = reference_lines(np.stack(self._head), self.ppm_grid,
                                            ref_frames=self.ref_frames)
            d = {k: v[0] for k, v in spectral_descriptors(s[None], self.ppm_grid,
                                                           reference=self._ref).items()}
        e = np.where(np.asarray(echem_mask)[:N_ECHEM] > 0, echem[:N_ECHEM], np.nan).astype(float)
        t = float(t_s)
        v = float(e[ECHEM_FEATURES.index("potential_V")])
        cur = abs(math.sinh(e[ECHEM_FEATURES.index("current_asinh")]))
        x = np.array([d[k] for k in _RATE_KEYS] + [cur], dtype=float)
        row = [d[k] for k in _DESC_KEYS]
        rates = {}
        for lag in self._LAGS:
            # fewer than `lag` predecessors: frame 0 (the oldest kept while n_seen <= 3)
            if self._hist:
                tp, xp = self._hist[-lag] if len(self._hist) >= lag else self._hist[0]
                dt_h = (t - tp) / 3600.0
                with np.errstate(invalid="ignore", divide="ignore"):
                    rates[lag] = (x - xp) / dt_h if dt_h > 0 else np.zeros_like(x)
            else:
                rates[lag] = np.zeros_like(x)
            row += list(rates[lag][:len(_RATE_KEYS)])
        row += [float(c) for c in _snr_columns(d["metal_extra"], d["cluster_rel"], d["noise"])]
        row += list(e)
        # potential 3 frames back (frame 0 while fewer have passed)
        row.append(v - (self._pots[0] if self._pots else v))
        if math.isfinite(v):
            self._vmin = min(self._vmin, v)
        row.append(self._vmin if math.isfinite(self._vmin) else math.nan)
        row.append(float(rates[3][-1]))
        self._hist.append((t, x))
        self._pots.append(v)
        self.n_seen += 1
        return np.asarray(row, dtype=float)

    @classmethod
    def from_batch(cls, spectra: np.ndarray, t_s: Sequence[float], raw: np.ndarray,
                   ppm_grid: np.ndarray, ref_frames: int = 3) -> "WindowFeatureState":
        """The state after streaming a run whose :func:`window_features` are ``raw`` (cheap:
        reads the kept quantities off the batch result instead of recomputing them)."""
        st = cls(ppm_grid, ref_frames)
        raw = np.asarray(raw, dtype=float)
        t = np.asarray(t_s, dtype=float)
        col = {n: j for j, n in enumerate(FEATURE_NAMES)}
        st._head = [np.asarray(s, dtype=float).copy() for s in spectra[:ref_frames]]
        cur = np.abs(np.sinh(raw[:, col["current_asinh"]]))
        for i in range(max(0, len(raw) - st._hist.maxlen), len(raw)):
            st._hist.append((float(t[i]), np.append(raw[i, [col[k] for k in _RATE_KEYS]], cur[i])))
        st._pots.extend(raw[-3:, col["potential_V"]].tolist())
        vmin = raw[-1, col["potential_min_so_far_V"]] if len(raw) else math.nan
        st._vmin = float(vmin) if math.isfinite(vmin) else math.inf
        st.n_seen = len(raw)
        return st

    def to_dict(self) -> dict:
        """JSON-safe state (NaN as None)."""
        nn = lambda a: [None if not math.isfinite(z) else float(z) for z in np.ravel(a)]  # noqa: E731
        return {"ref_frames": self.ref_frames, "n_seen": self.n_seen,
                "head": [nn(h) for h in self._head],
                "hist": [[tp, nn(xp)] for tp, xp in self._hist],
                "pots": nn(list(self._pots)),
                "vmin": None if not math.isfinite(self._vmin) else self._vmin}

    @classmethod
    def from_dict(cls, d: Mapping, ppm_grid: np.ndarray) -> "WindowFeatureState":
        f = lambda a: np.array([np.nan if z is None else z for z in a], dtype=float)  # noqa: E731
        st = cls(ppm_grid, int(d["ref_frames"]))
        st.n_seen = int(d["n_seen"])
        st._head = [f(h) for h in d["head"]]
        st._hist.extend((float(tp), f(xp)) for tp, xp in d["hist"])
        st._pots.extend(f(d["pots"]).tolist())
        st._vmin = math.inf if d["vmin"] is None else float(d["vmin"])
        return st


def _asinh_scaled(raw: np.ndarray, scale) -> tuple[np.ndarray, np.ndarray]:
    """``(asinh(raw / scale) with 0 where raw is not finite, finite mask)``: how a model reads
    its window features."""
    ok = np.isfinite(raw)
    return np.where(ok, np.arcsinh(np.where(ok, raw, 0.0) / scale), 0.0), ok


@dataclass(frozen=True)
class WindowInputs:
    """The window features as extra model inputs: scaled, masked, appended to the echem input.

    A model reads one of the :data:`FEATURE_SETS`: by default the :data:`MODEL_FEATURES` (the 20
    computed from the spectra), or all 31. Each enters as
    ``asinh(x / scale)``, ``scale`` its median absolute value over the training runs (so every
    column is O(1) whatever its unit); a NaN feature enters as 0 with mask 0, like masked echem.

    Parameters
    ----------
    scale : np.ndarray
        ``(n,)`` positive scales, one per column of ``names``.
    ppm_grid : np.ndarray
        The model's ppm axis.
    ref_frames : int
        Frames that define the run's initial lines.
    names : tuple of str
        The features read, one of :data:`FEATURE_SETS` (default the 20 spectral ones).
    """

    scale: np.ndarray
    ppm_grid: np.ndarray
    ref_frames: int = 3
    names: tuple[str, ...] = MODEL_FEATURES

    def __post_init__(self):
        names = tuple(self.names)
        if names not in FEATURE_SETS.values():
            raise ValueError(f"window features {list(names)[:3]}... are not one of the sets "
                             f"{sorted(FEATURE_SETS)}")
        s = np.asarray(self.scale, dtype=float)
        if s.shape != (len(names),) or not np.all(np.isfinite(s) & (s > 0)):
            raise ValueError(f"window feature scale must be {len(names)} positive "
                             f"numbers. Got shape {s.shape}.")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "_index", _feature_index(names))  # once: transform runs per frame
        object.__setattr__(self, "scale", s)
        object.__setattr__(self, "ppm_grid", np.asarray(self.ppm_grid, dtype=float))

    @property
    def n_features(self) -> int:
        return len(self.names)

    @property
    def feature_set(self) -> str:
        """The name of :data:`FEATURE_SETS` this reads (``"spectral"``, ``"all"`` or
        ``"all_but_minimum"``)."""
        return next(k for k, v in FEATURE_SETS.items() if v == self.names)

    @classmethod
    def fit(cls, runs: Sequence[tuple], ppm_grid: np.ndarray, ref_frames: int = 3,
            feature_set: str = "spectral") -> "WindowInputs":
        """Scales from training runs, each given as ``(spectra, t_s, echem, echem_mask)``."""
        if feature_set not in FEATURE_SETS:
            raise ValueError(f"window feature set must be one of {sorted(FEATURE_SETS)}. "
                             f"Got {feature_set!r}.")
        names = FEATURE_SETS[feature_set]
        idx = _feature_index(names)
        vals = [window_features(*r, ppm_grid, ref_frames=ref_frames)[:, idx] for r in runs]
        v = np.abs(np.concatenate(vals))
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            s = np.nanmedian(np.where(v > 0, v, np.nan), axis=0)
        return cls(np.where(np.isfinite(s) & (s > 0), s, 1.0), ppm_grid, ref_frames, names)

    def transform(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(values, mask)`` float32 ``(..., n)`` of raw :func:`window_features` ``(..., 31)``."""
        z, ok = _asinh_scaled(np.asarray(raw, dtype=float)[..., self._index], self.scale)
        return z.astype(np.float32), ok.astype(np.float32)

    def widen(self, spectra, t_s, echem, echem_mask, *, state: bool = False):
        """The echem input and mask of one run with the scaled window features appended
        (``state=True``: also the :class:`WindowFeatureState` at the run's end)."""
        raw = window_features(spectra, t_s, echem, echem_mask, self.ppm_grid,
                              ref_frames=self.ref_frames)
        z, m = self.transform(raw)
        out = (np.concatenate([np.asarray(echem, np.float32), z], axis=-1),
               np.concatenate([np.asarray(echem_mask, np.float32), m], axis=-1))
        if state:
            return (*out, WindowFeatureState.from_batch(spectra, t_s, raw, self.ppm_grid,
                                                        self.ref_frames))
        return out

    def restart_log(self, t_s, echem: np.ndarray, echem_mask: np.ndarray, start: int
                    ) -> tuple[np.ndarray, np.ndarray]:
        """A widened echem input and mask as if the potentiostat log began at frame ``start``:
        the :data:`HISTORY_FEATURES` read (copies; the other columns as given). Training's
        ``drop_echem_prefix`` masks the first frames; without this the running potential minimum
        would still remember them (a simulated Li | Li run's open-circuit rest at 0 V), which a
        log that starts late, as the measured run's, never shows."""
        hist = [n for n in HISTORY_FEATURES if n in self.names]
        if not hist:
            return np.array(echem, copy=True), np.array(echem_mask, copy=True)
        e = np.where(np.asarray(echem_mask)[:, :N_ECHEM] > 0, echem[:, :N_ECHEM], np.nan).astype(float)
        e[:start] = np.nan
        raw = dict(zip(HISTORY_FEATURES, _log_history(e[:, ECHEM_FEATURES.index("potential_V")],
                                                      e[:, ECHEM_FEATURES.index("current_asinh")],
                                                      np.asarray(t_s, dtype=float))))
        echem, echem_mask = np.array(echem, copy=True), np.array(echem_mask, copy=True)
        for n in hist:
            j = self.names.index(n)
            echem[:, N_ECHEM + j], echem_mask[:, N_ECHEM + j] = _asinh_scaled(raw[n], self.scale[j])
        return echem, echem_mask

    def stream(self) -> WindowFeatureState:
        return WindowFeatureState(self.ppm_grid, self.ref_frames)

    def widen_one(self, state: WindowFeatureState, spectrum, t_s, echem, echem_mask):
        """Streaming :meth:`widen` of one frame (advances ``state``)."""
        z, m = self.transform(state.update(spectrum, t_s, echem, echem_mask))
        return (np.concatenate([np.asarray(echem, np.float32), z]),
                np.concatenate([np.asarray(echem_mask, np.float32), m]))

    def card(self) -> dict:
        """JSON-safe record for the model card."""
        return {"names": list(self.names), "version": WINDOW_FEATURES_VERSION,
                "ref_frames": self.ref_frames, "scale": [float(x) for x in self.scale]}

    @classmethod
    def from_card(cls, d: Mapping, ppm_grid: np.ndarray) -> "WindowInputs":
        """Inverse of :meth:`card`; ``ValueError`` when names or version differ."""
        names = tuple(d.get("names", []))
        if names not in FEATURE_SETS.values() or d.get("version") != WINDOW_FEATURES_VERSION:
            raise ValueError(f"window features v{d.get('version')} ({len(names)} names) differ from "
                             f"this version's v{WINDOW_FEATURES_VERSION} sets "
                             f"({', '.join(f'{k}: {len(v)}' for k, v in FEATURE_SETS.items())})")
        return cls(np.asarray(d["scale"], dtype=float), ppm_grid, int(d.get("ref_frames", 3)),
                   names)
