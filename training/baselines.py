"""Three causal baselines for the frame classifier, on the same data and metrics as the model.

Every baseline follows the scikit-learn contract (``__init__`` only stores, ``fit(runs)``
returns ``self``, learned attributes end in ``_``, ``get_params``/``set_params``) and works on
:class:`~lisentry.training.data.RunTensors`:

* :class:`RuleBaseline` — what a careful analyst would script: integrals over ppm windows
  (cluster 10-130 ppm above a flat baseline; extra working-side metal at 255-285 ppm beyond the
  run's initial lines; counter-electrode line 235-275 ppm loss), their rates per hour, and
  potential thresholds (below 0 V, decaying under current, noise spikes). Thresholds are tuned
  on training runs by a small coordinate-wise grid search for mean per-run macro-F1.
* :class:`FeatureBaseline` — the same hand-made causal descriptors plus peak positions, their
  rates over the last 1 and 3 frames and the echem features of
  :mod:`lisentry.models.features`, fed to a class-balanced ``HistGradientBoostingClassifier``.
* :class:`MiniRocketBaseline` — MiniRocket (Dempster et al., KDD 2021) random convolutional
  features over a causal window of the last ``window`` frames (the first frame repeated at the
  run start), channels = a 64-bin downsampled spectrum, its difference to the run's first
  frame, potential and current; ridge classifier, temperature-scaled softmax. Implemented here
  in numpy (aeon's numba pins conflict with this project's numpy, and aeon needs series of
  at least 9 points).

All three are **causal**: the output at frame ``t`` depends only on frames ``0..t`` (the
per-run reference is the mean of the first ``ref_frames`` frames *seen so far*).
``predict_proba_runs`` gives ``(T, 4)`` per-frame probabilities (one-hot for the rule
baseline); ``predict_labels_runs`` smooths them with the detector's hysteresis
(:func:`lisentry.detector.hysteresis.smooth_labels`), and ``predict_runs`` wraps them as
:class:`~lisentry.training.evaluate.RunPrediction` for
:func:`~lisentry.training.evaluate.evaluate_predictions`.

Amounts are in units of the run's initial total 7Li signal (the spectra are normalised per run
so that the first frame integrates to 1 over the ppm axis); rates are per hour.
"""
from __future__ import annotations

import copy
import inspect
import itertools
import math
import warnings
from typing import Any, Sequence

import numpy as np

from lisentry.datasets.errors import ConfigError
from lisentry.datasets.frame import CLASSES
from lisentry.detector.hysteresis import AlarmPolicy, smooth_labels
from lisentry.training.data import RunTensors

__all__ = ["spectral_descriptors", "causal_rate", "echem_columns", "frame_features",
           "FEATURE_NAMES", "RuleBaseline", "FeatureBaseline", "MiniRocketBaseline",
           "MiniRocketTransform", "window_tensor", "BASELINES", "run_macro_f1"]

N_CLASSES = len(CLASSES)

# ppm windows (lo, hi) of the descriptors: one definition, shared with the model's own
# physics descriptors (lisentry.models.descriptors)
from lisentry.models.descriptors import (BASELINE_WINDOW, CE_WINDOW,  # noqa: E402,F401
                                         CLUSTER_WINDOW, METAL_WINDOW)
# The hand-made window features live with the model inputs (a model may read them too).
from lisentry.models.window_features import (FEATURE_NAMES, causal_rate,  # noqa: E402,F401
                                             spectral_descriptors, window_features)


def echem_columns(run: RunTensors) -> dict[str, np.ndarray]:
    """The run's causal echem features (:mod:`lisentry.models.features`), NaN where masked."""
    from lisentry.models.features import ECHEM_FEATURES
    e = np.where(run.echem_mask > 0, run.echem, np.nan).astype(float)
    return {name: e[:, j] for j, name in enumerate(ECHEM_FEATURES)}


def frame_features(run: RunTensors, ppm_grid: np.ndarray | None = None, *,
                   ref_frames: int = 3) -> np.ndarray:
    """Hand-made causal features of every frame of a run, columns :data:`FEATURE_NAMES`.

    :func:`lisentry.models.window_features.window_features` of the run's spectra, times and
    echem features.

    Returns
    -------
    np.ndarray
        float64 ``(T, n_features)``; NaN where undefined (masked echem, no peak) — the
        gradient-boosting classifier handles NaN natively.
    """
    return window_features(run.spectra, run.t_s, run.echem, run.echem_mask, ppm_grid,
                           ref_frames=ref_frames)


