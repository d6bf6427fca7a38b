"""An OOD score that needs no retraining: feature-space distance plus an input-level check.

The energy score of the logits (:func:`lisentry.models.calibration.energy_score`) hardly
separates out-of-distribution frames from normal ones on the OOD set of
:mod:`lisentry.training.ood` (see ``benchmarks/ood_eval.py``): a classifier trained only on 7Li
frames is as confident on a 19F spectrum or on pure noise as on a normal frame. This module adds
two scores, both fitted on the model's own training frames, and combines them:

``mahalanobis``
    Class-conditional Mahalanobis distance with one shared covariance (Lee et al., NeurIPS
    2018) on the input of the classification head, i.e. the GRU output concatenated with the
    frame embedding (``2 * hidden`` values, captured with a forward hook, so the model is
    unchanged): ``min_c (h - mu_c)^T Sigma^-1 (h - mu_c)``.
``pca_residual``
    Reconstruction error of the (per-run normalised, NaN -> 0) spectrum by the first
    ``n_components`` principal components of the training spectra, smoothed over
    ``smooth_points`` grid points before taking the RMS, so that white noise, which differs
    from run to run, counts little and structure the training spectra never had (a line at a
    new shift, a phase or baseline distortion, a time-domain signal) counts fully.

Each score is turned into a robust z-score of its logarithm against the same scores on
in-distribution validation frames (``(log s - median) / (1.4826 MAD)``) and the OOD score is the
larger of the two z-scores. Thresholds are quantiles (95 %, 99 %) of that score on the
validation frames.

Everything learned is a few arrays (:meth:`FeatureOODScorer.tensors`) and a JSON-safe dict
(:meth:`FeatureOODScorer.config`), written as safetensors + JSON by :meth:`FeatureOODScorer.save`,
never pickled.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from lisentry.datasets.errors import ConfigError

FORMAT = "lisentry-ood-scorer"
FORMAT_VERSION = 1
TENSORS = "ood.safetensors"
CONFIG = "ood.json"
COMPONENTS = ("mahalanobis", "pca_residual")


# ---------------------------------------------------------------------- model features
@torch.no_grad()
def head_inputs(model, spectra, echem, echem_mask=None) -> tuple[np.ndarray, np.ndarray]:
    """Logits and the classification head's input of one run, frames in order (causal).

    Parameters
    ----------
    model : LisentryNet
        Any model with a ``head`` linear layer fed by the penultimate features.
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
    got = {}
    hook = model.head.register_forward_hook(lambda m, inp, out: got.__setitem__("h", inp[0]))
    try:
        em = None if echem_mask is None else torch.as_tensor(np.asarray(echem_mask, np.float32))[None]
        out = model(torch.from_numpy(np.array(spectra, np.float32))[None],
                    torch.as_tensor(np.asarray(echem, np.float32))[None], echem_mask=em)
    finally:
        hook.remove()
    return out["logits"][0].double().numpy(), got["h"][0].double().numpy()


