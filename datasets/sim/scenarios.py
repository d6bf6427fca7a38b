"""Scenario families: one YAML file per family in ``datasets/sim/params/`` (protocol, cell
parameters, NMR parameters, acquisition parameters, domain-randomization ranges).

A family's defaults reproduce its source paper; :func:`sample_params` draws a randomized
variant for training data. Users add a family by writing a YAML file of the same shape and
loading it with :func:`load_family_yaml` (or dropping it into ``params/`` and adding its name to
:data:`FAMILY_FILES`).

YAML shape::

    name: hc_sulfide_hold
    description: ...
    source: Tagami et al., J. Power Sources 2025, Fig. 5
    has_short_precursors: false
    precursors: none spectral; soft-short current creep in the last hour
    dt_s: 30
    protocol: ["Lithiate at 25 mA/g until -5.5 mV", "Hold at -5.5 mV for 12 h"]
    cell: {CellParams fields}
    nmr: {electrolyte_shift_ppm, host_kind, ce_orientation_deg, metal_shift_ppm, host_shift_ppm}
    acquisition: {field_MHz, ns, d1_s, frame_period_s, snr, phc0_deg, phc1_deg}
    randomize:                      # uniform [lo, hi]; "log" ranges are log-uniform
      cell.stack_pressure_MPa: [30, 45]
      nmr.ce_orientation_deg: [0, 90]
      current_scale: {log: [0.8, 1.25]}   # multiplies every current step
      hazard_scale: {log: [0.8, 1.25]}    # multiplies every hazard coefficient
      hold_offset_V: [-0.002, 0.002]       # added to every hold potential
      initial_rest_h: [-0.5, 1.0]          # open-circuit rest before the first step, h
                                           # (a draw <= 0: none; protocol times shift with it)
      polarity: [-1, 1]                    # a draw < 0 swaps the electrodes: currents and
                                           # potential limits change sign (symmetric cells)

Families whose short has electrochemical/spectral precursors say so in
``has_short_precursors``; lead-time goals apply to those (interfaces.md).
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import yaml

from lisentry.datasets.errors import ConfigError, InputError
from lisentry.datasets.sim.cell import CellParams, CellTrajectory, simulate
from lisentry.datasets.sim.protocol import CurrentStep, HoldStep, Limit, Protocol, RestStep

__all__ = ["Family", "FAMILIES", "FAMILY_FILES", "PARAMS_DIR", "get_family", "load_family_yaml",
           "sample_params", "ce_shift_ppm", "LI7_GAMMA_RATIO"]

PARAMS_DIR = Path(__file__).resolve().parent / "params"

#: 7Li Larmor frequency / 1H Larmor frequency.
LI7_GAMMA_RATIO = 0.38863

#: Explicit registry: family name -> YAML file in ``PARAMS_DIR``.
FAMILY_FILES: dict[str, str] = {
    "hc_sulfide_ccv": "hc_sulfide_ccv.yaml",
    "hc_sulfide_overlithiation": "hc_sulfide_overlithiation.yaml",
    "hc_sulfide_lowpressure": "hc_sulfide_lowpressure.yaml",
    "hc_sulfide_hold": "hc_sulfide_hold.yaml",
    "hc_liquid": "hc_liquid.yaml",
    "graphite_overcharge": "graphite_overcharge.yaml",
    "li_llzo_li": "li_llzo_li.yaml",
    "hc_normal_cycling": "hc_normal_cycling.yaml",
    "graphite_normal_cycling": "graphite_normal_cycling.yaml",
    "li_liquid_li_cycling": "li_liquid_li_cycling.yaml",
    "li_plating_liquid_li": "li_plating_liquid_li.yaml",
}

_NMR_DEFAULTS = {"electrolyte_shift_ppm": 4.0, "host_kind": "hard_carbon",
                 "ce_orientation_deg": 90.0, "metal_shift_ppm": 275.0, "host_shift_ppm": 10.0}
_ACQ_DEFAULTS = {"field_MHz": 500.0, "ns": 120, "d1_s": 5.0, "frame_period_s": 600.0,
                 "snr": 200.0, "phc0_deg": 0.0, "phc1_deg": 0.0}
_TOP_KEYS = {"name", "description", "source", "has_short_precursors", "precursors", "dt_s",
             "protocol", "cell", "nmr", "acquisition", "randomize"}
_SPECIAL_RANDOM = ("current_scale", "hazard_scale", "hold_offset_V", "initial_rest_h", "polarity")

# Bulk-magnetic-susceptibility shift of a flat Li electrode vs its angle to B0 (domain.md).
_CE_ANGLES = (0.0, 30.0, 45.0, 90.0)
_CE_SHIFTS = (272.0, 265.0, 252.0, 242.0)


def ce_shift_ppm(orientation_deg: float) -> float:
    """Shift of the Li-metal electrode line for an electrode plane at ``orientation_deg`` to B0.

    >>> ce_shift_ppm(0.0), ce_shift_ppm(90.0)
    (272.0, 242.0)
    """
    return float(np.interp(orientation_deg, _CE_ANGLES, _CE_SHIFTS))


@dataclass(frozen=True)
class Family:
    """One scenario family.

    Parameters
    ----------
    name : str
    protocol : Protocol
    cell : CellParams
    nmr : dict
        ``electrolyte_shift_ppm`` (sulfide 3..5, liquid ~0, LLZO 1.2), ``host_kind``
        (``hard_carbon``/``graphite``/``li_metal``), ``ce_orientation_deg`` (0..90; see
        :func:`ce_shift_ppm`), ``metal_shift_ppm`` (dendrite/moss 260..278), ``host_shift_ppm``.
    acquisition : dict
        ``field_MHz`` (1H frequency of the magnet), ``ns``, ``d1_s``, ``frame_period_s``,
        ``snr``, ``phc0_deg``, ``phc1_deg``.
    has_short_precursors : bool
        Whether the family's short is preceded by observable signs (lead-time goals apply).
    precursors : str
        Which signs (or why none).
    description, source : str
    dt_s : float
        Integration step of the cell model, s.
    randomize : dict
        Domain-randomization ranges (see module docstring).
    """

    name: str
    protocol: Protocol
    cell: CellParams
    nmr: Mapping = field(default_factory=dict)
    acquisition: Mapping = field(default_factory=dict)
    has_short_precursors: bool = False
    precursors: str = ""
    description: str = ""
    source: str = ""
    dt_s: float = 30.0
    randomize: Mapping = field(default_factory=dict)

    @property
    def larmor_MHz(self) -> float:
        """7Li observe frequency, MHz."""
        return float(self.acquisition["field_MHz"]) * LI7_GAMMA_RATIO

    @property
    def ce_shift_ppm(self) -> float:
        return ce_shift_ppm(float(self.nmr["ce_orientation_deg"]))

    def simulate(self, rng: np.random.Generator | int | None = None) -> CellTrajectory:
        """Run the cell model for this family (the skin depth follows the acquisition field)."""
        cell = self.cell
        if not math.isclose(cell.larmor_MHz, self.larmor_MHz, rel_tol=1e-9):
            cell = cell.replace(larmor_MHz=self.larmor_MHz)
        return simulate(self.protocol, cell, dt_s=self.dt_s, rng=rng)

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "source": self.source,
                "has_short_precursors": self.has_short_precursors, "precursors": self.precursors,
                "dt_s": self.dt_s, "protocol": self.protocol.descriptions,
                "protocol_steps": self.protocol.to_dict()["steps"], "cell": self.cell.to_dict(),
                "nmr": dict(self.nmr), "acquisition": dict(self.acquisition),
                "randomize": copy.deepcopy(dict(self.randomize))}


def _family_from_mapping(d: Mapping, source: str | Path) -> Family:
    if not isinstance(d, Mapping):
        raise InputError(source, "family file must be a YAML mapping")
    for key in d:
        if key not in _TOP_KEYS:
            close = difflib.get_close_matches(str(key), sorted(_TOP_KEYS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(source, f"unknown key {key!r}{hint}")
    for key in ("name", "protocol", "cell"):
        if key not in d:
            raise InputError(source, f"missing required key {key!r}")
    try:
        protocol = Protocol.parse(list(d["protocol"]))
        cell = CellParams.from_dict(d.get("cell") or {})
    except ConfigError as exc:
        raise InputError(source, str(exc)) from None
    nmr = {**_NMR_DEFAULTS, "host_kind": cell.host_kind, **(d.get("nmr") or {})}
    acq = {**_ACQ_DEFAULTS, **(d.get("acquisition") or {})}
    for key, group, known in (("nmr", nmr, _NMR_DEFAULTS), ("acquisition", acq, _ACQ_DEFAULTS)):
        for k in group:
            if k not in known:
                close = difflib.get_close_matches(k, sorted(known), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise InputError(source, f"unknown {key} parameter {k!r}{hint}")
    randomize = dict(d.get("randomize") or {})
    fam = Family(name=str(d["name"]), protocol=protocol, cell=cell, nmr=nmr, acquisition=acq,
                 has_short_precursors=bool(d.get("has_short_precursors", False)),
                 precursors=str(d.get("precursors", "")), description=str(d.get("description", "")),
                 source=str(d.get("source", "")), dt_s=float(d.get("dt_s", 30.0)),
                 randomize=randomize)
    try:
        _check_randomize(fam)
    except ConfigError as exc:
        raise InputError(source, str(exc)) from None
    return fam


def load_family_yaml(path: str | Path) -> Family:
    """Load a family from a YAML file.

    Raises
    ------
    InputError
        Missing file, bad YAML, unknown keys (with "did you mean"), bad protocol steps or
        parameters; the message names the file.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(path, f"cannot read family file ({exc.strerror or exc})") from None
    try:
        d = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(path, f"invalid YAML ({str(exc).splitlines()[0]})") from None
    return _family_from_mapping(d, path)


