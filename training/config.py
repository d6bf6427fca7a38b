"""Training configuration: a YAML file validated at the boundary, with CLI overrides.

Example (``configs/train-default.yaml``)::

    dataset: data/default
    out: models/default
    seed: 0
    split: {val_frac: 0.15, test_frac: 0.15, leave_out_families: []}
    model: {name: lisentry_net, hidden: 64}
    train: {epochs: 40, lr: 0.002, batch_runs: 8, patience: 6, max_minutes: 18}
    detector: {enter: 0.6, exit: 0.4, min_consecutive: 2, horizon_s: 3600}
    mlflow: {experiment: lisentry, register_as: lisentry-default, alias: champion}

Overrides use dotted keys: ``--set train.epochs=5 --set model.hidden=32``. Values are read as
YAML, with ``1e-3`` a float (YAML 1.2; plain PyYAML reads it as a string). Every value is checked
against :data:`SCHEMA` (``model.*`` against the registered model's constructor arguments and
:data:`MODEL_SCHEMA`) before anything is trained; a wrong type or range is one ConfigError line
naming the key, what it must be and what it got.

Loss weighting: ``train.class_weight`` (``none``, ``balanced``, ``sqrt_balanced``) weighs the
classes by their frequency over all training frames; ``train.run_balance`` (0..1, default 0)
additionally weighs each frame by ``count(its class in its run)^-run_balance``, matching the
per-run macro-F1 of the evaluation (a two-frame class of a run then counts about as much as a
two-hundred-frame one). On the default data, 0.5 gave test macro-F1 0.902 against 0.913 for 0,
so the default config leaves it off.

Family oversampling: ``train.oversample_families`` (names) and ``train.oversample_factor`` (an
int, default 1 = off): each epoch sees every training run of those families that many times,
each time with its own augmentation draw; for a family of few runs whose reading varies from
seed to seed (16 Li | LLZO | Li runs in 406).

Augmentation (``train.augment``): ``intensity_jitter`` (log-normal sigma of a run-level
intensity factor), ``shift_ppm`` (uniform reference shift), ``drop_echem`` (probability of
dropping a run's echem features), ``drop_echem_prefix`` / ``drop_echem_prefix_max_frames``
(probability of masking only the first 1..max frames of a run's echem, as when the potential
log starts after the first spectra: the real Li | Li run's starts at its sixth frame),
``drop_echem_until_current`` (probability of a log that starts with the first current step, its
open-circuit rest recorded by another technique whose file is not given, as the real run's),
``drop_current`` (probability of a run whose log has a potential but no current, as EC-Lab's
time/Ewe exports and the real run's: the five current-derived features masked), ``mix_prob`` / ``mix_scale`` (probability of mixing another
family's normal frames into a run's spectra, and the donor's relative scale; see
:func:`lisentry.training.data.augment_run`; 0.5 did not help left-out families, so 0),
``noise_prob`` / ``noise_max_factor`` (probability of adding white noise to a run's spectra so
that its noise level, estimated where no 7Li line is, grows by a log-uniform factor in
``[1, noise_max_factor]``: lower-SNR acquisitions than the training data holds; the window
features are computed anew from the noisier spectra), ``noise_min_snr`` (optional: the factor
is also capped at the run's SNR over this, so no augmented run is noisier than this SNR; the
training data's lowest SNR keeps a held-out SNR range below it unseen).

Physics descriptors: ``model.descriptors: true`` adds :mod:`lisentry.models.descriptors` to
the model input (``model.cnn: false`` keeps only them; ``model.cnn_dropout`` drops a whole
run's CNN embedding in training). See the leave-one-family-out sections of docs/results/journal.md for what they
changed.

Factored heads: ``model.heads: factored`` builds the class definitions into the model: a
cluster-growth logit from a branch that sees only 8-160 ppm, a plating logit from a branch that
sees only 200-300 ppm, an imminent-short logit from everything, combined by the class
precedence (see :class:`lisentry.models.net.LisentryNet`). ``model.branch_channels``,
``model.branch_hidden``, ``model.branch_pooled_bins`` size the branches.

OOD score: ``ood.score`` (``feature``, default, or ``energy``); see
:mod:`lisentry.models.ood_scorer`.

Presence gate: ``presence.enabled`` (default true) fits :mod:`lisentry.models.presence` after
training, on the training runs' simulated latents: per latent in ``presence.latents``, a
logistic regression on the head features that says whether the amount reaches
``presence.detect_limit``; the detector reports 0 where it says no. It changes no label.

Weight averaging: ``train.weight_average_from`` (0..1, default 0 = off) keeps the running mean
of the weights at the end of every epoch from that fraction of ``train.epochs`` on (stochastic
weight averaging over the cosine schedule's tail). After training the averaged weights are
scored on the validation runs like any epoch and kept when they beat the best single epoch.

Seed ensemble: ``ensemble.seeds: [1, 2, 3]`` trains one network per seed and ships their mean
logits as one model (:class:`lisentry.models.ensemble.LisentryEnsemble`); ``ensemble.workers``
members train at once in separate processes; finished members are kept in the checkpoint
folder and reused when the run is restarted (:mod:`lisentry.training.ensemble`).
``ensemble.current_free_seeds: [0, 1]`` adds members trained and validated on logs without a
current column (the current's columns masked on every run); the bundle routes frame by frame:
frames with a known current to the other members, frames without to these
(:class:`~lisentry.models.ensemble.LisentryEnsemble`). Calibration and the alarm policy are then
fitted on the validation runs and their current-free copies together.
``ensemble.current_free_from: members`` fine-tunes each current-free member from the regular
member of the same seed (``ensemble.current_free_epochs`` epochs from
``ensemble.current_free_lr``) instead of training it from scratch: a few epochs instead of a
whole training. ``train.min_epochs`` and ``train.patience`` apply to the fine-tune too, so with
``min_epochs`` at or above its epochs it runs them all. Torch threads per worker are set from
all the members together (``train.threads`` fixes them).

Early stopping: training stops after ``train.patience`` epochs without a better validation
macro-F1, but not before epoch ``train.min_epochs`` (default 0): a run stopped while the cosine
schedule's learning rate is still high loses several points (docs/results/journal.md, seed studies).

Epoch selection: ``train.select_by`` picks the validation score that chooses the best epoch
(and judges the weight average): ``per_run`` (default), the mean per-run macro-F1 the issue
asks for, or ``pooled``, the macro-F1 of all validation frames pooled, which one spurious
frame in a short run moves far less (docs/results/journal.md, 2026-12-07, fifth part).

Window features: ``inputs.window_features: true`` gives the model the 20 spectral features of
the feature baseline (window integrals against the run's first frames, peak positions, their
rates over 1 and 3 frames, noise-scaled SNRs; :mod:`lisentry.models.window_features`) next to
its own spectrum encoder and echem features, each as ``asinh(x / s)`` with ``s`` its median
magnitude over the training runs (recorded in the card). The detector computes them frame by
frame from the same spectra. ``inputs.window_feature_set: all`` gives it all 31, the 11
potentiostat summaries too (potential change over 3 frames, running potential minimum, ...);
``all_but_minimum`` all but the running potential minimum.

Binned echem inputs: ``model.echem_bins: 8`` also encodes each echem input column (with the
window features) piecewise-linearly over 8 bins between its training quantiles, so that the
network can make sharp steps on one input as trees do; the trainer fits the edges, which are
saved with the weights. ``inputs.binned_features: [current_asinh, ...]`` bins only the named
columns (default: all). Off by default (docs/results/journal.md, 2026-12-07, fourth part).
"""
from __future__ import annotations

