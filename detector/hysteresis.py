"""Hysteresis smoothing of per-frame class probabilities into stable labels and alarms.

The model gives calibrated probabilities for every frame; users want a label that does not
flicker and alarms that start once and stay up. :class:`HysteresisLabeller` is a river-style
stateful labeller (``update`` one frame at a time, ``reset``, ``clone``, JSON-safe
``state_dict``); :func:`smooth_labels` is the batch form, computed independently with numpy
and equal to replaying ``update`` frame by frame.

Rule (one per non-baseline class)
---------------------------------
Classes are ordered by severity (``CLASSES``: normal_lithiation < cluster_growth <
plating_onset < imminent_short); the first class is the baseline and is never "entered".
For class ``k >= 1`` the **score** is the summed probability of ``k`` and every more severe
class, ``s_k = p_k + p_{k+1} + ...`` ("at least this bad"). Summing means that evidence split
between plating_onset (0.35) and imminent_short (0.35) still raises a plating alarm (0.70),
and it makes the scores monotone, ``s_1 >= s_2 >= s_3``.

* class ``k`` becomes **active** at frame ``t`` when ``s_k > enter`` on ``min_consecutive``
  consecutive frames ending at ``t``;
* an active class becomes **inactive** at frame ``t`` when ``s_k < exit`` on
  ``min_consecutive`` consecutive frames ending at ``t``;
* a NaN score counts as neither (it interrupts both runs);
* the **label** is the most severe active class, or the baseline when none is active;
* except that a non-alarm class (cluster_growth) is not the label when it is only passed
  through: when its own probability is below the baseline's *and* below that of the more
  severe classes together, its score is carried by those, and the label is the baseline. On
  the measured Li | Li run a frame with p = (0.25, 0.06, 0.69, 0) (plating just under enter)
  was otherwise labelled cluster_growth (docs/results/journal.md, 2026-12-07 tenth part).
  Alarm classes, their episodes and the alarm are never changed by this.

What this guarantees (tested with hypothesis in ``tests/unit/detector/test_hysteresis.py``)
---------------------------------------------------------------------------------------
Because ``s_k`` is monotone in ``k``, the active set is always "downward closed" (if
plating_onset is active, cluster_growth is too), so for an alarm class ``k`` "label at least as
severe as ``k``" is the same as "``k`` active" (a passed-through label is below every alarm
class). For every such threshold, and for "``k`` active" for every ``k``, the indicator changes
value at most once per ``min_consecutive`` frames: every run of it lasts at least
``min_consecutive`` frames, except the first run (from frame 0) and the last (cut by the end of
the stream). A raised alarm therefore never flickers. A cluster_growth label may still be
dropped for single passed-through frames. The label *itself* may stay for fewer
frames when it passes through a class on the way up or down (e.g. cluster_growth for one frame
between normal_lithiation and plating_onset when the plating score rises one frame after the
cluster score); no rule of this kind can both forbid that and react within
``min_consecutive`` frames.

An active class is recorded as an **episode** ``(class, start_index, end_index)``:
``start_index`` is the frame at which the class became active (the frame that confirmed it, i.e.
``min_consecutive - 1`` frames after the first frame above ``enter``); ``end_index`` is the
first frame at which it was no longer active (half-open, like a Python range), or ``None``
while it is still active.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from lisentry.datasets.errors import ConfigError
from lisentry.datasets.frame import CLASSES

__all__ = ["AlarmPolicy", "HysteresisLabeller", "smooth_labels", "cumulative_scores",
           "ALARM_CLASSES"]

#: Classes that raise an alarm (``HysteresisLabeller.alarm``) when they are the label.
ALARM_CLASSES: tuple[str, ...] = ("plating_onset", "imminent_short")

_STATE_VERSION = 1


def _param_error(name: str, owner: str, must: str, got: Any) -> ConfigError:
    return ConfigError(f"The {name!r} parameter of {owner} must be {must}. Got {got!r}.")


@dataclass(frozen=True)
class AlarmPolicy:
    """Thresholds of the hysteresis rule.

    Parameters
    ----------
    enter : float
        A class is entered when its cumulative score (its probability plus that of all more
        severe classes, dimensionless, 0..1) is strictly above ``enter`` ...
    exit : float
        ... and left when the score is strictly below ``exit`` (``0 <= exit <= enter <= 1``).
    min_consecutive : int
        ... for this many consecutive frames (>= 1; 1 means no persistence requirement).
    classes : tuple of str
        All classes in order of increasing severity; the first is the baseline.
    alarm_classes : tuple of str
        Classes that count as an alarm (a subset of ``classes``).
    drop_passed_through : bool
        Give the baseline instead of a non-alarm class that is only passed through (the module
        docstring's rule; default True). Training selects epochs with it off, the rule those
        selections were defined with.

    Raises
    ------
    ConfigError
        When a parameter is out of range.

    Examples
    --------
    >>> AlarmPolicy(enter=0.7, exit=0.3).min_consecutive
    2
    """

    enter: float = 0.6
    exit: float = 0.4
    min_consecutive: int = 2
    classes: tuple[str, ...] = CLASSES
    alarm_classes: tuple[str, ...] = field(default=ALARM_CLASSES)
    drop_passed_through: bool = True

    def __post_init__(self):
        owner = "AlarmPolicy"
        for name in ("enter", "exit"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise _param_error(name, owner, "a number in [0, 1]", v)
            object.__setattr__(self, name, float(v))
        if self.exit > self.enter:
            raise _param_error("exit", owner, f"<= enter ({self.enter})", self.exit)
        mc = self.min_consecutive
        if isinstance(mc, bool) or not isinstance(mc, (int, np.integer)) or mc < 1:
            raise _param_error("min_consecutive", owner, "an integer >= 1", mc)
        object.__setattr__(self, "min_consecutive", int(mc))
        classes = tuple(self.classes)
        if len(classes) < 2 or len(set(classes)) != len(classes) or not all(
                isinstance(c, str) for c in classes):
            raise _param_error("classes", owner, "at least two distinct class names", classes)
        object.__setattr__(self, "classes", classes)
        alarms = tuple(self.alarm_classes)
        for a in alarms:
            if a not in classes:
                raise _param_error("alarm_classes", owner, f"a subset of {classes}", alarms)
        object.__setattr__(self, "alarm_classes", alarms)
        if not isinstance(self.drop_passed_through, (bool, np.bool_)):
            raise _param_error("drop_passed_through", owner, "true or false",
                               self.drop_passed_through)
        object.__setattr__(self, "drop_passed_through", bool(self.drop_passed_through))

    def to_dict(self) -> dict:
        """JSON-safe parameters (``AlarmPolicy(**d)`` rebuilds the policy)."""
        return {"enter": self.enter, "exit": self.exit, "min_consecutive": self.min_consecutive,
                "classes": list(self.classes), "alarm_classes": list(self.alarm_classes),
                "drop_passed_through": self.drop_passed_through}

    get_params = to_dict

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AlarmPolicy":
        known = {"enter", "exit", "min_consecutive", "classes", "alarm_classes",
                 "drop_passed_through"}
        for k in d:
            if k not in known:
                hint = difflib.get_close_matches(k, sorted(known), n=1)
                raise ConfigError(f"Unknown AlarmPolicy parameter {k!r}"
                                  + (f"; did you mean {hint[0]!r}?" if hint else "."))
        kw = dict(d)
        for k in ("classes", "alarm_classes"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)


def cumulative_scores(proba: np.ndarray) -> np.ndarray:
    """Severity-cumulative scores: ``out[..., k] = sum(proba[..., k:])``.

    Parameters
    ----------
    proba : ndarray, shape (..., n_classes)
        Probabilities, classes in order of increasing severity.

    Returns
    -------
    ndarray, same shape
        ``out[..., 0]`` is the total (1 for normalised input); ``out[..., k]`` for ``k >= 1`` is
        the score that enters class ``k``.

    Examples
    --------
    >>> cumulative_scores(np.array([0.1, 0.2, 0.3, 0.4])).round(2).tolist()
    [1.0, 0.9, 0.7, 0.4]
    """
    proba = np.asarray(proba, dtype=float)
    return np.flip(np.cumsum(np.flip(proba, axis=-1), axis=-1), axis=-1)


class HysteresisLabeller:
    """Online hysteresis labeller (river style): one ``update`` per frame.

    Parameters
    ----------
    policy : AlarmPolicy, optional
        Thresholds; the default is ``AlarmPolicy()`` (enter 0.6, exit 0.4, 2 frames).

    Attributes
    ----------
    label : str or None
        The smoothed label after the last update (``None`` before the first).
    alarm : str or None
        The label when it is an alarm class (plating_onset, imminent_short), else ``None``.
    episodes : list of tuple
        ``(class, start_index, end_index or None)`` for every time a non-baseline class was
        active, in the order they started (see the module docstring).
    n_seen : int
        Number of frames seen.

    Examples
    --------
    >>> h = HysteresisLabeller()
    >>> p = {"normal_lithiation": 0.1, "cluster_growth": 0.1, "plating_onset": 0.7,
    ...      "imminent_short": 0.1}
    >>> h.update(p), h.update(p)
    ('normal_lithiation', 'plating_onset')
    >>> h.alarm, h.episodes
    ('plating_onset', [('cluster_growth', 1, None), ('plating_onset', 1, None)])
    """

    def __init__(self, policy: AlarmPolicy | None = None):
        if policy is not None and not isinstance(policy, AlarmPolicy):
            raise _param_error("policy", "HysteresisLabeller", "an AlarmPolicy", policy)
        self.policy = policy if policy is not None else AlarmPolicy()
        self.reset()

    # -- river-style API ---------------------------------------------------------------
    def reset(self) -> "HysteresisLabeller":
        """Forget everything seen (back to the state of a new labeller)."""
        n = len(self.policy.classes)
        self._active = [False] * n          # index 0 (baseline) is never active
        self._above = [0] * n               # consecutive frames with score > enter (capped)
        self._below = [0] * n               # consecutive frames with score < exit (capped)
        self._episodes: list[list] = []     # [class, start, end|None]
        self._open: dict[int, int] = {}     # class index -> position in _episodes
        self._label: str | None = None
        self._n = 0
        return self

    def clone(self) -> "HysteresisLabeller":
        """A fresh labeller with the same policy and no state."""
        return HysteresisLabeller(self.policy)

    def update(self, proba: Mapping[str, float]) -> str:
        """Take the probabilities of one frame and return the smoothed label.

        Parameters
        ----------
        proba : mapping of str to float
            One probability per class (keys: the policy's ``classes``; ``p_``-prefixed keys as
            in the output columns are accepted too). NaN values count as no evidence.

        Returns
        -------
        str
            The label after this frame.

        Raises
        ------
        ConfigError
            When a class is missing, a key is unknown, or a value is not a number.
        """
        vec = self._vector(proba)
        return self._step(cumulative_scores(vec), vec)

    @property
    def label(self) -> str | None:
        return self._label

    @property
    def alarm(self) -> str | None:
        lab = self._label
        return lab if lab is not None and lab in self.policy.alarm_classes else None

    @property
    def episodes(self) -> list[tuple[str, int, int | None]]:
        return [tuple(e) for e in self._episodes]

    @property
    def n_seen(self) -> int:
        return self._n

    # -- persistence -------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue, as JSON-safe builtins (no arrays, no NaN)."""
        return {
            "version": _STATE_VERSION,
            "policy": self.policy.to_dict(),
            "n_seen": self._n,
            "label": self._label,
            "active": list(self._active),
            "above": list(self._above),
            "below": list(self._below),
            "episodes": [list(e) for e in self._episodes],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> "HysteresisLabeller":
        """Continue from ``state`` (from :meth:`state_dict`).

        Raises
        ------
        ConfigError
            When the state was written with another policy (build the labeller with
            :meth:`from_state_dict` to adopt the stored policy) or is malformed.
        """
        try:
            version = int(state["version"])
            if version > _STATE_VERSION:
                raise ConfigError(f"HysteresisLabeller state version {version} is newer than "
                                  f"this lisentry understands ({_STATE_VERSION}).")
            stored = AlarmPolicy.from_dict(state["policy"])
            if stored != self.policy:
                diff = [k for k, v in stored.to_dict().items() if self.policy.to_dict()[k] != v]
                raise ConfigError("HysteresisLabeller state was saved with a different policy "
                                  f"({', '.join(diff)} differ); use from_state_dict() to adopt it.")
            n = len(self.policy.classes)
            active = [bool(a) for a in state["active"]]
            above = [int(a) for a in state["above"]]
            below = [int(b) for b in state["below"]]
            if not (len(active) == len(above) == len(below) == n) or active[0]:
                raise ConfigError("HysteresisLabeller state has inconsistent per-class lists.")
            episodes = [[str(c), int(s), None if e is None else int(e)]
                        for c, s, e in state["episodes"]]
            label = state["label"]
            n_seen = int(state["n_seen"])
        except ConfigError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"HysteresisLabeller state is malformed: {exc!r}.") from None
        self._active, self._above, self._below = active, above, below
        self._episodes = episodes
        cls_index = {c: i for i, c in enumerate(self.policy.classes)}
        self._open = {cls_index[c]: j for j, (c, _, e) in enumerate(episodes) if e is None}
        self._label = None if label is None else str(label)
        self._n = n_seen
        return self

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> "HysteresisLabeller":
        """A labeller with the stored policy, continuing from ``state``."""
        try:
            policy = AlarmPolicy.from_dict(state["policy"])
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"HysteresisLabeller state is malformed: {exc!r}.") from None
        return cls(policy).load_state_dict(state)

    def __repr__(self) -> str:
        p = self.policy
        return (f"HysteresisLabeller(AlarmPolicy(enter={p.enter}, exit={p.exit}, "
                f"min_consecutive={p.min_consecutive}))")

    # -- internals ---------------------------------------------------------------------
    def _vector(self, proba: Mapping[str, float]) -> np.ndarray:
        classes = self.policy.classes
        if not isinstance(proba, Mapping):
            raise ConfigError(f"update() takes a mapping class -> probability; got "
                              f"{type(proba).__name__}.")
        values = {}
        for key, v in proba.items():
            name = key[2:] if isinstance(key, str) and key.startswith("p_") else key
            if name not in classes:
                hint = difflib.get_close_matches(str(name), classes, n=1)
                raise ConfigError(f"Unknown class {key!r} in probabilities"
                                  + (f"; did you mean {hint[0]!r}?" if hint else
                                     f"; expected {list(classes)}."))
            try:
                values[name] = float(v)
            except (TypeError, ValueError):
                raise ConfigError(f"Probability of {name!r} must be a number. Got {v!r}.") from None
        missing = [c for c in classes if c not in values]
        if missing:
            raise ConfigError(f"Probabilities lack class(es) {missing}.")
        return np.array([values[c] for c in classes], dtype=float)

    def _step(self, scores: np.ndarray, proba: np.ndarray) -> str:
        p = self.policy
        m = p.min_consecutive
        t = self._n
        for k in range(1, len(p.classes)):
            s = float(scores[k])
            if math.isnan(s):
                self._above[k] = self._below[k] = 0
            else:
                self._above[k] = min(self._above[k] + 1, m) if s > p.enter else 0
                self._below[k] = min(self._below[k] + 1, m) if s < p.exit else 0
            if not self._active[k] and self._above[k] >= m:
                self._active[k] = True
                self._open[k] = len(self._episodes)
                self._episodes.append([p.classes[k], t, None])
            elif self._active[k] and self._below[k] >= m:
                self._active[k] = False
                self._episodes[self._open.pop(k)][2] = t
        top = max((k for k in range(1, len(p.classes)) if self._active[k]), default=0)
        if _passed_through(proba, top, p):
            top = 0
        self._label = p.classes[top]
        self._n = t + 1
        return self._label


