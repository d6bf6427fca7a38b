"""7Li NMR lines from the simulator's latent cell state, plus the spectrum statistics used
to calibrate the simulator against real spectra.

:func:`lines_from_latent` turns one frame's latent dict (amounts relative to the run's
initial total 7Li signal) into a list of :class:`Line`; :func:`lisentry.datasets.sim.
acquisition.synthesize_fid` turns lines into a FID.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from lisentry.datasets.errors import ConfigError
from lisentry.datasets.sim.nmr_params import NMRParams, ce_shift_ppm

#: Line kinds :func:`lines_from_latent` produces.
LINE_KINDS = ("electrolyte", "sei", "host", "cluster", "ce_metal", "ce_deformed", "metal")
HOST_KINDS = ("hard_carbon", "graphite", "li_metal")


@dataclass(frozen=True)
class Line:
    """One 7Li resonance.

    Parameters
    ----------
    shift_ppm : float
        Peak position in ppm.
    width_ppm : float
        Susceptibility / shift-distribution FWHM in ppm (field independent in ppm).
    amplitude : float
        Area of the line (the FID's value at t = 0 of this line), relative to the run's
        initial total 7Li signal.
    lorentz_fraction : float
        Shape of the ppm width: 1 Lorentzian, 0 Gaussian, between: Voigt with Lorentzian
        FWHM ``f * width`` and Gaussian FWHM ``(1 - f) * width`` (the FID decay is the
        product ``exp(-pi f w t) * exp(-(pi (1-f) w t)^2 / (4 ln 2))``, ``w`` in Hz).
    dispersive_fraction : float
        Skin-effect phase of metals as ``sin(phase)``: the line is
        ``cos(phase) * absorption + sin(phase) * dispersion``; 0 for non-metals.
    kind : str
        One of :data:`LINE_KINDS`.
    width_Hz : float
        Homogeneous Lorentzian FWHM in Hz (1 / (pi T2)); shrinks in ppm at higher field.
    """

    shift_ppm: float
    width_ppm: float
    amplitude: float
    lorentz_fraction: float = 1.0
    dispersive_fraction: float = 0.0
    kind: str = "electrolyte"
    width_Hz: float = 0.0

    def fwhm_ppm(self, sf_MHz: float) -> float:
        """Approximate total FWHM in ppm at an observe frequency ``sf_MHz`` (Olivero-Longbothum)."""
        fl = self.lorentz_fraction * self.width_ppm + self.width_Hz / sf_MHz
        fg = (1.0 - self.lorentz_fraction) * self.width_ppm
        return 0.5346 * fl + math.sqrt(0.2166 * fl * fl + fg * fg)


def _amount(latent: Mapping, key: str, default: float | None = None) -> float:
    if key not in latent:
        if default is None:
            raise ConfigError(f"The latent state has no '{key}' (needed to draw its 7Li line).")
        return default
    v = float(latent[key])
    if not np.isfinite(v):
        return 0.0
    return v


def lines_from_latent(latent: Mapping, nmr: NMRParams | None = None) -> list[Line]:
    """The 7Li lines of one frame.

    Parameters
    ----------
    latent : Mapping
        Per-frame latent state (part A of the simulator). Amounts, relative to the initial
        total 7Li signal: ``host_amount``, ``cluster_amount``, ``metal_amount`` (working-side
        deposits), ``ce_amount`` (counter electrode), ``electrolyte_amount``, ``sei_amount``
        (missing amounts count as 0). Shifts: ``cluster_shift_ppm`` (NaN when none),
        ``electrolyte_shift_ppm`` (Li6PS5Cl 3...5, liquid ~0, LLZO ~1.2),
        ``metal_shift_ppm`` (260...278), ``ce_orientation_deg`` (0...90), ``host_kind``
        (``"hard_carbon"``, ``"graphite"``, ``"li_metal"``). Optional: ``ce_deformed_amount``
        (the part of ``ce_amount`` in a deformed region, parallel to B0: its line is at 272 ppm).
    nmr : NMRParams, optional
        Line-shape parameters (defaults: :class:`NMRParams()`).

    Returns
    -------
    list[Line]
        Lines with positive amplitude only, in :data:`LINE_KINDS` order.

    Raises
    ------
    ConfigError
        Unknown ``host_kind``, orientation outside 0...90 deg, negative amount.

    Examples
    --------
    >>> lat = dict(host_amount=0.2, ce_amount=0.5, electrolyte_amount=0.3,
    ...            electrolyte_shift_ppm=0.0, host_kind="graphite", ce_orientation_deg=90.0)
    >>> [(l.kind, l.shift_ppm) for l in lines_from_latent(lat)]
    [('electrolyte', 0.0), ('host', 43.0), ('ce_metal', 242.0)]
    """
    nmr = nmr if nmr is not None else NMRParams()
    for key in ("host_amount", "cluster_amount", "metal_amount", "ce_amount",
                "electrolyte_amount", "sei_amount", "ce_deformed_amount"):
        if key in latent and float(latent[key]) < 0:
            raise ConfigError(f"The latent '{key}' must be >= 0. Got {latent[key]}.")
    lines: list[Line] = []

    a = _amount(latent, "electrolyte_amount", 0.0)
    if a > 0:
        lines.append(Line(_amount(latent, "electrolyte_shift_ppm", 0.0), nmr.electrolyte_width_ppm, a,
                          nmr.electrolyte_lorentz, 0.0, "electrolyte", nmr.electrolyte_homog_Hz))
    a = _amount(latent, "sei_amount", 0.0)
    if a > 0:
        lines.append(Line(nmr.sei_shift_ppm, nmr.sei_width_ppm, a, nmr.sei_lorentz, 0.0, "sei"))

    theta = _amount(latent, "ce_orientation_deg", 90.0)
    ce_ppm = ce_shift_ppm(theta)
    ce_width = nmr.ce_width_ppm + nmr.ce_orientation_broadening_ppm * math.sin(math.radians(2 * theta))

    a = _amount(latent, "host_amount", 0.0)
    if a > 0:
        kind = str(latent.get("host_kind", "hard_carbon"))
        if kind == "hard_carbon":
            lines.append(Line(nmr.hc_shift_ppm, nmr.hc_width_ppm, a, nmr.hc_lorentz, 0.0, "host"))
        elif kind == "graphite":
            lines.append(Line(nmr.graphite_shift_ppm, nmr.graphite_width_ppm, a,
                              nmr.graphite_lorentz, 0.0, "host"))
        elif kind == "li_metal":  # symmetric cell: the working electrode is a Li foil like the CE
            lines.append(Line(ce_ppm, ce_width, a, nmr.ce_lorentz, nmr.ce_dispersive, "host",
                              nmr.ce_homog_Hz))
        else:
            import difflib
            hint = difflib.get_close_matches(kind, HOST_KINDS, n=1)
            raise ConfigError(f"Unknown host_kind '{kind}'; expected one of {', '.join(HOST_KINDS)}."
                              + (f" Did you mean '{hint[0]}'?" if hint else ""))

    a = _amount(latent, "cluster_amount", 0.0)
    if a > 0 and np.isfinite(float(latent.get("cluster_shift_ppm", float("nan")))):
        shift = float(latent["cluster_shift_ppm"])
        width = nmr.cluster_width_base_ppm + nmr.cluster_width_per_ppm * max(shift, 0.0)
        lines.append(Line(shift, width, a, nmr.cluster_lorentz, 0.0, "cluster"))

    # ce_amount is the whole CE; its deformed part (if any) has its own line at 272 ppm
    a = _amount(latent, "ce_amount", 0.0) - _amount(latent, "ce_deformed_amount", 0.0)
    if a > 0:
        lines.append(Line(ce_ppm, ce_width, a, nmr.ce_lorentz, nmr.ce_dispersive, "ce_metal",
                          nmr.ce_homog_Hz))
    a = _amount(latent, "ce_deformed_amount", 0.0)
    if a > 0:
        lines.append(Line(nmr.ce_deformed_shift_ppm, nmr.ce_width_ppm, a, nmr.ce_lorentz,
                          nmr.ce_dispersive, "ce_deformed", nmr.ce_homog_Hz))
    a = _amount(latent, "metal_amount", 0.0)
    if a > 0:
        lines.append(Line(_amount(latent, "metal_shift_ppm", 270.0), nmr.metal_width_ppm, a,
                          nmr.metal_lorentz, nmr.metal_dispersive, "metal"))
    return lines


# --------------------------------------------------------------------------------------
# Spectrum statistics (calibration against real spectra; used by tests and benchmarks)
# --------------------------------------------------------------------------------------

def noise_std(ppm: np.ndarray, spectrum: np.ndarray, regions=((-255.0, -80.0), (400.0, 530.0)),
              poly_deg: int = 3) -> float:
    """Noise standard deviation of a real spectrum in signal-free regions.

    Each region's points are detrended by a polynomial of degree ``poly_deg`` (so baseline
    roll does not count as noise); the result is the mean of the regions' residual stds.
    Regions outside the spectrum, or with fewer than 20 points, are skipped.

    Parameters
    ----------
    ppm, spectrum : np.ndarray
        Axis (ppm, any order) and real intensities.
    regions : sequence of (lo, hi)
        Signal-free ppm intervals.

    Returns
    -------
    float
        Noise std in the spectrum's intensity units (NaN when no region is usable).
    """
    out = []
    for lo, hi in regions:
        m = (ppm > lo) & (ppm < hi)
        if m.sum() < 20:
            continue
        x, y = ppm[m], spectrum[m]
        out.append(float(np.std(y - np.polyval(np.polyfit(x, y, poly_deg), x))))
    return float(np.mean(out)) if out else float("nan")


def peak_fwhm(ppm: np.ndarray, spectrum: np.ndarray, lo: float, hi: float) -> tuple[float, float, float]:
    """Position, height and full width at half maximum of the tallest peak in [lo, hi] ppm.

    The half-maximum crossings are linearly interpolated; the walk may leave the window.

    Returns
    -------
    (position_ppm, height, fwhm_ppm) : tuple of float
    """
    order = np.argsort(ppm)
    x, y = np.asarray(ppm)[order], np.asarray(spectrum)[order]
    idx = np.flatnonzero((x >= lo) & (x <= hi))
    if idx.size == 0:
        raise ConfigError(f"No spectrum points within [{lo}, {hi}] ppm.")
    i = idx[np.argmax(y[idx])]
    h = y[i] / 2.0
    j = i
    while j > 0 and y[j] > h:
        j -= 1
    k = i
    while k < len(y) - 1 and y[k] > h:
        k += 1
    xl = np.interp(h, [y[j], y[j + 1]], [x[j], x[j + 1]]) if y[j] <= h else x[j]
    xr = np.interp(h, [y[k], y[k - 1]], [x[k], x[k - 1]]) if y[k] <= h else x[k]
    return float(x[i]), float(y[i]), float(xr - xl)


def baseline_roll(ppm: np.ndarray, spectrum: np.ndarray,
                  regions=((-255.0, -60.0), (380.0, 530.0)), window_ppm: float = 30.0) -> float:
    """Peak-to-peak of the smoothed spectrum over signal-free regions (baseline roll).

    The spectrum is smoothed with a moving average of ``window_ppm``; returns the
    peak-to-peak of the smoothed values inside ``regions`` in intensity units.
    """
    order = np.argsort(ppm)
    x, y = np.asarray(ppm)[order], np.asarray(spectrum)[order]
    step = float(np.median(np.diff(x)))
    n = max(int(round(window_ppm / step)), 1)
    sm = np.convolve(y, np.ones(n) / n, mode="same")
    m = np.zeros(x.shape, bool)
    for lo, hi in regions:
        m |= (x > lo + window_ppm) & (x < hi - window_ppm)
    if m.sum() < 2:
        return float("nan")
    return float(np.ptp(sm[m]))
