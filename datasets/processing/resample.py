"""Resampling of a spectrum onto a fixed, ascending ppm grid.

Everything that depends only on the two axes (which native points each grid bin overlaps,
and with what weights) is computed once per pair of axes and cached, so resampling a frame
is one cumulative sum and a few gathers: the axes of a run do not change from frame to frame.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

_PLANS: "OrderedDict[tuple, _Plan]" = OrderedDict()
_MAX_PLANS = 32


@dataclass(frozen=True)
class _Plan:
    reverse: bool           # native axis descending: values are reversed first
    binning: bool           # bin averaging (True) or linear interpolation (False)
    ok: np.ndarray          # grid points that get a value
    lo: int                 # first native point (ascending order) that is used
    hi: int                 # one past the last
    j: np.ndarray           # binning: cumulative-integral index pairs; interp: left index
    f: np.ndarray           # interpolation fractions
    scale: float            # binning: native step / grid step


def _key(ppm: np.ndarray, grid: np.ndarray) -> tuple:
    return (ppm.size, float(ppm[0]), float(ppm[-1]), float(ppm[1]) if ppm.size > 1 else 0.0,
            grid.size, float(grid[0]), float(grid[-1]))


def _make_plan(ppm: np.ndarray, grid: np.ndarray) -> _Plan:
    reverse = bool(ppm.size >= 2 and ppm[0] > ppm[-1])
    if reverse:
        ppm = ppm[::-1]
    step = float(grid[1] - grid[0]) if grid.size > 1 else 1.0
    d = float(ppm[1] - ppm[0]) if ppm.size > 1 else np.inf
    if d < step:
        # cumulative integral of the piecewise-constant spectrum at the cell edges; the
        # area of a bin is interp(hi) - interp(lo) of it, with interp's index and weight
        # fixed by the axes
        edges = np.concatenate([ppm - d / 2, [ppm[-1] + d / 2]])
        lo, hi = grid - step / 2, grid + step / 2
        ok = (lo >= edges[0] - 1e-9 * d) & (hi <= edges[-1] + 1e-9 * d)
        x = np.concatenate([lo[ok], hi[ok]])
        j = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, edges.size - 2)
        f = np.clip((x - edges[j]) / (edges[j + 1] - edges[j]), 0.0, 1.0)
        if j.size:                                   # only native cells lo..hi-1 matter
            first, last = int(j.min()), int(j.max()) + 1
        else:
            first, last = 0, 0
        return _Plan(reverse, True, ok, first, last, j - first, f, d / step)
    ok = (grid >= ppm[0]) & (grid <= ppm[-1])
    x = grid[ok]
    j = np.clip(np.searchsorted(ppm, x, side="right") - 1, 0, max(ppm.size - 2, 0))
    if ppm.size > 1:
        f = np.clip((x - ppm[j]) / (ppm[j + 1] - ppm[j]), 0.0, 1.0)
    else:
        f = np.zeros_like(x)
    return _Plan(reverse, False, ok, 0, ppm.size, j, f, 1.0)


def _plan(ppm: np.ndarray, grid: np.ndarray) -> _Plan:
    key = _key(ppm, grid)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _make_plan(ppm, grid)
        _PLANS[key] = plan
        if len(_PLANS) > _MAX_PLANS:
            _PLANS.popitem(last=False)
    else:
        _PLANS.move_to_end(key)
    return plan


def grid_support(ppm: np.ndarray, grid: np.ndarray) -> tuple[int, int]:
    """Index range ``[start, stop)`` of ``ppm`` (in its given order) that
    :func:`resample_to_grid` reads for ``grid``; values outside it do not matter.

    Lets a caller compute a spectrum only where the grid needs it.

    Examples
    --------
    >>> import numpy as np
    >>> ppm = np.linspace(100, -100, 2001)        # descending, 0.1 ppm
    >>> start, stop = grid_support(ppm, np.arange(-5, 5.5, 0.5))
    >>> half = 0.05                                 # native cells are +-half around points
    >>> bool(ppm[start] + half >= 5.25 - 1e-9 and ppm[stop - 1] - half <= -5.25 + 1e-9)
    True
    >>> stop - start                               # of 2001 points
    106
    """
    ppm = np.asarray(ppm, dtype=float)
    grid = np.asarray(grid, dtype=float)
    if ppm.size < 1 or grid.size < 1:
        return 0, 0
    plan = _plan(ppm, grid)
    lo, hi = plan.lo, plan.hi
    if not plan.binning and plan.f.size:
        lo, hi = int(plan.j.min()), min(int(plan.j.max()) + 2, ppm.size)
    elif not plan.binning:
        lo, hi = 0, 0
    if plan.reverse:
        return ppm.size - hi, ppm.size - lo
    return lo, hi


def resample_to_grid(ppm: np.ndarray, values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Put ``values`` sampled at ``ppm`` onto ``grid``; NaN where ``ppm`` does not cover it.

    When the native spacing is finer than the grid step, each grid point gets the mean of
    the spectrum over its bin ``[g - step/2, g + step/2]`` (native points are taken as cells
    of their own spacing, partial overlaps weighted exactly), so
    ``sum(out) * step == sum(values) * native_step`` over fully covered bins and noise is
    averaged down. Otherwise the spectrum is interpolated linearly.

    The bin/interpolation weights depend only on the two axes; they are cached per pair of
    axes (keyed by size and end points), so frames of a run cost one cumulative sum each.

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

    Examples
    --------
    >>> import numpy as np
    >>> ppm = np.linspace(10, -10, 2001)          # descending, 0.01 ppm
    >>> y = np.exp(-ppm ** 2)
    >>> out = resample_to_grid(ppm, y, np.arange(-5, 5.5, 0.5))
    >>> bool(abs(out.sum() * 0.5 - y.sum() * 0.01) < 1e-6)
    True
    """
    ppm = np.asarray(ppm, dtype=float)
    values = np.asarray(values, dtype=float)
    grid = np.asarray(grid, dtype=float)
    out = np.full(grid.shape, np.nan)
    if ppm.size < 1 or grid.size < 1:
        return out
    plan = _plan(ppm, grid)
    if plan.reverse:
        values = values[::-1]
    return _apply(plan, values, out, 0)


