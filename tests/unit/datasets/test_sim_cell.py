"""Reduced cell model: paper timelines from the latent state, parameter sensitivity,
conservation. Event times come from simulate(); expectations are the papers' numbers."""
import math

import numpy as np
import pytest

from lisentry.datasets.errors import ConfigError
from lisentry.datasets.sim.cell import CellParams, host_ocp, simulate, skin_depth_um
from lisentry.datasets.sim.scenarios import FAMILIES, _scale_protocol

H = 3600.0


def run(name, rng=0, **changes):
    fam = FAMILIES[name]
    cell = fam.cell.replace(**changes) if changes else fam.cell
    return simulate(fam.protocol, cell, dt_s=fam.dt_s, rng=rng)


def at(tr, key, t_h):
    arr = tr.phys[key] if key in tr.phys else getattr(tr, key)
    return float(np.interp(t_h * H, tr.t_s, arr))


@pytest.fixture(scope="module")
def ccv():
    return run("hc_sulfide_ccv")


@pytest.fixture(scope="module")
def overlith():
    return run("hc_sulfide_overlithiation")


@pytest.fixture(scope="module")
def lowp():
    return run("hc_sulfide_lowpressure")


@pytest.fixture(scope="module")
def hold():
    return run("hc_sulfide_hold")


# ---- basic bookkeeping --------------------------------------------------------------------

def test_initial_visible_signal_sums_to_one(ccv):
    total = (ccv.host_amount + ccv.cluster_amount + ccv.metal_amount + ccv.ce_amount
             + ccv.electrolyte_amount + ccv.sei_amount)
    assert total[0] == pytest.approx(1.0)


def test_charge_is_conserved(ccv):
    """Charge passed through the WE equals the change of Li in host + clusters + metal + SEI."""
    p = ccv.params
    mass_g = p.mass_mg * 1e-3
    passed_mAh = np.concatenate([[0.0], np.cumsum(np.diff(ccv.t_s) / 3600
                                                  * ccv.phys["ionic_current_A"][1:] * 1e3)])
    held = (ccv.phys["host_mAh_per_g"] + ccv.phys["closed_cluster_mAh_per_g"]
            + ccv.phys["open_cluster_mAh_per_g"]) * mass_g + ccv.phys["metal_mAh"] + ccv.phys["sei_mAh"]
    stop = np.searchsorted(ccv.t_s, 21.0 * H)  # before the host empties at the cut-off
    assert np.allclose(held[:stop] - held[0], passed_mAh[:stop], atol=2e-3 * held.max())


def test_galvanostatic_and_potentiostatic_steps(ccv):
    s0 = ccv.step_index == 0
    assert np.allclose(ccv.current_A[s0], 25e-3 * 1.6e-3)  # 25 mA/g x 1.6 mg
    s1 = ccv.step_index == 1
    assert np.allclose(ccv.potential_V[s1], 2e-4)
    # the hold current decays as the closed pores fill (comes out of the model)
    i1 = ccv.current_A[s1]
    assert i1[0] > 3 * i1[-1] > 0


def test_host_ocp_tables():
    assert host_ocp("hard_carbon", 0.0) > 1.0 and host_ocp("hard_carbon", 1.0) < 0.02
    g = host_ocp("graphite", np.array([0.15, 0.4, 0.8]))
    assert np.allclose(g, [0.2, 0.12, 0.085], atol=0.012)
    assert skin_depth_um(155.0) == pytest.approx(12.0)
    assert skin_depth_um(4 * 155.0) == pytest.approx(6.0)


def test_bad_params():
    with pytest.raises(ConfigError, match="did you mean|Did you mean"):
        CellParams.from_dict({"stack_presure_MPa": 10})
    with pytest.raises(ConfigError, match="host_kind"):
        CellParams(host_kind="silicon")
    with pytest.raises(ConfigError):
        simulate(["Rest for 1 h"], dt_s=0)
    with pytest.raises(ConfigError, match="'pitting_asr_ohm_cm2' .* must be >= 0. Got -1"):
        CellParams(host_kind="li_metal", pitting_asr_ohm_cm2=-1.0)
    with pytest.raises(ConfigError, match="'pitting_charge_mAh_cm2' .* must be > 0"):
        CellParams(host_kind="li_metal", pitting_charge_mAh_cm2=0.0)


# ---- Tagami CC-CV (Fig. 3) -----------------------------------------------------------------

