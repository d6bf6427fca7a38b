"""The bundle's OOD score: input-level checks of the spectrum, optionally a feature distance.

The energy score of the logits (:func:`lisentry.models.calibration.energy_score`) hardly
separates out-of-distribution frames from normal ones on the OOD set of
:mod:`lisentry.training.ood` (see ``benchmarks/ood_eval.py``): a classifier trained only on 7Li
frames is as confident on a 19F spectrum or on pure noise as on a normal frame. This module
offers three component scores, fitted on the model's own training frames, and combines the
chosen ones (``components``; default ``pca_residual`` and ``negative_area``):

``pca_residual``
    Reconstruction error of the (per-run normalised, NaN -> 0) spectrum by the first
    ``n_components`` principal components of the training spectra, smoothed over
    ``smooth_points`` grid points before taking the RMS, so that white noise, which differs
    from run to run, counts little and structure the training spectra never had (a line at a
    new shift, a baseline distortion, a time-domain signal) counts fully.
``negative_area``
    Fraction of the (lightly smoothed) spectrum's absolute area that lies below zero. A linear
    subspace cannot see a sign or phase error once the training spectra hold both absorptive
    and dispersive line shapes (skin-effect metal lines, phasing errors): the inverted or
    90-deg-rotated spectrum is in their span. Phased 7Li spectra are mostly positive.
``mahalanobis``
    Class-conditional Mahalanobis distance with one shared covariance (Lee et al., NeurIPS
    2018) on the input of the classification head, i.e. the GRU output concatenated with the
    frame embedding (``2 * hidden`` values): ``min_c (h - mu_c)^T Sigma^-1 (h - mu_c)``. Not in
    the default: on the real Li | Li run it grows with the frame index (z 2.6 over the first 50
    frames, 4.7 over the last 50 of 600), far beyond the simulated runs, while that run's
    spectra are in distribution; on the OOD set it adds little to the other two.

Each score is turned into a robust z-score of its logarithm against the same scores on
in-distribution validation frames (``(log s - median) / (1.4826 MAD)``) and the OOD score is the
largest of the z-scores. Thresholds are quantiles (95 %, 99 %) of that score on the
validation frames.

Everything learned is a few arrays (:meth:`FeatureOODScorer.tensors`) and a JSON-safe dict
(:meth:`FeatureOODScorer.config`), written as safetensors + JSON by :meth:`FeatureOODScorer.save`,
never pickled. ``lisentry train`` fits one on the model's own training and validation runs
(:func:`fit_on_runs`) and stores it in the bundle (``ood.safetensors`` + ``ood.json``); the
detector then reports its score as ``ood_score`` and flags frames above the card's
``ood.threshold`` (:mod:`lisentry.models.bundle`).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from lisentry.datasets.errors import ConfigError
from lisentry.models.sidefile import read_side_config, write_side_files

FORMAT = "lisentry-ood-scorer"
FORMAT_VERSION = 2
TENSORS = "ood.safetensors"
CONFIG = "ood.json"
#: The component scores a scorer can combine.
COMPONENTS = ("mahalanobis", "pca_residual", "negative_area")
#: The shipped default: input-level checks only. The Mahalanobis distance on the head input
#: flags the real Li | Li run (long runs drive the GRU state away from every simulated one).
DEFAULT_COMPONENTS = ("pca_residual", "negative_area")
#: Floor of the raw scores before the log (a spectrum with no negative area scores 0).
_FLOOR = 1e-6


# ---------------------------------------------------------------------- model features
@torch.no_grad()
def head_inputs(model, spectra, echem, echem_mask=None) -> tuple[np.ndarray, np.ndarray]:
    """Logits and the classification head's input of one run, frames in order (causal).

    Parameters
    ----------
    model : LisentryNet
        Any model whose forward pass takes ``return_features=True`` and then returns the
        classification head's input under ``"features"``.
    spectra : array_like
        ``(T, n_ppm)`` normalised spectra (NaN where not covered).
    echem, echem_mask : array_like
        ``(T, n_echem)`` features and mask (:func:`lisentry.models.features.echem_features`).

    Returns
    -------
    logits : np.ndarray
        ``(T, n_classes)`` float64.
    features : np.ndarray
        ``(T, n_features)`` float64.
    """
    em = None if echem_mask is None else torch.as_tensor(np.asarray(echem_mask, np.float32))[None]
    out = model(torch.from_numpy(np.array(spectra, np.float32))[None],
                torch.as_tensor(np.asarray(echem, np.float32))[None], echem_mask=em,
                return_features=True)
    return out["logits"][0].double().numpy(), out["features"][0].double().numpy()


def frames_inputs(frames, window=None, *, sign_free: bool = False
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(spectra, echem, echem_mask)`` of a list of processed frames, as the detector builds
    them; ``window`` (a bundle's ``window_inputs``) appends its window features; ``sign_free``
    as the detector reads a symmetric cell with a sign-free model (``--cell symmetric``)."""
    from lisentry.models.features import frame_arrays
    spectra, e, m = frame_arrays(frames, sign_free=sign_free)
    if window is not None:
        e, m = window.widen(spectra, [f.t_s for f in frames], e, m)
    return spectra, e, m