class _Registry(dict):
    """``FAMILIES``: an explicit name -> :class:`Family` mapping, loaded lazily from YAML,
    with "did you mean" for unknown names."""

    def __missing__(self, name):
        if name in FAMILY_FILES:
            fam = load_family_yaml(PARAMS_DIR / FAMILY_FILES[name])
            self[name] = fam
            return fam
        close = difflib.get_close_matches(str(name), sorted(FAMILY_FILES) + sorted(self), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"Unknown scenario family {name!r}.{hint} "
                          f"Known: {', '.join(sorted(set(FAMILY_FILES) | set(self)))}.")

    def __contains__(self, name):
        return dict.__contains__(self, name) or name in FAMILY_FILES

    def __iter__(self):
        return iter(sorted(set(FAMILY_FILES) | set(dict.keys(self))))

    def keys(self):
        return list(iter(self))

    def values(self):
        return [self[k] for k in self]

    def items(self):
        return [(k, self[k]) for k in self]

    def __len__(self):
        return len(set(FAMILY_FILES) | set(dict.keys(self)))


#: Registry of the built-in families (and any added with ``FAMILIES[name] = family``).
FAMILIES: dict[str, Family] = _Registry()


def get_family(name_or_family: str | Family) -> Family:
    """A :class:`Family` from its name (``ConfigError`` with "did you mean" when unknown)."""
    if isinstance(name_or_family, Family):
        return name_or_family
    return FAMILIES[name_or_family]