import copy
import difflib
import inspect
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from lisentry.datasets.errors import ConfigError

DEFAULTS: dict[str, Any] = {
    "dataset": None,
    "out": "models/trained",
    "seed": 0,
    "init_from": None,
    "split": {"val_frac": 0.15, "test_frac": 0.15, "leave_out_families": [], "seed": 0},
    "model": {"name": "lisentry_net", "hidden": 64, "channels": [16, 32, 48, 32],
              "pooled_bins": 16, "echem_hidden": 32, "num_layers": 1, "dropout": 0.1,
              "input_scale": 1.0},
    "train": {"epochs": 40, "lr": 2e-3, "weight_decay": 1e-4, "batch_runs": 8, "patience": 6, "min_epochs": 0,
              "max_minutes": 18.0, "aux_weight": 0.3, "class_weight": "sqrt_balanced",
              "run_balance": 0.0, "oversample_families": [], "oversample_factor": 1,
              "weight_average_from": 0.0, "select_by": "per_run", "device": "auto", "threads": 0, "grad_clip": 1.0,
              "augment": {"intensity_jitter": 0.1, "shift_ppm": 1.0, "drop_echem": 0.15,
                          "drop_echem_prefix": 0.0, "drop_echem_prefix_max_frames": 12,
                          "drop_echem_until_current": 0.0,
                          "drop_current": 0.0, "mix_prob": 0.0, "mix_scale": [0.3, 1.0],
                          "noise_prob": 0.0, "noise_max_factor": 10.0,
                          "noise_min_snr": None}},
    # tune_policy: choose enter/exit/min_consecutive on the validation runs after training
    # (highest macro-F1 with at most max_false_alarms_per_100h); the chosen policy is the bundle's.
    "detector": {"enter": 0.6, "exit": 0.4, "min_consecutive": 2, "horizon_s": 3600.0,
                 "tune_policy": False, "max_false_alarms_per_100h": 1.0},
    "mlflow": {"enabled": True, "experiment": "lisentry", "tracking_uri": None,
               "register_as": None, "alias": "champion"},
    # The bundle's OOD score: "feature" fits lisentry.models.ood_scorer on at most fit_runs
    # training runs after training (threshold: that quantile of its validation scores);
    # "energy" keeps only the energy of the logits.
    "ood": {"score": "feature", "fit_runs": 120, "quantile": 0.99,
            "components": ["pca_residual", "negative_area"]},
    # The latent amounts' presence gate (lisentry.models.presence), fitted on the training runs
    # after training; frames below free_below count as absent, from detect_limit on as present.
    # The cluster amount only by default: on the measured Li | Li run a metal gate hid the
    # plated-metal line for the 24 frames before the plating call (docs/results/journal.md).
    "presence": {"enabled": True, "latents": ["cluster_amount"],
                 "detect_limit": 0.005, "free_below": 1e-4, "C": 1.0, "threshold": 0.5},
    # A seed ensemble: one network per seed (``seed`` is then unused for the weights), their
    # mean logits in one bundle; ``workers`` members train at once in separate processes.
    # current_free_from "members": each current-free member is fine-tuned from the regular
    # member of its seed for current_free_epochs epochs (0 = train.epochs) from
    # current_free_lr (null = train.lr), instead of trained from scratch ("scratch").
    "ensemble": {"seeds": [], "workers": 1, "current_free_seeds": [],
                 "current_free_from": "scratch", "current_free_epochs": 0,
                 "current_free_lr": None},
    # window_features: append the feature baseline's 20 spectral window features
    # (lisentry.models.window_features) to the model's echem input, scaled on the training runs;
    # window_feature_set "all": all 31 (the potentiostat's 11 too); "all_but_minimum": all but
    # the running potential minimum. symmetric_cells "sign_free": symmetric Li | Li runs'
    # potential, current and charge as magnitudes (lisentry.datasets.cells); the detector then
    # takes --cell symmetric for such runs.
    "inputs": {"window_features": False, "window_feature_set": "spectral", "binned_features": [],
               "symmetric_cells": "signed"},
}


