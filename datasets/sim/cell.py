"""Reduced cell model: integrates a :class:`~lisentry.datasets.sim.protocol.Protocol` in time and
returns the electrochemistry *and* the latent 7Li inventory that the NMR synthesis needs.

Model (one working electrode WE vs a Li-metal counter electrode CE, lumped, isothermal)
---------------------------------------------------------------------------------------
Lithium arriving at the WE goes to parallel *sinks*, each with an equilibrium potential ``U``
(V vs Li/Li+) and a kinetic conductance ``G`` (mA/V, from an area-specific resistance):

=================  ==============================================  ==============================
sink               U (V)                                           notes
=================  ==============================================  ==============================
host               OCP table of the host (HC sloping 1.0->0.1 V    HC, graphite; none for Li metal
                   then plateau 0.1->0 V; graphite staging         graphite conductance ~ (1-x)^g
                   plateaus 0.2/0.12/0.085 V)
closed pores       ``cluster_onset_V`` (18 mV: ~13 mV cell potential at 25 mA/g) falling with fill   quasimetallic clusters (HC)
open pores/surface ``open_cluster_onset_V`` minus a nucleation     solid cells only; capacity and
                   term that fades as clusters grow                conductance need stack pressure
WE metal           ``-metal_growth_V`` to plate once nucleated,   nucleates when the WE potential
                   0 V to strip                                    is below ``-metal_nucleation_V``
SEI                ``sei_onset_V`` (0.8 V), conductance falls      irreversible, up to
                   as the SEI capacity is used                     ``sei_capacity_mAh_per_g``
background         -0.3 V (reduction) / 4.5 V (oxidation)          tiny, keeps the solve regular
=================  ==============================================  ==============================

The ionic current is ``I_ion = sum G_k (U_k - E)`` over the sinks allowed to take or give Li
(a full reservoir takes none, an empty one gives none; the breakpoints are solved exactly). The
cell potential is ``V = E - I_ion R`` with ``R`` = electrolyte/contact resistance (scales as
``(P_ref/P)**pressure_exponent``) + CE interface resistance (grows as stripping voids cut the CE
contact: the CE signal shrinks with the contact). An internal short path of resistance ``R_s`` in
parallel with the cell gives ``I_ext = I_ion - V/R_s``. Galvanostatic steps fix ``I_ext`` and
return ``V``; potentiostatic holds fix ``V`` and return ``I_ext``. Nothing is hand-drawn.

Short circuit: a hazard rate ``h`` (1/h) rising with open-pore/surface clusters, closed-pore
clusters, working-side metal, cell polarization, WE potential below 0 V and plating current on
the CE is integrated, ``H = int h dt``; the short happens at ``H = 1``. Before it, from
``H = soft_short_start``, the family's *precursor* shows: ``"leak"`` (soft-short current creep and
spikes: ``R_s`` falls from ``precursor_ohm_start`` to ``precursor_ohm_end`` with random dips) or
``"polarization"`` (sudden polarization: ``R`` rises). At the short ``R_s`` becomes
``soft_short_ohm`` (fluctuating: voltage disturbance/noise) or ``hard_short_ohm`` (collapse to
~0 V). ``short_kind`` says which.

Li-metal working electrodes (symmetric Li | SE | Li cells) carry a phenomenological dendrite
inventory in four stages along the areal charge passed: fast surface growth, stall, fast bulk
(grain-boundary) growth, slowing (Liu et al., Nat. Mater. 2025).
Their resistance may add two Li | Li terms: a charge-transfer/nucleation resistance
``metal_ct_asr / (1 + gain * q_microstructure)`` that fades as high-area microstructure grows,
and a pitting resistance ``pitting_asr * (1 - exp(-Q / pitting_charge))`` along the areal charge
``Q``: the peak, dip and slow rise of a Li | Li potential trace (Wood et al., ACS Cent. Sci. 2016).

NMR amounts
-----------
All ``*_amount`` outputs are NMR-visible 7Li relative to the run's initial total visible signal
(sum at t = 0 is 1). Ionic species (electrolyte, host, clusters, SEI) are fully visible; metal is
visible only within the skin depth ``delta = 12 um * sqrt(155 MHz / f)``: the CE contributes
``area * delta * 2062 mAh/cm^3`` (times its remaining contact), deposited dendritic/mossy metal a
fraction ``metal_visible_fraction`` of its Li (large area per Li). For Li-metal working
electrodes both electrodes' bulk lines are reported in ``ce_amount`` and ``host_amount`` is 0.
"""
from __future__ import annotations

import bisect
import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from lisentry.datasets.errors import ConfigError
from lisentry.datasets.sim.protocol import CurrentStep, HoldStep, Protocol, as_protocol

__all__ = ["CellParams", "CellTrajectory", "simulate", "host_ocp", "cluster_shift_ppm",
           "skin_depth_um", "LATENT_KEYS", "LI_METAL_MAH_PER_CM3"]

#: mAh of Li per cm^3 of Li metal: 0.534 g/cm^3 / 6.941 g/mol * 26801 mAh/mol.
LI_METAL_MAH_PER_CM3 = 0.534 / 6.941 * 26801.4

#: Keys of the latent state every trajectory carries (amounts relative to the initial total signal).
LATENT_KEYS = ("host_amount", "cluster_amount", "cluster_shift_ppm", "metal_amount", "ce_amount",
               "ce_deformed_amount", "electrolyte_amount", "sei_amount", "hazard")