def frames_inputs(frames) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(spectra, echem, echem_mask)`` of a list of processed frames, as the detector builds them."""
    from lisentry.models.features import echem_features
    spectra = np.stack([f.intensity for f in frames]).astype(np.float32)
    e, m = echem_features([f.t_s for f in frames], [f.potential_V for f in frames],
                          [f.current_A for f in frames], [f.charge_C for f in frames])
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
    """Mahalanobis distance on the head's input + smoothed PCA residual of the spectrum.

    Parameters
    ----------
    n_components : int
        Principal components of the training spectra kept for the reconstruction.
    smooth_points : int
        Width (grid points) of the moving average applied to the residual (21 = 10 ppm on
        the 0.5 ppm grid).
    shrinkage : float
        Ridge added to the shared covariance, as a fraction of its mean eigenvalue.
    quantiles : sequence of float
        Quantiles of the validation scores stored as thresholds.

    Attributes
    ----------
    pca_mean_, pca_components_ : np.ndarray
        ``(n_ppm,)`` and ``(n_components, n_ppm)``.
    class_means_, precision_ : np.ndarray
        ``(n_classes, n_features)`` and ``(n_features, n_features)``.
    center_, scale_ : np.ndarray
        ``(2,)`` median and robust std of the log component scores on validation frames,
        in :data:`COMPONENTS` order.
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
                 quantiles: Sequence[float] = (0.95, 0.99)):
        self.n_components = n_components
        self.smooth_points = smooth_points
        self.shrinkage = shrinkage
        self.quantiles = tuple(quantiles)

    def get_params(self) -> dict:
        return {"n_components": self.n_components, "smooth_points": self.smooth_points,
                "shrinkage": self.shrinkage, "quantiles": list(self.quantiles)}

    def _validate(self) -> None:
        _check("n_components", isinstance(self.n_components, int) and self.n_components >= 1,
               "an int >= 1", self.n_components)
        _check("smooth_points", isinstance(self.smooth_points, int) and self.smooth_points >= 1,
               "an int >= 1", self.smooth_points)
        _check("shrinkage", math.isfinite(self.shrinkage) and self.shrinkage >= 0, ">= 0",
               self.shrinkage)
        _check("quantiles", all(0 < q < 1 for q in self.quantiles), "in (0, 1)", self.quantiles)

    # ------------------------------------------------------------------ fit
    def fit(self, spectra, features, labels, val_spectra, val_features) -> "FeatureOODScorer":
        """Fit on training frames and calibrate on in-distribution validation frames.

        Parameters
        ----------
        spectra : array_like
            ``(N, n_ppm)`` normalised training spectra (NaN = not covered).
        features : array_like
            ``(N, n_features)`` head inputs of the same frames (:func:`head_inputs`).
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
        H = np.asarray(features, np.float64)
        y = np.asarray(labels).astype(int).reshape(-1)
        if not (S.ndim == 2 and H.ndim == 2 and len(S) == len(H) == len(y)):
            raise ValueError(f"spectra (N, P), features (N, F) and labels (N,) must agree. Got "
                             f"{S.shape}, {H.shape}, {y.shape}.")
        k = min(self.n_components, S.shape[0] - 1, S.shape[1])
        self.pca_mean_ = S.mean(axis=0)
        _, _, vt = np.linalg.svd(S - self.pca_mean_, full_matrices=False)
        self.pca_components_ = vt[:k].copy()
        keep = y >= 0
        classes = np.unique(y[keep])
        if classes.size == 0:
            raise ValueError("fit needs labelled frames (label >= 0) for the class means.")
        n_cls = int(classes.max()) + 1
        means = np.full((n_cls, H.shape[1]), np.nan)
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
        logs = np.log(np.maximum(raw, 1e-300))
        self.center_ = np.median(logs, axis=0)
        mad = np.median(np.abs(logs - self.center_), axis=0)
        self.scale_ = np.maximum(1.4826 * mad, 1e-9)
        val = self._combine(raw)
        self.thresholds_ = {f"q{q:g}": float(np.quantile(val, q)) for q in self.quantiles}
        self.n_val_ = int(len(val))
        return self

    # ------------------------------------------------------------------ score
    def _raw(self, spectra, features) -> np.ndarray:
        """``(N, 2)`` raw component scores (:data:`COMPONENTS` order)."""
        S = np.nan_to_num(np.asarray(spectra, np.float64), nan=0.0)
        H = np.asarray(features, np.float64)
        X = S - self.pca_mean_
        R = X - (X @ self.pca_components_.T) @ self.pca_components_
        R = _moving_average(R, self.smooth_points)
        pca = np.sqrt(np.mean(R * R, axis=1))
        d = []
        for mu in self.class_means_:
            if np.all(np.isfinite(mu)):
                D = H - mu
                d.append(np.einsum("ij,jk,ik->i", D, self.precision_, D))
        maha = np.min(np.stack(d, axis=1), axis=1)
        return np.stack([maha, pca], axis=1)

    def _combine(self, raw: np.ndarray) -> np.ndarray:
        return np.max(self._z(raw), axis=1)

    def _z(self, raw: np.ndarray) -> np.ndarray:
        return (np.log(np.maximum(raw, 1e-300)) - self.center_) / self.scale_

    def score_components(self, spectra, features) -> dict[str, np.ndarray]:
        """Robust z-scores of each component, ``{name: (N,)}``."""
        z = self._z(self._raw(spectra, features))
        return {name: z[:, j] for j, name in enumerate(COMPONENTS)}

    def score(self, spectra, features) -> np.ndarray:
        """OOD score per frame (higher = more unusual): the larger component z-score."""
        return self._combine(self._raw(spectra, features))

    # ------------------------------------------------------------------ persistence
    def tensors(self) -> dict[str, np.ndarray]:
        """The learned arrays (float64), by the names :meth:`save` writes."""
        return {"pca.mean": self.pca_mean_, "pca.components": self.pca_components_,
                "maha.class_means": self.class_means_, "maha.precision": self.precision_,
                "calib.center": self.center_, "calib.scale": self.scale_}

    def config(self) -> dict:
        """JSON-safe description: format, parameters, thresholds, sizes."""
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "method":
                "max robust z of log(Mahalanobis on head input), log(smoothed PCA residual)",
                "components": list(COMPONENTS), "params": self.get_params(),
                "thresholds": dict(self.thresholds_), "n_fit": self.n_fit_, "n_val": self.n_val_}

    def save(self, directory: str | Path, meta: Mapping | None = None) -> Path:
        """Write ``ood.safetensors`` and ``ood.json`` (plus ``meta`` under ``"meta"``)."""
        from safetensors.numpy import save_file
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        arrays = {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in self.tensors().items()}
        save_file(arrays, str(d / TENSORS), metadata={"format": FORMAT})
        cfg = {**self.config(), "meta": dict(meta or {})}
        (d / CONFIG).write_text(json.dumps(cfg, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "FeatureOODScorer":
        """Inverse of :meth:`save`."""
        from safetensors.numpy import load_file
        d = Path(directory)
        cfg = json.loads((d / CONFIG).read_text(encoding="utf-8"))
        if cfg.get("format") != FORMAT:
            raise ConfigError(f"{d / CONFIG}: not an OOD scorer (format is not '{FORMAT}')")
        p = cfg["params"]
        sc = cls(p["n_components"], p["smooth_points"], p["shrinkage"], tuple(p["quantiles"]))
        t = load_file(str(d / TENSORS))
        sc.pca_mean_, sc.pca_components_ = t["pca.mean"], t["pca.components"]
        sc.class_means_, sc.precision_ = t["maha.class_means"], t["maha.precision"]
        sc.center_, sc.scale_ = t["calib.center"], t["calib.scale"]
        sc.thresholds_ = {k: float(v) for k, v in cfg["thresholds"].items()}
        sc.n_fit_, sc.n_val_ = int(cfg["n_fit"]), int(cfg["n_val"])
        return sc
