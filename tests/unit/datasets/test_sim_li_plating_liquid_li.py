"""The one-way Li | liquid | Li family, modelled on the measured run of ``../shared/real``:
the working electrode is stripped for two days (positive potential throughout, short pauses),
microstructure accumulates from the first hours, and nothing shorts."""
from __future__ import annotations

import numpy as np

from lisentry.datasets.io.potentiostat import read_echem
from lisentry.datasets.pipeline import Pipeline, ProcessingConfig
from lisentry.datasets.sim.run import simulate_run, to_run

FAMILY = "li_plating_liquid_li"


def _arrays(seed: int, randomize: bool):
    sim = simulate_run(FAMILY, seed, randomize=randomize)
    run = to_run(sim, Pipeline(ProcessingConfig()))
    pot = np.array([np.nan if f.potential_V is None else f.potential_V for f in run.frames], float)
    cur = np.array([np.nan if f.current_A is None else f.current_A for f in run.frames], float)
    metal = np.array([lat["metal_amount"] for lat in sim.latents])
    return sim, run, pot, cur, metal


def test_one_way_polarization_without_short():
    sim, run, pot, cur, metal = _arrays(0, randomize=False)
    t_h = np.array([f.t_s for f in run.frames]) / 3600.0
    assert t_h[-1] - t_h[0] > 40                                # two days, like the measured run
    assert sim.t_short_s is None
    labels = np.asarray(sim.labels)
    assert "imminent_short" not in labels and "cluster_growth" not in labels
    on = np.abs(np.nan_to_num(cur)) > 0
    assert on.mean() > 0.6 and (~on).any()                      # steps with pauses between them
    assert np.all(cur[on] < 0)                                  # always the same direction: stripping
    assert np.all(pot[on] > 0) and np.all(pot[on] < 0.3)        # positive, tens of mV
    assert np.all(np.abs(pot[~on]) < np.median(pot[on]))        # the pauses relax towards 0 V
    # microstructure from the first hours, never stripped again (unlike the cycling family)
    assert np.all(np.diff(metal) >= -1e-12) and metal[-1] > 0.2
    first = int(np.argmax(labels == "plating_onset"))
    assert labels[first] == "plating_onset" and t_h[first] - t_h[0] < 6
    assert np.all(labels[first:] == "plating_onset")


def test_randomized_runs_stay_one_way():
    for seed in (1, 2, 3):
        sim, run, pot, cur, metal = _arrays(seed, randomize=True)
        on = np.abs(np.nan_to_num(cur)) > 0
        assert np.all(pot[on] > 0), seed
        assert metal[-1] > metal[0] and sim.t_short_s is None, seed


def test_potential_range_matches_the_measured_run(real_run_dir):
    """The family's step potential spans the measured run's (median ~0.1 V, 1 mA on Li | TEGDME | Li)."""
    log = read_echem(next((real_run_dir / "echem").glob("*_03_GCPL_C05.txt")),
                    start="2023-08-11T12:40:15+01:00")
    measured = float(np.nanmedian(log.potential_V))
    lo = hi = None
    for seed in range(1, 9):
        _, _, pot, cur, _ = _arrays(seed, randomize=True)
        med = float(np.median(pot[np.abs(np.nan_to_num(cur)) > 0]))
        lo = med if lo is None else min(lo, med)
        hi = med if hi is None else max(hi, med)
    assert measured > 0 and lo < measured < hi, (lo, measured, hi)


def test_overpotential_peaks_dips_and_rises_like_the_measured_run(real_run_dir):
    """A Li | Li trace: the nucleation peak fades within ~2 h as microstructure adds surface, then
    pits and dead Li raise the potential again (the measured run: 0.13 -> 0.08 -> 0.10-0.12 V)."""
    def profile(t_h, pot):
        t_h = t_h - t_h[0]
        med = lambda a, b: float(np.median(pot[(t_h >= a) & (t_h < b)]))
        return med(0, 0.2), med(1.0, 2.0), med(15, 20)

    sim, run, pot, cur, _ = _arrays(0, randomize=False)
    on = np.abs(np.nan_to_num(cur)) > 0.9 * np.nanmax(np.abs(cur))   # whole frames under current
    t_h = np.array([f.t_s for f in run.frames])[on] / 3600.0
    start, dip, late = profile(t_h, pot[on])
    assert dip < 0.8 * start and late > 1.2 * dip, (start, dip, late)

    log = read_echem(next((real_run_dir / "echem").glob("*_03_GCPL_C05.txt")),
                     start="2023-08-11T12:40:15+01:00")
    m_start, m_dip, m_late = profile(np.asarray(log.t_utc_s) / 3600.0, np.asarray(log.potential_V))
    assert m_dip < 0.8 * m_start and m_late > 1.2 * m_dip, (m_start, m_dip, m_late)
    # same depth of the dip within a factor of 1.5
    assert 1 / 1.5 < (dip / start) / (m_dip / m_start) < 1.5


def test_without_the_li_li_terms_the_potential_only_creeps():
    """With the charge-transfer and pitting terms at 0 the potential never dips (the previous model)."""
    import dataclasses

    from lisentry.datasets.sim import scenarios
    fam = scenarios.get_family(FAMILY)
    cell = dataclasses.replace(fam.cell, metal_ct_asr_ohm_cm2=0.0, pitting_asr_ohm_cm2=0.0)
    traj = dataclasses.replace(fam, cell=cell).simulate(0)
    on = np.abs(traj.current_A) > 0
    v = traj.potential_V[on][5:]
    assert np.all(np.diff(v) > -1e-6 * np.abs(v[1:]))
