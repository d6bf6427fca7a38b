"""Tests of lisentry.training.config: one typed schema, one-line ConfigErrors, YAML 1.2 floats."""
from __future__ import annotations

import pytest

from lisentry.datasets.errors import ConfigError
from lisentry.training import config as C
from lisentry.training.config import DEFAULTS, MODEL_SCHEMA, SCHEMA, load_train_config

TINY = """dataset: data/x
out: models/x
model: {name: lisentry_net, hidden: 16, channels: [8, 8], pooled_bins: 8}
train: {epochs: 2, lr: 0.003}
mlflow: {enabled: false}
"""


@pytest.fixture
def cfg(tmp_path):
    p = tmp_path / "train.yaml"
    p.write_text(TINY)
    return p


def _leaves(d, prefix=""):
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k != "model":
            yield from _leaves(v, key + ".")
        elif k != "model":
            yield key


def test_schema_covers_every_default_and_the_defaults_pass():
    assert set(_leaves(DEFAULTS)) == set(SCHEMA)
    assert set(DEFAULTS["model"]) - {"name"} <= set(MODEL_SCHEMA["lisentry_net"])
    load_train_config(None, ["dataset=x"])


@pytest.mark.parametrize("override, key, must", [
    ("train.lr=[1", "train.lr", "not valid YAML"),
    ("model.channels=8", "model.channels", "a non-empty list of ints"),
    ("split.val_frac=abc", "split.val_frac", "a number in (0, 1)"),
    ("split.test_frac=abc", "split.test_frac", "a number in [0, 1)"),
    ("split.test_frac=1.5", "split.test_frac", "a number in [0, 1)"),
    ("seed=abc", "seed", "an int >= 0"),
    ("train.threads=abc", "train.threads", "an int >= 0"),
    ("train.weight_decay=-1", "train.weight_decay", "a number >= 0"),
    ("train.aux_weight=abc", "train.aux_weight", "a number >= 0"),
    ("train.grad_clip=abc", "train.grad_clip", "a number >= 0 or null"),
    ("train.augment.intensity_jitter=abc", "train.augment.intensity_jitter", "a number >= 0"),
    ("train.augment.shift_ppm=-1", "train.augment.shift_ppm", "a number >= 0"),
    ("train.augment.mix_scale=[1, 0.5]", "train.augment.mix_scale", "lo <= hi"),
    ("mlflow.enabled=maybe", "mlflow.enabled", "true or false"),
    ("detector.tune_policy=1", "detector.tune_policy", "true or false"),
    ("train.epochs=2.5", "train.epochs", "an int >= 1"),
    ("train.lr=.inf", "train.lr", "a number > 0"),
    ("detector.exit=0.7", "detector.exit", "<= detector.enter"),
    ("ood.components=[]", "ood.components", "mahalanobis, pca_residual, negative_area"),
    ("model.dropout=abc", "model.dropout", "a number in [0, 1)"),
    ("model.hidden=0", "model.hidden", "an int >= 1"),
    ("presence.latents=[ce_amount]", "presence.latents", "cluster_amount, metal_amount"),
    ("presence.latents=[]", "presence.latents", "cluster_amount, metal_amount"),
    ("presence.latents=[cluster_amount, cluster_amount]", "presence.latents", "distinct"),
    ("model.aux=[metal_amount]", "presence.latents", "among model.aux"),
    ("presence.threshold=1", "presence.threshold", "a number in (0, 1)"),
    ("inputs.symmetric_cells=abs", "inputs.symmetric_cells", "sign_free"),
    ("presence.free_below=0.01", "presence.free_below", "must not exceed presence.detect_limit"),
])
def test_wrong_types_and_ranges_are_one_line_errors(cfg, override, key, must):
    with pytest.raises(ConfigError) as ei:
        load_train_config(cfg, [override])
    msg = str(ei.value)
    assert key in msg and must in msg and "\n" not in msg
    assert "Got " in msg or "not valid YAML" in msg  # what was given