@dataclass
class TrainConfig:
    """Resolved training configuration (all sections filled with defaults)."""

    data: dict = field(default_factory=lambda: copy.deepcopy(DEFAULTS))
    source: str | None = None

    def __getitem__(self, key: str):
        return self.data[key]

    def to_dict(self) -> dict:
        return copy.deepcopy(self.data)


# ---------------------------------------------------------------------- YAML
class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3``, ``5E-4`` and ``1e5`` as floats.

    PyYAML follows YAML 1.1, whose float pattern needs a dot (``1.0e-3``), so ``lr: 1e-3``
    came back as the string ``'1e-3'``. The float resolver is replaced by the YAML 1.2 one.
    """


_FLOAT_TAG = "tag:yaml.org,2002:float"
_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in rs if tag != _FLOAT_TAG]
    for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(_FLOAT_TAG, re.compile(r"""^(?:
     [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X), list("-+0123456789."))


def _yaml_load(text: str):
    return yaml.load(text, Loader=_Loader)  # noqa: S506  (a SafeLoader subclass)


# ---------------------------------------------------------------------- schema
@dataclass(frozen=True)
class Param:
    """One config value's type and range.

    ``kind`` is ``int``, ``float``, ``bool``, ``str``, ``choice``, ``ints`` (list of ints),
    ``strs`` (list of str), ``seeds`` (distinct ints >= 0, possibly empty) or ``pair`` (two numbers ``[lo, hi]``, ``lo <= hi``); ``lo``/``hi``
    bound numbers (and list items), open when ``lo_open``/``hi_open``; ``optional`` allows null.
    """

    kind: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple = ()
    optional: bool = False
    note: str = ""

    def describe(self) -> str:
        if self.kind == "bool":
            out = "true or false"
        elif self.kind == "choice":
            out = "one of " + ", ".join(map(str, self.choices))
        elif self.kind == "str":
            out = "a string"
        elif self.kind == "seeds":
            out = "a list of distinct ints >= 0 (may be empty)"
        elif self.kind == "strs":
            out = "a list of " + (", ".join(self.choices) if self.choices else "strings")
        else:
            if self.kind == "pair":
                return f"two numbers [lo, hi] with {self.lo:g} <= lo <= hi"
            noun = {"int": "an int", "float": "a number", "ints": "a non-empty list of ints"}[self.kind]
            out = noun + self._range()
        if self.optional:
            out += " or null"
        return out + (f" ({self.note})" if self.note else "")

    def _range(self) -> str:
        lo, hi = self.lo, self.hi
        if lo is not None and hi is not None:
            return f" in {'(' if self.lo_open else '['}{lo:g}, {hi:g}{')' if self.hi_open else ']'}"
        if lo is not None:
            return f" {'>' if self.lo_open else '>='} {lo:g}"
        if hi is not None:
            return f" {'<' if self.hi_open else '<='} {hi:g}"
        return ""

    def _in_range(self, x: float) -> bool:
        if self.lo is not None and (x <= self.lo if self.lo_open else x < self.lo):
            return False
        if self.hi is not None and (x >= self.hi if self.hi_open else x > self.hi):
            return False
        return True

    def _number(self, x, integer: bool) -> bool:
        if isinstance(x, bool):
            return False
        if integer:
            return isinstance(x, int) and self._in_range(x)
        return isinstance(x, (int, float)) and math.isfinite(x) and self._in_range(x)

    def ok(self, x) -> bool:
        if x is None:
            return self.optional
        k = self.kind
        if k == "bool":
            return isinstance(x, bool)
        if k == "str":
            return isinstance(x, str) and x != ""
        if k == "choice":
            return not isinstance(x, (bool, list, dict)) and x in self.choices
        if k in ("int", "float"):
            return self._number(x, k == "int")
        if k == "ints":
            return isinstance(x, list) and len(x) >= 1 and all(self._number(v, True) for v in x)
        if k == "seeds":
            return (isinstance(x, list) and len(set(x)) == len(x)
                    and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in x))
        if k == "strs":
            return isinstance(x, list) and all(isinstance(v, str) for v in x) and \
                (not self.choices or set(x) <= set(self.choices))
        if k == "pair":
            return (isinstance(x, list) and len(x) == 2 and all(self._number(v, False) for v in x)
                    and x[0] <= x[1])
        raise AssertionError(k)