# Open-circuit potential tables: fraction of host capacity -> V vs Li/Li+.
_OCP_TABLES = {
    "hard_carbon": ((0.0, 0.04, 0.10, 0.18, 0.28, 0.40, 0.52, 0.60, 0.70, 0.80, 0.90, 0.97, 1.0),
                    (1.20, 0.95, 0.70, 0.45, 0.30, 0.19, 0.12, 0.095, 0.070, 0.045, 0.024, 0.014,
                     0.010)),
    "graphite": ((0.0, 0.02, 0.05, 0.10, 0.20, 0.25, 0.50, 0.55, 0.92, 0.97, 1.0),
                 (0.80, 0.50, 0.25, 0.21, 0.19, 0.125, 0.115, 0.088, 0.082, 0.060, 0.040)),
}
_HOSTS = ("hard_carbon", "graphite", "li_metal")
_ELECTROLYTES = ("sulfide", "llzo", "liquid")


def host_ocp(host_kind: str, x: float | np.ndarray) -> float | np.ndarray:
    """Open-circuit potential of a host at filling ``x`` (0..1 of its capacity), V vs Li/Li+.

    >>> round(float(host_ocp("hard_carbon", 0.28)), 3)
    0.3
    >>> float(host_ocp("li_metal", 0.5))
    0.0
    """
    if host_kind == "li_metal":
        return 0.0 * np.asarray(x, dtype=float) if np.ndim(x) else 0.0
    xs, vs = _OCP_TABLES[host_kind]
    out = np.interp(x, xs, vs)
    return float(out) if np.ndim(out) == 0 else out


def skin_depth_um(larmor_MHz: float) -> float:
    """Skin depth of Li metal at the 7Li Larmor frequency, micrometres (12 um at 155 MHz)."""
    return 12.0 * math.sqrt(155.0 / float(larmor_MHz))


def cluster_shift_ppm(fill: float, appear_ppm: float, max_ppm: float, scale: float) -> float:
    """Knight shift of quasimetallic clusters as they grow: ``appear + (max-appear)(1-exp(-fill/scale))``, ppm."""
    return appear_ppm + (max_ppm - appear_ppm) * (1.0 - math.exp(-max(fill, 0.0) / scale))


