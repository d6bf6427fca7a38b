"""Phase alignment of a run's frames to its first frame (residual zero- and first-order phase).

Why: the per-frame phases a run arrives with (TopSpin's ``procs`` PHC0/PHC1, set by automatic
phasing or by eye) scatter by a few degrees from frame to frame. On the intense, always-present
lines (the sulfide electrolyte at 3-5 ppm, the Li counter electrode near 245 ppm) a 2 degree
error leaves a dispersive tail whose integral over the Knight-shifted cluster window (10-130 ppm)
is about 1.7 % of the total 7Li signal -- three times the 0.5 % detection limit of the classes,
so frame-to-frame phase jitter, not the cell, dominated the cluster and new-metal amounts
(measured on simulated hold and overlithiation runs: the cluster-window error fell from a
standard deviation of 3.0-3.6 % to under 1 % with exact per-frame phases).

Those lines do not change much during a run, so the residual phase of frame ``t`` relative to
the run's first frame is measured on them: with ``C_t`` and ``C_0`` the complex (phased)
spectra on the grid, ``z = C_0 conj(C_t)`` has the phase that rotates ``C_t`` onto ``C_0``, and
its magnitude weights the strong lines. The zero-order term is ``arg(sum z)`` (closed form, no
wrapping); a first-order term across the grid is a weighted least-squares slope of the
remaining ``arg z`` on the points carrying signal, shrunk towards 0 when the signal sits in one
narrow region (a single line cannot fix a slope). The frame then carries the first frame's
phase, whatever it was: a constant phase error of the run is left (differences to the first
frame cancel it), and no line is forced absorptive -- the skin-effect dispersion of metal lines
is kept, as it should be.

Limits (``benchmarks/phase_align.py``, ``docs/results/phase_align.txt``): it assumes some
strong lines stay. On simulated runs it brings the cluster-window error to what exact phases give
(hard-carbon/sulfide and LLZO families: median 3-4 % -> about 1 %); in the Li | Li liquid family,
whose metal lines are the strong lines and change, it makes the metal window worse (median error
4.9 % -> 7.7 %). On the real Li | Li TEGDME run it cuts the phase leakage into the empty
20-150 ppm range by 2.6x and leaves the metal integral where it was (last frame 1.19 either
way), but its frame-to-frame jitter rises from 0.4 % to 1 %: one line (the electrolyte) fixes
only a zero-order phase. Until 2026-12-05 one drift for the whole spectrum was estimated; the
changing metal line dragged it, and the metal integral went negative late in that run. Hence
opt-in (``ProcessingConfig.phase_align``).
"""
from __future__ import annotations

import numpy as np

#: Points with ``|z|`` below this fraction of its maximum do not enter the slope fit.
SLOPE_MIN_WEIGHT = 0.02
#: Points of the first frame weaker than this fraction of its tallest point are not used.
STRONG_FRACTION = 0.1
#: A grid point enters the phase estimate when its magnitude changed by at most this fraction.
STABLE_TOLERANCE = 0.2
#: Largest reference drift (grid points) searched for between a frame and the first frame.
MAX_SHIFT_POINTS = 8
#: A line enters the phase comparison when the normalised correlation of its power spectrum with
#: the first frame's (at its best drift) is at least this: on the real Li | Li run the electrolyte
#: line scores 0.95, the metal lines, whose microstructure component grows, 0.24-0.5.
MIN_SHAPE_SCORE = 0.8
#: Ridge on the slope (in units of the weighted variance of the normalised grid position):
#: with all weight in one narrow line (variance ~1e-4) the slope is shrunk to ~0.
SLOPE_RIDGE = 2e-3


