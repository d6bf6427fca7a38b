"""tune_policy: the hysteresis policy is chosen on validation runs by macro-F1 under a
false-alarm limit, from the calibrated probabilities (the model is not re-run)."""
import numpy as np
import pytest

from lisentry.datasets.frame import CLASSES
from lisentry.detector.hysteresis import AlarmPolicy, smooth_labels
from lisentry.training.data import RunTensors
from lisentry.training.evaluate import (POLICY_GRID, RunPrediction, evaluate_predictions,
                                        tune_policy)

DT = 600.0


def _run(run_id, y, proba, t_onset=None):
    n = len(y)
    run = RunTensors(run_id, "fam", np.arange(n) * DT, np.zeros((n, 4), np.float32),
                     np.zeros((n, 1), np.float32), np.ones((n, 1), bool), np.asarray(y),
                     np.full((n, 0), np.nan), t_onset, None, None)
    p = np.asarray(proba, float)
    pred = RunPrediction(run_id, "fam", np.log(np.clip(p, 1e-12, 1)), p, np.full((n, 0), np.nan),
                         np.zeros(n), smooth_labels(p, None))
    return run, pred


def _proba(cls_idx, level, n):
    """``level`` on one class, the rest on normal_lithiation (so the alarm score is ``level``)."""
    p = np.zeros((n, 4))
    p[:, 0] = 1 - level
    p[:, cls_idx] += level
    return p


def test_weak_but_real_evidence_picks_a_lower_enter_threshold():
    # cluster_growth frames carry p=0.55: below the default enter=0.6, above 0.5
    y = [0] * 20 + [1] * 20
    p = np.vstack([_proba(0, 0.8, 20), _proba(1, 0.55, 20)])
    runs, preds = zip(*[_run(f"r{i}", y, p) for i in range(3)])
    policy, table = tune_policy(runs, preds)
    assert policy.enter < 0.55
    f1_default = evaluate_predictions(runs, [
        RunPrediction(q.run_id, q.family, q.logits, q.proba, q.aux, q.energy,
                      smooth_labels(q.proba, AlarmPolicy())) for q in preds])["overall"]["macro_f1_mean"]
    assert table["chosen"]["macro_f1"] > f1_default + 0.2
    assert len(table["grid"]) == len(POLICY_GRID)


def test_false_alarm_limit_excludes_policies_that_alarm_on_a_blip():
    # event-free run with a 2-frame plating blip at p=0.75 (a false alarm for k<=2, enter<0.75)
    n = 60
    p = _proba(0, 0.9, n)
    p[30:32] = _proba(2, 0.75, 2)
    run, pred = _run("quiet", [0] * n, p)
    # a run with a real, strong onset keeps recall in play
    y2 = [0] * 30 + [2] * 30
    p2 = np.vstack([_proba(0, 0.9, 30), _proba(2, 0.9, 30)])
    run2, pred2 = _run("onset", y2, p2, t_onset=30 * DT)
    strict, strict_table = tune_policy([run, run2], [pred, pred2], max_false_alarms_per_100h=0.0)
    labels = smooth_labels(p, strict)
    assert not (labels == "plating_onset").any()
    assert strict.enter >= 0.75 or strict.min_consecutive >= 3
    assert strict_table["chosen"]["false_alarms_per_100h"] == 0.0
    # a loose limit lets every policy compete, so the best F1 can only be as good or better
    _, loose = tune_policy([run, run2], [pred, pred2], max_false_alarms_per_100h=1e9)
    assert loose["chosen"]["macro_f1"] >= strict_table["chosen"]["macro_f1"]
    assert any(r["false_alarms_per_100h"] > 0 for r in loose["grid"])


def test_needs_runs():
    with pytest.raises(ValueError, match="at least one validation run"):
        tune_policy([], [])