def run_macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = N_CLASSES) -> float | None:
    """Macro-F1 of one run over the classes present in truth or prediction (index arrays).

    Same definition as :func:`lisentry.training.metrics.macro_f1`; unlabelled truth (-1)
    is left out. Vectorised for the rule grid search.
    """
    yt = np.asarray(y_true)
    yp = np.asarray(y_pred)
    keep = yt >= 0
    yt, yp = yt[keep], yp[keep]
    if len(yt) == 0:
        return None
    cm = np.bincount(yt * n_classes + yp, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes)
    tp = np.diag(cm)
    denom = cm.sum(0) + cm.sum(1)
    present = denom > 0
    return float(np.mean(2 * tp[present] / denom[present]))


def _labels_to_index(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    out = np.zeros(len(labels), np.int64)
    for i, c in enumerate(CLASSES[1:], start=1):
        out[labels == c] = i
    return out


def _one_hot(idx: np.ndarray) -> np.ndarray:
    out = np.zeros((len(idx), N_CLASSES))
    out[np.arange(len(idx)), idx] = 1.0
    return out


def _check_runs(runs: Sequence[RunTensors], owner: str) -> list[RunTensors]:
    runs = list(runs)
    if not runs:
        raise ConfigError(f"{owner}.fit needs at least one run. Got 0.")
    return runs


# ---------------------------------------------------------------------------- base class
class _Baseline:
    """Shared scikit-learn-style plumbing and the hysteresis / RunPrediction wrappers."""

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor parameters (scikit-learn convention)."""
        sig = inspect.signature(type(self).__init__)
        return {k: copy.deepcopy(getattr(self, k)) if deep else getattr(self, k)
                for k in sig.parameters if k != "self"}

    def set_params(self, **params) -> "_Baseline":
        """Set constructor parameters; unknown names raise ``ConfigError``."""
        valid = self.get_params(deep=False)
        for k, v in params.items():
            if k not in valid:
                import difflib
                hint = difflib.get_close_matches(k, list(valid), n=1)
                raise ConfigError(f"Unknown parameter {k!r} of {type(self).__name__}"
                                  + (f"; did you mean {hint[0]!r}?" if hint else "."))
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        p = ", ".join(f"{k}={v!r}" for k, v in self.get_params(deep=False).items())
        return f"{type(self).__name__}({p})"

    def _check_fitted(self) -> None:
        if not getattr(self, "fitted_", False):
            raise ConfigError(f"This {type(self).__name__} is not fitted yet; call fit(runs).")

    def predict_proba_runs(self, runs: Sequence[RunTensors]) -> list[np.ndarray]:
        raise NotImplementedError

    def predict_labels_runs(self, runs: Sequence[RunTensors],
                            policy: AlarmPolicy | None = None) -> list[np.ndarray]:
        """Hysteresis-smoothed class names per frame (the detector's labeller)."""
        return [smooth_labels(p, policy) for p in self.predict_proba_runs(runs)]

    def predict_runs(self, runs: Sequence[RunTensors], policy: AlarmPolicy | None = None):
        """:class:`~lisentry.training.evaluate.RunPrediction` objects for the metrics."""
        from lisentry.training.evaluate import RunPrediction
        out = []
        for r, p in zip(runs, self.predict_proba_runs(runs)):
            z = np.log(np.clip(p, 1e-12, 1.0))
            out.append(RunPrediction(r.run_id, r.family, z, p,
                                     np.full((len(r), 0), np.nan), np.full(len(r), np.nan),
                                     smooth_labels(p, policy)))
        return out


# ---------------------------------------------------------------------------- 1. rules
class RuleBaseline(_Baseline):
    """Analyst-style threshold rules on window integrals and the potential.

    Per frame (causal; amounts in fractions of the initial 7Li signal, rates per hour over the
    last ``rate_frames`` frames):

    * **cluster_growth** when the cluster-window amount above the initial lines exceeds
      ``cluster_min``, grows faster than ``cluster_rate_min`` per hour, and the potential is
      below ``cluster_v_max`` (V) (or unknown);
    * **plating_onset** when new metal at 255-285 ppm (positive part of frame minus initial
      lines) exceeds ``metal_min``; latched while it stays above ``metal_min / 2``;
    * **imminent_short** when any of: the potential is below ``v_short_max`` (V) and decays
      faster than ``dvdt_decay`` (V/h, negative); the counter-electrode line lost more than
      ``ce_loss_min`` of its initial integral; the potential noise exceeds ``noise_mV`` (mV);
      with ``latch_short`` the warning stays once raised (shorts do not heal);
    * else **normal_lithiation**. The most severe rule that fires wins.

    ``fit`` tunes the thresholds named in ``grid`` by coordinate-wise search (``n_passes``
    sweeps, each parameter over its candidate values with the others fixed) for the mean
    per-run macro-F1 of the hysteresis-smoothed labels on the training runs.

    Parameters
    ----------
    cluster_min, cluster_rate_min, cluster_v_max, metal_min, v_short_max, dvdt_decay,
    ce_loss_min, noise_mV : float
        Starting thresholds (units above); ``inf``/``-inf`` switches a rule off.
    latch_short : bool
        Keep ``imminent_short`` once raised.
    rate_frames : int
        Frames over which rates are taken.
    grid : dict of str to sequence, optional
        Candidate values per parameter; default :attr:`DEFAULT_GRID`. ``{}`` means no tuning.
    n_passes : int
        Coordinate-search sweeps.
    policy : AlarmPolicy, optional
        Hysteresis used for the tuning objective (default ``AlarmPolicy()``).
    ppm_grid : array_like, optional
        ppm axis of the spectra (default -100..400 step 0.5).

    Attributes
    ----------
    thresholds_ : dict
        The tuned thresholds.
    train_score_ : float
        Mean per-run macro-F1 on the training runs at ``thresholds_``.
    """

    TUNED = ("cluster_min", "cluster_rate_min", "cluster_v_max", "metal_min", "v_short_max",
             "dvdt_decay", "ce_loss_min", "noise_mV", "latch_short")
    DEFAULT_GRID: dict[str, tuple] = {
        "cluster_min": (0.0, 0.005, 0.01, 0.02, 0.05),
        "cluster_rate_min": (0.0, 0.002, 0.005, 0.01, 0.02, 0.05),
        "cluster_v_max": (0.02, 0.05, 0.1, 0.3, math.inf),
        "metal_min": (0.003, 0.005, 0.01, 0.02, 0.04, 0.08),
        "v_short_max": (-math.inf, -0.2, -0.1, -0.05, -0.02, 0.0),
        "dvdt_decay": (-1.0, -0.2, -0.1, -0.05, -0.02, 0.0),
        "ce_loss_min": (0.2, 0.4, 0.6, 0.8, math.inf),
        "noise_mV": (0.5, 1.0, 2.0, 5.0, 20.0, math.inf),
        "latch_short": (False, True),
    }

    def __init__(self, cluster_min: float = 0.01, cluster_rate_min: float = 0.005,
                 cluster_v_max: float = 0.05, metal_min: float = 0.01,
                 v_short_max: float = -0.05, dvdt_decay: float = -0.05,
                 ce_loss_min: float = 0.5, noise_mV: float = 5.0, latch_short: bool = True,
                 rate_frames: int = 3, grid: dict | None = None, n_passes: int = 2,
                 policy: AlarmPolicy | None = None, ppm_grid=None):
        self.cluster_min = cluster_min
        self.cluster_rate_min = cluster_rate_min
        self.cluster_v_max = cluster_v_max
        self.metal_min = metal_min
        self.v_short_max = v_short_max
        self.dvdt_decay = dvdt_decay
        self.ce_loss_min = ce_loss_min
        self.noise_mV = noise_mV
        self.latch_short = latch_short
        self.rate_frames = rate_frames
        self.grid = grid
        self.n_passes = n_passes
        self.policy = policy
        self.ppm_grid = ppm_grid

    # descriptors the rules need, per run
    def _signals(self, run: RunTensors) -> dict[str, np.ndarray]:
        d = spectral_descriptors(run.spectra, self.ppm_grid)
        e = echem_columns(run)
        t = np.asarray(run.t_s, float)
        v = e["potential_V"]
        v_ff = v.copy()  # forward-filled potential for the dV/dt
        for i in range(1, len(v_ff)):
            if not np.isfinite(v_ff[i]):
                v_ff[i] = v_ff[i - 1]
        noise_v = np.sinh(np.nan_to_num(e["potential_noise_asinh"], nan=0.0)) * 1e3  # mV
        return {"cluster_rel": d["cluster_rel"],
                "cluster_rate": causal_rate(d["cluster_rel"], t, self.rate_frames),
                "metal_extra": d["metal_extra"], "ce_frac": d["ce_frac"],
                "v": v, "dvdt": causal_rate(v_ff, t, self.rate_frames), "noise_mV": noise_v}

    @staticmethod
    def _apply(sig: dict[str, np.ndarray], th: dict[str, Any]) -> np.ndarray:
        v = sig["v"]
        v_known = np.isfinite(v)
        cluster = ((sig["cluster_rel"] > th["cluster_min"])
                   & (sig["cluster_rate"] > th["cluster_rate_min"])
                   & (~v_known | (v < th["cluster_v_max"])))
        m = sig["metal_extra"]
        on, off = m > th["metal_min"], m > 0.5 * th["metal_min"]
        # latched with a lower release level (causal): active at i when the last frame above
        # metal_min is later than the last frame below metal_min / 2
        idx = np.arange(len(m))
        last_on = np.maximum.accumulate(np.where(on, idx, -1)) if len(m) else idx
        last_off = np.maximum.accumulate(np.where(~off, idx, -1)) if len(m) else idx
        plating = (last_on >= 0) & (last_on > last_off)
        with np.errstate(invalid="ignore"):
            short = ((v_known & (v < th["v_short_max"]) & (sig["dvdt"] < th["dvdt_decay"]))
                     | (sig["ce_frac"] < 1.0 - th["ce_loss_min"])
                     | (sig["noise_mV"] > th["noise_mV"]))
        if th["latch_short"]:
            short = np.maximum.accumulate(short)
        lab = np.zeros(len(m), np.int64)
        lab[cluster] = 1
        lab[plating] = 2
        lab[short] = 3
        return lab

    def _thresholds(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.TUNED}

    def _score(self, sigs, ys, th) -> float:
        f1 = []
        for s, y in zip(sigs, ys):
            lab = smooth_labels(_one_hot(self._apply(s, th)), self.policy)
            v = run_macro_f1(y, _labels_to_index(lab))
            if v is not None:
                f1.append(v)
        return float(np.mean(f1)) if f1 else 0.0

    def fit(self, runs: Sequence[RunTensors]) -> "RuleBaseline":
        """Tune the thresholds on ``runs`` (labelled frames only count). Returns ``self``."""
        runs = _check_runs(runs, "RuleBaseline")
        grid = self.DEFAULT_GRID if self.grid is None else self.grid
        unknown = set(grid) - set(self.TUNED)
        if unknown:
            raise ConfigError(f"The 'grid' parameter of RuleBaseline has unknown keys "
                              f"{sorted(unknown)}; tunable: {list(self.TUNED)}.")
        if int(self.n_passes) < 0:
            raise ConfigError(f"The 'n_passes' parameter of RuleBaseline must be >= 0. "
                              f"Got {self.n_passes!r}.")
        sigs = [self._signals(r) for r in runs]
        ys = [np.asarray(r.y) for r in runs]
        th = self._thresholds()
        best = self._score(sigs, ys, th)
        for _ in range(int(self.n_passes)):
            improved = False
            for name, values in grid.items():
                for val in values:
                    if val == th[name]:
                        continue
                    cand = {**th, name: val}
                    sc = self._score(sigs, ys, cand)
                    if sc > best + 1e-9:
                        best, th, improved = sc, cand, True
            if not improved:
                break
        self.thresholds_ = th
        self.train_score_ = best
        self.fitted_ = True
        return self

    def predict_proba_runs(self, runs: Sequence[RunTensors]) -> list[np.ndarray]:
        """One-hot ``(T, 4)`` rule decisions per run (before hysteresis)."""
        th = self.thresholds_ if getattr(self, "fitted_", False) else self._thresholds()
        return [_one_hot(self._apply(self._signals(r), th)) for r in runs]


# ---------------------------------------------------------------------------- 2. features
class FeatureBaseline(_Baseline):
    """Hand-made causal features (:func:`frame_features`) -> gradient-boosted trees.

    Parameters
    ----------
    max_iter : int
        Boosting iterations.
    learning_rate : float
        Shrinkage.
    max_leaf_nodes : int
        Leaves per tree.
    l2_regularization : float
        L2 penalty on leaf values.
    random_state : int
        Seed (the classifier is deterministic for a fixed seed).
    n_threads : int or None
        OpenMP threads for the classifier (``None``: scikit-learn's default, all cores); the
        default 1 avoids oversubscription on a shared acquisition PC.
    ppm_grid : array_like, optional
        ppm axis of the spectra.

    Attributes
    ----------
    classifier_ : sklearn.ensemble.HistGradientBoostingClassifier
        The fitted classifier (``class_weight="balanced"``).
    classes_ : np.ndarray
        Class indices seen in training (columns of the classifier's probabilities).
    """

    def __init__(self, max_iter: int = 200, learning_rate: float = 0.08,
                 max_leaf_nodes: int = 31, l2_regularization: float = 1.0,
                 random_state: int = 0, n_threads: int | None = 1, ppm_grid=None):
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.l2_regularization = l2_regularization
        self.random_state = random_state
        self.n_threads = n_threads
        self.ppm_grid = ppm_grid

    def _threads(self):
        from threadpoolctl import threadpool_limits
        return threadpool_limits(self.n_threads, user_api="openmp")

    def _features(self, runs):
        return [frame_features(r, self.ppm_grid) for r in runs]

    def fit(self, runs: Sequence[RunTensors]) -> "FeatureBaseline":
        """Fit on every labelled frame of ``runs``. Returns ``self``."""
        from sklearn.ensemble import HistGradientBoostingClassifier
        runs = _check_runs(runs, "FeatureBaseline")
        X = np.concatenate(self._features(runs))
        y = np.concatenate([np.asarray(r.y) for r in runs])
        keep = y >= 0
        if not keep.any():
            raise ConfigError("FeatureBaseline.fit: no labelled frame in the training runs.")
        clf = HistGradientBoostingClassifier(
            max_iter=self.max_iter, learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes, l2_regularization=self.l2_regularization,
            class_weight="balanced", early_stopping=False, random_state=self.random_state)
        with self._threads():
            clf.fit(X[keep], y[keep])
        self.classifier_ = clf
        self.classes_ = np.asarray(clf.classes_)
        self.n_features_in_ = X.shape[1]
        self.fitted_ = True
        return self

    def predict_proba_runs(self, runs: Sequence[RunTensors]) -> list[np.ndarray]:
        """``(T, 4)`` class probabilities per run (classes unseen in training get 0)."""
        self._check_fitted()
        out = []
        for X in self._features(runs):
            p = np.zeros((len(X), N_CLASSES))
            if len(X):
                with self._threads():
                    p[:, self.classes_] = self.classifier_.predict_proba(X)
            out.append(p)
        return out


# ---------------------------------------------------------------------------- 3. MiniRocket
def window_tensor(run: RunTensors, window: int = 8, n_bins: int = 64,
                  ppm_grid: np.ndarray | None = None) -> np.ndarray:
    """Causal windows of one run for the MiniRocket baseline.

    Parameters
    ----------
    run : RunTensors
        One run.
    window : int
        Frames per window ``W`` (frame ``t`` sees ``t-W+1..t``; the first frame is repeated
        before the run start).
    n_bins : int
        Equal-width bins of the ppm axis (mean intensity per bin, NaN ignored; an uncovered
        bin is 0).
    ppm_grid : np.ndarray, optional
        Unused except for its length check (the bins are equal-width over the grid).

    Returns
    -------
    np.ndarray
        float32 ``(T, 2 * n_bins + 2, W)``: binned spectrum, binned difference to the first
        frame, potential (V; 0 where unknown) and ``asinh(I / 0.1 mA)`` (0 where unknown).
    """
    S = np.asarray(run.spectra, dtype=float)
    T, P = S.shape
    if ppm_grid is not None and len(ppm_grid) != P:
        raise ValueError(f"ppm_grid has {len(ppm_grid)} points but the spectra have {P}.")
    edges = np.linspace(0, P, n_bins + 1).round().astype(int)
    fin = np.isfinite(S)
    Sz = np.where(fin, S, 0.0)
    cs = np.concatenate([np.zeros((T, 1)), np.cumsum(Sz, axis=1)], axis=1)
    cn = np.concatenate([np.zeros((T, 1)), np.cumsum(fin, axis=1)], axis=1)
    num = cs[:, edges[1:]] - cs[:, edges[:-1]]
    den = cn[:, edges[1:]] - cn[:, edges[:-1]]
    with np.errstate(invalid="ignore", divide="ignore"):
        binned = np.where(den > 0, num / np.maximum(den, 1), 0.0)
    diff = binned - binned[:1]
    e = np.where(run.echem_mask > 0, run.echem, 0.0)
    feats = np.concatenate([binned, diff, e[:, :2]], axis=1)  # (T, C)
    idx = np.arange(T)[:, None] - np.arange(window)[::-1][None, :]  # (T, W), oldest first
    idx = np.maximum(idx, 0)
    return feats[idx].transpose(0, 2, 1).astype(np.float32)  # (T, C, W)


_COMBOS = np.array(list(itertools.combinations(range(9), 3)), dtype=np.int64)  # (84, 3)
_PHI = (math.sqrt(5.0) + 1.0) / 2.0


class MiniRocketTransform:
    """Multivariate MiniRocket features (Dempster, Schmidt & Webb, KDD 2021), in numpy.

    The 84 fixed kernels of length 9 (weights -1, with 2 at three positions) are convolved
    ("same" zero padding) with each case at the dilations that fit the series length; for
    each kernel x dilation x ``n_groups`` a random channel subset (size ``2^U(0, log2(min(C,
    9) + 1))``, as in MiniRocket's multivariate version) is summed. Biases are quantiles of the
    convolution output of random training cases at low-discrepancy levels; each feature is
    the proportion of positive values (PPV). ``n_groups`` > 1 draws more channel subsets than
    the original (useful when the series are short, as here, so that few dilations exist).

    Parameters
    ----------
    n_features : int
        Approximate number of features (rounded to a multiple of 84 x dilations x groups).
    n_groups : int
        Channel subsets per kernel x dilation.
    random_state : int
        Seed.
    """

    def __init__(self, n_features: int = 4032, n_groups: int = 8, random_state: int = 0):
        self.n_features = n_features
        self.n_groups = n_groups
        self.random_state = random_state

    def fit(self, X: np.ndarray) -> "MiniRocketTransform":
        X = np.asarray(X, dtype=np.float32)
        n, C, L = X.shape
        rng = np.random.default_rng(self.random_state)
        max_exp = math.log2(max((L - 1) / 8.0, 1.0))
        dil = np.unique(np.floor(2.0 ** np.linspace(0, max_exp, 8)).astype(int))
        self.dilations_ = dil
        G = int(self.n_groups)
        n_combo = len(_COMBOS) * len(dil) * G
        self.n_biases_ = max(1, int(self.n_features) // n_combo)
        max_ch = min(C, 9)
        # selection_[d, k, :, g] = 1 on the channels summed for dilation d, kernel k, group g
        sel = np.zeros((len(dil), len(_COMBOS), C, G), np.float32)
        for di in range(len(dil)):
            for k in range(len(_COMBOS)):
                for g in range(G):
                    size = max(1, min(int(2 ** rng.uniform(0, math.log2(max_ch + 1))), C))
                    sel[di, k, rng.choice(C, size, replace=False), g] = 1.0
        self.selection_ = sel
        q = (np.arange(1, self.n_biases_ + 1) * _PHI) % 1.0
        biases = np.empty((len(dil), len(_COMBOS), G, self.n_biases_), np.float32)
        for di, d in enumerate(dil):
            for k in range(len(_COMBOS)):
                cases = rng.integers(0, n, G)      # one random training case per group
                conv = self._kernel_out(self._shifted(X[cases], int(d)), k, sel[di, k])
                # conv (G, L, G): case g with its own channel group g
                own = conv[np.arange(G), :, np.arange(G)]   # (G, L)
                biases[di, k] = np.quantile(own, q, axis=1).T
        self.biases_ = biases
        return self

    @staticmethod
    def _shifted(X: np.ndarray, d: int) -> np.ndarray:
        """``(9, n, C, L)``: X shifted by ``(j - 4) * d`` with zero padding."""
        n, C, L = X.shape
        pad = 4 * d
        Xp = np.zeros((n, C, L + 2 * pad), X.dtype)
        Xp[:, :, pad:pad + L] = X
        return np.stack([Xp[:, :, j * d:j * d + L] for j in range(9)])

    @staticmethod
    def _kernel_out(Sh: np.ndarray, k: int, sel: np.ndarray, A: np.ndarray | None = None):
        """``(n, L, G)``: kernel ``k`` (weights -1, 2 at ``_COMBOS[k]``) summed over each group."""
        if A is None:
            A = Sh.sum(axis=0)
        i, j, m = _COMBOS[k]
        per_channel = 3.0 * (Sh[i] + Sh[j] + Sh[m]) - A          # (n, C, L)
        return per_channel.transpose(0, 2, 1) @ sel             # (n, L, G)

    def transform(self, X: np.ndarray, batch: int = 1024) -> np.ndarray:
        """``(n, n_features_)`` float32 PPV features of ``X`` ``(n, C, L)``."""
        X = np.asarray(X, dtype=np.float32)
        nd, nk, _, G = self.selection_.shape
        nb = self.n_biases_
        out = np.empty((len(X), nd, nk, G, nb), np.float32)
        for a in range(0, len(X), batch):
            xb = X[a:a + batch]
            for di, d in enumerate(self.dilations_):
                Sh = self._shifted(xb, int(d))
                A = Sh.sum(axis=0)
                for k in range(nk):
                    conv = self._kernel_out(Sh, k, self.selection_[di, k], A)  # (n, L, G)
                    out[a:a + batch, di, k] = (conv[..., None]
                                               > self.biases_[di, k][None, None]).mean(axis=1)
        return out.reshape(len(X), -1)


class MiniRocketBaseline(_Baseline):
    """MiniRocket features over a causal window of frames -> ridge classifier.

    Parameters
    ----------
    window : int
        Frames per window (``W``; padded at the run start by repeating the first frame).
    n_bins : int
        Spectrum bins (channels = ``2 * n_bins + 2``).
    n_features : int
        Approximate MiniRocket feature count.
    n_groups : int
        Channel subsets per kernel (see :class:`MiniRocketTransform`).
    alphas : sequence of float
        Ridge penalties tried by leave-one-out CV (``RidgeClassifierCV``).
    max_train_frames : int
        Random subsample of training frames (all when fewer), for memory and time.
    random_state : int
        Seed.

    Attributes
    ----------
    transform_ : MiniRocketTransform
    channel_mean_, channel_std_ : np.ndarray
        Per-channel standardisation (from the training windows).
    ridge_ : sklearn.linear_model.RidgeClassifierCV
        Fitted on standardised features.
    temperature_ : float
        Softmax temperature of the ridge scores, fitted by likelihood on held-out training
        runs (a fifth of them, with a ridge fitted on the rest; all frames when < 5 runs).
    """

    def __init__(self, window: int = 8, n_bins: int = 64, n_features: int = 4032,
                 n_groups: int = 8, alphas: Sequence[float] = tuple(np.logspace(-3, 4, 15)),
                 max_train_frames: int = 8000, random_state: int = 0):
        self.window = window
        self.n_bins = n_bins
        self.n_features = n_features
        self.n_groups = n_groups
        self.alphas = alphas
        self.max_train_frames = max_train_frames
        self.random_state = random_state

    def _windows(self, runs):
        return [window_tensor(r, self.window, self.n_bins) for r in runs]

    def _scores(self, X: np.ndarray) -> np.ndarray:
        Xs = (X - self.channel_mean_[None, :, None]) / self.channel_std_[None, :, None]
        F = self.transform_.transform(Xs)
        F = (F - self.feature_mean_) / self.feature_std_
        z = np.full((len(X), N_CLASSES), -np.inf)
        dec = self.ridge_.decision_function(F)
        if dec.ndim == 1:  # two classes seen
            dec = np.column_stack([-dec, dec])
        z[:, self.classes_] = dec
        return z

    def fit(self, runs: Sequence[RunTensors]) -> "MiniRocketBaseline":
        """Fit on (a subsample of) the labelled frames of ``runs``. Returns ``self``."""
        from scipy.optimize import minimize_scalar
        from sklearn.linear_model import RidgeClassifierCV
        runs = _check_runs(runs, "MiniRocketBaseline")
        if int(self.window) < 1:
            raise ConfigError(f"The 'window' parameter of MiniRocketBaseline must be >= 1. "
                              f"Got {self.window!r}.")
        X = np.concatenate(self._windows(runs))
        y = np.concatenate([np.asarray(r.y) for r in runs])
        keep = np.flatnonzero(y >= 0)
        if len(keep) == 0:
            raise ConfigError("MiniRocketBaseline.fit: no labelled frame in the training runs.")
        rng = np.random.default_rng(self.random_state)
        if len(keep) > self.max_train_frames:
            keep = np.sort(rng.choice(keep, self.max_train_frames, replace=False))
        X, y = X[keep], y[keep]
        self.channel_mean_ = X.mean(axis=(0, 2))
        self.channel_std_ = X.std(axis=(0, 2)) + 1e-6
        Xs = (X - self.channel_mean_[None, :, None]) / self.channel_std_[None, :, None]
        self.transform_ = MiniRocketTransform(self.n_features, self.n_groups,
                                              self.random_state).fit(Xs)
        F = self.transform_.transform(Xs)
        self.feature_mean_ = F.mean(axis=0)
        self.feature_std_ = F.std(axis=0) + 1e-6
        F = (F - self.feature_mean_) / self.feature_std_
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ConfigError("MiniRocketBaseline.fit needs at least two classes in the "
                              f"training frames. Got only {CLASSES[self.classes_[0]]!r}.")
        counts = np.bincount(y, minlength=N_CLASSES)[y]
        sw = len(y) / (len(self.classes_) * counts)  # balanced
        alphas = np.asarray(self.alphas, float)
        # temperature on held-out runs (ridge scores on its own training frames are
        # overconfident): fit on ~80 % of the runs, calibrate on the rest, then refit on all
        run_of = np.concatenate([np.full(len(r), i) for i, r in enumerate(runs)])[keep]
        held = rng.permutation(len(runs))[:max(1, len(runs) // 5)] if len(runs) >= 5 else []
        hmask = np.isin(run_of, held)
        if hmask.any() and len(np.unique(y[~hmask])) >= 2:
            rc = RidgeClassifierCV(alphas=alphas).fit(F[~hmask], y[~hmask], sample_weight=sw[~hmask])
            z = np.full((int(hmask.sum()), N_CLASSES), -np.inf)
            dec = rc.decision_function(F[hmask])
            z[:, rc.classes_] = dec if dec.ndim == 2 else np.column_stack([-dec, dec])
            yz, wz = y[hmask], sw[hmask]
        else:
            rc = None
        self.ridge_ = RidgeClassifierCV(alphas=alphas).fit(F, y, sample_weight=sw)
        if rc is None:
            dec = self.ridge_.decision_function(F)
            z = np.full((len(y), N_CLASSES), -np.inf)
            z[:, self.classes_] = dec if dec.ndim == 2 else np.column_stack([-dec, dec])
            yz, wz = y, sw

        def nll(log_t):
            zz = z / math.exp(log_t)
            zz = zz - zz.max(axis=1, keepdims=True)
            with np.errstate(divide="ignore", invalid="ignore"):
                lp = zz - np.log(np.exp(zz).sum(axis=1, keepdims=True))
            lpy = np.maximum(lp[np.arange(len(yz)), yz], -50.0)  # class unseen by the split
            return -float(np.sum(wz * lpy) / np.sum(wz))

        self.temperature_ = float(math.exp(minimize_scalar(nll, bounds=(-6, 3),
                                                           method="bounded").x))
        self.fitted_ = True
        return self

    def predict_proba_runs(self, runs: Sequence[RunTensors]) -> list[np.ndarray]:
        """``(T, 4)`` softmax(ridge score / temperature) per run; unseen classes get 0."""
        self._check_fitted()
        out = []
        for X in self._windows(runs):
            z = self._scores(X) / self.temperature_
            z = z - z.max(axis=1, keepdims=True)
            p = np.exp(z)
            out.append(p / p.sum(axis=1, keepdims=True))
        return out


#: Explicit registry of the baselines (name -> class).
BASELINES: dict[str, type[_Baseline]] = {
    "rules": RuleBaseline,
    "features_hgb": FeatureBaseline,
    "minirocket": MiniRocketBaseline,
}
