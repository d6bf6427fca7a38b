"""Cell kinds: how the sign of a run's potential, current and charge is to be read.

``half``
    A working electrode (hard carbon, graphite, Li metal on a separator or solid electrolyte)
    against a counter electrode; a negative potential / positive current lithiates the working
    electrode. The signs carry meaning. The default.
``symmetric``
    Li | Li: both electrodes are lithium metal in the coil, and which one is the "working"
    electrode is a wiring convention. A positive potential plates the counter foil as a
    negative one plates the working foil, so the signs say *which* foil is plated, not
    *whether* Li plates. Models trained with ``inputs.symmetric_cells: sign_free`` read such
    runs' potential, current and charge as magnitudes (:mod:`lisentry.models.features`).
"""
from __future__ import annotations

from typing import Mapping

from lisentry.datasets.errors import ConfigError

#: The cell kinds a run may have (``--cell`` on the command line, ``cell`` in run info).
CELL_KINDS: tuple[str, ...] = ("half", "symmetric")
DEFAULT_CELL = "half"
#: How a model reads symmetric cells (training config / card ``inputs.symmetric_cells``):
#: ``signed`` as half cells (models from before 2026-12-08), ``sign_free`` as magnitudes.
SYMMETRIC_CELL_MODES: tuple[str, ...] = ("signed", "sign_free")


def check_cell_kind(value: str | None, where: str = "--cell") -> str:
    """``value`` as a cell kind (None: the default), or a one-line ConfigError naming ``where``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return DEFAULT_CELL
    v = str(value).strip().lower()
    if v not in CELL_KINDS:
        raise ConfigError(f"{where} must be one of {', '.join(CELL_KINDS)}. Got {value!r}.")
    return v


def run_cell_kind(family: str, info: Mapping | None) -> str:
    """The cell kind of a stored run: its info's ``cell``; for simulated runs stored before
    runs recorded it, from the family (a Li-metal host is a symmetric Li | Li cell); else
    ``half``."""
    info = info or {}
    if info.get("cell"):
        return check_cell_kind(info["cell"], where=f"run info of family {family!r}: 'cell'")
    if info.get("measured"):
        return DEFAULT_CELL
    from lisentry.datasets.sim.scenarios import FAMILIES  # noqa: PLC0415 (sim only when needed)
    if family in FAMILIES:
        return "symmetric" if FAMILIES[family].cell.host_kind == "li_metal" else DEFAULT_CELL
    return DEFAULT_CELL