@dataclass(frozen=True)
class CellParams:
    """Parameters of the reduced cell model. Keys carry their units.

    The defaults describe Tagami's HC | Li6PS5Cl | Li cell at 35 MPa and 50 degC; the family
    YAML files in ``datasets/sim/params`` override them. See the module docstring for the model.
    """

    host_kind: str = "hard_carbon"
    electrolyte_kind: str = "sulfide"
    # geometry and capacities
    mass_mg: float = 1.6
    area_cm2: float = 0.5
    nominal_capacity_mAh_per_g: float = 330.0
    host_capacity_mAh_per_g: float = 200.0
    closed_pore_capacity_mAh_per_g: float = 90.0
    open_pore_capacity_mAh_per_g: float = 40.0
    host_fill0: float = 0.28
    closed_fill0: float = 0.0
    open_fill0: float = 0.0
    host_fill_exponent: float = 0.0
    # pressure and resistances (area-specific, ohm cm^2)
    stack_pressure_MPa: float = 35.0
    reference_pressure_MPa: float = 35.0
    pressure_exponent: float = 2.0
    contact_pressure_MPa: float = 10.0
    contact_width_MPa: float = 1.5
    asr_ohm_cm2: float = 50.0
    ce_asr_ohm_cm2: float = 10.0
    host_asr_ohm_cm2: float = 20.0
    closed_pore_asr_ohm_cm2: float = 85.0
    open_pore_asr_ohm_cm2: float = 30.0
    metal_asr_ohm_cm2: float = 20.0
    polarization_creep_per_mAh_cm2: float = 0.0
    # Li | Li overpotential (Li-metal working electrodes): the flat, SEI-covered electrodes start
    # with a charge-transfer/nucleation resistance that falls as high-surface-area microstructure
    # grows (more area per Li), while pits and dead Li at the stripped electrode add a resistance
    # that saturates along the areal charge: the peak -> dip -> rise of a Li | Li trace (Wood et
    # al., ACS Cent. Sci. 2016). 0 leaves the potential as before.
    metal_ct_asr_ohm_cm2: float = 0.0
    microstructure_area_gain_per_mAh_cm2: float = 0.0
    pitting_asr_ohm_cm2: float = 0.0
    pitting_charge_mAh_cm2: float = 5.0
    # thresholds (V)
    cluster_onset_V: float = 0.018
    closed_pore_floor_V: float = 0.0
    open_cluster_onset_V: float = -0.004
    open_cluster_slope_V: float = 0.010
    open_cluster_nucleation_V: float = 0.010
    open_cluster_nucleation_fill: float = 0.05
    metal_nucleation_V: float = 0.035
    metal_nucleation_pressure_exponent: float = 0.5
    metal_growth_V: float = 0.025
    metal_visible_fraction: float = 1.0
    # SEI
    sei_capacity_mAh_per_g: float = 130.0
    sei_asr_ohm_cm2: float = 15000.0
    sei_onset_V: float = 0.8
    # counter electrode
    ce_visible_area_cm2: float = 0.5
    ce_critical_current_mA_cm2: float = 0.10
    ce_void_charge_mAh_cm2: float = 0.15
    ce_void_width_mAh_cm2: float = 0.02
    ce_loss_visible: float = 0.95
    ce_plating_critical_mA_cm2: float = 0.10
    # part of the CE's visible signal in a deformed region (pressed foil edge, wrinkles) whose
    # orientation to B0 puts it at 272 ppm (Tagami Cell B: 245 ppm plus a constant 272 ppm
    # line). Constant: it is part of the initial electrode lines, not plating (interfaces.md).
    ce_deformed_fraction: float = 0.0
    # visible electrolyte Li, mAh-equivalent
    electrolyte_visible_mAh: float = 3.0
    # Li-metal working electrode: dendrite fraction of plated Li along areal charge Q (mAh/cm^2)
    dendrite_stage1_frac: float = 0.0
    dendrite_stage1_charge_mAh_cm2: float = 1.0
    dendrite_stage3_frac: float = 0.0
    dendrite_stage3_charge_mAh_cm2: float = 10.0
    dendrite_stage3_width_mAh_cm2: float = 1.0
    dendrite_stage4_decay_mAh_cm2: float = 4.0
    # hazard (1/h per unit of the driver)
    hazard_open_cluster_per_h: float = 0.0
    hazard_closed_cluster_per_h: float = 0.0
    hazard_metal_per_h_per_mAh_cm2: float = 0.0
    hazard_polarization_per_h_per_V: float = 0.0
    hazard_polarization_floor_V: float = 0.0
    hazard_negative_potential_per_h_per_V: float = 0.0
    hazard_ce_plating_per_h_per_mA_cm2: float = 0.0
    # short
    short_kind: str = "soft"
    precursor_kind: str = "none"
    soft_short_start: float = 1.0
    precursor_ohm_start: float = 1e6
    precursor_ohm_end: float = 1e4
    precursor_spike_rate_per_h: float = 4.0
    precursor_polarization_gain: float = 3.0
    soft_short_ohm: float = 3e4
    hard_short_ohm: float = 2.0
    post_short_metal_amount: float = 0.0
    post_short_ce_amount: float = 0.0
    post_short_tau_s: float = 600.0
    # cluster Knight shift (ppm)
    cluster_shift_appear_ppm: float = 15.0
    closed_cluster_shift_max_ppm: float = 102.0
    open_cluster_shift_max_ppm: float = 85.0
    cluster_shift_scale: float = 0.42
    # fast exchange of ionic host Li with the clusters (0: cluster and host lines separate)
    cluster_exchange_fraction: float = 0.0
    cluster_exchange_nucleation_mAh_per_g: float = 3.0
    cluster_exchange_shift_ppm: float = 10.0
    # soft short seen only once its leak carries this fraction of the applied current (0: at H = 1)
    soft_short_visible_fraction: float = 0.0
    soft_short_noise: float = 0.7
    soft_short_noise_kind: str = "lognormal"
    # NMR frequency used for the skin depth
    larmor_MHz: float = 194.4

    def __post_init__(self):
        if self.host_kind not in _HOSTS:
            raise ConfigError(f"The 'host_kind' parameter of CellParams must be one of {_HOSTS}. "
                              f"Got {self.host_kind!r}.")
        if self.electrolyte_kind not in _ELECTROLYTES:
            raise ConfigError(f"The 'electrolyte_kind' parameter of CellParams must be one of "
                              f"{_ELECTROLYTES}. Got {self.electrolyte_kind!r}.")
        if self.short_kind not in ("soft", "hard"):
            raise ConfigError(f"The 'short_kind' parameter of CellParams must be 'soft' or 'hard'. "
                              f"Got {self.short_kind!r}.")
        if self.soft_short_noise_kind not in ("lognormal", "dips"):
            raise ConfigError(f"The 'soft_short_noise_kind' parameter of CellParams must be "
                              f"'lognormal' or 'dips'. Got {self.soft_short_noise_kind!r}.")
        if self.precursor_kind not in ("none", "leak", "polarization"):
            raise ConfigError(f"The 'precursor_kind' parameter of CellParams must be 'none', 'leak' "
                              f"or 'polarization'. Got {self.precursor_kind!r}.")
        for name in ("mass_mg", "area_cm2", "stack_pressure_MPa", "asr_ohm_cm2", "larmor_MHz",
                     "host_asr_ohm_cm2", "ce_visible_area_cm2", "electrolyte_visible_mAh",
                     "pitting_charge_mAh_cm2"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v > 0):
                raise ConfigError(f"The {name!r} parameter of CellParams must be > 0. Got {v!r}.")
        for name in ("host_fill0", "closed_fill0", "open_fill0", "cluster_exchange_fraction",
                     "soft_short_visible_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"The {name!r} parameter of CellParams must be in [0, 1]. Got {v!r}.")
        for name in ("metal_ct_asr_ohm_cm2", "microstructure_area_gain_per_mAh_cm2",
                     "pitting_asr_ohm_cm2"):
            v = getattr(self, name)
            if not v >= 0.0:
                raise ConfigError(f"The {name!r} parameter of CellParams must be >= 0. Got {v!r}.")

    @classmethod
    def from_dict(cls, d: Mapping) -> "CellParams":
        """Build from a mapping; unknown keys raise ``ConfigError`` with a "did you mean"."""
        names = {f.name for f in dataclasses.fields(cls)}
        for key in d:
            if key not in names:
                close = difflib.get_close_matches(key, sorted(names), n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"Unknown cell parameter {key!r}.{hint}")
        kwargs = dict(d)
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for key, val in kwargs.items():
            if types[key] in ("float", float) and not isinstance(val, bool):
                try:  # YAML 1.1 reads "1.0e6" as a string
                    kwargs[key] = float(val)
                except (TypeError, ValueError):
                    raise ConfigError(f"The {key!r} parameter of CellParams must be a number. "
                                      f"Got {val!r}.") from None
        return cls(**kwargs)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "CellParams":
        """A copy with some parameters changed (unknown names raise ``ConfigError``)."""
        return self.from_dict({**self.to_dict(), **changes})

    @property
    def contact(self) -> float:
        """Fraction (0..1) of open pores/particle contacts that work at this stack pressure."""
        if self.electrolyte_kind != "sulfide":
            return 1.0
        z = (self.stack_pressure_MPa - self.contact_pressure_MPa) / self.contact_width_MPa
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))