def _check_polarity(fam: Family) -> None:
    """``polarity`` only for symmetric Li | Li cells: elsewhere the cell model is not mirror-symmetric
    (one-sided background sinks, CE voids and hazards), so a reversed run would not be the same
    experiment wired the other way."""
    if "polarity" in fam.randomize and fam.cell.host_kind != "li_metal":
        raise ConfigError(f"Family {fam.name!r}: the randomize key 'polarity' is only for symmetric "
                          f"Li | Li cells (cell.host_kind li_metal). Got host_kind "
                          f"{fam.cell.host_kind!r}.")


def _check_randomize(fam: Family) -> None:
    _check_polarity(fam)
    cell_names = {f.name for f in dataclasses.fields(CellParams)}
    for key, rng in fam.randomize.items():
        if key in _SPECIAL_RANDOM:
            pass
        elif "." in key:
            group, name = key.split(".", 1)
            known = {"cell": cell_names, "nmr": set(_NMR_DEFAULTS),
                     "acquisition": set(_ACQ_DEFAULTS)}.get(group)
            if known is None or name not in known:
                pool = sorted(f"{g}.{n}" for g, ns in (("cell", cell_names),
                                                       ("nmr", _NMR_DEFAULTS),
                                                       ("acquisition", _ACQ_DEFAULTS)) for n in ns)
                close = difflib.get_close_matches(key, pool + list(_SPECIAL_RANDOM), n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"Unknown randomize key {key!r}.{hint}")
        else:
            close = difflib.get_close_matches(key, list(_SPECIAL_RANDOM), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"Unknown randomize key {key!r}.{hint}")
        lo, hi, _ = _range(key, rng)
        if not lo <= hi:
            raise ConfigError(f"Randomize range for {key!r} must have lo <= hi. Got {rng!r}.")


