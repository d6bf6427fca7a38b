"""Evaluation metrics shared by ``evaluate``, the README tables and the benchmarks.

Definitions (``shared/interfaces.md``, "Metrics"):

* **Macro-F1** per run over the classes present in that run's truth *or* prediction;
  pooled accuracy over all labelled frames. Unlabelled truth (``None``, ``""``, ``-1``) is
  left out of classification metrics.
* **Alarm episodes** at a level (a class): a frame is *active* when its predicted class is
  that class or a more severe one. An episode starts at the first of ``persistence`` (2)
  consecutive active frames and lasts until the last active frame of that stretch; shorter
  active stretches raise no alarm.
* **Plating-onset delay**: start of the first ``plating_onset``-level episode (plating or
  short predicted) minus the true onset, s. Episodes starting more than 30 min before the
  onset are *false plating alarms* and do not count as the detection.
  Because the simulator's onset is the nucleation of the metal, which is invisible until it
  grows above the detection limit, the delay is also reported from the first frame whose
  truth is ``plating_onset``-level (``delay_from_visible_s``) together with that frame's lag
  behind the nucleation (``visible_lag_s``): the part of the delay no detector can remove.
* **Short lead time**: true short time minus the start of the first ``imminent_short``
  episode that starts in ``[t_short - 2H, t_short)``, s. Episodes starting before
  ``t_short - 2H`` are *premature*. ``outcome`` is ``detected``, else ``premature`` (only
  premature episodes), else ``missed`` (no episode starts before the short).
* **False-alarm episodes per 100 h of event-free time**: a ``plating_onset``-level episode is
  false when it starts on an event-free frame. Event-free frames are labelled frames whose
  true class is below ``plating_onset`` and which lie outside the windows in which the event
  is under way or allowed early: ``[t_onset - 30 min, t_visible)`` and
  ``[t_short - 2H, t_short)``. ``t_visible`` is the first frame at or after the onset whose
  truth is ``plating_onset``-level (the end of the run when there is none): between the
  nucleation and that frame the metal is there but under the truth's detection limit, so the
  truth still says normal, and an episode starting there is the plating detection (it is the
  one the delay counts), not a false alarm. Frames whose truth falls back below
  ``plating_onset`` after ``t_visible`` (the metal stripped) are event-free again. Event-free
  time is the sum of those frames' durations (time to the next frame; the last frame gets the
  median interval). (Before 2026-12-08 the first window ended at ``t_onset``, so an alarm on
  nucleated but invisible metal counted both as the detection and as a false alarm; journal,
  fourteenth part.)

All results are JSON-safe (``None`` for undefined values, never NaN).
"""
from __future__ import annotations

import difflib
import math
from typing import Any, Iterable, Sequence

import numpy as np

from lisentry.datasets.frame import CLASSES

PERSISTENCE = 2  #: consecutive frames that start an alarm
EARLY_PLATING_S = 1800.0  #: plating alarms earlier than this before onset are false, s
PREMATURE_FACTOR = 2.0  #: short alarms earlier than this x H before the short are premature
DEFAULT_HORIZON_S = 3600.0  #: H, s


def _none(x: Any) -> Any:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _event_time(t: float | None) -> float | None:
    return None if t is None or not math.isfinite(float(t)) else float(t)