@dataclass(eq=False)
class CellTrajectory:
    """What :func:`simulate` returns: arrays on the integration time grid plus event times.

    Attributes
    ----------
    t_s : ndarray
        Time since the protocol start, s (ascending; not strictly uniform at step ends).
    potential_V : ndarray
        Cell potential (WE vs CE), V.
    current_A : ndarray
        External current, A, positive when lithiating the working electrode.
    host_amount, cluster_amount, metal_amount, ce_amount, electrolyte_amount, sei_amount : ndarray
        NMR-visible 7Li of each species relative to the initial total (sum at t=0 is 1).
        ``ce_amount`` is the whole counter electrode, its deformed part included.
    ce_deformed_amount : ndarray
        The constant part of ``ce_amount`` in a deformed CE region (its line at 272 ppm).
    cluster_shift_ppm : ndarray
        Amount-weighted Knight shift of the clusters, ppm; NaN when there is no cluster.
    hazard : ndarray
        Integrated short hazard H (dimensionless; the short happens at H = 1).
    step_index : ndarray
        Index of the protocol step each point belongs to.
    t_short_s : float | None
        Time of the short (soft or hard), s; ``None`` if none.
    short_kind : str | None
        ``"soft"``, ``"hard"`` or ``None``.
    t_metal_onset_s : float | None
        Time working-side metal nucleated, s; ``None`` if never.
    t_precursor_s : float | None
        Time the family's electrochemical precursor started (``H = soft_short_start``).
    phys : dict[str, ndarray]
        Physical states: ``host_mAh_per_g``, ``closed_cluster_mAh_per_g``,
        ``open_cluster_mAh_per_g``, ``metal_mAh``, ``metal_mAh_per_cm2``, ``sei_mAh``,
        ``ce_contact`` (0..1), ``we_potential_V`` (WE vs Li/Li+ without ohmic drop),
        ``ionic_current_A``, ``resistance_ohm``, ``short_ohm`` (inf without short path),
        ``hazard_rate_per_h``, ``charge_mAh_per_g`` (net lithiation since start).
    params : CellParams
    protocol : Protocol
    """

    t_s: np.ndarray
    potential_V: np.ndarray
    current_A: np.ndarray
    host_amount: np.ndarray
    cluster_amount: np.ndarray
    cluster_shift_ppm: np.ndarray
    metal_amount: np.ndarray
    ce_amount: np.ndarray
    electrolyte_amount: np.ndarray
    sei_amount: np.ndarray
    hazard: np.ndarray
    step_index: np.ndarray
    t_short_s: float | None
    short_kind: str | None
    t_metal_onset_s: float | None
    t_precursor_s: float | None
    ce_deformed_amount: np.ndarray | None = None
    phys: dict = field(default_factory=dict)
    params: CellParams | None = None
    protocol: Protocol | None = None

    @property
    def duration_s(self) -> float:
        return float(self.t_s[-1])

    def latent_at(self, t_s: float | Sequence[float] | np.ndarray) -> dict:
        """Latent state linearly interpolated at times ``t_s`` (s), as a dict of arrays (or floats
        for a scalar ``t_s``) keyed by :data:`LATENT_KEYS`.

        ``cluster_shift_ppm`` is interpolated where the cluster exists on both sides and NaN
        otherwise.
        """
        t = np.asarray(t_s, dtype=float)
        out = {}
        for key in LATENT_KEYS:
            if key == "cluster_shift_ppm":
                continue
            v = getattr(self, key)
            if v is None:  # ce_deformed_amount of a trajectory built without one
                v = np.zeros_like(self.t_s, dtype=float)
            out[key] = np.interp(t, self.t_s, v)
        shift = self.cluster_shift_ppm
        have = np.isfinite(shift)
        filled = np.interp(t, self.t_s, np.where(have, shift, 0.0))
        present = np.interp(t, self.t_s, have.astype(float)) > 0.999
        out["cluster_shift_ppm"] = np.where(present, filled, np.nan)
        if t.ndim == 0:
            return {k: float(v) for k, v in out.items()}
        return out

    def echem_at(self, t_s) -> dict:
        """Potential (V) and current (A) interpolated at ``t_s``."""
        t = np.asarray(t_s, dtype=float)
        return {"potential_V": np.interp(t, self.t_s, self.potential_V),
                "current_A": np.interp(t, self.t_s, self.current_A)}


# --------------------------------------------------------------------------------------------
# the solver
# --------------------------------------------------------------------------------------------

