"""benchmarks/causal_oracle.py: replaying a stored run's trajectory, and the oracles' rules."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from lisentry.datasets.sim.run import simulate_run
from lisentry.datasets.sim.truth import label_frames

_PATH = Path(__file__).resolve().parents[3] / "benchmarks" / "causal_oracle.py"
_spec = importlib.util.spec_from_file_location("causal_oracle", _PATH)
co = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(co)


def test_resimulate_replays_the_runs_trajectory_and_frame_clock():
    # seed 0 of hc_sulfide_ccv shorts; three frames are enough (the trajectory is drawn first)
    sim = simulate_run("hc_sulfide_ccv", 0, max_frames=3)
    assert sim.info["t_short_s"] is not None
    traj, first, period, duration = co.resimulate(sim.info)
    np.testing.assert_array_equal(traj.hazard, sim.traj.hazard)
    np.testing.assert_array_equal(traj.cluster_amount, sim.traj.cluster_amount)
    assert traj.t_short_s - first == pytest.approx(sim.info["t_short_s"])
    # frame starts on the acquisition clock are `period` apart, each lasting `duration`
    starts = [(r.acq_start - sim.raws[0].acq_start).total_seconds() for r in sim.raws]
    assert starts == pytest.approx(period * np.arange(3), abs=1e-3)
    assert (sim.raws[0].acq_end - sim.raws[0].acq_start).total_seconds() == pytest.approx(duration, abs=1e-3)
    t_mid = first + period * np.arange(3) + duration / 2
    assert list(label_frames(t_mid, traj, horizon_s=3600.0)) == [str(x) for x in sim.labels]


def test_resimulate_refuses_paper_default_runs():
    with pytest.raises(ValueError, match="randomized"):
        co.resimulate({"randomized": False, "seed": 1, "family": "hc_sulfide_ccv"})


def test_backward_rate_uses_only_the_past():
    grid = np.arange(0.0, 7200.0, 10.0)
    y = np.where(grid < 3600.0, 0.0, (grid - 3600.0) / 3600.0)  # ramp of 1/h from t = 1 h
    t = np.array([3000.0, 3600.0, 4200.0, 7000.0])
    r = co.backward_rate_per_h(grid, y, t, 600.0)
    # at the ramp's start the backward slope is still 0; a window after, it is the full 1/h
    assert r.tolist() == pytest.approx([0.0, 0.0, 1.0, 1.0])


def _linear_hazard_traj(t_short_s):
    grid = np.arange(0.0, t_short_s + 3600.0, 10.0)
    hazard = np.minimum(grid / t_short_s, 1.5)
    return SimpleNamespace(t_s=grid, hazard=hazard, t_short_s=t_short_s)


def test_forecast_of_a_linear_hazard_calls_exactly_the_horizon():
    traj = _linear_hazard_traj(20000.0)
    t_mid = np.arange(300.0, 23000.0, 600.0)
    called = co.forecast_short(traj, t_mid, 3600.0, 600.0, 1.0)
    # a linear hazard is forecast exactly: called from t_short - H on, and held
    np.testing.assert_array_equal(called, t_mid >= 20000.0 - 3600.0)
    late = co.forecast_short(traj, t_mid, 3600.0, 600.0, 0.5)
    np.testing.assert_array_equal(late, t_mid >= 20000.0 - 1800.0)


def test_compose_follows_the_class_precedence():
    c = np.array([True, True, False, False])
    p = np.array([False, True, True, False])
    s = np.array([False, False, True, False])
    assert co.compose(c, p, s).tolist() == ["cluster_growth", "plating_onset", "imminent_short",
                                            "normal_lithiation"]


def test_noisy_latent_labels_without_noise_follow_the_rules():
    grid = np.arange(0.0, 36000.0, 60.0)
    # cluster: 0 until 2 h, rises 1 %/h until 6 h, flat after; metal appears at 8 h (+1 %/h)
    cluster = np.clip((grid - 7200.0) / 3600.0, 0.0, 4.0) * 0.01
    metal = 0.2 + np.clip((grid - 28800.0) / 3600.0, 0.0, None) * 0.01
    traj = SimpleNamespace(t_s=grid, cluster_amount=cluster, metal_amount=metal, t_short_s=None)
    t_mid = np.arange(300.0, 36000.0, 600.0)
    lab = co.noisy_latent_labels(traj, t_mid, 3600.0, 0.0, np.random.default_rng(0), 1)
    cl = np.interp(t_mid, grid, cluster)
    rising = (t_mid - 600.0 > 7200.0) & (t_mid <= 21600.0 + 600.0) & (cl > 0.005)
    extra = np.interp(t_mid, grid, metal) - 0.2
    expect = np.where(extra > 0.005, "plating_onset", np.where(rising, "cluster_growth", "normal_lithiation"))
    assert lab.tolist() == expect.tolist()
    # noise of 5 % of the signal (10x the detection limit) cannot reproduce them
    noisy = co.noisy_latent_labels(traj, t_mid, 3600.0, 0.05, np.random.default_rng(0), 1)
    assert noisy.tolist() != expect.tolist()
