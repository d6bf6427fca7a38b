"""Cell kinds (half / symmetric): validation, and the kind of stored and simulated runs."""
from __future__ import annotations

import pytest

from lisentry.datasets.cells import CELL_KINDS, check_cell_kind, run_cell_kind
from lisentry.datasets.errors import ConfigError
from lisentry.datasets.loading import LoadOptions


def test_check_cell_kind_accepts_the_kinds_and_names_the_bad_value():
    assert check_cell_kind(None) == "half" and check_cell_kind(" Symmetric ") == "symmetric"
    assert set(CELL_KINDS) == {"half", "symmetric"}
    with pytest.raises(ConfigError, match=r"--cell must be one of half, symmetric\. Got 'li-li'"):
        check_cell_kind("li-li")
    with pytest.raises(ConfigError, match="--cell"):
        LoadOptions(cell="full")
    assert LoadOptions().cell == "half"


def test_run_cell_kind_from_info_then_family():
    assert run_cell_kind("anything", {"cell": "symmetric"}) == "symmetric"
    assert run_cell_kind("li_llzo_li", {"cell": "half"}) == "half"        # the record wins
    # simulated runs stored before runs recorded it: from the family's host
    assert run_cell_kind("li_llzo_li", {}) == "symmetric"
    assert run_cell_kind("li_liquid_li_cycling", None) == "symmetric"
    assert run_cell_kind("hc_sulfide_hold", {}) == "half"
    # a measured run without a record, or an unknown family: half (the signs carry meaning)
    assert run_cell_kind("li_llzo_li", {"measured": True}) == "half"
    assert run_cell_kind("my_lab_cells", {}) == "half"
    with pytest.raises(ConfigError, match="'cell'"):
        run_cell_kind("x", {"cell": "bogus"})


def test_simulated_runs_record_their_cell():
    from lisentry.datasets.sim.run import simulate_run
    assert simulate_run("li_plating_liquid_li", 1, max_frames=2).info["cell"] == "symmetric"
    assert simulate_run("graphite_overcharge", 1, max_frames=2).info["cell"] == "half"
