"""train.oversample_families / oversample_factor: which runs one epoch visits."""
from __future__ import annotations

import numpy as np

from lisentry.training.data import RunTensors
from lisentry.training.loop import length_buckets, oversampled


def _run(family: str, n: int) -> RunTensors:
    return RunTensors(f"{family}-{n}", family, np.arange(n) * 600.0, np.zeros((n, 4), np.float32),
                      np.zeros((n, 2), np.float32), np.ones((n, 2), np.float32),
                      np.zeros(n, np.int64), np.zeros((n, 4), np.float32), None, None)


def test_the_named_families_are_visited_factor_times_the_others_once():
    runs = [_run("a", 10), _run("llzo", 300), _run("b", 20), _run("llzo", 280)]
    idx = oversampled(runs, ["llzo"], 3)
    counts = np.bincount(idx, minlength=len(runs))
    assert counts.tolist() == [1, 3, 1, 3]


def test_off_visits_every_run_once_and_draws_the_batches_as_before():
    runs = [_run("a", 10), _run("llzo", 300), _run("b", 20), _run("llzo", 280), _run("a", 12)]
    for fams, k in (([], 3), (["llzo"], 1)):
        idx = oversampled(runs, fams, k)
        np.testing.assert_array_equal(idx, np.arange(len(runs)))
        r1, r2 = np.random.default_rng(4), np.random.default_rng(4)
        new = length_buckets([len(runs[i]) for i in idx], 2, r1)
        old = length_buckets([len(r) for r in runs], 2, r2)
        assert [b.tolist() for b in new] == [b.tolist() for b in old]
