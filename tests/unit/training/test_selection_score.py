"""``train.select_by``: the validation score that picks a member's best epoch."""
from __future__ import annotations

import numpy as np
import pytest

from lisentry.training.loop import selection_score
from lisentry.training.metrics import CLASSES, aggregate, run_metrics

N, C, P, S = CLASSES


def _overall():
    # A long run labelled well and a short one where a single spurious frame costs a class:
    # the per-run mean falls far more than the frame-pooled score.
    t_long = np.arange(40) * 600.0
    yt_long = [N] * 20 + [C] * 20
    yp_long = [N] * 20 + [C] * 20
    t_short = np.arange(6) * 600.0
    yt_short = [N] * 6
    yp_short = [N] * 5 + [C]
    return aggregate([run_metrics(t_long, yt_long, yp_long, run_id="a"),
                      run_metrics(t_short, yt_short, yp_short, run_id="b")])


def test_per_run_is_the_mean_run_macro_f1():
    ov = _overall()
    assert selection_score(ov) == pytest.approx(ov["macro_f1_mean"])
    assert selection_score(ov, "per_run") == pytest.approx(ov["macro_f1_mean"])


def test_pooled_is_the_mean_of_the_pooled_class_f1_and_less_moved_by_one_frame():
    ov = _overall()
    pooled = selection_score(ov, "pooled")
    present = [v for v in ov["per_class_f1"].values() if v is not None]
    assert pooled == pytest.approx(np.mean(present))
    # pooled: N 25/25 right + 1 false C -> F1(N)=50/51, F1(C)=40/41; the short run's own
    # macro-F1 is two classes averaged, one of them 0.
    assert pooled == pytest.approx((50 / 51 + 40 / 41) / 2)
    assert pooled > selection_score(ov, "per_run") + 0.1


def test_no_classes_scored_gives_zero():
    assert selection_score({"per_class_f1": {N: None}, "macro_f1_mean": None}, "pooled") == 0.0
    assert selection_score({"per_class_f1": {}, "macro_f1_mean": None}) == 0.0