def test_ccv_timeline(ccv):
    t_cv = ccv.t_s[ccv.step_index == 1][0] / H
    assert t_cv == pytest.approx(10.8, abs=0.5)          # 0.2 mV reached at 10.8 h
    onset = ccv.t_s[np.argmax(ccv.cluster_amount > 5e-4)] / H
    assert onset == pytest.approx(8.7, abs=0.5)          # clusters appear at 8.7 h
    assert at(ccv, "potential_V", onset) < 0.013 + 0.001  # ... below ~13 mV
    assert 85 <= at(ccv, "cluster_shift_ppm", 16.29) <= 95
    # collapse on delithiation: the shift falls and the cluster is gone by 0.2 V
    assert at(ccv, "cluster_shift_ppm", 17.5) < at(ccv, "cluster_shift_ppm", 16.29) - 15
    t02 = ccv.t_s[(ccv.step_index == 2) & (ccv.potential_V >= 0.2)][0]
    assert np.interp(t02, ccv.t_s, ccv.cluster_amount) < 1e-4
    # partial (soft) short at the end of delithiation, at high potential, no plating
    assert ccv.short_kind == "soft" and 20.5 * H < ccv.t_short_s < 23 * H
    assert at(ccv, "potential_V", ccv.t_short_s / H) > 0.5
    assert ccv.t_metal_onset_s is None


# ---- CC overlithiation (Fig. 4) --------------------------------------------------------------

def test_overlithiation_timeline(overlith):
    tr = overlith
    assert at(tr, "potential_V", 0.3) < 0                        # below 0 V at once
    v50 = at(tr, "potential_V", 50 / 60)
    assert v50 == pytest.approx(-0.020, abs=0.005)               # about -20 mV at 50 min
    assert abs(at(tr, "potential_V", 1.6) - v50) < 0.008          # flat about 1 h
    before = tr.t_s < tr.t_short_s
    assert tr.potential_V[before].min() == pytest.approx(-0.22, abs=0.08)  # decays to -0.22 V
    ce0 = tr.ce_amount[0]
    assert at(tr, "ce_amount", 1.3) > 0.9 * ce0                  # CE falls from 1.5 h ...
    assert at(tr, "ce_amount", 2.5) < 0.25 * ce0                 # ... mostly gone by 2.5 h
    assert 70 <= at(tr, "cluster_shift_ppm", 2.5) <= 90          # weak cluster ~80 ppm grows
    assert at(tr, "cluster_amount", 2.5) > at(tr, "cluster_amount", 1.0)
    assert tr.t_metal_onset_s is None                            # no dendrite peak
    assert tr.t_short_s / H == pytest.approx(3.0, abs=0.25)


def test_overlithiation_higher_current_shorts_earlier(overlith):
    fam = FAMILIES["hc_sulfide_overlithiation"]
    fast = simulate(_scale_protocol(fam.protocol, 1.3, 0.0), fam.cell, dt_s=fam.dt_s, rng=0)
    slow = simulate(_scale_protocol(fam.protocol, 0.8, 0.0), fam.cell, dt_s=fam.dt_s, rng=0)
    assert fast.t_short_s < overlith.t_short_s
    assert slow.t_short_s is None or slow.t_short_s > overlith.t_short_s


# ---- low stack pressure (Fig. S4) ------------------------------------------------------------

def test_lowpressure_timeline(lowp):
    assert lowp.t_metal_onset_s / H == pytest.approx(1.7, abs=0.25)
    assert lowp.t_short_s / H == pytest.approx(3.1, abs=0.25)
    assert lowp.cluster_amount.max() < 2e-3                     # no clusters
    assert -0.15 < at(lowp, "potential_V", 0.5) < -0.05          # plateau near -0.1 V at once
    assert at(lowp, "potential_V", 2.2) < at(lowp, "potential_V", 1.5) - 0.02  # drop after onset
    assert at(lowp, "metal_amount", 3.0) > at(lowp, "metal_amount", 2.2) > 0.005  # dendrite grows


def test_lowpressure_more_pressure_delays_or_prevents_dendrites(lowp):
    higher = run("hc_sulfide_lowpressure", stack_pressure_MPa=12)
    assert higher.t_metal_onset_s is None or higher.t_metal_onset_s > lowp.t_metal_onset_s + 600
    assert higher.cluster_amount.max() > 10 * lowp.cluster_amount.max()
    high = run("hc_sulfide_lowpressure", stack_pressure_MPa=35)
    assert high.t_metal_onset_s is None and high.t_short_s is None


