"""Training reads symmetric Li | Li runs sign-free under ``inputs.symmetric_cells: sign_free``."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lisentry.datasets.store import RunView
from lisentry.models.features import ECHEM_FEATURES
from lisentry.training.data import run_tensors

COL = {n: k for k, n in enumerate(ECHEM_FEATURES)}


def view(family, info, sign=1.0):
    t = np.arange(6) * 600.0
    i = sign * np.array([0, 1e-4, 1e-4, 1e-4, 1e-4, 1e-4])
    fr = pd.DataFrame({"t_s": t, "potential_V": sign * np.linspace(0, 0.1, 6), "current_A": i,
                       "charge_C": np.cumsum(i * 600.0), "label": ["normal_lithiation"] * 6})
    return RunView("r", family, np.zeros((6, 8), np.float32), fr, info)


@pytest.mark.parametrize("family, info, sign_free", [
    ("li_plating_liquid_li", {}, True),               # simulated before runs recorded the cell
    ("my_cells", {"cell": "symmetric"}, True),       # recorded (add-measured --cell symmetric)
    ("hc_sulfide_hold", {}, False),                  # a half cell keeps its signs
    ("li_llzo_li", {"measured": True}, False),       # a measured run without a record: half
])
def test_run_tensors_reads_only_symmetric_runs_sign_free(family, info, sign_free):
    pos = run_tensors(view(family, info, +1.0), symmetric_cells="sign_free").echem
    neg = run_tensors(view(family, info, -1.0), symmetric_cells="sign_free").echem
    assert np.array_equal(pos, neg) == sign_free
    # "signed" (the models from before the option) never changes a run
    signed = run_tensors(view(family, info, -1.0), symmetric_cells="signed").echem
    assert signed[-1, COL["potential_V"]] == pytest.approx(-0.1)
    with pytest.raises(ValueError, match="symmetric_cells must be one of"):
        run_tensors(view(family, info), symmetric_cells="abs")
