"""Resampling of a spectrum onto a fixed, ascending ppm grid."""
from __future__ import annotations

import numpy as np


def resample_to_grid(ppm: np.ndarray, values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Put ``values`` sampled at ``ppm`` onto ``grid``; NaN where ``ppm`` does not cover it.

    When the native spacing is finer than the grid step, each grid point gets the mean of
    the spectrum over its bin ``[g - step/2, g + step/2]`` (native points are taken as cells
    of their own spacing, partial overlaps weighted exactly), so
    ``sum(out) * step == sum(values) * native_step`` over fully covered bins and noise is
    averaged down. Otherwise the spectrum is interpolated linearly.

    Parameters
    ----------
    ppm : np.ndarray
        Native axis (ppm), uniformly spaced, either order.
    values : np.ndarray
        Real intensities at ``ppm``.
    grid : np.ndarray
        Target axis (ppm), ascending and uniformly spaced.

    Returns
    -------
    np.ndarray
        float64 values on ``grid``; NaN at grid points (bins) not fully covered.
    """
    ppm = np.asarray(ppm, dtype=float)
    values = np.asarray(values, dtype=float)
    if ppm.size >= 2 and ppm[0] > ppm[-1]:
        ppm, values = ppm[::-1], values[::-1]
    grid = np.asarray(grid, dtype=float)
    step = float(grid[1] - grid[0]) if grid.size > 1 else 1.0
    d = float(ppm[1] - ppm[0]) if ppm.size > 1 else np.inf
    out = np.full(grid.shape, np.nan)
    if d < step:
        # cumulative integral of the piecewise-constant spectrum at the cell edges
        edges = np.concatenate([ppm - d / 2, [ppm[-1] + d / 2]])
        cum = np.concatenate([[0.0], np.cumsum(values * d)])
        lo, hi = grid - step / 2, grid + step / 2
        ok = (lo >= edges[0] - 1e-9 * d) & (hi <= edges[-1] + 1e-9 * d)
        area = np.interp(hi[ok], edges, cum) - np.interp(lo[ok], edges, cum)
        out[ok] = area / step
    else:
        ok = (grid >= ppm[0]) & (grid <= ppm[-1])
        out[ok] = np.interp(grid[ok], ppm, values)
    return out