def _solve(sinks, R, Rs_inv, mode, target):
    """Solve for the WE potential E (V vs Li/Li+).

    ``sinks``: list of ``(U, G, can_add, can_remove)`` sorted by U; the current into sink k is
    ``G (U - E)`` where allowed (``U > E`` needs ``can_add``, ``U < E`` needs ``can_remove``),
    so the ionic current ``F(E)`` (mA) is continuous, piecewise linear and non-increasing.
    ``mode == "I"``: ``F(E) (1 + R/R_s) - E/R_s = target`` (external current, mA; R in kOhm).
    ``mode == "V"``: ``E - R F(E) = target`` (cell potential, V).
    Both residuals are strictly decreasing in E, so one scan over the breakpoints finds the
    exact root.
    """
    A = B = 0.0
    for U, G, add, rem in sinks:  # start below every breakpoint: all addable sinks take Li
        if add:
            A += G * U
            B += G
    k = 1.0 + R * Rs_inv
    for U, G, add, rem in sinks:
        if mode == "I":
            a, b = A * k - target, B * k + Rs_inv
        else:
            a, b = R * A + target, 1.0 + R * B
        if a - b * U <= 1e-12 * (abs(a) + 1.0):  # root in this interval (or at U, to rounding)
            return a / b if b > 0.0 else U
        # crossing U: this sink stops taking (if addable) and starts giving (if removable)
        if add:
            A -= G * U
            B -= G
        if rem:
            A += G * U
            B += G
    if mode == "I":
        return (A * k - target) / (B * k + Rs_inv)
    return (R * A + target) / (1.0 + R * B)


def _sigmoid(z: float) -> float:
    z = 50.0 if z > 50.0 else (-50.0 if z < -50.0 else z)
    return 1.0 / (1.0 + math.exp(-z))