def _passed_through(proba: np.ndarray, top: int, policy: AlarmPolicy) -> bool:
    """Whether the most severe active class ``top`` is only passed through: a non-alarm class
    whose own probability is below the baseline's and below that of the more severe classes
    together (its score is carried by them). ``proba``: one frame's probabilities."""
    if not policy.drop_passed_through or top == 0 or policy.classes[top] in policy.alarm_classes:
        return False
    return bool(proba[top] < proba[0] and proba[top] < float(np.sum(proba[top + 1:])))


def _run_lengths(flags: np.ndarray) -> np.ndarray:
    """Length of the run of True ending at each position (0 where False), along axis 0."""
    t = np.arange(flags.shape[0])[:, None]
    last_false = np.maximum.accumulate(np.where(flags, -1, t), axis=0)
    return t - last_false


def smooth_labels(proba: Any, policy: AlarmPolicy | None = None) -> np.ndarray:
    """Batch hysteresis: the labels :class:`HysteresisLabeller` gives frame by frame.

    Computed with numpy, independently of ``update``: a class is active at frame ``t`` exactly
    when the last frame ``<= t`` that completed ``min_consecutive`` frames above ``enter`` is
    later than the last that completed ``min_consecutive`` frames below ``exit``.

    Parameters
    ----------
    proba : array-like, shape (T, n_classes), or DataFrame
        Per-frame probabilities, columns in the policy's class order. A DataFrame is read by
        its ``p_<class>`` (or ``<class>``) columns.
    policy : AlarmPolicy, optional
        Thresholds (default ``AlarmPolicy()``).

    Returns
    -------
    ndarray of str, shape (T,)
        Smoothed labels.

    Examples
    --------
    >>> p = np.array([[0.9, 0.1, 0, 0], [0.2, 0.8, 0, 0], [0.2, 0.8, 0, 0], [0.9, 0.1, 0, 0]])
    >>> smooth_labels(p).tolist()
    ['normal_lithiation', 'normal_lithiation', 'cluster_growth', 'cluster_growth']
    """
    policy = policy if policy is not None else AlarmPolicy()
    classes = policy.classes
    if hasattr(proba, "columns"):
        cols = []
        for c in classes:
            col = f"p_{c}" if f"p_{c}" in proba.columns else c
            if col not in proba.columns:
                raise ConfigError(f"Probability table lacks column 'p_{c}'.")
            cols.append(col)
        proba = proba[cols].to_numpy(dtype=float)
    arr = np.asarray(proba, dtype=float)
    if arr.ndim != 2 or arr.shape[1] != len(classes):
        raise ConfigError(f"smooth_labels needs probabilities of shape (T, {len(classes)}); "
                          f"got {arr.shape}.")
    n_t = arr.shape[0]
    if n_t == 0:
        return np.array([], dtype=str)
    scores = cumulative_scores(arr)[:, 1:]
    m = policy.min_consecutive
    t = np.arange(n_t)[:, None]
    enter_evt = _run_lengths(scores > policy.enter) >= m      # NaN compares False
    exit_evt = _run_lengths(scores < policy.exit) >= m
    last_enter = np.maximum.accumulate(np.where(enter_evt, t, -1), axis=0)
    last_exit = np.maximum.accumulate(np.where(exit_evt, t, -1), axis=0)
    active = last_enter > last_exit                            # (T, n_classes - 1)
    level = np.where(active, np.arange(1, len(classes))[None, :], 0).max(axis=1)
    # a non-alarm class only passed through (see _passed_through) gives the baseline; the
    # same function as online, on the few candidate frames, so that both agree bit for bit
    if policy.drop_passed_through:
        non_alarm = np.array([c not in policy.alarm_classes for c in classes])
        for t in np.flatnonzero((level > 0) & non_alarm[level]):
            if _passed_through(arr[t], int(level[t]), policy):
                level[t] = 0
    return np.asarray(classes)[level]
