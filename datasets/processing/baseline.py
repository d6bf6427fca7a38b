"""Baseline estimation of 1-D spectra (robust polynomial, asymmetric least squares)."""
from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import spsolve


def poly_baseline(y: np.ndarray, order: int = 3, n_iter: int = 10, clip: float = 3.0) -> np.ndarray:
    """Robust polynomial baseline: fit, drop points beyond ``clip`` robust sigmas, refit.

    Peaks (and the negative lobes of dispersive lines) are excluded symmetrically, so the
    fit is not pulled below the noise as one-sided methods are.

    Parameters
    ----------
    y : np.ndarray
        Real spectrum (finite), uniformly sampled.
    order : int
        Polynomial order (on the axis scaled to [-1, 1]).
    n_iter : int
        Number of clip-and-refit rounds.
    clip : float
        Exclusion threshold in units of 1.4826 x MAD of the residual of retained points.

    Returns
    -------
    np.ndarray
        The baseline, same shape as ``y``.
    """
    y = np.asarray(y, dtype=float)
    x = np.linspace(-1.0, 1.0, y.size)
    V = np.polynomial.legendre.legvander(x, order)
    keep = np.ones(y.size, dtype=bool)
    base = np.zeros_like(y)
    for _ in range(n_iter):
        if keep.sum() <= order + 1:
            break
        coef, *_ = np.linalg.lstsq(V[keep], y[keep], rcond=None)
        base = V @ coef
        r = y - base
        sigma = 1.4826 * np.median(np.abs(r[keep] - np.median(r[keep])))
        if sigma <= 0:
            break
        new = np.abs(r) <= clip * sigma
        if np.array_equal(new, keep):
            break
        keep = new
    return base


def als_baseline(y: np.ndarray, smoothness: float = 1e5, asymmetry: float = 0.01,
                 n_iter: int = 10) -> np.ndarray:
    """Asymmetric least-squares baseline (Eilers & Boelens 2005).

    Minimises ``sum w (y - z)^2 + smoothness * sum (D2 z)^2`` with weights ``asymmetry``
    above the baseline and ``1 - asymmetry`` below it.

    Parameters
    ----------
    y : np.ndarray
        Real spectrum (finite).
    smoothness : float
        Penalty on the second difference, for the spectrum's own sampling (on the default
        0.5 ppm grid 1e5 leaves features narrower than ~20 ppm out of the baseline).
    asymmetry : float
        Weight of points above the baseline, in (0, 0.5].
    n_iter : int
        Reweighting rounds.

    Returns
    -------
    np.ndarray
        The baseline, same shape as ``y``.
    """
    y = np.asarray(y, dtype=float)
    n = y.size
    if n < 3:
        return np.zeros_like(y)
    D = sparse.diags([1.0, -2.0, 1.0], [0, 1, 2], shape=(n - 2, n))
    P = smoothness * (D.T @ D)
    w = np.ones(n)
    z = y
    for _ in range(n_iter):
        W = sparse.diags(w)
        z = spsolve((W + P).tocsc(), w * y)
        w_new = np.where(y > z, asymmetry, 1.0 - asymmetry)
        if np.array_equal(w_new, w):
            break
        w = w_new
    return np.asarray(z)
