"""A frame whose ``pdata/1/procs`` is missing (a copy that lost it, a mirror that has not
brought it yet) keeps the run's referencing instead of an axis hundreds of ppm off, and a run
with no referencing at all is said so once, not labelled in silence."""
from __future__ import annotations

import shutil

import numpy as np

from lisentry.datasets.loading import LoadOptions, load_run
from lisentry.datasets.pipeline import Pipeline, ProcessingConfig
from lisentry.datasets.sim.run import simulate_run, write_run


def _disk_run(tmp_path):
    sim = simulate_run("hc_liquid", 3, randomize=True, max_frames=8)
    nmr_dir, _ = write_run(sim, tmp_path / "run", layout="series")
    return sim, nmr_dir


def _load_noting(nmr_dir, notes):
    return load_run(nmr_dir, LoadOptions(), config=ProcessingConfig(), on_skip=None,
                    on_note=notes.append)


def test_a_frame_without_procs_keeps_the_runs_reference(tmp_path):
    sim, nmr_dir = _disk_run(tmp_path)
    whole = _load_noting(nmr_dir, [])
    gone = sorted(p for p in nmr_dir.iterdir() if p.name.isdigit())[3]
    shutil.rmtree(gone / "pdata")
    notes = []
    run = _load_noting(nmr_dir, notes)
    assert len(run) == len(whole) == len(sim.raws)
    a, b = np.nan_to_num(whole.spectra()[3]), np.nan_to_num(run.spectra()[3])
    # the same axis; only the phase differs (the previous frame's procs phases, a few degrees)
    assert np.corrcoef(a, b)[0, 1] > 0.9 and abs(int(np.argmax(a)) - int(np.argmax(b))) <= 2
    # the other frames are untouched
    np.testing.assert_array_equal(np.nan_to_num(whole.spectra()[:3]), np.nan_to_num(run.spectra()[:3]))
    assert len(notes) == 1 and str(gone) in notes[0] and "using the run's SR" in notes[0]

    # without the fix the frame would be read with SF = BF1: the lines land far from where they are
    pipe = Pipeline(ProcessingConfig())
    pipe.run_sr_Hz_ = None
    assert pipe._sr_for(None) == 0.0 and pipe.reference_source_ == "none"


def test_a_run_without_any_referencing_is_said_once(tmp_path):
    _, nmr_dir = _disk_run(tmp_path)
    whole = _load_noting(nmr_dir, [])
    for p in nmr_dir.iterdir():
        shutil.rmtree(p / "pdata", ignore_errors=True)
    notes = []
    run = _load_noting(nmr_dir, notes)
    assert len(run) == len(whole)
    # what the warning is about: with SF = BF1 the spectrum is somewhere else on the grid
    a, b = np.nan_to_num(whole.spectra()[3]), np.nan_to_num(run.spectra()[3])
    assert np.corrcoef(a, b)[0, 1] < 0.5
    assert len(notes) == 1 and "no referencing" in notes[0] and "--sr-hz" in notes[0]


def test_run_reference_survives_a_watcher_restart():
    pipe = Pipeline(ProcessingConfig())
    pipe.run_sr_Hz_, pipe.run_procs_phase_ = 1234.5, (10.0, -3.0)
    again = Pipeline(ProcessingConfig()).load_state_dict(pipe.state_dict())
    assert again.run_sr_Hz_ == 1234.5 and again.run_procs_phase_ == (10.0, -3.0)
    assert again._sr_for(None) == 1234.5 and again.reference_source_ == "run"
