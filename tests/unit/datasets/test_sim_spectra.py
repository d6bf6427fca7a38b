"""Tests of the simulator's NMR physics (lines from latent state, analytic FIDs, artefacts).

Expected values are computed independently: ppm axes from SW/SFO1/SF by hand, areas by
trapezoidal integration, nmrglue for the digital filter."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import nmrglue as ng
import numpy as np
import pytest

from lisentry.datasets.errors import ConfigError
from lisentry.datasets.frame import RawFrame
from lisentry.datasets.sim.acquisition import (
    AcquisitionConfig, FrameArtefacts, add_digital_filter_delay, draw_run_artefacts, make_raw_frame,
    synthesize_fid, topspin_spectrum)
from lisentry.datasets.sim.nmr_params import NMRParams
from lisentry.datasets.sim.spectra import Line, lines_from_latent, peak_fwhm

NOISELESS = dict(snr=float("inf"))


def plain_spectrum(fid, acq: AcquisitionConfig, zf: int = 4):
    """Independent processing: undo the filter delay by hand-rolled time shift, FFT, axis from SFO1/SF."""
    n = fid.size
    g = acq.group_delay_pts
    k = np.fft.fftfreq(n) * n
    undelayed = np.fft.ifft(np.fft.fft(fid) * np.exp(2j * np.pi * k * g / n)) * np.exp(-1j * np.pi * g)
    spec = np.fft.fftshift(np.fft.fft(undelayed, n * zf))
    f_hz = (np.arange(n * zf) - n * zf / 2) * acq.sw_Hz / (n * zf)       # offset from carrier, ascending
    sf = acq.field_MHz * 0.38863797 + acq.sr_Hz * 1e-6                   # 0 ppm frequency, MHz
    sfo1 = sf * (1 + acq.carrier_ppm * 1e-6)
    ppm = ((sfo1 + f_hz * 1e-6) - sf) / sf * 1e6
    return ppm, spec


def synth(lines, acq, seed=0, art=None):
    return synthesize_fid(lines, acq, np.random.default_rng(seed), frame_artefacts=art)


@pytest.mark.parametrize("field", [300.0, 500.0, 800.0])
@pytest.mark.parametrize("shift", [-50.0, 3.0, 91.0, 272.0, 380.0])
def test_peak_at_requested_ppm(field, shift):
    acq = AcquisitionConfig(field_MHz=field, sw_Hz=250_000.0, td=8192, carrier_ppm=120.0, sr_Hz=1234.0,
                            **NOISELESS)
    fid, _ = synth([Line(shift, 4.0, 1.0, 1.0, 0.0, "metal")], acq)
    ppm, spec = plain_spectrum(fid, acq)
    assert abs(ppm[np.argmax(spec.real)] - shift) < 0.15


def test_areas_proportional_to_amplitudes():
    acq = AcquisitionConfig(td=16384, **NOISELESS)
    amps = [0.2, 0.5, 1.3]
    shifts = [0.0, 90.0, 265.0]
    lines = [Line(s, 8.0, a, 0.0, 0.0, "x") for s, a in zip(shifts, amps)]
    fid, _ = synth(lines, acq)
    ppm, spec = plain_spectrum(fid, acq)
    areas = [np.trapezoid(spec.real[(ppm > s - 40) & (ppm < s + 40)], ppm[(ppm > s - 40) & (ppm < s + 40)])
             for s in shifts]
    np.testing.assert_allclose(np.array(areas) / areas[0], np.array(amps) / amps[0], rtol=0.01)
    # whole-spectrum integral of mixed shapes (Lorentzian tails included) tracks the total amplitude
    mixed = [Line(10.0, 6.0, 0.4, 1.0), Line(150.0, 30.0, 0.9, 0.3), Line(270.0, 12.0, 0.3, 0.0)]
    _, s1 = plain_spectrum(synth(mixed, acq)[0], acq)
    _, s2 = plain_spectrum(synth(mixed[:1], acq)[0], acq)
    assert s1.real.sum() / s2.real.sum() == pytest.approx(1.6 / 0.4, rel=1e-6)


def test_ce_shift_follows_orientation():
    acq = AcquisitionConfig(**NOISELESS)
    for theta, expected in [(0.0, 272.0), (30.0, 265.0), (45.0, 252.0), (90.0, 242.0), (60.0, 252 - 10 / 3)]:
        lines = lines_from_latent(dict(ce_amount=1.0, ce_orientation_deg=theta),
                                  NMRParams(ce_dispersive=0.0))
        assert lines[0].kind == "ce_metal" and lines[0].shift_ppm == pytest.approx(expected)
        ppm, spec = plain_spectrum(synth(lines, acq)[0], acq)
        assert abs(ppm[np.argmax(spec.real)] - expected) < 0.2
    with pytest.raises(ConfigError):
        lines_from_latent(dict(ce_amount=1.0, ce_orientation_deg=120.0))


def test_lines_from_latent_kinds_and_nan_cluster():
    lat = dict(host_amount=0.3, cluster_amount=0.0, cluster_shift_ppm=float("nan"), metal_amount=0.1,
               metal_shift_ppm=278.0, ce_amount=0.6, electrolyte_amount=0.4, sei_amount=0.05,
               electrolyte_shift_ppm=4.0, host_kind="hard_carbon", ce_orientation_deg=90.0)
    kinds = {l.kind: l for l in lines_from_latent(lat)}
    assert set(kinds) == {"electrolyte", "sei", "host", "ce_metal", "metal"}
    assert kinds["metal"].shift_ppm == 278.0 and kinds["electrolyte"].shift_ppm == 4.0
    lat2 = dict(lat, cluster_amount=0.2, cluster_shift_ppm=91.0)
    cl = [l for l in lines_from_latent(lat2) if l.kind == "cluster"][0]
    cl_small = [l for l in lines_from_latent(dict(lat2, cluster_shift_ppm=20.0)) if l.kind == "cluster"][0]
    assert cl.shift_ppm == 91.0 and cl.width_ppm > cl_small.width_ppm    # broader as it moves up
    assert [l for l in lines_from_latent(dict(lat, host_kind="graphite")) if l.kind == "host"][0].shift_ppm == 43.0
    with pytest.raises(ConfigError, match="graphite"):
        lines_from_latent(dict(lat, host_kind="grafite"))


def test_noise_scales_inverse_sqrt_ns():
    lines = [Line(0.0, 5.0, 1.0)]
    stds = {}
    for ns in (16, 256):
        acq = AcquisitionConfig(ns=ns, snr=200.0, snr_ns=16, td=8192)
        fid0, _ = synthesize_fid(lines, acq, np.random.default_rng(1), frame_artefacts=FrameArtefacts(noise=False))
        vals = []
        for seed in range(6):
            fid, _ = synth(lines, acq, seed=seed)
            vals.append(np.std((fid - fid0).real))
        stds[ns] = np.mean(vals)
    assert stds[16] / stds[256] == pytest.approx(4.0, rel=0.05)


def test_snr_definition_holds():
    acq = AcquisitionConfig(snr=300.0, td=8192)
    n = acq.n_complex
    noise = synthesize_fid([], acq, np.random.default_rng(3), frame_artefacts=None)[0]
    noise_spec_std = np.std(np.fft.fft(noise).real)
    w = 10.0 * acq.sf_MHz                                   # reference Lorentzian, 10 ppm FWHM
    h = np.sum(np.exp(-np.pi * w * np.arange(n) / acq.sw_Hz))
    assert h / noise_spec_std == pytest.approx(300.0, rel=0.05)


def test_widths_constant_in_ppm_for_susceptibility_lines_and_homogeneous_shrink():
    sus = [Line(250.0, 10.0, 1.0, 1.0, 0.0, "metal")]
    hom = [Line(0.0, 0.0, 1.0, 1.0, 0.0, "electrolyte", width_Hz=300.0)]
    w_sus, w_hom = [], []
    for field in (300.0, 800.0):
        acq = AcquisitionConfig(field_MHz=field, sw_Hz=320_000.0, td=32768, **NOISELESS)
        ppm, s = plain_spectrum(synth(sus, acq)[0], acq)
        w_sus.append(peak_fwhm(ppm, s.real, 230, 270)[2])
        ppm, s = plain_spectrum(synth(hom, acq)[0], acq)
        w_hom.append(peak_fwhm(ppm, s.real, -10, 10)[2])
    assert w_sus[0] == pytest.approx(10.0, rel=0.03) and w_sus[1] == pytest.approx(10.0, rel=0.03)
    sf = [300.0 * 0.38863797, 800.0 * 0.38863797]
    assert w_hom[0] == pytest.approx(300.0 / sf[0], rel=0.05) and w_hom[1] == pytest.approx(300.0 / sf[1], rel=0.05)


@pytest.mark.parametrize("decim,dspfvs,grpdly,truncate", [(2, 10, -1.0, False), (16, 20, 76.0, True),
                                                          (8, 20, 67.987, False)])
def test_digital_filter_removable_by_nmrglue(decim, dspfvs, grpdly, truncate):
    acq = AcquisitionConfig(decim=decim, dspfvs=dspfvs, grpdly=grpdly, td=4096, **NOISELESS)
    lines = [Line(0.0, 3.0, 1.0), Line(260.0, 12.0, 0.7, 0.3)]
    fid, params = synth(lines, acq)
    g = params.group_delay_pts
    assert g > 30
    assert np.abs(fid[: int(g) - 8]).max() < 0.02 * np.abs(fid).max()     # filter delay: empty first points
    dic = {"acqus": {"DECIM": decim, "DSPFVS": dspfvs, "GRPDLY": grpdly}}
    spec = ng.bruker.remove_digital_filter(dic, ng.proc_base.fft(fid), truncate=truncate, post_proc=True)
    fid0, _ = synth(lines, acq.replace(decim=2, dspfvs=20, grpdly=0.0))   # grpdly 0 + DSPFVS>=14: no delay
    # the FID carries exp(i pi g) so that TopSpin-ordered (conjugated) processing needs no
    # extra zero-order phase; in this unconjugated order the leftover is exp(2 i pi g)
    ref = ng.proc_base.fft(fid0) * np.exp(2j * np.pi * g)
    np.testing.assert_allclose(spec, ref, atol=1e-9 * np.abs(ref).max())


def test_add_digital_filter_delay_integer_shift_is_roll():
    x = np.exp(-np.arange(256) / 20.0) * np.exp(0.3j * np.arange(256))
    np.testing.assert_allclose(add_digital_filter_delay(x, 5), np.roll(x, 5), atol=1e-12)


def test_phase_truth_makes_lines_absorptive():
    acq = AcquisitionConfig.li_li_tegdme().replace(**NOISELESS)
    lines = [Line(248.0, 7.0, 1.0, 1.0, 0.0), Line(-1.0, 4.0, 0.5, 1.0, 0.0)]
    art = FrameArtefacts(phc0_deg=231.0, phc1_deg=-80.0)
    fid, params = synth(lines, acq, art=art)
    ppm, s = topspin_spectrum(fid, params, phase_deg=(231.0, -80.0))
    for x0 in (248.0, -1.0):
        i = np.argmin(np.abs(ppm - x0))
        assert abs(s.imag[i]) < 0.02 * s.real[i]           # dispersion vanishes at the peak
    ppm2, s2 = topspin_spectrum(fid, params, phase_deg=(0.0, 0.0))
    i = np.argmin(np.abs(ppm2 - 248.0))
    assert abs(s2.imag[i]) > 0.3 * abs(s2[i])               # unphased: not absorptive


def test_skin_effect_dispersion_cannot_be_phased_away_with_electrolyte():
    acq = AcquisitionConfig.li_li_tegdme().replace(**NOISELESS)
    lines = [Line(248.0, 7.0, 1.0, 1.0, 0.3), Line(-1.0, 4.0, 0.5, 1.0, 0.0)]
    ppm, s = topspin_spectrum(*synth(lines, acq), phase_deg=(0.0, 0.0))
    i = np.argmin(np.abs(ppm - 248.0))
    # at the true shift the metal line is cos(phase) absorption + sin(phase) dispersion: Im/Re = tan(asin 0.3)
    assert s.imag[i] / s.real[i] == pytest.approx(-np.tan(np.arcsin(0.3)), abs=0.03) or \
        s.imag[i] / s.real[i] == pytest.approx(np.tan(np.arcsin(0.3)), abs=0.03)


def test_reference_drift_moves_lines_not_axis():
    acq = AcquisitionConfig(**NOISELESS)
    fid, params = synth([Line(100.0, 3.0, 1.0)], acq, art=FrameArtefacts(ref_drift_ppm=1.5))
    ppm, spec = plain_spectrum(fid, acq)
    assert abs(ppm[np.argmax(spec.real)] - 101.5) < 0.15
    assert params.extra["SIM_REF_DRIFT_PPM"] == 1.5 and params.sr_Hz == acq.sr_Hz


def test_baseline_roll_and_dc():
    acq = AcquisitionConfig(**NOISELESS)
    lines = [Line(0.0, 5.0, 1.0)]
    clean, _ = synth(lines, acq)
    rolled, _ = synth(lines, acq, art=FrameArtefacts(roll=(0.01, 0.005j), dc_rel=0.02))
    ppm, a = plain_spectrum(clean, acq, zf=1)
    _, b = plain_spectrum(rolled, acq, zf=1)
    far = (ppm < -80) | (ppm > 300)
    assert 0.005 * a.real.max() < np.ptp((b - a).real[far]) < 0.06 * a.real.max()


def test_determinism_by_seed_and_run_artefacts():
    lat = dict(host_amount=0.3, ce_amount=0.6, electrolyte_amount=0.4, metal_amount=0.05, metal_shift_ppm=270.0)
    acq = AcquisitionConfig.random(np.random.default_rng(5))
    arts = draw_run_artefacts(5, np.random.default_rng(9))
    assert arts == draw_run_artefacts(5, np.random.default_rng(9))
    assert max(abs(arts[i + 1].phc0_deg - arts[i].phc0_deg) % 360 for i in range(4)) < 60
    f1, p1 = synth(lines_from_latent(lat), acq, seed=7, art=arts[2])
    f2, p2 = synth(lines_from_latent(lat), acq, seed=7, art=arts[2])
    f3, _ = synth(lines_from_latent(lat), acq, seed=8, art=arts[2])
    assert np.array_equal(f1, f2) and not np.array_equal(f1, f3)
    assert f1.dtype == np.complex128 and f1.shape == (acq.td // 2,)


def test_random_config_covers_range():
    rng = np.random.default_rng(0)
    for _ in range(30):
        acq = AcquisitionConfig.random(rng)
        lo, hi = acq.ppm_range
        assert lo <= -100 and hi >= 400 and 300 <= acq.field_MHz <= 850 and 4096 <= acq.n_complex <= 16384
    with pytest.raises(ConfigError, match="sw_Hz"):
        AcquisitionConfig(field_MHz=850.0, sw_Hz=50_000.0)


def test_make_raw_frame():
    acq = AcquisitionConfig()
    art = FrameArtefacts(phc0_deg=12.0, phc1_deg=-30.0)
    fid, params = synth([Line(0.0, 4.0, 1.0)], acq, art=art)
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    rf = make_raw_frame(fid, params, t0, t0 + timedelta(seconds=params.duration_s), "sim/run1", 3)
    assert isinstance(rf, RawFrame) and rf.time_source == "simulated" and rf.expno == 3
    assert rf.phase_deg == (12.0, -30.0) and rf.acq.extra["DECIM"] == 2 and rf.fid.shape == (acq.td // 2,)
    assert rf.acq.bf1_MHz == pytest.approx(500.0 * 0.38863797)
    with pytest.raises(ConfigError):
        make_raw_frame(fid[:-1], params, t0, t0, "x", 1)


def test_procs_phases_carry_a_phasing_error_and_true_phases_stay_in_the_truth():
    """The phases a simulated run writes to ``procs`` are an estimate: per-run offset plus a
    per-frame jitter from the truth; with zero errors they are the truth; the noise stream
    does not depend on them."""
    from lisentry.datasets.sim.acquisition import ArtefactConfig, draw_run_artefacts
    from lisentry.datasets.sim.run import simulate_run
    cfg = ArtefactConfig(procs_phc0_error_deg=10.0, procs_phc1_error_deg=20.0,
                         procs_phc0_jitter_deg=1.0, procs_phc1_jitter_deg=2.0)
    errs = []
    for seed in range(40):
        arts = draw_run_artefacts(30, np.random.default_rng(seed), cfg)
        e = np.array([a.procs_error_deg for a in arts])
        assert np.std(e[:, 0]) < 3.0 and np.std(e[:, 1]) < 6.0     # jitter within a run
        errs.append(e.mean(axis=0))
    errs = np.array(errs)
    assert 5.0 < np.std(errs[:, 0]) < 16.0 and 10.0 < np.std(errs[:, 1]) < 32.0   # offsets between runs
    exact = ArtefactConfig(procs_phc0_error_deg=0.0, procs_phc1_error_deg=0.0,
                           procs_phc0_jitter_deg=0.0, procs_phc1_jitter_deg=0.0)
    a = simulate_run("graphite_normal_cycling", 3, max_frames=3, artefacts=exact)
    b = simulate_run("graphite_normal_cycling", 3, max_frames=3, artefacts=cfg)
    for ra, rb in zip(a.raws, b.raws):
        ex = rb.acq.extra
        assert ra.phase_deg == (pytest.approx(ex["SIM_PHC0"]), pytest.approx(ex["SIM_PHC1"]))
        d0 = (rb.phase_deg[0] - ex["SIM_PHC0"] + 180.0) % 360.0 - 180.0
        assert d0 != 0.0 and rb.phase_deg[1] != ex["SIM_PHC1"]
        np.testing.assert_array_equal(ra.fid, rb.fid)               # same FID, other procs


def test_randomized_runs_draw_their_own_line_shapes_and_keep_the_truth():
    from lisentry.datasets.sim.nmr_params import NMRParams
    from lisentry.datasets.sim.run import simulate_run
    shapes = [NMRParams().randomized(np.random.default_rng(s)) for s in range(200)]
    ce = np.array([p.ce_dispersive for p in shapes])
    assert ce.min() < 0.1 and ce.max() > 0.6                          # up to the Dyson 45 deg limit
    w = np.array([p.metal_width_ppm for p in shapes]) / NMRParams().metal_width_ppm
    assert 0.7 <= w.min() < 0.8 and 1.4 < w.max() <= 1.5
    a = simulate_run("li_liquid_li_cycling", 5, max_frames=4)
    b = simulate_run("li_liquid_li_cycling", 6, max_frames=4)
    assert a.labels == simulate_run("li_liquid_li_cycling", 5, max_frames=4).labels
    assert not np.allclose(a.raws[0].fid[:50], b.raws[0].fid[:50])