def _int(lo=None, hi=None, **kw) -> Param:
    return Param("int", lo, hi, **kw)


def _float(lo=None, hi=None, **kw) -> Param:
    return Param("float", lo, hi, **kw)


_BOOL = Param("bool")
_FRAC = _float(0, 1)

#: Type and range of every training config key (dotted) except ``model.*``, which
#: :data:`MODEL_SCHEMA` covers per registered model.
SCHEMA: dict[str, Param] = {
    "dataset": Param("str", optional=True),
    "out": Param("str"),
    "seed": _int(0),
    "init_from": Param("str", optional=True),
    "split.val_frac": _float(0, 1, lo_open=True, hi_open=True),
    "split.test_frac": _float(0, 1, hi_open=True),
    "split.leave_out_families": Param("strs", note="family names; a single name is taken as a list of one"),
    "split.seed": _int(0),
    "train.epochs": _int(1),
    "train.lr": _float(0, lo_open=True),
    "train.weight_decay": _float(0),
    "train.batch_runs": _int(1),
    "train.patience": _int(1),
    "train.min_epochs": _int(0, note="no early stop before this epoch; 0 = any time"),
    "train.max_minutes": _float(0, lo_open=True),
    "train.aux_weight": _float(0),
    "train.class_weight": Param("choice", choices=("none", "balanced", "sqrt_balanced")),
    "train.run_balance": _FRAC,
    "train.oversample_families": Param("strs", note="family names of the training data"),
    "train.oversample_factor": _int(1, note="1 = off"),
    "train.weight_average_from": _float(0, 1, note="0 = off"),
    "train.select_by": Param("choice", choices=("per_run", "pooled")),
    "train.device": Param("choice", choices=("auto", "cpu", "cuda")),
    "train.threads": _int(0, note="0 = torch's default"),
    "train.grad_clip": _float(0, optional=True, note="0 or null = off"),
    "train.augment.intensity_jitter": _float(0),
    "train.augment.shift_ppm": _float(0),
    "train.augment.drop_echem": _FRAC,
    "train.augment.drop_echem_prefix": _FRAC,
    "train.augment.drop_current": _FRAC,
    "train.augment.drop_echem_until_current": _FRAC,
    "train.augment.drop_echem_prefix_max_frames": _int(1),
    "train.augment.mix_prob": _FRAC,
    "train.augment.mix_scale": Param("pair", 0),
    "train.augment.noise_prob": _float(0, 1, note="0 = off"),
    "train.augment.noise_max_factor": _float(1),
    "train.augment.noise_min_snr": _float(0, lo_open=True, optional=True,
                                          note="null = no floor"),
    "detector.enter": _FRAC,
    "detector.exit": _FRAC,
    "detector.min_consecutive": _int(1),
    "detector.horizon_s": _float(0, lo_open=True),
    "detector.tune_policy": _BOOL,
    "detector.max_false_alarms_per_100h": _float(0),
    "mlflow.enabled": _BOOL,
    "mlflow.experiment": Param("str"),
    "mlflow.tracking_uri": Param("str", optional=True),
    "mlflow.register_as": Param("str", optional=True),
    "mlflow.alias": Param("str", optional=True),
    "ood.score": Param("choice", choices=("feature", "energy")),
    "ood.fit_runs": _int(1),
    "ood.quantile": Param("choice", choices=(0.95, 0.99)),
    "ood.components": Param("strs", choices=("mahalanobis", "pca_residual", "negative_area"),
                            note="non-empty"),
    "presence.enabled": _BOOL,
    "presence.latents": Param("strs", choices=("cluster_amount", "metal_amount"), note="non-empty"),
    "presence.detect_limit": _float(0, lo_open=True),
    "presence.free_below": _float(0, lo_open=True),
    "presence.C": _float(0, lo_open=True),
    "presence.threshold": _float(0, 1, lo_open=True, hi_open=True),
    "ensemble.seeds": Param("seeds", note="empty = one network from 'seed'"),
    "ensemble.workers": _int(1),
    "ensemble.current_free_seeds": Param("seeds", note="members trained without currents"),
    "ensemble.current_free_from": Param("choice", choices=("scratch", "members")),
    "ensemble.current_free_epochs": _int(0),
    "ensemble.current_free_lr": _float(0, lo_open=True, optional=True),
    "inputs.window_features": _BOOL,
    "inputs.window_feature_set": Param("choice", choices=("spectral", "all", "all_but_minimum")),
    "inputs.binned_features": Param("strs", note="empty = all the model's echem inputs"),
    "inputs.symmetric_cells": Param("choice", choices=("signed", "sign_free")),
}