def test_lowpressure_higher_current_earlier_short(lowp):
    fam = FAMILIES["hc_sulfide_lowpressure"]
    fast = simulate(_scale_protocol(fam.protocol, 1.25, 0.0), fam.cell, dt_s=fam.dt_s, rng=0)
    assert fast.t_metal_onset_s < lowp.t_metal_onset_s
    assert fast.t_short_s < lowp.t_short_s


# ---- hold at -5.5 mV (Fig. 5) ----------------------------------------------------------------

def test_hold_timeline(hold):
    assert hold.short_kind == "hard"
    assert hold.t_short_s / H == pytest.approx(10.8, abs=0.25)
    assert hold.cluster_shift_ppm[0] == pytest.approx(74, abs=3)
    assert 90 <= at(hold, "cluster_shift_ppm", 10.5) <= 100
    assert at(hold, "cluster_amount", 10.5) > at(hold, "cluster_amount", 6) > at(hold, "cluster_amount", 2)
    pre = hold.t_s < hold.t_short_s
    assert hold.metal_amount[pre].max() == 0.0                     # no dendrite before the short
    assert at(hold, "metal_amount", 11.5) > 0.01                    # metal signals jump after it
    assert at(hold, "ce_amount", 11.5) > hold.ce_amount[0] + 0.01
    # electrochemical precursor only: current creeps up during the last hour
    i_late = at(hold, "current_A", hold.t_short_s / H - 0.1)
    i_before = at(hold, "current_A", hold.t_short_s / H - 2.0)
    assert i_late > 1.3 * i_before
    assert at(hold, "current_A", 11.5) > 20 * i_before             # hard short
    assert FAMILIES["hc_sulfide_hold"].has_short_precursors is False


def test_hold_more_negative_potential_shorts_earlier(hold):
    fam = FAMILIES["hc_sulfide_hold"]
    deeper = simulate(_scale_protocol(fam.protocol, 1.0, -0.003), fam.cell, dt_s=fam.dt_s, rng=0)
    shallower = simulate(_scale_protocol(fam.protocol, 1.0, +0.003), fam.cell, dt_s=fam.dt_s, rng=0)
    assert deeper.t_short_s < hold.t_short_s
    assert shallower.t_short_s is None or shallower.t_short_s > hold.t_short_s


# ---- liquid HC, graphite, LLZO -------------------------------------------------------------

def test_liquid_holds_minus_50_mV_without_short():
    tr = run("hc_liquid")
    assert tr.t_short_s is None
    late = (tr.t_s > 2.5 * H)
    assert np.all((tr.potential_V[late] > -0.07) & (tr.potential_V[late] < -0.04))
    assert tr.duration_s - 2.5 * H >= 3.0 * H
    assert np.nanmax(tr.cluster_shift_ppm) > 100
    closed = tr.phys["closed_cluster_mAh_per_g"]
    t_on = tr.t_metal_onset_s
    assert np.interp(t_on, tr.t_s, closed) > 0.97 * closed.max()   # dendrites after the pores fill


def test_graphite_overcharge_plates_then_partly_reinserts():
    tr = run("graphite_overcharge")
    x_on = np.interp(tr.t_metal_onset_s, tr.t_s, tr.phys["host_mAh_per_g"]) / 372
    assert x_on > 0.7
    rest = tr.step_index == 1
    m = tr.metal_amount
    assert m[rest][-1] < 0.95 * m[rest][0] and m[rest][-1] > 0.3 * m[rest][0]
    assert tr.t_short_s is None and tr.cluster_amount.max() == 0


def test_llzo_polarization_stages_and_short():
    tr = run("li_llzo_li")
    day = 86400.0
    assert tr.t_short_s / day == pytest.approx(7.6, abs=0.3)
    assert tr.short_kind == "hard"
    assert abs(at(tr, "potential_V", 1.0 * 24)) == pytest.approx(0.05, abs=0.01)
    assert abs(at(tr, "potential_V", 6.0 * 24)) > abs(at(tr, "potential_V", 1.0 * 24))
    # sudden polarization just before the short, then collapse to ~0 V
    t_s = tr.t_short_s / H
    assert abs(at(tr, "potential_V", t_s - 0.3)) > 2 * abs(at(tr, "potential_V", t_s - 24))
    assert abs(at(tr, "potential_V", t_s + 2)) < 1e-3

    def rate(d0, d1):
        return (at(tr, "metal_amount", d1 * 24) - at(tr, "metal_amount", d0 * 24)) / (d1 - d0)
    fast1, stall, fast3, slow4 = rate(0, 0.4), rate(1.5, 3.0), rate(4.0, 5.0), rate(6.3, 7.3)
    assert stall < 0.2 * fast1 and fast3 > 3 * stall and slow4 < 0.8 * fast3


