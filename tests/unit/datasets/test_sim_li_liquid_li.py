"""The Li | liquid | Li cycling family (false-alarm material for imminent_short): microstructure
grows over the whole run, the potential alternates with the current, and nothing shorts."""
from __future__ import annotations

import numpy as np

from lisentry.datasets.pipeline import Pipeline, ProcessingConfig
from lisentry.datasets.sim.run import simulate_run, to_run

FAMILY = "li_liquid_li_cycling"


def _sim(seed=0, randomize=False):
    sim = simulate_run(FAMILY, seed, randomize=randomize)
    run = to_run(sim, Pipeline(ProcessingConfig()))
    return sim, run


def test_cycling_without_short_and_microstructure_grows():
    sim, run = _sim()
    assert sim.t_short_s is None
    assert max(lat["hazard"] for lat in sim.latents) == 0.0
    metal = np.array([lat["metal_amount"] for lat in sim.latents])
    assert metal[-1] > 0.2 and metal[-1] > 20 * metal[1]
    assert np.all(np.diff(metal) >= -1e-12)                 # it only accumulates
    labels = np.asarray(sim.labels)
    assert "imminent_short" not in labels
    assert np.mean(labels == "plating_onset") > 0.95
    pot = np.array([f.potential_V for f in run.frames], float)
    cur = np.array([f.current_A for f in run.frames], float)
    ok = np.isfinite(pot) & np.isfinite(cur) & (np.abs(cur) > 0)
    assert (pot[ok] > 0).any() and (pot[ok] < 0).any()      # plating and stripping alternate
    assert np.all(np.abs(pot[ok]) < 0.15)                   # symmetric-cell polarization, no collapse
    # the potential follows the current's sign (Li|Li: overpotential only)
    assert np.mean(np.sign(pot[ok]) == -np.sign(cur[ok])) > 0.9 or \
        np.mean(np.sign(pot[ok]) == np.sign(cur[ok])) > 0.9


def test_microstructure_line_grows_in_processed_spectra():
    _, run = _sim()
    ppm = np.asarray(run.ppm_grid, float)
    spectra = np.nan_to_num(np.asarray(run.spectra(), float))
    band = (ppm >= 255.0) & (ppm <= 280.0)
    quiet = (ppm >= 320.0) & (ppm <= 400.0)
    step = float(ppm[1] - ppm[0])
    area = spectra[:, band].sum(axis=1) * step
    noise = np.std(spectra[:, quiet], axis=1).mean() * step * np.sqrt(band.sum())
    early, late = area[:5].mean(), area[-5:].mean()
    assert late - early > 10 * noise, (early, late, noise)