#: Constructor arguments the trainer supplies itself (from the data): never in the config.
MODEL_SUPPLIED = ("n_ppm", "n_echem", "classes")

#: Types of the registered models' constructor arguments (the constructors check the rest).
MODEL_SCHEMA: dict[str, dict[str, Param]] = {
    "lisentry_net": {
        "hidden": _int(1), "channels": Param("ints", 1), "pooled_bins": _int(1),
        "echem_hidden": _int(1), "num_layers": _int(1), "dropout": _float(0, 1, hi_open=True),
        "input_scale": _float(0, lo_open=True), "descriptors": _BOOL, "ppm_min": _float(),
        "ppm_step": _float(0, lo_open=True), "cnn_dropout": _float(0, 1, hi_open=True),
        "cnn": _BOOL, "heads": Param("choice", choices=("softmax", "factored")),
        "branch_channels": Param("ints", 1), "branch_hidden": _int(1),
        "branch_pooled_bins": _int(1), "branch_echem": _BOOL, "aux": Param("strs"),
        "echem_bins": _int(0),
    },
}


def _param_error(key: str, must: str, got) -> ConfigError:
    return ConfigError(f"The '{key}' parameter of the training config must be {must}. Got {got!r}.")


def _unknown_key(where: str, key: str, known) -> ConfigError:
    hint = difflib.get_close_matches(key, list(known), n=1)
    return ConfigError(f"unknown training config key {where!r}"
                       + (f"; did you mean {hint[0]!r}?" if hint else
                          f"; expected one of {sorted(known)}"))