def test_llzo_higher_current_density_shorts_earlier():
    fam = FAMILIES["li_llzo_li"]
    base = fam.simulate(0)
    fast = simulate(_scale_protocol(fam.protocol, 1.25, 0.0), fam.cell, dt_s=fam.dt_s, rng=0)
    assert fast.t_short_s < base.t_short_s


@pytest.mark.parametrize("name", ["hc_normal_cycling", "graphite_normal_cycling"])
def test_normal_cycling_has_no_plating_or_short(name):
    tr = run(name)
    assert tr.t_short_s is None and tr.t_metal_onset_s is None
    assert tr.metal_amount.max() == 0.0
    assert len(set(tr.step_index)) == len(tr.protocol.steps)      # every cycle completed
    # normal means no counter-electrode voids either: their CE loss and polarization are a short
    # precursor in other families (at 50 mA/g this family lost ~95 % of its CE signal)
    assert tr.ce_amount.min() > 0.99 * tr.ce_amount[0]


def test_latent_at_interpolates_and_masks_shift(ccv):
    lat = ccv.latent_at([0.0, 16.0 * H])
    assert math.isnan(lat["cluster_shift_ppm"][0]) and lat["cluster_shift_ppm"][1] > 80
    one = ccv.latent_at(16.0 * H)
    assert isinstance(one["cluster_amount"], float)
    assert one["cluster_amount"] == pytest.approx(lat["cluster_amount"][1])


def test_seeded_determinism():
    a, b = run("hc_sulfide_hold", rng=3), run("hc_sulfide_hold", rng=3)
    assert np.array_equal(a.current_A, b.current_A)


def test_randomized_normal_cycling_keeps_its_ce_and_grows_clusters():
    """Over randomized seeds the hard-carbon normal-cycling family is what it says: clusters
    grow (cluster_growth frames) and the CE signal stays (no stripping voids)."""
    from lisentry.datasets.sim.run import simulate_run
    for seed in range(4):
        sim = simulate_run("hc_normal_cycling", seed, randomize=True, max_frames=400)
        ce = np.array([lat["ce_amount"] for lat in sim.latents])
        assert ce.min() > 0.99 * ce[0], seed
        assert "cluster_growth" in set(map(str, sim.labels)), seed
        assert not {"plating_onset", "imminent_short"} & set(map(str, sim.labels)), seed


def test_deformed_ce_is_a_constant_272_ppm_line_and_not_plating():
    """interfaces.md: the initial electrode lines include a constant 272 ppm component of a
    deformed electrode; it is part of the CE (ce_amount), never plating."""
    from lisentry.datasets.sim.cell import simulate
    from lisentry.datasets.sim.spectra import lines_from_latent
    from lisentry.datasets.sim.truth import label_frames
    fam = FAMILIES["hc_sulfide_hold"]
    plain = fam.simulate(0)
    bent = simulate(fam.protocol, fam.cell.replace(ce_deformed_fraction=0.2), dt_s=fam.dt_s, rng=0)
    d = bent.ce_deformed_amount
    assert np.ptp(d) == 0 and d[0] > 0                            # constant
    # the whole CE is the same at t = 0; the deformed part keeps its contact when voids open
    assert bent.ce_amount[0] == pytest.approx(plain.ce_amount[0], rel=1e-3)
    assert bent.ce_amount.min() >= d[0]
    t = np.linspace(0, plain.t_s[-1], 40)
    assert list(label_frames(t, bent)) == list(label_frames(t, plain))
    lines = lines_from_latent({**bent.latent_at(float(t[1])), "host_kind": "hard_carbon"})
    kinds = {ln.kind: ln for ln in lines}
    assert kinds["ce_deformed"].shift_ppm == 272.0
    assert kinds["ce_deformed"].amplitude == pytest.approx(d[0])
    assert kinds["ce_metal"].amplitude == pytest.approx(bent.latent_at(float(t[1]))["ce_amount"] - d[0])