def simulate(protocol: Protocol | Sequence[str] | dict, params: CellParams | None = None, *,
             dt_s: float = 30.0, rng: np.random.Generator | int | None = None,
             t_max_s: float = 60 * 86400.0) -> CellTrajectory:
    """Integrate ``protocol`` for a cell with ``params``.

    Parameters
    ----------
    protocol : Protocol or list of step strings
        What the potentiostat does.
    params : CellParams, optional
        Cell parameters (default: Tagami's HC | Li6PS5Cl | Li cell).
    dt_s : float
        Time step, s (10-30 s for hour-long runs; a few minutes for runs of days). Steps are
        shortened to land exactly on duration/time limits and on potential-limit crossings.
    rng : numpy Generator or int, optional
        Seeds the random soft-short spikes and fluctuations (the only randomness).
    t_max_s : float
        Safety stop, s.

    Returns
    -------
    CellTrajectory

    Raises
    ------
    ConfigError
        For a non-positive ``dt_s``.

    Examples
    --------
    >>> traj = simulate(["Lithiate at 25 mA/g until 0.2 mV", "Hold at 0.2 mV until 16.3 h"])
    >>> bool(10.3 < traj.t_s[traj.step_index == 1][0] / 3600 < 11.3)  # 0.2 mV at 10.8 h
    True
    """
    p = params or CellParams()
    proto = as_protocol(protocol)
    rng = np.random.default_rng(rng)
    if not dt_s > 0:
        raise ConfigError(f"The 'dt_s' parameter of simulate must be > 0. Got {dt_s!r}.")

    area = p.area_cm2
    mass_g = p.mass_mg * 1e-3
    li_metal = p.host_kind == "li_metal"
    solid = p.electrolyte_kind != "liquid"
    contact = p.contact
    P = p.stack_pressure_MPa
    p_ratio = p.reference_pressure_MPa / P
    # capacities, mAh
    Qh = 0.0 if li_metal else p.host_capacity_mAh_per_g * mass_g
    Qc = 0.0 if li_metal else p.closed_pore_capacity_mAh_per_g * mass_g
    if p.electrolyte_kind == "sulfide":
        Qc *= contact  # poorly contacted carbon does not fill its pores either
    Qo = 0.0 if (li_metal or not solid) else p.open_pore_capacity_mAh_per_g * mass_g * contact
    if Qc < 1e-9:
        Qc = 0.0
    if Qo < 1e-9:
        Qo = 0.0
    # conductances, mA/V
    G_h = 1000.0 * area / p.host_asr_ohm_cm2
    G_c = 1000.0 * area / p.closed_pore_asr_ohm_cm2
    G_o = 1000.0 * area / p.open_pore_asr_ohm_cm2
    G_m = 1000.0 * area / p.metal_asr_ohm_cm2
    G_bg = 1e-3 * area
    # resistances in kOhm so that mA * kOhm = V
    R_base = (p.asr_ohm_cm2 * p_ratio ** p.pressure_exponent) / area * 1e-3
    R_ce0 = p.ce_asr_ohm_cm2 / area * 1e-3
    eta_nuc = p.metal_nucleation_V * (P / p.reference_pressure_MPa) ** p.metal_nucleation_pressure_exponent
    j_crit = p.ce_critical_current_mA_cm2 * P / p.reference_pressure_MPa
    void_c, void_w = p.ce_void_charge_mAh_cm2, p.ce_void_width_mAh_cm2
    s0 = _sigmoid(-void_c / void_w)
    xs, vs = _OCP_TABLES.get(p.host_kind, ((0.0, 1.0), (0.0, 0.0)))
    xs, vs = list(xs), list(vs)
    nx = len(xs)
    nominal_Ah_per_g = p.nominal_capacity_mAh_per_g * 1e-3
    area_m2 = area * 1e-4
    fill_exp = p.host_fill_exponent
    U_c0, U_c1 = p.cluster_onset_V, p.closed_pore_floor_V
    U_o0, U_os, U_on, U_onf = (p.open_cluster_onset_V, p.open_cluster_slope_V,
                               p.open_cluster_nucleation_V, p.open_cluster_nucleation_fill)
    U_mg = -p.metal_growth_V
    k_oc, k_cc, k_m = (p.hazard_open_cluster_per_h, p.hazard_closed_cluster_per_h,
                       p.hazard_metal_per_h_per_mAh_cm2)
    k_pol, pol0 = p.hazard_polarization_per_h_per_V, p.hazard_polarization_floor_V
    k_neg, k_cep, j_cep = (p.hazard_negative_potential_per_h_per_V,
                           p.hazard_ce_plating_per_h_per_mA_cm2, p.ce_plating_critical_mA_cm2)
    soft_start = p.soft_short_start
    has_pre = p.precursor_kind != "none" and soft_start < 1.0
    creep = p.polarization_creep_per_mAh_cm2
    R_ct0 = p.metal_ct_asr_ohm_cm2 / area * 1e-3 if li_metal else 0.0
    ms_gain = p.microstructure_area_gain_per_mAh_cm2
    R_pit = p.pitting_asr_ohm_cm2 / area * 1e-3 if li_metal else 0.0
    q_pit = p.pitting_charge_mAh_cm2
    Q_sei_max = p.sei_capacity_mAh_per_g * mass_g
    U_sei = p.sei_onset_V
    G_sei = 1000.0 * area / p.sei_asr_ohm_cm2

    # state (mAh unless noted)
    qh, qc, qo, qm, qsei = p.host_fill0 * Qh, p.closed_fill0 * Qc, p.open_fill0 * Qo, 0.0, 0.0
    q_void = 0.0      # excess stripped charge at the CE, mAh/cm^2
    q_areal = 0.0     # areal charge plated on a Li-metal WE, mAh/cm^2
    H = 0.0
    charge = 0.0
    nucleated = False
    t_nuc = t_short = t_pre = None
    # soft short seen only once its leak matters: the path connects at H = 1, the short (the
    # voltage disturbance) is recorded when the nominal leak |V| / soft_short_ohm carries
    # soft_short_visible_fraction of the applied current (at once in holds and rests)
    visible_frac = p.soft_short_visible_fraction if p.short_kind == "soft" else 0.0
    connected = False
    ss_sigma = p.soft_short_noise
    ss_dips = p.soft_short_noise_kind == "dips"
    R_ce = R_ce0
    rows = []         # one tuple per recorded point (see `names` below)
    append = rows.append

    t = 0.0
    for k, step in enumerate(proto.steps):
        t_end = math.inf
        v_lim = None
        for lim in step.limits:
            if lim.kind == "duration_s":
                t_end = min(t_end, t + lim.value)
            elif lim.kind == "time_s":
                t_end = min(t_end, lim.value)
            else:
                v_lim = lim.value
        t_end = min(t_end, t_max_s)
        if isinstance(step, CurrentStep):
            mode, direction = "I", step.direction
            I_set = step.current_A(mass_g, area_m2, nominal_Ah_per_g) * 1e3  # mA
        elif isinstance(step, HoldStep):
            mode, I_set, direction = "V", step.value_V, 0
        else:
            mode, I_set, direction = "I", 0.0, 0
        V_prev = None
        while True:
            # ---- coefficients from the state
            R = R_base * (1.0 + creep * q_areal) + R_ce if creep else R_base + R_ce
            if R_ct0:   # microstructure area per cm2 of electrode ~ its areal amount (mAh/cm2)
                R += R_ct0 / (1.0 + ms_gain * qm / area)
            if R_pit:
                R += R_pit * (1.0 - math.exp(-q_areal / q_pit))
            Rs_inv = 0.0
            if connected:
                if p.short_kind == "hard":
                    Rs_inv = 1e3 / p.hard_short_ohm
                elif ss_dips:   # intermittent extra contact: the path never conducts less
                    Rs_inv = 1e3 / (p.soft_short_ohm * math.exp(-ss_sigma * abs(rng.standard_normal())))
                else:
                    Rs_inv = 1e3 / (p.soft_short_ohm * math.exp(ss_sigma * rng.standard_normal()))
            elif has_pre and H >= soft_start:
                prog = (H - soft_start) / (1.0 - soft_start)
                if p.precursor_kind == "leak":
                    Rs = p.precursor_ohm_start * (p.precursor_ohm_end / p.precursor_ohm_start) ** prog
                    if rng.random() < p.precursor_spike_rate_per_h * dt_s / 3600.0:
                        Rs /= 10.0 ** rng.uniform(0.5, 1.5)
                    Rs_inv = 1e3 / Rs
                else:
                    R *= 1.0 + p.precursor_polarization_gain * prog * prog
            sinks = [(-0.3, G_bg, True, False), (4.5, G_bg, False, True)]
            if li_metal:
                sinks.append((0.0, G_m, True, True))
            else:
                x = qh / Qh
                i = bisect.bisect_right(xs, x) - 1
                if i >= nx - 1:
                    U_h = vs[-1]
                elif i < 0:
                    U_h = vs[0]
                else:
                    U_h = vs[i] + (vs[i + 1] - vs[i]) * (x - xs[i]) / (xs[i + 1] - xs[i])
                g = G_h * (1.0 - x) ** fill_exp if (fill_exp and x < 1.0) else (0.0 if fill_exp else G_h)
                s_h = (U_h, g, x < 1.0, x > 0.0)
                sinks.append(s_h)
                if Qc:
                    th = qc / Qc
                    s_c = (U_c0 + (U_c1 - U_c0) * th, G_c, th < 1.0, th > 0.0)
                    sinks.append(s_c)
                if Qo:
                    th = qo / Qo
                    s_o = (U_o0 - U_os * th - U_on * math.exp(-th / U_onf), G_o, th < 1.0, th > 0.0)
                    sinks.append(s_o)
                if nucleated:  # plating needs the growth overpotential, stripping starts at 0 V
                    s_m = (U_mg, G_m, True, False)
                    sinks.append(s_m)
                if qm > 0.0:
                    s_ms = (0.0, G_m, False, True)
                    sinks.append(s_ms)
                if Q_sei_max > 0.0 and qsei < Q_sei_max:
                    s_s = (U_sei, G_sei * (1.0 - qsei / Q_sei_max), True, False)
                    sinks.append(s_s)
                else:
                    s_s = None
            sinks.sort()
            E = _solve(sinks, R, Rs_inv, mode, I_set)
            if not nucleated and not li_metal and E < -eta_nuc:
                nucleated = True
                t_nuc = t
                s_m = (U_mg, G_m, True, False)
                sinks.append(s_m)
                sinks.sort()
                E = _solve(sinks, R, Rs_inv, mode, I_set)
            I_ion = 0.0
            for U, G, add, rem in sinks:
                i_k = G * (U - E)
                if (i_k > 0.0 and add) or (i_k < 0.0 and rem):
                    I_ion += i_k
            V = E - I_ion * R
            I_ext = I_set if mode == "I" else I_ion - V * Rs_inv
            Rs_rec = 1e3 / Rs_inv if Rs_inv else math.inf
            # ---- potential limit: cut the step at the crossing
            frac = 1.0
            hit = False
            if v_lim is not None and ((V <= v_lim) if direction > 0 else (direction < 0 and V >= v_lim)):
                hit = True
                frac = (min(max((V_prev - v_lim) / (V_prev - V), 0.0), 1.0)
                        if (V_prev is not None and V_prev != V) else 0.0)
            if not rows:
                append((t, V, I_ext, E, I_ion, R, Rs_rec, 0.0, k, qh, qc, qo, qm, qsei, q_void,
                        H, charge))
            dt = min(dt_s, t_end - t) * frac
            if dt <= 0.0:
                break
            dq = dt / 3600.0  # mA -> mAh over this step
            # ---- update the reservoirs
            if li_metal:
                jq = abs(I_ion) / area * dq
                f_d = 0.0
                if p.dendrite_stage1_frac:
                    f_d += p.dendrite_stage1_frac * math.exp(-q_areal / p.dendrite_stage1_charge_mAh_cm2)
                if p.dendrite_stage3_frac:
                    over = q_areal - p.dendrite_stage3_charge_mAh_cm2
                    f_d += (p.dendrite_stage3_frac * _sigmoid(over / p.dendrite_stage3_width_mAh_cm2)
                            * math.exp(-(over if over > 0.0 else 0.0) / p.dendrite_stage4_decay_mAh_cm2))
                qm += f_d * abs(I_ion) * dq
                q_areal += jq
                if t_nuc is None and qm > 0.0:
                    t_nuc = t
            else:
                i_k = s_h[1] * (s_h[0] - E)
                if (i_k > 0.0 and s_h[2]) or (i_k < 0.0 and s_h[3]):
                    qh += i_k * dq
                    qh = Qh if qh > Qh else (0.0 if qh < 0.0 else qh)
                if Qc:
                    i_k = s_c[1] * (s_c[0] - E)
                    if (i_k > 0.0 and s_c[2]) or (i_k < 0.0 and s_c[3]):
                        qc += i_k * dq
                        qc = Qc if qc > Qc else (0.0 if qc < 0.0 else qc)
                if Qo:
                    i_k = s_o[1] * (s_o[0] - E)
                    if (i_k > 0.0 and s_o[2]) or (i_k < 0.0 and s_o[3]):
                        qo += i_k * dq
                        qo = Qo if qo > Qo else (0.0 if qo < 0.0 else qo)
                if nucleated and E < U_mg:
                    qm += s_m[1] * (U_mg - E) * dq
                if qm > 0.0 and E > 0.0:
                    qm -= G_m * E * dq
                    if qm < 0.0:
                        qm = 0.0
                if s_s is not None and E < U_sei:
                    qsei += s_s[1] * (U_sei - E) * dq
            charge += I_ion * dq
            j = I_ion / area
            if j > j_crit:  # stripping the CE faster than creep refills it opens voids
                q_void += (j - j_crit) * dq
                contact_ce = 1.0 - (_sigmoid((q_void - void_c) / void_w) - s0) / (1.0 - s0)
                R_ce = R_ce0 / (contact_ce if contact_ce > 0.01 else 0.01)
            # ---- hazard
            h = 0.0
            if k_oc and Qo:
                h += k_oc * qo / Qo
            if k_cc and Qc:
                h += k_cc * qc / Qc
            if k_m:
                h += k_m * qm / area
            if k_pol:
                pol = abs(I_ion) * R - pol0
                if pol > 0.0:
                    h += k_pol * pol
            if k_neg and E < 0.0:
                h -= k_neg * E
            if k_cep and -j > j_cep:
                h += k_cep * (-j - j_cep)
            H_new = H + h * dq
            if has_pre and t_pre is None and H_new >= soft_start:
                t_pre = t + dt * (soft_start - H) / (H_new - H)
            if not connected and H_new >= 1.0:
                t_cross = t + dt * (1.0 - H) / (H_new - H)
                connected = True
                if not visible_frac:
                    t_short = t_cross
            if (connected and visible_frac and t_short is None
                    and (mode != "I" or I_set == 0.0
                         or abs(V) * 1e3 / p.soft_short_ohm >= visible_frac * abs(I_set))):
                t_short = t
            H = H_new
            t += dt
            append((t, v_lim if hit else V, I_ext, E, I_ion, R, Rs_rec, h, k, qh, qc, qo, qm, qsei,
                    q_void, H, charge))
            V_prev = V
            if hit or t >= t_end - 1e-9:
                break
        if t >= t_max_s:
            break
    return _trajectory(rows, p, proto, t_nuc, t_short, t_pre, Qc, Qo, mass_g)