def as_indices(labels: Iterable, classes: Sequence[str] = CLASSES) -> np.ndarray:
    """Class indices of ``labels`` (names or ints); unlabelled entries become -1.

    ``None``, ``""``, NaN and -1 are unlabelled. Unknown names raise ``ValueError`` with a
    "did you mean" suggestion.

    Examples
    --------
    >>> as_indices(["cluster_growth", None, 3]).tolist()
    [1, -1, 3]
    """
    out = []
    for v in labels:
        if v is None or (isinstance(v, str) and v == ""):
            out.append(-1)
        elif isinstance(v, str):
            if v not in classes:
                close = difflib.get_close_matches(v, classes, n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                raise ValueError(f"unknown label '{v}'.{hint}")
            out.append(classes.index(v))
        else:
            f = float(v)
            if not math.isfinite(f):
                out.append(-1)
                continue
            i = int(f)
            if i != f or not -1 <= i < len(classes):
                raise ValueError(f"label index must be -1..{len(classes) - 1}. Got {v!r}.")
            out.append(i)
    return np.asarray(out, dtype=np.int64)


def _pair(y_true, y_pred, classes) -> tuple[np.ndarray, np.ndarray]:
    yt, yp = as_indices(y_true, classes), as_indices(y_pred, classes)
    if len(yt) != len(yp):
        raise ValueError("y_true and y_pred must have the same length. "
                         f"Got {len(yt)} and {len(yp)}.")
    return yt, yp


# ---------------------------------------------------------------------- classification
def confusion_matrix(y_true, y_pred, classes: Sequence[str] = CLASSES) -> np.ndarray:
    """``(C, C)`` int64 counts, rows = true class, columns = predicted; unlabelled skipped."""
    yt, yp = _pair(y_true, y_pred, classes)
    keep = (yt >= 0) & (yp >= 0)
    cm = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(cm, (yt[keep], yp[keep]), 1)
    return cm


def _f1_from_cm(cm: np.ndarray, classes: Sequence[str]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for k, c in enumerate(classes):
        tp = cm[k, k]
        fp = cm[:, k].sum() - tp
        fn = cm[k, :].sum() - tp
        denom = 2 * tp + fp + fn
        out[c] = None if denom == 0 else float(2 * tp / denom)
    return out


def per_class_f1(y_true, y_pred, classes: Sequence[str] = CLASSES) -> dict[str, float | None]:
    """F1 ``2TP / (2TP + FP + FN)`` per class; ``None`` for a class absent from both."""
    return _f1_from_cm(confusion_matrix(y_true, y_pred, classes), classes)


def macro_f1(y_true, y_pred, classes: Sequence[str] = CLASSES) -> float | None:
    """Mean F1 over the classes present in the truth or the prediction (``None`` if none).

    Examples
    --------
    >>> macro_f1(["normal_lithiation"] * 3, ["normal_lithiation", "normal_lithiation",
    ...                                      "cluster_growth"])   # (0.8 + 0) / 2
    0.4
    """
    f1 = [v for v in per_class_f1(y_true, y_pred, classes).values() if v is not None]
    return float(np.mean(f1)) if f1 else None


def accuracy(y_true, y_pred, classes: Sequence[str] = CLASSES) -> float | None:
    """Fraction of labelled frames predicted correctly (``None`` if none is labelled)."""
    cm = confusion_matrix(y_true, y_pred, classes)
    n = cm.sum()
    return float(np.trace(cm) / n) if n else None


# ---------------------------------------------------------------------- alarms
def alarm_episodes(y_pred, level: str = "plating_onset", persistence: int = PERSISTENCE,
                   classes: Sequence[str] = CLASSES) -> list[tuple[int, int]]:
    """Alarm episodes at ``level`` as ``(first, last)`` frame indices (inclusive).

    Examples
    --------
    >>> P, N = "plating_onset", "normal_lithiation"
    >>> alarm_episodes([N, P, N, P, "imminent_short", P, N])
    [(3, 5)]
    """
    if persistence < 1:
        raise ValueError(f"The 'persistence' parameter must be >= 1. Got {persistence}.")
    sev = classes.index(level)
    active = as_indices(y_pred, classes) >= sev
    out, k, n = [], 0, len(active)
    while k < n:
        if not active[k]:
            k += 1
            continue
        j = k
        while j + 1 < n and active[j + 1]:
            j += 1
        if j - k + 1 >= persistence:
            out.append((k, j))
        k = j + 1
    return out


def first_visible(t: np.ndarray, y_true_idx: np.ndarray, t_onset: float) -> float | None:
    """Time of the first frame at or after ``t_onset`` whose true class is ``plating_onset`` or
    more severe (the metal above the detection limit), s; ``None`` when there is none."""
    vis = np.flatnonzero((y_true_idx >= CLASSES.index("plating_onset")) & (t >= t_onset))
    return float(t[vis[0]]) if len(vis) else None


def plating_delay(t_s, y_pred, t_onset: float | None, *, persistence: int = PERSISTENCE,
                  early_s: float = EARLY_PLATING_S, y_true=None) -> dict:
    """Plating-onset detection delay of one run.

    Parameters
    ----------
    t_s : array_like
        Frame times, s.
    y_pred : sequence
        Predicted labels.
    t_onset : float or None
        True plating onset (nucleation of working-side metal), s (``None``/NaN: the run has
        none).
    y_true : sequence, optional
        True labels; when given, the delay is also measured from the first frame at or after
        the onset whose true class is ``plating_onset`` or more severe — the first frame in
        which the new metal is above the detection limit (SNR 3), i.e. the earliest a
        detector reading spectra could see it.

    Returns
    -------
    dict
        ``delay_s`` (alarm start - onset, s; ``None`` if not detected), ``detected`` (bool;
        ``None`` without onset), ``n_false_plating_alarms`` (episodes starting more than
        ``early_s`` before the onset; ``None`` without onset), and with ``y_true``:
        ``visible_lag_s`` (first truth-labelled frame - onset, s) and ``delay_from_visible_s``
        (alarm start - that frame, s).
    """
    t = np.asarray(t_s, dtype=float)
    onset = _event_time(t_onset)
    if onset is None:
        out = {"delay_s": None, "detected": None, "n_false_plating_alarms": None}
        if y_true is not None:
            out.update(visible_lag_s=None, delay_from_visible_s=None)
        return out
    starts = [t[a] for a, _ in alarm_episodes(y_pred, "plating_onset", persistence)]
    early = [s for s in starts if s < onset - early_s]
    ok = [s for s in starts if s >= onset - early_s]
    out = {"delay_s": _none(ok[0] - onset) if ok else None, "detected": bool(ok),
           "n_false_plating_alarms": len(early)}
    if y_true is not None:
        yt = as_indices(y_true)
        t_vis = first_visible(t, yt, onset)
        out["visible_lag_s"] = _none(t_vis - onset) if t_vis is not None else None
        out["delay_from_visible_s"] = (_none(ok[0] - t_vis) if ok and t_vis is not None
                                       else None)
    return out


def short_lead_time(t_s, y_pred, t_short: float | None, horizon_s: float = DEFAULT_HORIZON_S,
                    *, persistence: int = PERSISTENCE) -> dict:
    """Lead time of the imminent-short alarm before the true short of one run.

    Returns
    -------
    dict
        ``lead_s`` (t_short - alarm start, s, for the first episode starting in
        ``[t_short - 2H, t_short)``; else ``None``), ``outcome`` (``"detected"``,
        ``"premature"``, ``"missed"``; ``None`` without a short), ``n_premature``.
    """
    t = np.asarray(t_s, dtype=float)
    ts = _event_time(t_short)
    if ts is None:
        return {"lead_s": None, "outcome": None, "n_premature": None}
    starts = [t[a] for a, _ in alarm_episodes(y_pred, "imminent_short", persistence)]
    window = ts - PREMATURE_FACTOR * horizon_s
    premature = [s for s in starts if s < window]
    ok = [s for s in starts if window <= s < ts]
    outcome = "detected" if ok else ("premature" if premature else "missed")
    return {"lead_s": _none(ts - ok[0]) if ok else None, "outcome": outcome,
            "n_premature": len(premature)}


def _durations(t: np.ndarray) -> np.ndarray:
    if len(t) == 0:
        return t.copy()
    d = np.diff(t)
    last = float(np.median(d)) if len(d) else 0.0
    return np.append(d, last)


def false_alarms(t_s, y_true, y_pred, t_onset: float | None = None, t_short: float | None = None,
                 horizon_s: float = DEFAULT_HORIZON_S, *, persistence: int = PERSISTENCE,
                 early_s: float = EARLY_PLATING_S) -> dict:
    """False-alarm episodes and event-free time of one run (definitions in the module doc).

    Returns
    -------
    dict
        ``n_false_alarms`` (int), ``event_free_h`` (hours), ``per_100h`` (``None`` when
        there is no event-free time).
    """
    t = np.asarray(t_s, dtype=float)
    yt = as_indices(y_true)
    if len(t) != len(yt):
        raise ValueError(f"t_s and y_true must have the same length. Got {len(t)} and {len(yt)}.")
    free = (yt >= 0) & (yt < CLASSES.index("plating_onset"))
    onset, ts = _event_time(t_onset), _event_time(t_short)
    if onset is not None:
        t_visible = first_visible(t, yt, onset)
        free &= ~((t >= onset - early_s) & (t < (math.inf if t_visible is None else t_visible)))
    if ts is not None:
        free &= ~((t >= ts - PREMATURE_FACTOR * horizon_s) & (t < ts))
    hours = float(_durations(t)[free].sum() / 3600.0)
    n = sum(1 for a, _ in alarm_episodes(y_pred, "plating_onset", persistence) if free[a])
    return {"n_false_alarms": int(n), "event_free_h": hours,
            "per_100h": (100.0 * n / hours) if hours > 0 else None}


# ---------------------------------------------------------------------- per run, aggregate
def run_metrics(t_s, y_true, y_pred, t_onset: float | None = None, t_short: float | None = None,
                horizon_s: float = DEFAULT_HORIZON_S, *, persistence: int = PERSISTENCE,
                classes: Sequence[str] = CLASSES, **meta) -> dict:
    """All metrics of one run as a JSON-safe dict.

    Parameters
    ----------
    t_s : array_like
        ``(T,)`` frame times (acquisition midpoints), s.
    y_true, y_pred : sequence
        ``(T,)`` true and predicted labels (names or indices; truth may be unlabelled).
    t_onset, t_short : float or None
        True plating onset and short times, s (``None`` when the run has none).
    horizon_s : float
        H, s.
    **meta
        Copied into the result (e.g. ``run_id``, ``family``) for :func:`aggregate_by`.

    Returns
    -------
    dict
        ``n_frames, n_labelled, n_correct, accuracy, macro_f1, per_class_f1, confusion,
        classes, plating, short, false_alarms`` plus ``meta``.
    """
    t = np.asarray(t_s, dtype=float).reshape(-1)
    yt, yp = _pair(y_true, y_pred, classes)
    if len(t) != len(yt):
        raise ValueError("t_s and the labels must have the same length. "
                         f"Got {len(t)} and {len(yt)}.")
    cm = confusion_matrix(yt, yp, classes)
    f1 = _f1_from_cm(cm, classes)
    present = [v for v in f1.values() if v is not None]
    n_lab = int(cm.sum())
    out = {
        **{k: v for k, v in meta.items()},
        "n_frames": int(len(t)),
        "n_labelled": n_lab,
        "n_correct": int(np.trace(cm)),
        "accuracy": float(np.trace(cm) / n_lab) if n_lab else None,
        "macro_f1": float(np.mean(present)) if present else None,
        "per_class_f1": f1,
        "confusion": cm.tolist(),
        "classes": list(classes),
        "plating": plating_delay(t, yp, t_onset, persistence=persistence, y_true=yt),
        "short": short_lead_time(t, yp, t_short, horizon_s, persistence=persistence),
        "false_alarms": false_alarms(t, yt, yp, t_onset, t_short, horizon_s,
                                     persistence=persistence),
    }
    return out


def _stats(xs: list[float]) -> dict:
    return {"median": float(np.median(xs)) if xs else None,
            "mean": float(np.mean(xs)) if xs else None}


def pooled_macro_f1(overall: dict) -> float | None:
    """The frame-pooled macro-F1 of an :func:`aggregate` result: the mean of its pooled
    ``per_class_f1`` over the classes that have one (present in some truth or prediction);
    ``None`` when none has. Unlike ``macro_f1_mean`` it weighs every frame alike."""
    vals = [v for v in overall["per_class_f1"].values() if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else None


def aggregate(per_run: Sequence[dict]) -> dict:
    """Pool :func:`run_metrics` results over runs (JSON-safe).

    Accuracy, confusion matrix, per-class F1 and the false-alarm rate are pooled over frames
    / hours; macro-F1 is averaged over runs (mean and median); delays and lead times are
    listed and summarised over the runs that have the event.
    """
    runs = list(per_run)
    if not runs:
        raise ValueError("aggregate needs at least one run.")
    classes = runs[0]["classes"]
    cm = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for r in runs:
        if r["classes"] != classes:
            raise ValueError("all runs must use the same classes.")
        cm += np.asarray(r["confusion"], dtype=np.int64)
    n_lab = int(cm.sum())
    f1 = _f1_from_cm(cm, classes)
    m = [r["macro_f1"] for r in runs if r["macro_f1"] is not None]

    pl = [r["plating"] for r in runs if r["plating"]["detected"] is not None]
    delays = [p["delay_s"] for p in pl if p["detected"]]
    vis_lags = [p["visible_lag_s"] for p in pl if p.get("visible_lag_s") is not None]
    vis_delays = [p["delay_from_visible_s"] for p in pl
                  if p["detected"] and p.get("delay_from_visible_s") is not None]
    sh = [r["short"] for r in runs if r["short"]["outcome"] is not None]
    leads = [s["lead_s"] for s in sh if s["outcome"] == "detected"]
    n_fa = sum(r["false_alarms"]["n_false_alarms"] for r in runs)
    hours = sum(r["false_alarms"]["event_free_h"] for r in runs)
    return {
        "n_runs": len(runs),
        "n_frames": sum(r["n_frames"] for r in runs),
        "accuracy": float(np.trace(cm) / n_lab) if n_lab else None,
        "macro_f1_mean": float(np.mean(m)) if m else None,
        "macro_f1_median": float(np.median(m)) if m else None,
        "per_class_f1": f1,
        "confusion": cm.tolist(),
        "classes": list(classes),
        "plating": {
            "n_runs_with_onset": len(pl),
            "n_detected": len(delays),
            "detection_rate": len(delays) / len(pl) if pl else None,
            "delay_s": _stats(delays),
            "delays_s": delays,
            "visible_lag_s": _stats(vis_lags),
            "delay_from_visible_s": _stats(vis_delays),
            "n_false_plating_alarms": sum(p["n_false_plating_alarms"] for p in pl),
        },
        "short": {
            "n_runs_with_short": len(sh),
            "n_detected": len(leads),
            "n_premature": sum(1 for s in sh if s["outcome"] == "premature"),
            "n_missed": sum(1 for s in sh if s["outcome"] == "missed"),
            "detection_rate": len(leads) / len(sh) if sh else None,
            "lead_s": _stats(leads),
            "leads_s": leads,
        },
        "false_alarms": {"n_false_alarms": int(n_fa), "event_free_h": float(hours),
                         "per_100h": 100.0 * n_fa / hours if hours > 0 else None},
    }


def aggregate_by(per_run: Sequence[dict], key: str) -> dict[str, dict]:
    """:func:`aggregate` per value of ``run[key]`` (e.g. ``"family"``), plus ``"all"``."""
    groups: dict[str, list[dict]] = {}
    for r in per_run:
        groups.setdefault(str(r.get(key)), []).append(r)
    out = {g: aggregate(rs) for g, rs in sorted(groups.items())}
    out["all"] = aggregate(per_run)
    return out
