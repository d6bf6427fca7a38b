"""Conformance suite run over every registered model and every stateful estimator: docstrings,
immutable defaults, seeded determinism, save/load round trips without pickle, clone() and
inputs left unmutated."""
from __future__ import annotations

import copy
import inspect
import json

import numpy as np
import pytest
import torch

from lisentry.datasets.frame import CLASSES
from lisentry.datasets.pipeline import Pipeline, ProcessingConfig
from lisentry.detector.hysteresis import AlarmPolicy, HysteresisLabeller
from lisentry.models.features import N_ECHEM
from lisentry.models.registry import MODELS


def _defaults_immutable(cls):
    for name, p in inspect.signature(cls.__init__).parameters.items():
        assert not isinstance(p.default, (list, dict, set, np.ndarray)), \
            f"{cls.__name__}.{name} has a mutable default"


def _example_kwargs(name: str) -> dict:
    one = {"n_ppm": 1001, "n_echem": N_ECHEM, "hidden": 8}
    if name == "lisentry_ensemble":   # built from its members' arguments
        return {"members": [one, {**one, "hidden": 6}]}
    return one


@pytest.mark.parametrize("name", sorted(MODELS))
def test_registered_model_conformance(name, tmp_path):
    from lisentry.models.bundle import load_bundle, save_bundle
    cls = MODELS[name]
    assert cls.__doc__ and "Parameters" in cls.__doc__
    _defaults_immutable(cls)
    torch.manual_seed(0)
    a = cls(**_example_kwargs(name)).eval()
    torch.manual_seed(0)
    b = cls(**_example_kwargs(name)).eval()
    x = torch.randn(1, 5, 1001)
    x[0, :, :10] = float("nan")
    e = torch.randn(1, 5, N_ECHEM)
    x0, e0 = x.clone(), e.clone()
    with torch.no_grad():
        ya, yb = a(x, e)["logits"], b(x, e)["logits"]
    assert torch.equal(ya, yb), "same seed must give the same model"
    assert torch.equal(torch.nan_to_num(x, 7.0), torch.nan_to_num(x0, 7.0)) and torch.equal(e, e0), \
        "inputs were mutated"
    save_bundle(tmp_path / "b", a, {"processing": ProcessingConfig().to_dict()})
    assert not any(p.suffix in (".pt", ".pkl", ".pth") for p in (tmp_path / "b").iterdir())
    loaded = load_bundle(tmp_path / "b").model
    with torch.no_grad():
        assert torch.equal(loaded(x, e)["logits"], ya)


def test_hysteresis_conformance():
    assert HysteresisLabeller.__doc__
    _defaults_immutable(HysteresisLabeller)
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(len(CLASSES)), size=30)
    h = HysteresisLabeller(AlarmPolicy())
    for row in p[:15]:
        h.update(dict(zip(CLASSES, row)))
    state = json.loads(json.dumps(h.state_dict()))
    h2 = HysteresisLabeller(AlarmPolicy()).load_state_dict(state)
    c = h.clone()
    assert c.label is None, "clone() must be a fresh estimator"
    assert [h.update(dict(zip(CLASSES, r))) for r in p[15:]] == \
        [h2.update(dict(zip(CLASSES, r))) for r in p[15:]]


def test_pipeline_conformance():
    assert Pipeline.__doc__ and ProcessingConfig.__doc__
    cfg = ProcessingConfig()
    assert ProcessingConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    pipe = Pipeline(cfg)
    assert json.loads(json.dumps(pipe.to_dict()))  # JSON-safe
    d = copy.deepcopy(cfg.to_dict())
    Pipeline(cfg)
    assert cfg.to_dict() == d
