"""benchmarks/early_plating.py: the measured run's regime and its logs, as the script builds them."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np

from lisentry.datasets.pipeline import Pipeline, ProcessingConfig
from lisentry.datasets.sim.protocol import RestStep
from lisentry.datasets.sim.run import simulate_run, to_run
from lisentry.datasets.sim.scenarios import get_family

_PATH = Path(__file__).resolve().parents[3] / "benchmarks" / "early_plating.py"
_spec = importlib.util.spec_from_file_location("early_plating", _PATH)
ep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ep)


def test_polarized_from_start_drops_every_rest_before_the_current():
    shipped = get_family(ep.FAMILY)
    assert isinstance(shipped.protocol.steps[0], RestStep)      # the family rests first
    fam = ep.measured_like_family(polarized_from_start=True)
    assert not isinstance(fam.protocol.steps[0], RestStep)
    assert fam.protocol.steps == shipped.protocol.steps[1:]
    assert max(fam.randomize["initial_rest_h"]) <= 0
    run = to_run(simulate_run(fam, 3, max_frames=2), Pipeline(ProcessingConfig()))
    assert abs(run.frames[0].current_A) > 0                     # current from the first spectrum
    rested = to_run(simulate_run(ep.measured_like_family(), 3, max_frames=2),
                    Pipeline(ProcessingConfig()))
    assert rested.frames[0].current_A == 0


def test_regime_is_the_measured_runs():
    """The runs it simulates: 300 MHz (7Li at 116.6 MHz), 240-360 s frames, the electrode line
    near the measured run's 248 ppm (plane at 75-90 deg to B0: 242-246 ppm)."""
    from lisentry.datasets.sim.scenarios import ce_shift_ppm, sample_params
    for seed in (0, 1):
        fam = sample_params(ep.measured_like_family(), seed)
        assert 242.0 <= ce_shift_ppm(fam.nmr["ce_orientation_deg"]) <= 246.0
        assert 200 <= fam.acquisition["snr"] <= 400
        run = to_run(simulate_run(ep.measured_like_family(), seed, max_frames=4),
                     Pipeline(ProcessingConfig()))
        assert abs(run.frames[0].sfo1_MHz - 116.6) < 0.1
        dt = np.diff([f.t_s for f in run.frames])
        assert np.all((dt >= 240) & (dt <= 360)), dt


def test_logs_mask_the_current_and_the_first_potentials():
    fam = ep.measured_like_family(polarized_from_start=True)
    frames = to_run(simulate_run(fam, 4, max_frames=8), Pipeline(ProcessingConfig())).frames
    same = ep.LOGS["as simulated"](frames)
    assert same == frames
    no_i = ep.LOGS["no current"](frames)
    assert all(math.isnan(f.current_A) and math.isnan(f.charge_C) for f in no_i)
    assert [f.potential_V for f in no_i] == [f.potential_V for f in frames]
    late = ep.LOGS["no current, potential from frame 6"](frames)
    assert all(math.isnan(f.potential_V) for f in late[:5])
    assert [f.potential_V for f in late[5:]] == [f.potential_V for f in frames[5:]]
    assert np.array_equal(late[0].intensity, frames[0].intensity)


def test_first_index():
    assert ep.first_index(["normal_lithiation", "plating_onset", "plating_onset"]) == 1
    assert ep.first_index(["normal_lithiation"]) is None