# ---------------------------------------------------------------------- scorer
def _check(name: str, ok: bool, cond: str, got) -> None:
    if not ok:
        raise ConfigError(f"The '{name}' parameter of FeatureOODScorer must be {cond}. Got {got!r}.")


def _moving_average(x: np.ndarray, size: int) -> np.ndarray:
    if size <= 1:
        return x
    from scipy.ndimage import uniform_filter1d
    return uniform_filter1d(x, size, axis=-1, mode="nearest")


class FeatureOODScorer:
    """Input-level checks of the spectrum (+ optionally a feature-space distance) as one score.

    Parameters
    ----------
    n_components : int
        Principal components of the training spectra kept for the reconstruction.
    smooth_points : int
        Width (grid points) of the moving average applied to the PCA residual (21 = 10 ppm on
        the 0.5 ppm grid).
    shrinkage : float
        Ridge added to the shared covariance, as a fraction of its mean eigenvalue.
    quantiles : sequence of float
        Quantiles of the validation scores stored as thresholds.
    components : sequence of str
        Which of :data:`COMPONENTS` make up the score (their largest robust z-score).
    negative_smooth_points : int
        Width (grid points) of the moving average applied to the spectrum before its negative
        area is measured (enough to average noise, short enough to keep truncation ripples).

    Attributes
    ----------
    pca_mean_, pca_components_ : np.ndarray
        ``(n_ppm,)`` and ``(n_components, n_ppm)``.
    class_means_, precision_ : np.ndarray or None
        ``(n_classes, n_features)`` and ``(n_features, n_features)`` (``mahalanobis`` only).
    center_, scale_ : np.ndarray
        Median and robust std of the log component scores on validation frames, in
        ``components`` order.
    thresholds_ : dict
        ``{"q0.95": t, "q0.99": t}``: quantiles of :meth:`score` on validation frames.
    n_fit_, n_val_ : int
        Frames used to fit and to calibrate.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> S, H, y = rng.normal(size=(200, 40)), rng.normal(size=(200, 6)), rng.integers(0, 2, 200)
    >>> sc = FeatureOODScorer(n_components=4, smooth_points=1).fit(S, H, y, S[:50], H[:50])
    >>> bool(sc.score(S[:5] + 50.0, H[:5] + 50.0).min() > sc.thresholds_["q0.99"])
    True
    """

    def __init__(self, n_components: int = 32, smooth_points: int = 21, shrinkage: float = 1e-3,
                 quantiles: Sequence[float] = (0.95, 0.99),
                 components: Sequence[str] = DEFAULT_COMPONENTS, negative_smooth_points: int = 5):
        self.n_components = n_components
        self.smooth_points = smooth_points
        self.shrinkage = shrinkage
        self.quantiles = tuple(quantiles)
        self.components = tuple(components)
        self.negative_smooth_points = negative_smooth_points

    def get_params(self) -> dict:
        return {"n_components": self.n_components, "smooth_points": self.smooth_points,
                "shrinkage": self.shrinkage, "quantiles": list(self.quantiles),
                "components": list(self.components),
                "negative_smooth_points": self.negative_smooth_points}

    @property
    def uses_features(self) -> bool:
        """Whether :meth:`score` needs the model's head inputs (``mahalanobis``)."""
        return "mahalanobis" in self.components

    def _validate(self) -> None:
        _check("n_components", isinstance(self.n_components, int) and self.n_components >= 1,
               "an int >= 1", self.n_components)
        _check("smooth_points", isinstance(self.smooth_points, int) and self.smooth_points >= 1,
               "an int >= 1", self.smooth_points)
        _check("shrinkage", math.isfinite(self.shrinkage) and self.shrinkage >= 0, ">= 0",
               self.shrinkage)
        _check("quantiles", all(0 < q < 1 for q in self.quantiles), "in (0, 1)", self.quantiles)
        _check("negative_smooth_points", isinstance(self.negative_smooth_points, int)
               and self.negative_smooth_points >= 1, "an int >= 1", self.negative_smooth_points)
        _check("components", len(self.components) >= 1 and len(set(self.components)) == len(self.components)
               and all(c in COMPONENTS for c in self.components),
               f"distinct names from {', '.join(COMPONENTS)}", self.components)

    # ------------------------------------------------------------------ fit
    def fit(self, spectra, features, labels, val_spectra, val_features) -> "FeatureOODScorer":
        """Fit on training frames and calibrate on in-distribution validation frames.

        Parameters
        ----------
        spectra : array_like
            ``(N, n_ppm)`` normalised training spectra (NaN = not covered).
        features : array_like or None
            ``(N, n_features)`` head inputs of the same frames (:func:`head_inputs`); only
            needed with ``mahalanobis``.
        labels : array_like
            ``(N,)`` class indices; frames with ``label < 0`` are left out of the class means
            and covariance (they still count for the PCA).
        val_spectra, val_features : array_like
            Validation frames (other runs) for the z-scores and the thresholds.

        Returns
        -------
        FeatureOODScorer
            ``self``.
        """
        self._validate()
        S = np.nan_to_num(np.asarray(spectra, np.float64), nan=0.0)
        y = np.asarray(labels).astype(int).reshape(-1)
        if not (S.ndim == 2 and len(S) == len(y)):
            raise ValueError(f"spectra (N, P) and labels (N,) must agree. Got {S.shape}, {y.shape}.")
        k = min(self.n_components, S.shape[0] - 1, S.shape[1])
        self.pca_mean_ = S.mean(axis=0)
        _, _, vt = np.linalg.svd(S - self.pca_mean_, full_matrices=False)
        self.pca_components_ = vt[:k].copy()
        self.class_means_ = self.precision_ = None
        if self.uses_features:
            if features is None:
                raise ValueError("the 'mahalanobis' component needs the head features")
            H = np.asarray(features, np.float64)
            if not (H.ndim == 2 and len(H) == len(S)):
                raise ValueError(f"features (N, F) must have one row per spectrum. Got {H.shape} "
                                 f"for {S.shape[0]} spectra.")
            keep = y >= 0
            classes = np.unique(y[keep])
            if classes.size == 0:
                raise ValueError("fit needs labelled frames (label >= 0) for the class means.")
            means = np.full((int(classes.max()) + 1, H.shape[1]), np.nan)
            for c in classes:
                means[c] = H[keep & (y == c)].mean(axis=0)
            X = H[keep] - means[y[keep]]
            cov = X.T @ X / max(len(X), 1)
            cov += self.shrinkage * max(np.trace(cov) / cov.shape[0], 1e-12) * np.eye(cov.shape[0])
            self.class_means_ = means
            self.precision_ = np.linalg.inv(cov)
        self.n_fit_ = int(len(S))
        # calibration on validation frames
        raw = self._raw(val_spectra, val_features)
        logs = np.log(np.maximum(raw, _FLOOR))
        self.center_ = np.median(logs, axis=0)
        mad = np.median(np.abs(logs - self.center_), axis=0)
        self.scale_ = np.maximum(1.4826 * mad, 1e-9)
        val = self._combine(raw)
        self.thresholds_ = {f"q{q:g}": float(np.quantile(val, q)) for q in self.quantiles}
        self.n_val_ = int(len(val))
        return self

    # ------------------------------------------------------------------ score
    def _raw(self, spectra, features) -> np.ndarray:
        """``(N, len(components))`` raw component scores."""
        S = np.nan_to_num(np.asarray(spectra, np.float64), nan=0.0)
        cols = []
        for name in self.components:
            if name == "pca_residual":
                X = S - self.pca_mean_
                R = X - (X @ self.pca_components_.T) @ self.pca_components_
                R = _moving_average(R, self.smooth_points)
                cols.append(np.sqrt(np.mean(R * R, axis=1)))
            elif name == "negative_area":
                # A phased 7Li spectrum is mostly positive; a phase error, a quadrature or
                # truncation artefact puts a large part of its area below zero (dispersive
                # skin-effect lobes are a small part). Smoothed first so noise counts little.
                Xs = _moving_average(S, self.negative_smooth_points)
                cols.append(np.maximum(-Xs, 0.0).sum(axis=1) / (np.abs(Xs).sum(axis=1) + 1e-12))
            else:  # mahalanobis
                if features is None:
                    raise ValueError("the 'mahalanobis' component needs the head features")
                H = np.asarray(features, np.float64)
                d = []
                for mu in self.class_means_:
                    if np.all(np.isfinite(mu)):
                        D = H - mu
                        d.append(np.einsum("ij,jk,ik->i", D, self.precision_, D))
                cols.append(np.min(np.stack(d, axis=1), axis=1))
        return np.stack(cols, axis=1)

    def _combine(self, raw: np.ndarray) -> np.ndarray:
        return np.max(self._z(raw), axis=1)

    def _z(self, raw: np.ndarray) -> np.ndarray:
        return (np.log(np.maximum(raw, _FLOOR)) - self.center_) / self.scale_

    def score_components(self, spectra, features=None) -> dict[str, np.ndarray]:
        """Robust z-scores of each component, ``{name: (N,)}``."""
        z = self._z(self._raw(spectra, features))
        return {name: z[:, j] for j, name in enumerate(self.components)}

    def score(self, spectra, features=None) -> np.ndarray:
        """OOD score per frame (higher = more unusual): the largest component z-score."""
        return self._combine(self._raw(spectra, features))

    # ------------------------------------------------------------------ persistence
    def tensors(self) -> dict[str, np.ndarray]:
        """The learned arrays (float64), by the names :meth:`save` writes."""
        t = {"pca.mean": self.pca_mean_, "pca.components": self.pca_components_,
             "calib.center": self.center_, "calib.scale": self.scale_}
        if self.uses_features:
            t.update({"maha.class_means": self.class_means_, "maha.precision": self.precision_})
        return t

    def config(self) -> dict:
        """JSON-safe description: format, parameters, thresholds, sizes."""
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "method":
                "max robust z of the log component scores: " + ", ".join(self.components),
                "components": list(self.components), "params": self.get_params(),
                "thresholds": dict(self.thresholds_), "n_fit": self.n_fit_, "n_val": self.n_val_}

    def save(self, directory: str | Path, meta: Mapping | None = None) -> Path:
        """Write ``ood.safetensors`` and ``ood.json`` (plus ``meta`` under ``"meta"``)."""
        return write_side_files(directory, TENSORS, CONFIG, self.tensors(),
                                {**self.config(), "meta": dict(meta or {})}, FORMAT)

    @classmethod
    def load(cls, directory: str | Path) -> "FeatureOODScorer":
        """Inverse of :meth:`save`."""
        from safetensors.numpy import load_file
        d = Path(directory)
        cfg = read_side_config(d, CONFIG, FORMAT, FORMAT_VERSION, "an", "OOD scorer")
        p = cfg["params"]
        comps = tuple(p.get("components", ("mahalanobis", "pca_residual")))   # v1: both
        sc = cls(p["n_components"], p["smooth_points"], p["shrinkage"], tuple(p["quantiles"]), comps,
                 int(p.get("negative_smooth_points", 5)))
        sc._validate()
        t = load_file(str(d / TENSORS))
        sc.pca_mean_, sc.pca_components_ = t["pca.mean"], t["pca.components"]
        sc.class_means_ = t.get("maha.class_means")
        sc.precision_ = t.get("maha.precision")
        if sc.uses_features and (sc.class_means_ is None or sc.precision_ is None):
            raise ConfigError(f"{d / TENSORS}: the Mahalanobis arrays are missing")
        sc.center_, sc.scale_ = t["calib.center"], t["calib.scale"]
        if sc.center_.shape != (len(comps),):
            raise ConfigError(f"{d / TENSORS}: {sc.center_.shape[0]} calibrated components, "
                              f"expected {len(comps)}")
        sc.thresholds_ = {k: float(v) for k, v in cfg["thresholds"].items()}
        sc.n_fit_, sc.n_val_ = int(cfg["n_fit"]), int(cfg["n_val"])
        return sc

    # ------------------------------------------------------------------ checks
    def check_compatible(self, n_ppm: int, n_features: int) -> None:
        """Raise ``ValueError`` unless the scorer takes ``n_ppm`` grid points and ``n_features``
        head inputs (a scorer from another model or grid)."""
        got_p = int(self.pca_mean_.shape[0])
        got_f = int(self.precision_.shape[0]) if self.uses_features else int(n_features)
        if (got_p, got_f) != (int(n_ppm), int(n_features)):
            raise ValueError(f"the OOD scorer takes {got_p} grid points and {got_f} head features; "
                             f"the model has {n_ppm} and {n_features}")