def _range(key, spec) -> tuple[float, float, bool]:
    log = False
    if isinstance(spec, Mapping):
        if set(spec) != {"log"}:
            raise ConfigError(f"Randomize range for {key!r} must be [lo, hi] or {{log: [lo, hi]}}. "
                              f"Got {spec!r}.")
        spec, log = spec["log"], True
    if not (isinstance(spec, (list, tuple)) and len(spec) == 2):
        raise ConfigError(f"Randomize range for {key!r} must be [lo, hi]. Got {spec!r}.")
    lo, hi = float(spec[0]), float(spec[1])
    if log and lo <= 0:
        raise ConfigError(f"Log range for {key!r} needs lo > 0. Got {spec!r}.")
    return lo, hi, log


def _scale_protocol(protocol: Protocol, current_scale: float, hold_offset_V: float) -> Protocol:
    steps = []
    for s in protocol.steps:
        if isinstance(s, CurrentStep) and current_scale != 1.0:
            changes = {name: getattr(s, name) * current_scale
                       for name in ("value_A_per_g", "value_A_per_m2", "value_A", "c_rate")
                       if getattr(s, name) is not None}
            s = dataclasses.replace(s, description=f"{s.description} [current x{current_scale:.3g}]",
                                    **changes)
        elif isinstance(s, HoldStep) and hold_offset_V:
            s = dataclasses.replace(s, value_V=s.value_V + hold_offset_V,
                                    description=f"{s.description} [{hold_offset_V * 1e3:+.2f} mV]")
        steps.append(s)
    return Protocol(tuple(steps))


def reversed_polarity(protocol: Protocol) -> Protocol:
    """``protocol`` with the working and counter electrodes swapped: every current step runs the
    other way and every potential limit or hold changes sign.

    In a symmetric cell (Li | Li) which foil is the "working" electrode is a wiring convention:
    the same experiment gives a positive or a negative potential depending on the cables. A
    family that draws ``polarity`` (a draw < 0 reverses) teaches a model that the sign of a
    symmetric cell's potential says which electrode is plated, not whether Li plates. The
    simulated potential is then exactly mirrored because the Li | Li cell model has no one-sided
    terms in use; the key is refused for other cells.

    >>> p = Protocol.parse(["Delithiate at 1 mA/cm2 for 1 h", "Lithiate at 1 mA until -0.5 V"])
    >>> [(s.direction, [(l.kind, l.value) for l in s.limits]) for s in reversed_polarity(p).steps]
    [(1, [('duration_s', 3600.0)]), (-1, [('potential_V', 0.5)])]
    """
    steps = []
    for s in protocol.steps:
        if isinstance(s, CurrentStep):
            limits = tuple(Limit(lim.kind, -lim.value) if lim.kind == "potential_V" else lim
                           for lim in s.limits)
            s = dataclasses.replace(s, direction=-s.direction, limits=limits,
                                    description=f"{s.description} [reversed polarity]")
        elif isinstance(s, HoldStep):
            s = dataclasses.replace(s, value_V=-s.value_V,
                                    description=f"{s.description} [reversed polarity]")
        steps.append(s)
    return Protocol(tuple(steps))