def _merge(base: dict, new: Mapping, path: str, defaults: Mapping) -> dict:
    out = copy.deepcopy(base)
    for k, v in new.items():
        where = f"{path}.{k}" if path else str(k)
        if k not in defaults:
            raise _unknown_key(where, str(k), defaults)
        if isinstance(defaults[k], dict) and k != "model":
            if not isinstance(v, Mapping):
                raise ConfigError(f"training config {where} must be a mapping. Got {v!r}.")
            out[k] = _merge(out[k], v, where, defaults[k])
        elif k == "model":
            if not isinstance(v, Mapping):
                raise ConfigError(f"training config model must be a mapping. Got {v!r}.")
            out[k] = {**out[k], **v}  # keys are checked against the model's constructor later
        else:
            out[k] = v
    return out


def _parse_value(text: str, key: str = ""):
    """An override's value, read as YAML (``1e-3`` is a float)."""
    try:
        return _yaml_load(text)
    except yaml.YAMLError as exc:
        why = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"override {key}={text!r}: the value is not valid YAML ({why}); "
                          f"quote strings and close brackets, e.g. {key}=[1, 2]") from None


def load_train_config(path: str | Path | None = None, overrides: Sequence[str] = (),
                      base: Mapping | None = None) -> TrainConfig:
    """Read and validate a training config.

    Parameters
    ----------
    path : path, optional
        YAML file; relative ``dataset``/``out``/``init_from`` paths are taken relative to the
        current folder. ``1e-3`` is read as a float (YAML 1.2), unlike plain PyYAML.
    overrides : sequence of str
        ``"section.key=value"`` strings (value parsed as YAML).
    base : mapping, optional
        A config dict to start from instead of the defaults (e.g. a bundle's training config).

    Raises
    ------
    ConfigError
        Unknown keys (with a "did you mean"), wrong types or out-of-range values (see
        :data:`SCHEMA` and :data:`MODEL_SCHEMA`), in one line naming the key.
    """
    data = copy.deepcopy(DEFAULTS)
    if base:
        data = _merge(data, base, "", DEFAULTS)
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: training config not found")
        try:
            raw = _yaml_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{p}: expected a mapping at the top level")
        data = _merge(data, raw, "", DEFAULTS)
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r} must look like section.key=value")
        key, value = ov.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        nested: dict = {}
        cur = nested
        for part in parts[:-1]:
            cur = cur.setdefault(part, {})
        cur[parts[-1]] = _parse_value(value, key)
        data = _merge(data, nested, "", DEFAULTS)
    _validate(data)
    return TrainConfig(data, str(path) if path else None)


def _get(d: Mapping, dotted: str):
    cur: Any = d
    for part in dotted.split("."):
        cur = cur[part]
    return cur