def fit_on_runs(model, train_runs, val_runs, *, max_fit_runs: int = 120, seed: int = 0,
                **params) -> FeatureOODScorer:
    """Fit a :class:`FeatureOODScorer` for ``model`` on its training runs, calibrated on its
    validation runs.

    Parameters
    ----------
    model : LisentryNet
        The trained model (eval mode).
    train_runs, val_runs : sequence of RunTensors
        ``spectra``, ``echem``, ``echem_mask`` and ``y`` per run
        (:func:`lisentry.training.data.load_runs`); validation runs must not be training runs.
    max_fit_runs : int
        At most this many training runs (drawn with ``seed``) are used for the fit; the
        mean and 32 components of the spectra and a shared covariance settle well before.
    **params
        :class:`FeatureOODScorer` parameters.

    Returns
    -------
    FeatureOODScorer
    """
    train_runs, val_runs = list(train_runs), list(val_runs)
    if not train_runs or not val_runs:
        raise ValueError(f"fit_on_runs needs training and validation runs. Got {len(train_runs)} "
                         f"and {len(val_runs)}.")
    if len(train_runs) > max_fit_runs:
        idx = np.sort(np.random.default_rng(seed).choice(len(train_runs), max_fit_runs, replace=False))
        train_runs = [train_runs[i] for i in idx]
    was_training = model.training
    model.eval()

    def collect(runs, with_y):
        S, H, Y = [], [], []
        for rt in runs:
            _, h = head_inputs(model, rt.spectra, rt.echem, getattr(rt, "echem_mask", None))
            S.append(np.asarray(rt.spectra))
            H.append(h)
            if with_y:
                Y.append(np.asarray(rt.y))
        return np.concatenate(S), np.concatenate(H), (np.concatenate(Y) if with_y else None)

    try:
        S, H, Y = collect(train_runs, True)
        Sv, Hv, _ = collect(val_runs, False)
    finally:
        model.train(was_training)
    return FeatureOODScorer(**params).fit(S, H, Y, Sv, Hv)