def residual_phase(frame: np.ndarray, reference: np.ndarray, *, slope: bool = True,
                   stable_only: bool = True) -> np.ndarray:
    """Phase (radians, per grid point) that rotates ``frame`` onto ``reference``.

    For the comparison only, each strong line of the frame is first moved by its own drift
    relative to ``reference`` (:func:`align_lines`): a line 1 ppm off with a 1 ppm width would
    otherwise read as a 45 degree phase twist. Lines differ in drift (bulk magnetic
    susceptibility moves the electrolyte and metal lines differently; on the real run the
    electrolyte line moved 1.2 ppm), and a line that changed shape has no drift to measure, so
    lines whose shape changed are left out of the comparison.

    Parameters
    ----------
    frame, reference : np.ndarray
        Complex spectra on the same grid (NaN where not covered).
    slope : bool
        Fit a first-order (linear across the grid) term as well as the constant.
    stable_only : bool
        Measure only on points whose magnitude changed by at most ``STABLE_TOLERANCE``.

    Returns
    -------
    np.ndarray
        ``(P,)`` float64 phase ``theta`` such that ``frame * exp(1j * theta)`` best matches
        ``reference`` on its strong lines; zeros when nothing is comparable.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.linspace(-100, 400, 1001)
    >>> ref = 1 / (1 + 1j * (x - 4) / 2) + 0.5 / (1 + 1j * (x - 245) / 5)
    >>> th_true = np.deg2rad(3.0) + np.deg2rad(4.0) * (x - 150) / 250
    >>> th = residual_phase(ref * np.exp(-1j * th_true), ref)
    >>> bool(np.max(np.abs(th - th_true)[[208, 690]]) < np.deg2rad(0.05))
    True
    """
    f = np.asarray(frame, dtype=np.complex128)
    r = np.asarray(reference, dtype=np.complex128)
    n = f.shape[-1]
    theta = np.zeros(n)
    ok = np.isfinite(f) & np.isfinite(r)
    if ok.sum() < 3:
        return theta
    f = align_lines(f, r)
    ok &= np.isfinite(f)
    # only the strong lines: the tails of weak lines that come and go (clusters) would bias it
    ar = np.where(ok, np.abs(np.nan_to_num(r)), 0.0)
    ok &= ar >= STRONG_FRACTION * ar.max()
    if ok.sum() < 3:
        return theta
    z = np.where(ok, r * np.conj(np.where(ok, f, 0)), 0)
    if stable_only:
        # lines that grew or shrank since the first frame (new metal, lost counter electrode)
        # carry their own skin-effect phase: measure on the lines that stayed
        af = np.abs(np.nan_to_num(f))
        z = np.where(np.abs(af - ar) <= STABLE_TOLERANCE * np.maximum(af, ar), z, 0)
    total = z.sum()
    if not np.isfinite(total) or abs(total) == 0:
        return theta
    a = float(np.angle(total))
    theta[:] = a
    if not slope:
        return theta
    idx = np.arange(n, dtype=float)
    u = (idx - (n - 1) / 2.0) / max((n - 1) / 2.0, 1.0)     # grid position in -1..1
    w = np.abs(z)
    keep = ok & (w >= SLOPE_MIN_WEIGHT * w.max())
    if keep.sum() < 3:
        return theta
    w, uk = w[keep], u[keep]
    res = np.angle(z[keep] * np.exp(-1j * a))
    sw = w.sum()
    mu = (w * uk).sum() / sw
    var = (w * (uk - mu) ** 2).sum() / sw
    b = float((w * (uk - mu) * res).sum() / sw / (var + SLOPE_RIDGE))
    theta = theta + b * (u - mu)
    # the constant again, with the slope removed (the slope moved the weighted mean phase)
    a2 = float(np.angle((z * np.exp(-1j * (theta - a)))[ok].sum()))
    return theta - a + a2


def drift_points(frame: np.ndarray, reference: np.ndarray,
                 max_points: int = MAX_SHIFT_POINTS) -> float:
    """Shift (grid points, sub-point) that best aligns ``|frame|^2`` with ``|reference|^2``.

    Magnitude spectra do not depend on the phase, so the reference drift is measured before
    the phase: the lag of the largest cross-correlation of the two power spectra within
    ``+-max_points``, refined by a parabola. Positive: the frame's lines sit at higher index.

    The lag is measured on each strong line of the reference separately, and the line that
    kept its shape best (the highest normalised correlation at its best lag) gives it. A
    field drift moves every line alike, while a line that changes shape -- the Li metal line of
    a Li | Li cell, whose microstructure component grows on its high-ppm side -- drags a
    whole-spectrum correlation towards itself: on the real Li | Li TEGDME run that sham
    drift turned into a phase error that drove the metal integral negative late in the run.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(400.0)
    >>> ref = 1 / (1 + 1j * (x - 200) / 2)
    >>> round(float(drift_points(1 / (1 + 1j * (x - 202.5) / 2) * 1j, ref)), 1)
    2.5
    """
    lines = line_drifts(frame, reference, max_points)
    best = max(lines, key=lambda line: line[3], default=None)
    if best is None or not np.isfinite(best[3]):
        return 0.0
    return best[2]


