"""Default 7Li NMR line parameters of the simulator (one parameter set, keys carry units).

The numbers come from the literature in ``shared/seeds`` (shift table, orientation
dependence of Li metal by bulk magnetic susceptibility) and from measurements on the real
Li | LiTFSI-TEGDME | Li operando run (116.7 MHz, NS 256); see ``docs/sim_vs_real.md``.

Widths have two parts (see :class:`lisentry.datasets.sim.spectra.Line`): a susceptibility /
shift-distribution width in ppm (the same in ppm at every field) and a homogeneous
Lorentzian width in Hz (which shrinks in ppm as the field grows).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from lisentry.datasets.errors import ConfigError

#: Li metal shift (ppm) against the angle between the electrode plane and B0 (degrees),
#: Trease et al. 2012 via Zheng et al. 2024 (bulk magnetic susceptibility).
CE_ORIENTATION_TABLE_DEG = (0.0, 30.0, 45.0, 90.0)
CE_ORIENTATION_TABLE_PPM = (272.0, 265.0, 252.0, 242.0)

#: 7Li frequency / 1H frequency (IUPAC Xi for 7Li, 1 M LiCl reference).
XI_7LI = 0.38863797


def ce_shift_ppm(orientation_deg: float) -> float:
    """Li-metal electrode shift for a given orientation (bulk magnetic susceptibility).

    Parameters
    ----------
    orientation_deg : float
        Angle of the electrode plane to B0 as in Trease et al., degrees, 0...90
        (0 deg: plane parallel to B0, 272 ppm; 90 deg: perpendicular, 242 ppm); linear
        interpolation between the tabulated 0/30/45/90 deg points.

    Returns
    -------
    float
        Shift in ppm.

    Examples
    --------
    >>> ce_shift_ppm(30.0)
    265.0
    >>> round(ce_shift_ppm(67.5), 1)
    247.0
    """
    if not 0.0 <= orientation_deg <= 90.0:
        raise ConfigError(
            f"The 'ce_orientation_deg' value must be within [0, 90]. Got {orientation_deg}.")
    return float(np.interp(orientation_deg, CE_ORIENTATION_TABLE_DEG, CE_ORIENTATION_TABLE_PPM))


@dataclass(frozen=True)
class NMRParams:
    """Line-shape parameters for every 7Li species the simulator draws.

    Widths named ``*_width_ppm`` are susceptibility / shift-distribution FWHM in ppm;
    ``*_homog_Hz`` are homogeneous (T2) Lorentzian FWHM in Hz. ``*_lorentz`` is the
    Lorentzian fraction of the ppm width (1 Lorentzian, 0 Gaussian); ``*_dispersive`` is
    the skin-effect dispersive fraction, sin of the line's phase (0 absorptive).
    Shifts in ppm (0 ppm = 1 M LiCl(aq)).

    The defaults reproduce the real Li | Li run's measured widths: Li electrode FWHM
    7.1 ppm Lorentzian with ~0.14 dispersive fraction at 248 ppm, microstructure FWHM
    ~13.8 ppm at 267 ppm, electrolyte envelope FWHM ~5 ppm (see docs/sim_vs_real.md).
    """

    # electrolyte (the shift itself comes from the latent state / family)
    electrolyte_width_ppm: float = 4.5
    electrolyte_homog_Hz: float = 60.0
    electrolyte_lorentz: float = 0.6
    # SEI and other diamagnetic Li (LiF -1, Li2CO3 0, Li2O 2.8, Li2S 2.2 ppm)
    sei_shift_ppm: float = 0.5
    sei_width_ppm: float = 12.0
    sei_lorentz: float = 0.3
    # host: Li in hard carbon (ionic / intercalated, broad, 0...20 ppm region)
    hc_shift_ppm: float = 12.0
    hc_width_ppm: float = 25.0
    hc_lorentz: float = 0.2
    # host: graphite LiC12 / LiC6
    graphite_shift_ppm: float = 43.0
    graphite_width_ppm: float = 12.0
    graphite_lorentz: float = 0.5
    # quasimetallic clusters in hard carbon: width grows with the shift distribution
    cluster_width_base_ppm: float = 15.0
    cluster_width_per_ppm: float = 0.25
    cluster_lorentz: float = 0.3
    # Li-metal electrodes (counter electrode, and a Li-metal working electrode)
    ce_width_ppm: float = 6.0
    ce_orientation_broadening_ppm: float = 1.0
    ce_homog_Hz: float = 0.0
    ce_lorentz: float = 1.0
    ce_dispersive: float = 0.15
    # deformed part of the electrode parallel to B0 (Tagami: constant 272 ppm component)
    ce_deformed_shift_ppm: float = 272.0
    # working-side metal: dendrites / moss (mostly thinner than the skin depth)
    metal_width_ppm: float = 15.0
    metal_lorentz: float = 0.3
    metal_dispersive: float = 0.1

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not np.isfinite(v):
                raise ConfigError(f"The '{f.name}' parameter of NMRParams must be finite. Got {v}.")
            if (f.name.endswith(("_width_ppm", "_Hz", "_per_ppm", "_broadening_ppm")) and v < 0):
                raise ConfigError(f"The '{f.name}' parameter of NMRParams must be >= 0. Got {v}.")
            if f.name.endswith(("_lorentz", "_dispersive")) and not 0.0 <= v <= 1.0:
                raise ConfigError(
                    f"The '{f.name}' parameter of NMRParams must be within [0, 1]. Got {v}.")

    def replace(self, **changes) -> "NMRParams":
        """Copy with some fields changed (unknown names raise ``ConfigError``)."""
        names = {f.name for f in dataclasses.fields(self)}
        bad = sorted(set(changes) - names)
        if bad:
            import difflib
            hint = difflib.get_close_matches(bad[0], names, n=1)
            raise ConfigError(f"Unknown NMRParams field '{bad[0]}'."
                              + (f" Did you mean '{hint[0]}'?" if hint else ""))
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "NMRParams":
        return cls().replace(**d)

    #: Per-run line-shape ranges of :meth:`randomized` (why: every real cell and probe differs;
    #: a simulator that draws one line shape for every run teaches a detector that shape).
    #: Lorentzian fractions and dispersive fractions are drawn uniformly in these ranges.
    SHAPE_RANGES = {
        "electrolyte_lorentz": (0.3, 0.9),
        "sei_lorentz": (0.1, 0.6),
        "hc_lorentz": (0.1, 0.5),
        "graphite_lorentz": (0.3, 0.8),
        "cluster_lorentz": (0.1, 0.6),
        "ce_lorentz": (0.6, 1.0),
        "metal_lorentz": (0.2, 0.9),
        # skin effect: a foil much thicker than the skin depth approaches the Dyson limit of a
        # 45 deg phase (sin 45 = 0.71); deposits thinner than it are mostly absorptive
        "ce_dispersive": (0.0, 0.75),
        "metal_dispersive": (0.0, 0.45),
    }
    #: Log-uniform factor range applied to every ``*_width_ppm`` / ``*_homog_Hz``.
    WIDTH_FACTOR_RANGE = (0.7, 1.5)
    #: The broad SEI / diamagnetic foot under the electrolyte line: width factor and shift, ppm.
    SEI_WIDTH_FACTOR_RANGE = (0.7, 3.0)
    SEI_SHIFT_RANGE_PPM = (-2.0, 4.0)

    def randomized(self, rng: np.random.Generator) -> "NMRParams":
        """A copy with per-run line shapes drawn around this parameter set.

        Widths are scaled by log-uniform factors in :attr:`WIDTH_FACTOR_RANGE` (the SEI foot
        in :attr:`SEI_WIDTH_FACTOR_RANGE`, its shift drawn in :attr:`SEI_SHIFT_RANGE_PPM`);
        Lorentzian and dispersive fractions are drawn in :attr:`SHAPE_RANGES`. Shifts of
        the species (set per family and frame) are left alone.

        Examples
        --------
        >>> a = NMRParams().randomized(np.random.default_rng(1))
        >>> b = NMRParams().randomized(np.random.default_rng(1))
        >>> a == b, 0.0 <= a.ce_dispersive <= 0.75
        (True, True)
        """
        lo, hi = np.log(self.WIDTH_FACTOR_RANGE)
        changes = {}
        for f in dataclasses.fields(self):
            if f.name == "sei_width_ppm":
                slo, shi = np.log(self.SEI_WIDTH_FACTOR_RANGE)
                changes[f.name] = self.sei_width_ppm * float(np.exp(rng.uniform(slo, shi)))
            elif f.name.endswith("_width_ppm") or f.name.endswith("_homog_Hz"):
                changes[f.name] = getattr(self, f.name) * float(np.exp(rng.uniform(lo, hi)))
        for name, (a, b) in self.SHAPE_RANGES.items():
            changes[name] = float(rng.uniform(a, b))
        changes["sei_shift_ppm"] = float(rng.uniform(*self.SEI_SHIFT_RANGE_PPM))
        return self.replace(**changes)

    @classmethod
    def random(cls, rng: np.random.Generator) -> "NMRParams":
        """Draw a plausible parameter set around the defaults (:meth:`randomized` of
        ``NMRParams()``), with the host shifts drawn too (hard carbon 5-20 ppm, graphite
        40-45 ppm)."""
        p = cls().randomized(rng)
        return p.replace(hc_shift_ppm=float(rng.uniform(5.0, 20.0)),
                         graphite_shift_ppm=float(rng.uniform(40.0, 45.0)))