def resample_support(ppm: np.ndarray, part: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """:func:`resample_to_grid` of a spectrum given only on ``grid_support(ppm, grid)``.

    ``part`` holds the values at ``ppm[start:stop]``; the result equals
    ``resample_to_grid(ppm, values, grid)`` for any ``values`` with ``values[start:stop] ==
    part`` (the rest is never read), without forming the full-length array.

    Examples
    --------
    >>> import numpy as np
    >>> ppm = np.linspace(10, -10, 2001)
    >>> grid = np.arange(-5, 5.5, 0.5)
    >>> y = np.exp(-ppm ** 2)
    >>> start, stop = grid_support(ppm, grid)
    >>> bool(np.array_equal(resample_support(ppm, y[start:stop], grid),
    ...                     resample_to_grid(ppm, y, grid), equal_nan=True))
    True
    """
    ppm = np.asarray(ppm, dtype=float)
    part = np.asarray(part, dtype=float)
    grid = np.asarray(grid, dtype=float)
    out = np.full(grid.shape, np.nan)
    if ppm.size < 1 or grid.size < 1:
        return out
    plan = _plan(ppm, grid)
    start, stop = grid_support(ppm, grid)
    if part.shape != (stop - start,):
        raise ValueError(f"part has shape {part.shape}; the grid support of this axis is "
                         f"{stop - start} points")
    if plan.reverse:                 # ascending point i is given point size - 1 - i
        return _apply(plan, part[::-1], out, ppm.size - stop)
    return _apply(plan, part, out, start)


def _apply(plan: _Plan, values: np.ndarray, out: np.ndarray, offset: int) -> np.ndarray:
    """Resample ``values`` (ascending order; ``values[0]`` is native point ``offset``)."""
    if plan.binning:
        m = plan.f.size // 2
        if m == 0:
            return out
        v = values[plan.lo - offset:plan.hi - offset]
        cum = np.empty(v.size + 1)
        cum[0] = 0.0
        np.cumsum(v, out=cum[1:])
        a = cum[plan.j]
        a += plan.f * (cum[plan.j + 1] - a)
        out[plan.ok] = (a[m:] - a[:m]) * plan.scale
    else:
        if plan.f.size == 0:
            return out
        if values.size == 1:
            out[plan.ok] = values[0]
        else:
            j = plan.j - offset if offset else plan.j
            a = values[j]
            out[plan.ok] = a + plan.f * (values[j + 1] - a)
    return out
