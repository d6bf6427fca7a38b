"""Baseline estimation of 1-D spectra (robust polynomial, asymmetric least squares)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.linalg import solveh_banded
from scipy.linalg.lapack import dposv


@lru_cache(maxsize=16)
def _legendre_design(n: int, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Legendre design matrix ``V`` on ``linspace(-1, 1, n)`` and the per-point outer products
    ``V[i] V[i]^T`` flattened to ``(n, (order+1)^2)`` (read-only, cached per size/order), so
    the normal matrix of any subset of points is one matrix-vector product."""
    V = np.polynomial.legendre.legvander(np.linspace(-1.0, 1.0, n), order)
    outer = (V[:, :, None] * V[:, None, :]).reshape(n, -1)
    V.setflags(write=False)
    outer.setflags(write=False)
    return V, outer


def _median(a: np.ndarray) -> float:
    """``np.median`` of a 1-D finite array, without its per-call overhead."""
    n = a.size
    h = n // 2
    if n % 2:
        return float(np.partition(a, h)[h])
    p = np.partition(a, (h - 1, h))
    return 0.5 * float(p[h - 1] + p[h])


def _median_inplace(a: np.ndarray) -> float:
    """:func:`_median` of ``a``, reordering ``a`` itself instead of a copy (same value)."""
    n = a.size
    h = n // 2
    if n % 2:
        a.partition(h)
        return float(a[h])
    a.partition((h - 1, h))
    return 0.5 * float(a[h - 1] + a[h])


#: Above this many points the robust fit runs on an evenly strided subset (a cubic baseline
#: has no detail that needs more; the baseline is still evaluated on every point).
POLY_FIT_MAX_POINTS = 2048


@lru_cache(maxsize=16)
def _strided_design(n: int, order: int, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows ``::stride`` of :func:`_legendre_design` (cached): ``V_sub, outer_sub, V_full``."""
    V, outer = _legendre_design(n, order)
    Vs = np.ascontiguousarray(V[::stride])
    Os = np.ascontiguousarray(outer[::stride])
    Vs.setflags(write=False)
    Os.setflags(write=False)
    return Vs, Os, V


_NORMAL_ALL: dict = {}


def _all_points_normal(V: np.ndarray, outer: np.ndarray, m: int) -> np.ndarray:
    """``(ones @ outer).reshape(m, m)`` for a cached design (computed once, as the loop
    would compute it; a copy, since LAPACK may overwrite it)."""
    key = (id(outer), outer.shape)
    hit = _NORMAL_ALL.get(key)
    if hit is None or hit[0] is not outer:
        hit = (outer, (np.ones(outer.shape[0]) @ outer).reshape(m, m))
        _NORMAL_ALL[key] = hit
        if len(_NORMAL_ALL) > 32:
            _NORMAL_ALL.pop(next(iter(_NORMAL_ALL)))
    return hit[1].copy()


def poly_baseline(y: np.ndarray, order: int = 3, n_iter: int = 10, clip: float = 3.0,
                  max_fit_points: int = POLY_FIT_MAX_POINTS) -> np.ndarray:
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
    max_fit_points : int
        Spectra longer than this are fitted on every k-th point (k = ceil(n / max_fit_points));
        the polynomial is then evaluated on all points.

    Returns
    -------
    np.ndarray
        The baseline, same shape as ``y``.
    """
    y = np.asarray(y, dtype=float)
    stride = max(1, -(-y.size // max_fit_points))
    if stride > 1:
        V, outer, V_full = _strided_design(y.size, order, stride)
        y = y[::stride]
    else:
        V, outer = _legendre_design(y.size, order)
        V_full = V
    m = order + 1
    keep = np.ones(y.size, dtype=bool)
    coef = np.zeros(m)
    prev: tuple[bytes, np.ndarray] | None = None     # (mask, coefficients) one round back
    key = keep.tobytes()
    for it in range(n_iter):
        if prev is not None and key == prev[0]:
            # the masks alternate between two sets from here on (the fit is deterministic),
            # so the last round's fit is known without running the remaining rounds
            coef = prev[1] if (n_iter - 1 - it) % 2 == 0 else coef
            break
        if np.count_nonzero(keep) <= order + 1:
            break
        # least squares on the kept points through the normal equations (Cholesky): the
        # Legendre basis on [-1, 1] is well conditioned, so this equals lstsq to rounding
        if it == 0:                    # all points: the same products, G cached per design
            G, b = _all_points_normal(V, outer, m), np.ascontiguousarray(y) @ V
        else:
            w = keep.astype(float)
            G, b = (w @ outer).reshape(m, m), (w * y) @ V
        _, c, info = dposv(G, b)
        if info != 0:
            c, *_ = np.linalg.lstsq(V[keep], y[keep], rcond=None)
        coef = c
        r = y - V @ coef
        rk = r[keep]                   # a copy: partitioned in place below
        rk -= _median_inplace(rk)
        sigma = 1.4826 * _median_inplace(np.abs(rk, out=rk))
        if sigma <= 0:
            break
        new = np.abs(r, out=r) <= clip * sigma
        new_key = new.tobytes()
        if new_key == key:
            break
        prev = (key, coef)
        keep, key = new, new_key
    return V_full @ coef


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
    P = _d2_penalty_banded(n, float(smoothness))   # W + P is symmetric, pentadiagonal
    ab = P.copy()
    w = np.ones(n)
    z = y
    for _ in range(n_iter):
        ab[:] = P
        ab[2] += w
        z = solveh_banded(ab, w * y, check_finite=False)
        w_new = np.where(y > z, asymmetry, 1.0 - asymmetry)
        if np.array_equal(w_new, w):
            break
        w = w_new
    return np.asarray(z)


@lru_cache(maxsize=16)
def _d2_penalty_banded(n: int, smoothness: float) -> np.ndarray:
    """``smoothness * D2^T D2`` in LAPACK upper banded storage (3 x n, read-only)."""
    ab = np.zeros((3, n))
    main = np.full(n, 6.0)
    main[[0, -1]] = 1.0
    main[[1, -2]] = 5.0
    off1 = np.full(n - 1, -4.0)
    off1[[0, -1]] = -2.0
    ab[2] = main
    ab[1, 1:] = off1
    ab[0, 2:] = 1.0
    if n == 3:
        ab[2] = [1.0, 4.0, 1.0]
        ab[1, 1:] = [-2.0, -2.0]
    ab *= smoothness
    ab.setflags(write=False)
    return ab