def _validate(d: dict) -> None:
    """Check every value against :data:`SCHEMA` (normalising a few forms in place)."""
    lofo = d["split"].get("leave_out_families")
    if isinstance(lofo, str):  # a single family name
        d["split"]["leave_out_families"] = [lofo]
    elif lofo is None:
        d["split"]["leave_out_families"] = []
    for key, spec in SCHEMA.items():
        got = _get(d, key)
        if not spec.ok(got):
            raise _param_error(key, spec.describe(), got)
    if not d["ood"]["components"]:
        raise _param_error("ood.components", SCHEMA["ood.components"].describe(), [])
    pr = d["presence"]
    if not pr["latents"] or len(set(pr["latents"])) != len(pr["latents"]):
        raise _param_error("presence.latents", SCHEMA["presence.latents"].describe()
                           + ", distinct", pr["latents"])
    aux = d["model"].get("aux")
    if pr["enabled"] and aux is not None and not set(pr["latents"]) <= set(aux):
        raise ConfigError(f"presence.latents must be among model.aux ({', '.join(aux)}) when "
                          f"presence.enabled is true. Got {pr['latents']}.")
    if pr["free_below"] > pr["detect_limit"]:
        raise ConfigError(f"presence.free_below must not exceed presence.detect_limit "
                          f"({pr['detect_limit']}). Got {pr['free_below']}.")
    sp = d["split"]
    if sp["val_frac"] + sp["test_frac"] >= 1:
        raise ConfigError(f"split.val_frac + split.test_frac must be < 1 (runs must be left for "
                          f"training). Got {sp['val_frac']!r} + {sp['test_frac']!r}.")
    det = d["detector"]
    if det["exit"] > det["enter"]:
        raise _param_error("detector.exit", f"<= detector.enter ({det['enter']!r})", det["exit"])
    en = d["ensemble"]
    if en["current_free_seeds"] and not en["seeds"]:
        raise ConfigError("ensemble.current_free_seeds needs ensemble.seeds too (the members that "
                          f"read currents). Got seeds {en['seeds']} and current_free_seeds "
                          f"{en['current_free_seeds']}.")
    if en["current_free_from"] == "scratch" and (en["current_free_epochs"]
                                                  or en["current_free_lr"] is not None):
        raise ConfigError("ensemble.current_free_epochs and ensemble.current_free_lr set the "
                          "fine-tune of ensemble.current_free_from 'members'; with 'scratch' the "
                          "current-free members train like the others (train.epochs, train.lr). "
                          f"Got current_free_epochs {en['current_free_epochs']} and "
                          f"current_free_lr {en['current_free_lr']} with 'scratch'.")
    if en["current_free_from"] == "members":
        orphans = sorted(set(en["current_free_seeds"]) - set(en["seeds"]))
        if orphans:
            raise ConfigError("ensemble.current_free_from 'members' fine-tunes each current-free "
                              "member from the regular member of its seed, so "
                              f"ensemble.current_free_seeds must be among ensemble.seeds "
                              f"({en['seeds']}). Got {en['current_free_seeds']} ({orphans} "
                              "without one).")
    _validate_model(d["model"])
    if d["train"]["device"] == "cuda":
        import torch  # noqa: PLC0415  (only when CUDA is asked for)
        if not torch.cuda.is_available():
            raise ConfigError(f"The 'train.device' parameter of the training config is 'cuda' but "
                              f"this torch ({torch.__version__}) sees no CUDA device; use auto or "
                              "cpu.")
    if d["dataset"] is None:
        raise ConfigError("the training config needs 'dataset' (a folder built by `lisentry datasets build`)")


def _validate_model(mc: dict) -> None:
    """``model``: a registered name, and keys that its constructor takes (did-you-mean)."""
    from lisentry.models.registry import MODELS  # noqa: PLC0415  (keeps this module light)
    name = mc.get("name")
    if not isinstance(name, str) or name not in MODELS:
        hint = difflib.get_close_matches(str(name), list(MODELS), n=1)
        raise ConfigError(f"The 'model.name' parameter of the training config must be one of "
                          f"{', '.join(sorted(MODELS))}. Got {name!r}."
                          + (f" Did you mean {hint[0]!r}?" if hint else ""))
    sig = inspect.signature(MODELS[name])
    known = [p for p in sig.parameters if p not in MODEL_SUPPLIED and p != "self"]
    schema = MODEL_SCHEMA.get(name, {})
    for k, v in mc.items():
        if k == "name":
            continue
        if k in MODEL_SUPPLIED:
            raise ConfigError(f"training config key 'model.{k}' is set from the dataset; "
                              "remove it from the config")
        if k not in known:
            raise _unknown_key(f"model.{k}", str(k), known + ["name"])
        spec = schema.get(k)
        if spec is not None and not spec.ok(v):
            raise _param_error(f"model.{k}", spec.describe(), v)
