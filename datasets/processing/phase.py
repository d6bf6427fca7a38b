"""Estimation of a spectrum's zero- and first-order phase (TopSpin convention).

Static 7Li spectra of cells are a few broad lines plus a metal line whose skin effect makes
it partly dispersive, so no phase makes everything absorptive and criteria that look at
the whole spectrum's integral or entropy derivatives (nmrglue's ``autops``) wander. Two
facts make a robust estimate possible:

* the integral of the phased real spectrum only depends on the FID near t = 0, so
  "maximum area" cannot fix PHC1;
* the negative area of an absorptive spectrum is ~0 and grows quickly with any zero- or
  first-order error (dispersive lobes), while a partly dispersive metal line costs the
  same small amount for every phase near the right one.

:func:`estimate_phase` therefore minimises the (normalised) squared negative area of the
real part, measured from a straight baseline through the medians of the two
spectrum edges (first and last 10 %), on a smoothed, down-sampled copy of the spectrum,
with PHC1 bounded and weakly pulled towards 0: a coarse grid first, then Nelder-Mead.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

_N_BINS = 1024


def _downsample(spec: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    n = spec.size
    f = max(1, n // n_bins)
    m = (n // f) * f
    z = spec[:m].reshape(-1, f).mean(axis=1)
    k = (np.arange(z.size) * f + (f - 1) / 2.0) / n      # fractional position k/N of each bin
    return z, k


def _cost(z: np.ndarray, k: np.ndarray, p0: np.ndarray, p1: float, p1_max: float,
          p1_weight: float) -> np.ndarray:
    w = z * np.exp(1j * np.deg2rad(p1) * k)
    r = (w[None, :] * np.exp(1j * np.deg2rad(np.atleast_1d(p0)))[:, None]).real
    m = max(1, r.shape[1] // 10)                      # spectrum edges: taken as baseline
    left = np.median(r[:, :m], axis=1, keepdims=True)
    right = np.median(r[:, -m:], axis=1, keepdims=True)
    r = r - (left + (right - left) * k[None, :])
    neg = np.minimum(r, 0.0)
    c = (neg ** 2).sum(axis=1) / np.maximum((r ** 2).sum(axis=1), 1e-300)
    return c + p1_weight * (p1 / p1_max) ** 2


def estimate_phase(spec: np.ndarray, p1_max_deg: float = 180.0, p1_weight: float = 1e-5,
                   grid_step_deg: float = 6.0) -> tuple[float, float]:
    """Estimate ``(PHC0, PHC1)`` in degrees for a complex spectrum in TopSpin order.

    Parameters
    ----------
    spec : np.ndarray
        Complex spectrum, point 0 = highest frequency, digital filter removed (see
        :func:`lisentry.datasets.processing.fourier.bruker_spectrum`).
    p1_max_deg : float
        Bound on ``|PHC1|`` in degrees.
    p1_weight : float
        Weight of the ``(PHC1 / p1_max_deg)^2`` penalty (breaks ties towards small PHC1).
    grid_step_deg : float
        Step of the coarse search grid in degrees.

    Returns
    -------
    tuple of float
        ``(PHC0, PHC1)`` in degrees, PHC0 in [0, 360), to be applied with
        :func:`lisentry.datasets.processing.fourier.phase_spectrum`.

    Examples
    --------
    >>> import numpy as np
    >>> nu = np.linspace(-1, 1, 4096)
    >>> line = 1 / (1 + 1j * (nu - 0.2) / 0.01) + 0.5 / (1 + 1j * (nu + 0.3) / 0.02)
    >>> k = np.arange(nu.size) / nu.size
    >>> bad = line * np.exp(-1j * np.deg2rad(40 + 60 * k))
    >>> p0, p1 = estimate_phase(bad)
    >>> err = [p0 + p1 * kk - (40 + 60 * kk) for kk in (0.35, 0.6)]  # at the two lines
    >>> bool(max(abs(e) for e in err) < 10)
    True

    With few lines, (PHC0, PHC1) trade against each other: the phase at the lines is
    recovered to a few degrees, the pair itself less well.
    """
    spec = np.asarray(spec, dtype=np.complex128)
    z, k = _downsample(spec, _N_BINS)
    scale = np.abs(z).max()
    if not np.isfinite(scale) or scale == 0:
        return 0.0, 0.0
    z = z / scale
    p0_grid = np.arange(0.0, 360.0, grid_step_deg)
    n1 = int(np.ceil(p1_max_deg / grid_step_deg))
    p1_grid = np.linspace(-p1_max_deg, p1_max_deg, 2 * n1 + 1)
    best = (np.inf, 0.0, 0.0)
    for p1 in p1_grid:
        c = _cost(z, k, p0_grid, p1, p1_max_deg, p1_weight)
        i = int(np.argmin(c))
        if c[i] < best[0]:
            best = (float(c[i]), float(p0_grid[i]), float(p1))

    def f(v):
        p1 = float(np.clip(v[1], -p1_max_deg, p1_max_deg))
        return float(_cost(z, k, np.array([v[0]]), p1, p1_max_deg, p1_weight)[0])

    res = minimize(f, np.array([best[1], best[2]]), method="Nelder-Mead",
                   options=dict(xatol=0.01, fatol=1e-12, maxiter=400,
                                initial_simplex=np.array([[best[1], best[2]],
                                                          [best[1] + grid_step_deg, best[2]],
                                                          [best[1], best[2] + grid_step_deg]])))
    p0, p1 = (res.x if res.fun <= best[0] else (best[1], best[2]))
    p1 = float(np.clip(p1, -p1_max_deg, p1_max_deg))
    return float(np.mod(p0, 360.0)), p1