def line_drifts(frame: np.ndarray, reference: np.ndarray,
                max_points: int = MAX_SHIFT_POINTS) -> list[tuple[int, int, float, float]]:
    """Per strong line of the reference: ``(start, stop, shift_points, shape_score)``.

    ``start:stop`` is the line's region on the grid, ``shift_points`` its drift (as
    :func:`drift_points`), ``shape_score`` the normalised correlation of the two power spectra
    over the region at the best lag (1 = the line kept its shape exactly).
    """
    # power spectra: their Lorentzian tails fall as 1/x^2 (magnitudes only as 1/x)
    a = np.nan_to_num(np.abs(np.asarray(frame)) ** 2, nan=0.0)
    b = np.nan_to_num(np.abs(np.asarray(reference)) ** 2, nan=0.0)
    a = a - np.median(a)
    # the reference's strong lines only: weak lines that grow elsewhere must not pull the lag
    b = np.where(b >= STRONG_FRACTION ** 2 * b.max(), b - np.median(b), 0.0)
    n = a.size
    m = int(min(max_points, n // 4))
    if m < 1:
        return []
    lags = np.arange(-m, m + 1)
    core = slice(m, n - m)
    a_lag = np.stack([a[m + k: n - m + k] for k in lags])        # (lags, n - 2m)
    bc = b[core]
    out = []
    for lo, hi in _line_regions(bc != 0, pad=m):
        bl = bc[lo:hi]
        al = a_lag[:, lo:hi]
        cc = al @ bl
        i = int(np.argmax(cc))
        norm = float(np.linalg.norm(al[i]) * np.linalg.norm(bl))
        if not norm > 0:  # nothing in the frame there (masked or empty): no drift measured
            out.append((lo + m, hi + m, 0.0, -np.inf))
            continue
        score = float(cc[i]) / norm
        s = float(lags[i])
        if 0 < i < len(cc) - 1:
            den = cc[i - 1] - 2 * cc[i] + cc[i + 1]
            if den < 0:
                s += 0.5 * (cc[i - 1] - cc[i + 1]) / den
        out.append((lo + m, hi + m, s, score))
    return out


def _line_regions(mask: np.ndarray, pad: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of the runs of True in ``mask``, each widened by ``pad`` points and
    merged where they then overlap: one region per line (or group of overlapping lines)."""
    idx = np.flatnonzero(mask)
    if not idx.size:
        return []
    breaks = np.flatnonzero(np.diff(idx) > 2 * pad + 1)
    starts = np.r_[idx[0], idx[breaks + 1]]
    stops = np.r_[idx[breaks], idx[-1]] + 1
    return [(max(int(s) - pad, 0), min(int(e) + pad, mask.size)) for s, e in zip(starts, stops)]


def align_lines(frame: np.ndarray, reference: np.ndarray,
                min_shape_score: float = MIN_SHAPE_SCORE) -> np.ndarray:
    """``frame`` with each strong line of ``reference`` moved by its own drift
    (:func:`line_drifts`); NaN outside those lines and on lines that changed shape (score
    below ``min_shape_score``), so that only lines that stayed enter a phase comparison."""
    f = np.asarray(frame, dtype=np.complex128)
    out = np.full_like(f, np.nan)
    for lo, hi, s, score in line_drifts(f, reference):
        if score >= min_shape_score:
            out[lo:hi] = shift_points(f, s)[lo:hi]
    return out


def shift_points(x: np.ndarray, s: float) -> np.ndarray:
    """``x`` read ``s`` points further on (linear interpolation; NaN beyond the ends)."""
    if s == 0:
        return x
    idx = np.arange(x.size, dtype=float) + s
    re = np.interp(idx, np.arange(x.size), x.real, left=np.nan, right=np.nan)
    im = np.interp(idx, np.arange(x.size), x.imag, left=np.nan, right=np.nan)
    return re + 1j * im
