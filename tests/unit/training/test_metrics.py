"""Tests of lisentry.training.metrics on hand-made label sequences (answers worked out by hand)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lisentry.training.metrics import (accuracy, aggregate, aggregate_by, alarm_episodes,
                                       as_indices, confusion_matrix, false_alarms, macro_f1,
                                       per_class_f1, plating_delay, run_metrics, short_lead_time)

N, C, P, S = "normal_lithiation", "cluster_growth", "plating_onset", "imminent_short"


def test_classification_metrics():
    yt = [N, N, N, C, C, P]
    yp = [N, N, C, C, P, P]
    cm = confusion_matrix(yt, yp)
    assert cm.tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    f1 = per_class_f1(yt, yp)
    # N: 2TP/(2TP+FP+FN) = 4/5; C: 2/(2+1+1); P: 2/(2+1+0); S absent from both
    assert f1 == {N: pytest.approx(0.8), C: pytest.approx(0.5), P: pytest.approx(2 / 3), S: None}
    assert macro_f1(yt, yp) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert accuracy(yt, yp) == pytest.approx(4 / 6)
    # a class only in the prediction counts (F1 = 0)
    assert macro_f1([N, N], [N, S]) == pytest.approx((2 / 3 + 0) / 2)
    # unlabelled truth is left out; indices work like names
    assert accuracy([None, 0, 1], [3, 0, 0]) == pytest.approx(0.5)


def test_unknown_label_suggests():
    with pytest.raises(ValueError, match="Did you mean 'plating_onset'"):
        as_indices(["plating_onse"])
    with pytest.raises(ValueError, match="label index must be"):
        as_indices([7])


def test_alarm_episodes_need_two_consecutive_frames_of_the_level_or_worse():
    yp = [N, P, N, P, S, P, N, S, S]
    assert alarm_episodes(yp, "plating_onset") == [(3, 5), (7, 8)]
    assert alarm_episodes(yp, "imminent_short") == [(7, 8)]
    assert alarm_episodes(yp, "plating_onset", persistence=1) == [(1, 1), (3, 5), (7, 8)]
    assert alarm_episodes([C, C, N], "cluster_growth") == [(0, 1)]


def test_plating_delay_and_false_plating_alarms():
    t = np.arange(12) * 600.0
    yp = [P, P, N, N, N, N, P, N, P, P, P, N]
    # episodes start at 0 s (> 30 min before the 3000 s onset: false) and 4800 s
    assert plating_delay(t, yp, 3000.0) == {"delay_s": 1800.0, "detected": True,
                                            "n_false_plating_alarms": 1}
    # exactly 30 min early still counts as the detection (negative delay)
    yp2 = [N, N, P, P] + [N] * 8
    assert plating_delay(t, yp2, 3000.0) == {"delay_s": -1800.0, "detected": True,
                                             "n_false_plating_alarms": 0}
    assert plating_delay(t, [N] * 12, 3000.0)["detected"] is False
    assert plating_delay(t, yp, None)["detected"] is None


def test_plating_delay_is_also_measured_from_the_first_visible_frame():
    t = np.arange(12) * 600.0
    # metal nucleates at 2000 s, first frame above the detection limit is 4200 s (index 7)
    yt = [N] * 7 + [P] * 5
    yp = [N] * 8 + [P] * 4          # alarm starts at 4800 s
    d = plating_delay(t, yp, 2000.0, y_true=yt)
    assert d["delay_s"] == 2800.0
    assert d["visible_lag_s"] == 2200.0
    assert d["delay_from_visible_s"] == 600.0
    # an alarm before the metal is visible gives a negative delay from the visible frame
    d2 = plating_delay(t, [N] * 5 + [P] * 7, 2000.0, y_true=yt)
    assert d2["delay_from_visible_s"] == -1200.0
    # nothing detected: no delay from the visible frame, the lag is still known
    d3 = plating_delay(t, [N] * 12, 2000.0, y_true=yt)
    assert d3["delay_from_visible_s"] is None and d3["visible_lag_s"] == 2200.0
    agg = aggregate([run_metrics(t, yt, yp, t_onset=2000.0)])
    assert agg["plating"]["delay_from_visible_s"]["median"] == 600.0
    assert agg["plating"]["visible_lag_s"]["median"] == 2200.0


def test_short_lead_time_outcomes():
    t = np.arange(17) * 600.0
    t_short, H = 9000.0, 3600.0  # premature if the alarm starts before 9000 - 7200 = 1800 s
    yp = [N] * 17
    for k in (1, 2, 10, 11, 12):
        yp[k] = S
    assert short_lead_time(t, yp, t_short, H) == {"lead_s": 3000.0, "outcome": "detected",
                                                  "n_premature": 1}
    late = [N] * 15 + [S, S]  # starts at the short itself: not before it
    assert short_lead_time(t, late, t_short, H) == {"lead_s": None, "outcome": "missed",
                                                    "n_premature": 0}
    early = [S] * 17  # one long alarm from 0 s
    assert short_lead_time(t, early, t_short, H) == {"lead_s": None, "outcome": "premature",
                                                     "n_premature": 1}
    # a plating alarm is not a short alarm
    assert short_lead_time(t, [P] * 17, t_short, H)["outcome"] == "missed"
    assert short_lead_time(t, yp, None)["outcome"] is None


def _run1():
    t = np.arange(20) * 1800.0  # half-hour frames
    yt = [N] * 12 + [P] * 8  # plating onset at frame 12 = 21600 s
    yp = [N] * 20
    for k in (2, 3, 5, 7, 8, *range(11, 20)):
        yp[k] = P
    return t, yt, yp, 21600.0


def test_false_alarms_per_100h():
    t, yt, yp, onset = _run1()
    # event-free: frames 0..10 (frame 11 lies in the 30-min early window) = 11 x 0.5 h;
    # false episodes start at frames 2 and 7 (frame 5 alone raises no alarm; the episode
    # from frame 11 is the detection)
    fa = false_alarms(t, yt, yp, t_onset=onset)
    assert fa["n_false_alarms"] == 2
    assert fa["event_free_h"] == pytest.approx(5.5)
    assert fa["per_100h"] == pytest.approx(200 / 5.5)
    yt_gap = [None] + yt[1:]  # an unlabelled frame is not event-free time
    assert false_alarms(t, yt_gap, yp, t_onset=onset)["per_100h"] == pytest.approx(40.0)
    assert false_alarms(t, [P] * 20, yp)["per_100h"] is None


def test_an_alarm_on_nucleated_but_invisible_metal_is_the_detection_not_a_false_alarm():
    """The onset is the metal's nucleation; the truth says ``plating_onset`` only once the metal
    passes its detection limit. An episode between the two is the detection (the delay counts
    it) and is not a false alarm; after the metal is stripped (truth normal again) the frames
    are event-free once more."""
    t = np.arange(24) * 600.0
    onset = 6 * 600.0                                  # nucleation at frame 6
    yt = [N] * 10 + [P] * 6 + [N] * 8                  # visible from frame 10, stripped at 16
    yp = [N] * 8 + [P] * 8 + [N] * 4 + [P] * 2 + [N] * 2   # alarm from frame 8; again at 20
    fa = false_alarms(t, yt, yp, t_onset=onset)
    assert fa["n_false_alarms"] == 1                  # only the episode at frame 20
    # event-free: frames 0..2 (3 from the 30-min early window on) and 16..23
    assert fa["event_free_h"] == pytest.approx(11 * 600 / 3600)
    assert plating_delay(t, yp, onset)["delay_s"] == pytest.approx(1200.0)
    # never visible in the run: everything from the early window on is the event under way
    never = false_alarms(t, [N] * 24, yp, t_onset=onset)
    assert never["n_false_alarms"] == 0 and never["event_free_h"] == pytest.approx(0.5)
    # without an onset the same alarms are false
    assert false_alarms(t, [N] * 24, yp)["n_false_alarms"] == 2


def test_run_metrics_and_aggregate():
    t1, yt1, yp1, onset = _run1()
    t2 = np.arange(16) * 600.0
    yt2 = [N] * 9 + [S] * 7  # short at 9000 s, H = 3600 s -> imminent from 5400 s
    yp2 = [N] * 10 + [S] * 6
    r1 = run_metrics(t1, yt1, yp1, t_onset=onset, run_id="r1", family="low_pressure")
    r2 = run_metrics(t2, yt2, yp2, t_short=9000.0, horizon_s=3600.0, run_id="r2", family="hold")
    json.dumps([r1, r2], allow_nan=False)  # JSON-safe

    assert r1["run_id"] == "r1" and r1["n_correct"] == 14 and r1["n_labelled"] == 20
    assert r1["macro_f1"] == pytest.approx((2 / 3 + 8 / 11) / 2)
    assert r1["plating"] == {"delay_s": -1800.0, "detected": True, "n_false_plating_alarms": 2,
                             "visible_lag_s": 0.0, "delay_from_visible_s": -1800.0}
    assert r1["short"]["outcome"] is None
    assert r2["n_correct"] == 15
    assert r2["macro_f1"] == pytest.approx((18 / 19 + 12 / 13) / 2)
    assert r2["short"] == {"lead_s": 3000.0, "outcome": "detected", "n_premature": 0}
    # run 2 event-free: frames at 0, 600, 1200 s (the 2H before the short is excluded)
    assert r2["false_alarms"] == {"n_false_alarms": 0, "event_free_h": 0.5, "per_100h": 0.0}

    agg = aggregate([r1, r2])
    json.dumps(agg, allow_nan=False)
    assert agg["n_runs"] == 2 and agg["n_frames"] == 36
    assert agg["accuracy"] == pytest.approx(29 / 36)
    assert agg["macro_f1_mean"] == pytest.approx((r1["macro_f1"] + r2["macro_f1"]) / 2)
    assert agg["per_class_f1"] == {N: pytest.approx(30 / 37), C: None,
                                   P: pytest.approx(16 / 22), S: pytest.approx(12 / 13)}
    assert agg["plating"]["n_runs_with_onset"] == 1 and agg["plating"]["delays_s"] == [-1800.0]
    assert agg["plating"]["n_false_plating_alarms"] == 2
    assert agg["short"]["n_detected"] == 1 and agg["short"]["lead_s"]["median"] == 3000.0
    assert agg["false_alarms"]["per_100h"] == pytest.approx(100 * 2 / 6.0)

    by = aggregate_by([r1, r2], "family")
    assert set(by) == {"hold", "low_pressure", "all"}
    assert by["hold"]["accuracy"] == pytest.approx(15 / 16)
