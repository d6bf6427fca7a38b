"""Runs the docstring examples of the package's modules (imported as lisentry.*, never as the
bare folders, so nothing shadows other packages)."""
from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "lisentry.datasets.frame", "lisentry.datasets.pipeline", "lisentry.datasets.io.bruker",
    "lisentry.datasets.io.bruker_writer", "lisentry.datasets.io.potentiostat",
    "lisentry.datasets.io.biologic", "lisentry.datasets.sim.protocol", "lisentry.datasets.sim.cell",
    "lisentry.datasets.sim.scenarios", "lisentry.datasets.sim.truth", "lisentry.datasets.sim.spectra",
    "lisentry.datasets.sim.acquisition", "lisentry.datasets.sim.nmr_params", "lisentry.datasets.store",
    "lisentry.models.features", "lisentry.models.net", "lisentry.models.calibration",
    "lisentry.models.bundle", "lisentry.training.metrics", "lisentry.detector.hysteresis",
    "lisentry.detector.outputs", "lisentry.detector.state", "lisentry.detector.actions",
    "lisentry.training.ood", "lisentry.models.ood_scorer",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    mod = importlib.import_module(name)
    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert res.failed == 0, f"{res.failed} of {res.attempted} docstring examples failed in {name}"