def _trajectory(rows, p: CellParams, proto, t_nuc, t_short, t_pre, Qc, Qo, mass_g) -> CellTrajectory:
    """Turn the recorded rows into a :class:`CellTrajectory` (vectorised bookkeeping)."""
    a = np.asarray(rows, dtype=float)
    (t, V, I_ext, E, I_ion, R, Rs, h, step, qh, qc, qo, qm, qsei, q_void, H, charge) = a.T
    area = p.area_cm2
    li_metal = p.host_kind == "li_metal"
    delta_cm = skin_depth_um(p.larmor_MHz) * 1e-4
    ce_vis0 = p.ce_visible_area_cm2 * delta_cm * LI_METAL_MAH_PER_CM3 * (2.0 if li_metal else 1.0)
    total0 = p.electrolyte_visible_mAh + qh[0] + qc[0] + qo[0] + qsei[0] + ce_vis0 \
        + p.metal_visible_fraction * qm[0]
    z = np.clip((q_void - p.ce_void_charge_mAh_cm2) / p.ce_void_width_mAh_cm2, -50, 50)
    s0 = _sigmoid(-p.ce_void_charge_mAh_cm2 / p.ce_void_width_mAh_cm2)
    contact = 1.0 - (1.0 / (1.0 + np.exp(-z)) - s0) / (1.0 - s0)
    post = np.zeros_like(t)
    if t_short is not None:
        post = 1.0 - np.exp(-np.maximum(t - t_short, 0.0) / p.post_short_tau_s)
    cl = qc + qo

    def shift_of(q, Q, max_ppm):
        fill = q / Q if Q else np.zeros_like(q)
        return p.cluster_shift_appear_ppm + (max_ppm - p.cluster_shift_appear_ppm) * (
            1.0 - np.exp(-np.maximum(fill, 0.0) / p.cluster_shift_scale))

    with np.errstate(invalid="ignore", divide="ignore"):
        shift = (qc * shift_of(qc, Qc, p.closed_cluster_shift_max_ppm)
                 + qo * shift_of(qo, Qo, p.open_cluster_shift_max_ppm)) / cl
        # Fast exchange (Tagami Sec. 3.5): ionic Li of the host near the clusters joins their
        # peak, whose shift is the amount-weighted average; the pool builds up as the first
        # clusters nucleate (over ~cluster_exchange_nucleation_mAh_per_g of cluster Li).
        qx = np.zeros_like(qh)
        if p.cluster_exchange_fraction > 0.0 and not li_metal:
            qn = max(p.cluster_exchange_nucleation_mAh_per_g, 1e-9) * mass_g
            qx = p.cluster_exchange_fraction * qh * (1.0 - np.exp(-np.maximum(cl, 0.0) / qn))
            shift = (cl * shift + qx * p.cluster_exchange_shift_ppm) / (cl + qx)
    present = cl > 1e-9 * max(Qc + Qo, 1e-12)
    shift = np.where(present, shift, np.nan)
    qx = np.where(present, qx, 0.0)
    phys = {
        "host_mAh_per_g": qh / mass_g,
        "closed_cluster_mAh_per_g": qc / mass_g,
        "open_cluster_mAh_per_g": qo / mass_g,
        "metal_mAh": qm,
        "metal_mAh_per_cm2": qm / area,
        "sei_mAh": qsei,
        "ce_contact": contact,
        "we_potential_V": E,
        "ionic_current_A": I_ion * 1e-3,
        "resistance_ohm": R * 1e3,
        "short_ohm": Rs,
        "hazard_rate_per_h": h,
        "charge_mAh_per_g": charge / mass_g,
        "exchange_mAh_per_g": qx / mass_g,
    }
    # the deformed region keeps its contact: voids open where the foil meets the electrolyte
    ce_def = float(np.clip(p.ce_deformed_fraction, 0.0, 1.0))
    return CellTrajectory(
        t_s=t, potential_V=V, current_A=I_ext * 1e-3,
        host_amount=(qh - qx) / total0,
        cluster_amount=(cl + qx) / total0,
        cluster_shift_ppm=shift,
        metal_amount=p.metal_visible_fraction * qm / total0 + p.post_short_metal_amount * post,
        ce_amount=ce_vis0 * (ce_def + (1.0 - ce_def) * (1.0 - p.ce_loss_visible * (1.0 - contact)))
        / total0 + p.post_short_ce_amount * post,
        ce_deformed_amount=np.full_like(t, ce_vis0 * ce_def / total0),
        electrolyte_amount=np.full_like(t, p.electrolyte_visible_mAh / total0),
        sei_amount=qsei / total0, hazard=H, step_index=step.astype(int),
        t_short_s=t_short, short_kind=p.short_kind if t_short is not None else None,
        t_metal_onset_s=t_nuc, t_precursor_s=t_pre, phys=phys, params=p, protocol=proto)
