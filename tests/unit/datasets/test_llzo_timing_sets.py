"""configs/dataset-heldout-llzo-{timing,control}.yaml: the same Li | LLZO | Li runs, apart from
the stage-3 dendrite charge (docs/results/journal.md, 2026-12-07, third part)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lisentry.datasets.build import _family_obj, load_build_config, run_seed
from lisentry.datasets.sim.scenarios import sample_params

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
KEY = "dendrite_stage3_charge_mAh_cm2"


def _config_draws(config: str, family: str, n: int = 16):
    """The config and the parameters drawn for the first ``n`` runs of ``family``."""
    cfg = load_build_config(CONFIGS / config)
    fam = _family_obj(family, cfg.family_files, cfg.override_for(family))
    return cfg, [sample_params(fam, np.random.default_rng(run_seed(cfg.seed, family, i))).to_dict()
                 for i in range(n)]


def _draws(name: str, n: int = 24):
    cfg, draws = _config_draws(f"dataset-heldout-llzo-{name}.yaml", "li_llzo_li", n)
    assert list(cfg.families) == ["li_llzo_li"] and cfg.families["li_llzo_li"]["runs"] == 12
    return draws


def test_the_two_sets_differ_only_in_the_stage3_charge():
    timing, control = _draws("timing"), _draws("control")
    q_t = np.array([d["cell"][KEY] for d in timing])
    q_c = np.array([d["cell"][KEY] for d in control])
    # control: the family's own range; timing: a wider one, reaching both sides of it
    assert (q_c >= 7.5).all() and (q_c <= 11.5).all()
    assert (q_t >= 3.0).all() and (q_t <= 24.0).all()
    assert (q_t < 7.5).any() and (q_t > 11.5).any()
    for a, b in zip(timing, control):     # every other drawn value is the same
        for d in (a, b):
            d["cell"].pop(KEY), d.pop("randomize")
        assert a == b


def test_the_wide_timing_training_data_differ_from_the_default_only_in_the_llzo_stage3_charge():
    """configs/dataset-train-llzo-wide.yaml: the training data with the dendrite timing spread
    (journal, 2026-12-07, twelfth part); every other family and draw as in dataset-train.yaml."""
    narrow_cfg, narrow = _config_draws("dataset-train.yaml", "li_llzo_li")
    wide_cfg, wide = _config_draws("dataset-train-llzo-wide.yaml", "li_llzo_li")
    runs = lambda cfg: {f: (s["runs"], s["split"]) for f, s in cfg.families.items()}  # noqa: E731
    assert (narrow_cfg.seed, runs(narrow_cfg)) == (wide_cfg.seed, runs(wide_cfg))
    q_n = np.array([d["cell"][KEY] for d in narrow])
    q_w = np.array([d["cell"][KEY] for d in wide])
    assert (q_n >= 7.5).all() and (q_n <= 11.5).all()
    assert (q_w >= 3.0).all() and (q_w <= 24.0).all() and (q_w < 7.5).any() and (q_w > 11.5).any()
    for a, b in zip(narrow, wide):
        for d in (a, b):
            d["cell"].pop(KEY), d.pop("randomize")
        assert a == b
    for family in ("hc_sulfide_ccv", "graphite_overcharge"):
        assert _config_draws("dataset-train.yaml", family, 4)[1] == \
            _config_draws("dataset-train-llzo-wide.yaml", family, 4)[1]