def test_model_keys_are_checked_against_the_constructor(cfg, tmp_path):
    with pytest.raises(ConfigError, match="'model.hiddn'; did you mean 'hidden'"):
        load_train_config(cfg, ["model.hiddn=3"])
    with pytest.raises(ConfigError, match="model.name.*Did you mean 'lisentry_net'"):
        load_train_config(cfg, ["model.name=lisentry_nt"])
    with pytest.raises(ConfigError, match="'model.n_ppm' is set from the dataset"):
        load_train_config(cfg, ["model.n_ppm=64"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.replace("channels: [8, 8]", "channels: 8"))
    with pytest.raises(ConfigError, match="'model.channels' .* Got 8."):
        load_train_config(bad)
    # keys without a schema entry but in the constructor are accepted
    assert load_train_config(cfg, ["model.descriptors=true"])["model"]["descriptors"] is True


def test_scientific_notation_is_a_float(cfg, tmp_path):
    c = load_train_config(cfg, ["train.lr=1e-3", "train.weight_decay=5E-4",
                                "detector.horizon_s=1e5"])
    assert c["train"]["lr"] == 0.001 and c["train"]["weight_decay"] == 0.0005
    assert c["detector"]["horizon_s"] == 100000.0
    f = tmp_path / "sci.yaml"
    f.write_text(TINY.replace("lr: 0.003", "lr: 1e-3, weight_decay: 2.5e-5"))
    c = load_train_config(f)
    assert c["train"]["lr"] == 0.001 and c["train"]["weight_decay"] == 2.5e-5
    # strings, ints and YAML 1.1 floats are unchanged
    assert C._yaml_load("[abc, 3, 1.5, 1.0e+3, e5, 1e]") == ["abc", 3, 1.5, 1000.0, "e5", "1e"]


def test_split_checks(cfg):
    c = load_train_config(cfg, ["split.leave_out_families=hc_liquid"])
    assert c["split"]["leave_out_families"] == ["hc_liquid"]
    with pytest.raises(ConfigError, match=r"split.leave_out_families.*a list of strings.*Got \[1\]"):
        load_train_config(cfg, ["split.leave_out_families=[1]"])
    with pytest.raises(ConfigError, match=r"val_frac \+ split.test_frac must be < 1"):
        load_train_config(cfg, ["split.val_frac=0.6", "split.test_frac=0.5"])


def test_cuda_without_a_cuda_device_is_refused_at_validation(cfg, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="'train.device' .* 'cuda' .* no CUDA device"):
        load_train_config(cfg, ["train.device=cuda"])
    assert load_train_config(cfg, ["train.device=cpu"])["train"]["device"] == "cpu"


def test_bad_override_yaml_names_the_key(cfg):
    with pytest.raises(ConfigError) as ei:
        load_train_config(cfg, ["train.lr=[1"])
    assert str(ei.value).startswith("override train.lr='[1': the value is not valid YAML")


def test_member_key_ignores_later_settings_at_their_neutral_defaults():
    """Checkpointed ensemble members trained before ``inputs.window_features`` and
    ``train.min_epochs`` existed are reused while those stay at their defaults; setting either
    changes what a member depends on, so the key."""
    from lisentry.training.ensemble import member_key
    from pathlib import Path
    cfg_path = Path(__file__).resolve().parents[3] / "configs" / "train-default.yaml"
    # the shipped config as it was before these settings (the default of 2026-12-07, first part)
    neutral = ["inputs.window_features=false", "inputs.window_feature_set=spectral",
               "train.min_epochs=0", "train.augment.drop_current=0",
               "train.augment.drop_echem_until_current=0",
               "train.augment.drop_echem_prefix_max_frames=12"]
    base = load_train_config(cfg_path, neutral)
    older = base.to_dict()
    older.pop("inputs")  # with inputs.binned_features, added later still
    older["train"].pop("min_epochs")
    older["train"]["augment"].pop("drop_current")
    older["train"]["augment"].pop("drop_echem_until_current")
    from lisentry.training.config import TrainConfig
    key = member_key(base, 0, "h", 1)
    assert member_key(TrainConfig(older), 0, "h", 1) == key
    for change in ("inputs.window_features=true", "train.min_epochs=45",
                   "inputs.binned_features=[current_asinh]", "train.select_by=pooled",
                   "train.augment.drop_current=0.3", "train.augment.drop_echem_until_current=0.3",
                   "inputs.symmetric_cells=sign_free"):
        assert member_key(load_train_config(cfg_path, neutral + [change]),
                          0, "h", 1) != key
    # window_feature_set came later still: at "spectral" a window member keeps its key
    spectral = load_train_config(cfg_path, neutral + ["inputs.window_features=true"])
    before_sets = spectral.to_dict()
    before_sets["inputs"].pop("window_feature_set")
    assert member_key(TrainConfig(before_sets), 0, "h", 1) == member_key(spectral, 0, "h", 1)
    assert member_key(load_train_config(cfg_path, neutral + ["inputs.window_features=true",
                                                             "inputs.window_feature_set=all"]),
                      0, "h", 1) != member_key(spectral, 0, "h", 1)
    with pytest.raises(ConfigError, match="window_feature_set"):
        load_train_config(cfg_path, ["inputs.window_feature_set=potentiostat"])
    # a current-free member is another network than the one of its seed
    assert member_key(base, 0, "h", 1, current_free=True) != key
    # the presence gate is fitted after training: it never changes what a member depends on
    assert member_key(load_train_config(cfg_path, neutral + ["presence.enabled=false"]),
                      0, "h", 1) == key


def test_a_fine_tuned_members_key_follows_its_parent_and_its_schedule():
    from lisentry.training.ensemble import finetune_key
    c = load_train_config(None, ["dataset=x", "ensemble.seeds=[0]",
                                 "ensemble.current_free_seeds=[0]",
                                 "ensemble.current_free_from=members",
                                 "ensemble.current_free_epochs=10"])
    key = finetune_key(c, "parent", "free")
    assert finetune_key(c, "other parent", "free") != key
    assert finetune_key(c, "parent", "other free") != key
    c2 = load_train_config(None, ["dataset=x", "ensemble.seeds=[0]",
                                  "ensemble.current_free_seeds=[0]",
                                  "ensemble.current_free_from=members",
                                  "ensemble.current_free_epochs=12"])
    assert finetune_key(c2, "parent", "free") != key
    # 0 epochs means train.epochs; null lr means train.lr: the key sees the values used
    c3 = load_train_config(None, ["dataset=x", "train.epochs=10", "train.lr=0.003",
                                  "ensemble.seeds=[0]", "ensemble.current_free_seeds=[0]",
                                  "ensemble.current_free_from=members",
                                  "ensemble.current_free_epochs=0"])
    c4 = load_train_config(None, ["dataset=x", "train.epochs=10", "train.lr=0.003",
                                  "ensemble.seeds=[0]", "ensemble.current_free_seeds=[0]",
                                  "ensemble.current_free_from=members",
                                  "ensemble.current_free_epochs=10",
                                  "ensemble.current_free_lr=0.003"])
    assert finetune_key(c3, "p", "f") == finetune_key(c4, "p", "f")


def test_fine_tuned_current_free_members_need_their_regular_member():
    with pytest.raises(ConfigError, match=r"must be among ensemble.seeds \(\[0\]\)"):
        load_train_config(None, ["dataset=x", "ensemble.seeds=[0]",
                                 "ensemble.current_free_seeds=[0, 1]",
                                 "ensemble.current_free_from=members"])
    with pytest.raises(ConfigError, match="current_free_from"):
        load_train_config(None, ["dataset=x", "ensemble.current_free_from=nowhere"])
    with pytest.raises(ConfigError, match="current_free_lr"):
        load_train_config(None, ["dataset=x", "ensemble.current_free_lr=0"])
    # the fine-tune's settings without a fine-tune are a mistake, not a silent no-op
    with pytest.raises(ConfigError, match="with 'scratch'"):
        load_train_config(None, ["dataset=x", "ensemble.seeds=[0]",
                                 "ensemble.current_free_seeds=[0]",
                                 "ensemble.current_free_epochs=20"])


def test_binned_features_name_the_models_columns():
    from lisentry.models.features import ECHEM_FEATURES
    from lisentry.training.loop import binned_columns, echem_input_names
    c = load_train_config(None, ["dataset=x", "inputs.window_features=true",
                                 "inputs.window_feature_set=all_but_minimum",
                                 "inputs.binned_features=[current_asinh, metal_snr]"])
    names = echem_input_names(c)
    cols = binned_columns(c)
    assert names[:len(ECHEM_FEATURES)] == tuple(ECHEM_FEATURES) and len(cols) == len(names)
    # the echem block's current and its potentiostat copy among the window features, and metal_snr
    assert [n for n, b in zip(names, cols) if b] == ["current_asinh", "metal_snr", "current_asinh"]
    assert binned_columns(load_train_config(None, ["dataset=x"])) is None  # empty: all columns
    bad = load_train_config(None, ["dataset=x", "inputs.binned_features=[metal_snr]"])
    with pytest.raises(ConfigError, match=r"inputs.binned_features: \['metal_snr'\] are not inputs"):
        binned_columns(bad)  # no window features: metal_snr is not an input