def with_initial_rest(protocol: Protocol, rest_s: float) -> Protocol:
    """``protocol`` preceded by ``rest_s`` seconds at open circuit.

    Operando runs usually start with a few spectra of the cell at rest before the potentiostat
    applies current (the real Li | Li run's log starts five frames after its first spectrum);
    a model that never saw such a start reads the first frames of an unknown cell as whatever
    its family's early frames were. Every ``until T`` (protocol-clock) limit moves by
    ``rest_s`` so the steps after the rest keep their durations.
    """
    if rest_s <= 0:
        return protocol
    steps = [RestStep((Limit("duration_s", float(rest_s)),),
                      description=f"Rest for {rest_s / 60:.3g} min (initial open circuit)")]
    for s in protocol.steps:
        if any(lim.kind == "time_s" for lim in s.limits):
            s = dataclasses.replace(s, limits=tuple(
                dataclasses.replace(lim, value=lim.value + rest_s) if lim.kind == "time_s" else lim
                for lim in s.limits))
        steps.append(s)
    return Protocol(tuple(steps))


def sample_params(family: str | Family, rng: np.random.Generator | int | None = None) -> Family:
    """Draw one domain-randomized variant of a family.

    Every range in ``family.randomize`` is drawn independently (uniform, or log-uniform for
    ``{log: [lo, hi]}``); integer-valued acquisition keys (``ns``) are rounded.

    Parameters
    ----------
    family : str or Family
    rng : numpy Generator or int, optional

    Returns
    -------
    Family
        Same name, concrete parameters; ``cell.larmor_MHz`` follows the drawn field.

    Examples
    --------
    >>> f = sample_params("hc_sulfide_hold", 0)
    >>> 300.0 <= f.acquisition["field_MHz"] <= 850.0
    True
    """
    fam = get_family(family)
    _check_polarity(fam)
    rng = np.random.default_rng(rng)
    cell = fam.cell.to_dict()
    nmr, acq = dict(fam.nmr), dict(fam.acquisition)
    special = {"current_scale": 1.0, "hazard_scale": 1.0, "hold_offset_V": 0.0,
               "initial_rest_h": 0.0, "polarity": 1.0}
    for key in sorted(fam.randomize):
        lo, hi, log = _range(key, fam.randomize[key])
        val = float(math.exp(rng.uniform(math.log(lo), math.log(hi)))) if log else float(rng.uniform(lo, hi))
        if key in special:
            special[key] = val
            continue
        group, name = key.split(".", 1)
        target = {"cell": cell, "nmr": nmr, "acquisition": acq}[group]
        if isinstance(target.get(name), int) and not isinstance(target.get(name), bool):
            val = int(round(val))
        target[name] = val
    if special["hazard_scale"] != 1.0:
        for name in list(cell):
            if name.startswith("hazard_") and not name.endswith("floor_V"):
                cell[name] = cell[name] * special["hazard_scale"]
    cell["larmor_MHz"] = float(acq["field_MHz"]) * LI7_GAMMA_RATIO
    protocol = _scale_protocol(fam.protocol, special["current_scale"], special["hold_offset_V"])
    if special["polarity"] < 0:
        protocol = reversed_polarity(protocol)
    protocol = with_initial_rest(protocol, max(special["initial_rest_h"], 0.0) * 3600.0)
    return dataclasses.replace(fam, protocol=protocol, cell=CellParams.from_dict(cell), nmr=nmr,
                               acquisition=acq)
