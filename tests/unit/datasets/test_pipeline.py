"""Tests of the processing pipeline on synthetic FIDs built here from known lines."""
from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import nmrglue as ng
import numpy as np
import pytest

from lisentry.datasets.errors import ConfigError, InputError
from lisentry.datasets.frame import AcquisitionParams, RawFrame
from lisentry.datasets.pipeline import Pipeline, ProcessingConfig
from lisentry.datasets.processing import (als_baseline, bruker_spectrum, poly_baseline,
                                          resample_to_grid)

# a 300 MHz (7Li 116.64 MHz) static setup like the real run
BF1 = 116.641914
SR = 42672.355          # Hz; SF = BF1 + SR
O1 = 58695.43           # Hz
SW = 93457.9439252336   # Hz
G = 44.75               # DECIM 2, DSPFVS 10


def _delay(fid: np.ndarray, pts: float) -> np.ndarray:
    """Exact band-limited delay of a FID by ``pts`` complex points."""
    n = fid.size
    nu = np.fft.fftfreq(n) * n
    return np.fft.ifft(np.fft.fft(fid) * np.exp(-2j * np.pi * nu * pts / n))


def make_raw(lines, *, n=2048, sw=SW, o1=O1, sr=SR, acq_sr=True, gd=G, alpha_deg=0.0,
             extra_delay_pts=0.0, expno=1, nucleus="7Li", fwhm_Hz=800.0, line_sr=None):
    """Stored-convention Bruker FID of Lorentzians ``(ppm, amplitude)`` relative to SF=BF1+SR.

    A line ``f`` Hz above the carrier rotates as ``exp(+2 pi i f t)``. ``alpha_deg`` is a
    receiver phase, ``extra_delay_pts`` a delay beyond the digital filter's ``gd``.
    """
    sfo1 = BF1 + o1 * 1e-6
    sf = BF1 + (sr if line_sr is None else line_sr) * 1e-6
    t = np.arange(n) / sw
    fid = np.zeros(n, complex)
    for ppm, amp in lines:
        f = (sf * (1 + ppm * 1e-6) - sfo1) * 1e6
        fid += amp * np.exp(2j * np.pi * f * t - np.pi * fwhm_Hz * t)
    fid = _delay(fid, gd + extra_delay_pts) * np.exp(1j * np.deg2rad(alpha_deg))
    acq = AcquisitionParams(nucleus=nucleus, sfo1_MHz=sfo1, bf1_MHz=BF1, o1_Hz=o1, sw_Hz=sw,
                            td=2 * n, ns=16, group_delay_pts=gd, sr_Hz=sr if acq_sr else None)
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=10 * expno)
    return RawFrame(source=Path(f"run/{expno}"), expno=expno, acq=acq, acq_start=t0,
                    acq_end=t0 + timedelta(minutes=5), fid=fid)


def expected_phase(alpha_deg, gd, delay):
    """(PHC0, PHC1) that undo receiver phase ``alpha`` and delays (derived by hand:
    conj flips alpha's sign; a delay D gives exp(-2 pi i D (k - N/2) / N); the filter removal
    multiplies by exp(2 pi i gd k / N))."""
    return (alpha_deg - 180.0 * (gd + delay)) % 360.0, 360.0 * delay


def local_max_ppm(grid, y, near, half=5.0):
    sel = np.flatnonzero(np.abs(grid - near) <= half)
    return grid[sel[np.nanargmax(y[sel])]]


def cfg(**kw):
    base = dict(lb_Hz=0.0, baseline="none", phase="fixed")
    base.update(kw)
    return ProcessingConfig(**base)


# --------------------------------------------------------------------------- grid and axis
def test_default_grid():
    g = Pipeline().ppm_grid
    assert g.dtype == np.float64 and g.size == 1001
    assert g[0] == -100.0 and g[-1] == 400.0 and np.all(np.diff(g) > 0)


@pytest.mark.parametrize("o1,sr", [(O1, SR), (20000.0, 0.0), (-15000.0, 1234.5)])
def test_peak_positions_within_one_grid_step(o1, sr):
    lines = [(-2.0, 1.0), (43.0, 0.5), (251.3, 1.5)]
    p0, p1 = expected_phase(0.0, G, 0.0)
    pipe = Pipeline(cfg(phase0_deg=p0, phase1_deg=p1, ppm_min=-150, ppm_max=350))
    y = pipe.process(make_raw(lines, o1=o1, sr=sr))
    for ppm, _ in lines:
        assert abs(local_max_ppm(pipe.ppm_grid, y, ppm) - ppm) <= pipe.config.ppm_step
    # absorptive: the correct phase leaves almost no negative area
    assert -np.nansum(np.minimum(y, 0)) < 0.02 * np.nansum(np.abs(y))


def test_sr_from_config_when_data_have_none():
    raw = make_raw([(100.0, 1.0)], acq_sr=False)          # acq.sr_Hz None, true SR = SR
    p0, p1 = expected_phase(0.0, G, 0.0)
    with_cfg = Pipeline(cfg(phase0_deg=p0, phase1_deg=p1, sr_Hz=SR)).process(raw)
    without = Pipeline(cfg(phase0_deg=p0, phase1_deg=p1)).process(raw)
    grid = Pipeline().ppm_grid
    assert abs(grid[np.nanargmax(with_cfg)] - 100.0) <= 0.5
    # without SR the axis is off by SR / SF (366 ppm here): the line leaves the grid window
    off = SR / (BF1 + SR * 1e-6)
    assert off > 300 and abs(grid[np.nanargmax(without)] - 100.0) > 100


def test_reference_peak_shift():
    true_shift = 3.7
    # the data's SR puts the lines 3.7 ppm too high: the frozen shift must be -3.7 ppm
    raw = make_raw([(0.0, 1.0), (245.0, 2.0)], line_sr=SR + true_shift * BF1)
    p0, p1 = expected_phase(0.0, G, 0.0)
    pipe = Pipeline(cfg(phase0_deg=p0, phase1_deg=p1, reference_peak_ppm=245.0,
                        reference_window_ppm=10.0))
    y = pipe.process(raw)
    assert abs(local_max_ppm(pipe.ppm_grid, y, 245.0) - 245.0) <= 0.5
    assert abs(pipe.ref_shift_ppm_ + true_shift) < 0.3
    # frozen: a second frame whose peak moved keeps the first frame's shift
    pipe.process(make_raw([(0.0, 1.0), (250.0, 2.0)], line_sr=SR + true_shift * BF1))
    assert abs(pipe.ref_shift_ppm_ + true_shift) < 0.3


def test_nan_outside_covered_range():
    sw = 20000.0                                          # ~171 ppm window
    raw = make_raw([(50.0, 1.0)], sw=sw, o1=SR + 50 * BF1, fwhm_Hz=300.0)  # centred ~50 ppm
    pipe = Pipeline(cfg(phase="none", zero_fill=1))
    y = pipe.process(raw)
    sf = BF1 + SR * 1e-6
    centre = (BF1 + O1 * 1e-6 * 0 + (SR + 50 * BF1) * 1e-6 - sf) * 1e6 / sf
    half = sw / 2 / sf
    g = pipe.ppm_grid
    inside = (g > centre - half + 1) & (g < centre + half - 1)
    outside = (g < centre - half - 1) | (g > centre + half + 1)
    assert np.all(np.isfinite(y[inside])) and np.all(np.isnan(y[outside]))
    assert y.dtype == np.float32 and y.shape == g.shape


# --------------------------------------------------------------------------- resampling
def test_binning_conserves_area():
    d = 0.013
    ppm = np.arange(-300, 500, d)[::-1]                   # descending, finer than the grid
    y = 1 / (1 + ((ppm - 20.3) / 3.0) ** 2) + 0.4 / (1 + ((ppm - 250.0) / 8.0) ** 2)
    grid = np.arange(-100, 400.0001, 0.5)
    out = resample_to_grid(ppm, y, grid)
    assert np.all(np.isfinite(out))
    inside = (ppm >= -100.25) & (ppm < 400.25)
    assert np.isclose(out.sum() * 0.5, y[inside].sum() * d, rtol=1e-3)
    # coarser native spacing: interpolation, NaN outside
    coarse = np.arange(0, 300, 2.0)
    out2 = resample_to_grid(coarse, coarse ** 2, grid)
    assert np.isnan(out2[grid < 0]).all() and np.isnan(out2[grid > 298]).all()
    assert np.isclose(out2[grid == 101.0][0], (100 ** 2 + 102 ** 2) / 2)


def test_pipeline_areas_follow_amplitudes():
    lines = [(0.0, 1.0), (120.0, 2.5)]
    p0, p1 = expected_phase(0.0, G, 0.0)
    pipe = Pipeline(cfg(phase0_deg=p0, phase1_deg=p1, lb_Hz=30.0, zero_fill=4))
    y = pipe.process(make_raw(lines, fwhm_Hz=1500.0)).astype(float)
    g = pipe.ppm_grid
    y = y - np.nanmedian(y[(g > 250) & (g < 400)])       # discrete-FT offset, signal-free region
    a1 = np.nansum(y[np.abs(g - 0) < 60]); a2 = np.nansum(y[np.abs(g - 120) < 60])
    # expected: Lorentzian areas (HWHM from FWHM + LB) inside each +-60 ppm window
    hw = (1500.0 + 30.0) / 2 / (BF1 + SR * 1e-6)
    frac = lambda lo, hi, c: (np.arctan((hi - c) / hw) - np.arctan((lo - c) / hw)) / np.pi
    e1 = 1.0 * frac(-60, 60, 0) + 2.5 * frac(-60, 60, 120)
    e2 = 1.0 * frac(60, 180, 0) + 2.5 * frac(60, 180, 120)
    assert a2 / a1 == pytest.approx(e2 / e1, rel=0.02)


# --------------------------------------------------------------------------- phase
@pytest.mark.parametrize("alpha,delay", [(70.0, 0.3), (-120.0, -0.2), (200.0, 0.0)])
def test_reference_phase_recovered(alpha, delay):
    raw = make_raw([(0.0, 1.0), (45.0, 0.3), (250.0, 1.2)], alpha_deg=alpha,
                   extra_delay_pts=delay, fwhm_Hz=1200.0)
    pipe = Pipeline(cfg(phase="reference", lb_Hz=20.0))
    y = pipe.process(raw)
    e0, e1 = expected_phase(alpha, G, delay)
    p0, p1 = pipe.phase_
    # the negative-area criterion is biased by the discrete-FT offset of broad lines:
    # a tolerance of 15 / 20 degrees (measured errors 3-13 degrees)
    assert abs((p0 - e0 + 180) % 360 - 180) < 15.0
    assert abs(p1 - e1) < 20.0
    # frozen: a later frame with another phase error is processed with the first phase
    pipe.process(make_raw([(0.0, 1.0)], alpha_deg=alpha + 90))
    assert pipe.phase_ == (p0, p1)
    fixed = Pipeline(cfg(phase0_deg=e0, phase1_deg=e1, lb_Hz=20.0)).process(raw)
    assert np.corrcoef(y[np.isfinite(y)], fixed[np.isfinite(fixed)])[0, 1] > 0.99


def test_reference_phase_with_dispersive_metal_line():
    # a metal line with a 35-degree skin-effect phase must not drag the diamagnetic line off
    raw_a = make_raw([(0.0, 1.0)], alpha_deg=50.0, extra_delay_pts=0.25, fwhm_Hz=1200.0)
    raw_b = make_raw([(250.0, 0.6)], alpha_deg=50.0 + 35.0, extra_delay_pts=0.25,
                     fwhm_Hz=1200.0, gd=G)
    raw = RawFrame(source=raw_a.source, expno=1, acq=raw_a.acq, acq_start=raw_a.acq_start,
                   acq_end=raw_a.acq_end, fid=raw_a.fid + raw_b.fid)
    pipe = Pipeline(cfg(phase="reference"))
    y = pipe.process(raw)
    g = pipe.ppm_grid
    win = np.abs(g) < 15
    # diamagnetic line nearly absorptive: little negative area around it
    assert -np.minimum(y[win], 0).sum() < 0.05 * np.abs(y[win]).sum()
    assert abs(local_max_ppm(g, y, 0.0) - 0.0) <= 0.5


def test_procs_phase_used_and_fallback():
    e0, e1 = expected_phase(30.0, G, 0.1)
    raw = make_raw([(0.0, 1.0), (250.0, 1.0)], alpha_deg=30.0, extra_delay_pts=0.1)
    with_procs = RawFrame(source=raw.source, expno=1, acq=raw.acq, acq_start=raw.acq_start,
                          acq_end=raw.acq_end, fid=raw.fid, phase_deg=(e0, e1))
    a = Pipeline(cfg(phase="procs")).process(with_procs)
    b = Pipeline(cfg(phase0_deg=e0, phase1_deg=e1)).process(raw)
    np.testing.assert_array_equal(a, b)
    pipe = Pipeline(cfg(phase="procs"))
    pipe.process(raw)                                     # no procs: reference estimate
    assert pipe.phase_ is not None


# --------------------------------------------------------------------------- vs nmrglue
def test_digital_filter_removal_matches_nmrglue_post_proc():
    rng = np.random.default_rng(0)
    fid = rng.normal(size=1024) + 1j * rng.normal(size=1024)
    ours = bruker_spectrum(fid, 2048, G)
    zf = np.concatenate([np.conj(fid), np.zeros(1024)])
    spec = ng.proc_base.fft(zf)
    dic = {"acqus": {"DECIM": 2, "DSPFVS": 10, "GRPDLY": -1}}
    theirs = ng.bruker.remove_digital_filter(dic, spec, truncate=False, post_proc=True)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-9)
    # integral delay: nmrglue's default truncation gives the same
    dic_int = {"acqus": {"DECIM": 16, "DSPFVS": 20, "GRPDLY": 67.0}}
    np.testing.assert_allclose(bruker_spectrum(fid, 2048, 67.0),
                               ng.bruker.remove_digital_filter(dic_int, spec, post_proc=True),
                               rtol=1e-10, atol=1e-9)


def test_apodization_matches_nmrglue_em():
    raw = make_raw([(10.0, 1.0)], n=512)
    lb = 75.0
    ours = Pipeline(cfg(lb_Hz=lb, phase="none", dc_correct=False, zero_fill=1))
    y = ours.process(raw)
    apod = ng.proc_base.em(raw.fid, lb=lb / SW)
    ref = Pipeline(cfg(lb_Hz=0.0, phase="none", dc_correct=False, zero_fill=1))
    raw2 = RawFrame(source=raw.source, expno=1, acq=raw.acq, acq_start=raw.acq_start,
                    acq_end=raw.acq_end, fid=apod)
    np.testing.assert_allclose(y, ref.process(raw2), rtol=1e-5, atol=1e-4 * np.nanmax(np.abs(y)))


# --------------------------------------------------------------------------- run state
def _series(k=5):
    rng = np.random.default_rng(1)
    return [make_raw([(0.0, 1.0), (250.0, 1.0 + 0.2 * i)], alpha_deg=40.0, expno=i + 1,
                     n=1024) for i in range(k)]


def test_streaming_equals_batch_and_normalisation():
    raws = _series()
    c = ProcessingConfig(norm_frames=3)
    batch = Pipeline(c).process_many(raws)
    stream_pipe = Pipeline(c)
    stream = np.stack([stream_pipe.process(r) for r in raws])
    np.testing.assert_array_equal(batch, stream)
    assert batch.shape == (5, 1001) and batch.dtype == np.float32
    sums = [np.nansum(np.abs(s.astype(np.float64))) * 0.5 for s in stream]
    normed = [stream_pipe.normalise(s, i) for i, s in enumerate(stream)]
    for i, s in enumerate(stream):
        scale = np.mean(sums[: min(i, 2) + 1])
        np.testing.assert_allclose(normed[i], s / scale, rtol=1e-6, atol=1e-7)
    # the growth of the metal line survives normalisation (never per frame)
    metal = np.abs(Pipeline().ppm_grid - 250) < 30
    assert np.nansum(normed[4][metal]) / np.nansum(normed[2][metal]) == pytest.approx(1.8 / 1.4,
                                                                                     rel=0.05)


def test_state_round_trip_resumes_identically():
    raws = _series(4)
    c = ProcessingConfig(norm_frames=2, reference_peak_ppm=0.0)
    a = Pipeline(c)
    out_a = [a.normalise(a.process(r), i) for i, r in enumerate(raws)]
    b = Pipeline(c)
    for i, r in enumerate(raws[:2]):
        b.normalise(b.process(r), i)
    resumed = Pipeline.from_dict(json.loads(json.dumps(b.to_dict())))
    for i, r in enumerate(raws[2:], start=2):
        np.testing.assert_array_equal(resumed.normalise(resumed.process(r), i), out_a[i])
    assert resumed.state_dict() == a.state_dict()
    a.reset()
    assert a.phase_ is None and a.norm_sums_ == [] and a.ref_shift_ppm_ is None


def test_processed_spectrum_is_only_resampled():
    ppm = np.linspace(500, -300, 8192)
    spec = np.exp(-((ppm - 100) / 5) ** 2)
    raw = make_raw([(0.0, 1.0)])
    raw = RawFrame(source=raw.source, expno=1, acq=raw.acq, acq_start=raw.acq_start,
                   acq_end=raw.acq_end, spectrum=spec, spectrum_ppm=ppm)
    y = Pipeline().process(raw)
    np.testing.assert_allclose(y, resample_to_grid(ppm, spec, Pipeline().ppm_grid), rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------- errors and config
def test_config_round_trip_and_validation():
    c = ProcessingConfig(lb_Hz=12.5, phase="fixed", phase0_deg=10.0, sr_Hz=5.0, norm_frames=4)
    assert ProcessingConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(ConfigError, match=r"^The 'lb_Hz' parameter of ProcessingConfig must be "
                                          r">= 0\. Got -3\.$"):
        ProcessingConfig(lb_Hz=-3)
    with pytest.raises(ConfigError, match="Did you mean 'lb_Hz'"):
        ProcessingConfig.from_dict({"lb_hz": 3})
    with pytest.raises(ConfigError, match="Did you mean 'baseline_order'"):
        ProcessingConfig.from_dict({"baseline_ordr": 3})
    with pytest.raises(ConfigError, match="'phase' parameter .* Got 'automatic'"):
        ProcessingConfig(phase="automatic")
    with pytest.raises(ConfigError, match="'ppm_max'"):
        ProcessingConfig(ppm_min=10, ppm_max=5)
    with pytest.raises(ConfigError, match="'norm_frames'"):
        ProcessingConfig(norm_frames=0)


def test_input_errors_name_the_file():
    raw = make_raw([(0.0, 1.0)], nucleus="23Na")
    with pytest.raises(InputError, match=r"run/1: nucleus 23Na"):
        Pipeline().process(raw)
    bad = make_raw([(0.0, 1.0)])
    fid = bad.fid.copy(); fid[3] = np.nan
    bad = RawFrame(source=bad.source, expno=1, acq=bad.acq, acq_start=bad.acq_start,
                   acq_end=bad.acq_end, fid=fid)
    with pytest.raises(InputError, match="non-finite"):
        Pipeline().process(bad)


def test_baselines_remove_a_roll():
    x = np.linspace(-1, 1, 1001)
    roll = 0.3 + 0.2 * x - 0.5 * x ** 2 + 0.1 * x ** 3
    peaks = 5 / (1 + ((x - 0.2) / 0.01) ** 2) + 2 / (1 + ((x + 0.5) / 0.02) ** 2)
    noise = np.random.default_rng(3).normal(0, 0.01, x.size)
    y = roll + peaks + noise
    assert np.max(np.abs(poly_baseline(y, 3) - roll)) < 0.03
    assert np.median(np.abs(als_baseline(y, 1e5, 0.01) - roll)) < 0.05


def test_fid_that_stopped_early_is_refused_with_one_line():
    """A FID that is exact zeros after 5 % of its points (aborted acquisition, or TopSpin's
    zero-filled placeholder) is refused; one with a shorter run of final zeros is processed."""
    from lisentry.datasets.sim.run import simulate_run
    raw = simulate_run("graphite_normal_cycling", 2, max_frames=1).raws[0]
    pipe = Pipeline(ProcessingConfig())
    assert np.isfinite(pipe.process(raw)).any()
    fid = raw.fid.copy()
    fid[fid.size // 20:] = 0
    with pytest.raises(InputError, match=r"ends in \d+ of \d+ points that are exactly zero"):
        pipe.process(dataclasses.replace(raw, fid=fid))
    with pytest.raises(InputError, match="exactly zero"):
        pipe.process(dataclasses.replace(raw, fid=np.zeros_like(raw.fid)))
    fid = raw.fid.copy()
    fid[fid.size // 2:] = 0                        # half the points: still data
    assert np.isfinite(pipe.process(dataclasses.replace(raw, fid=fid))).any()


# --------------------------------------------------------------------------- phase alignment
# ``ProcessingConfig(phase_align="reference")``: an intense electrolyte line, a counter-
# electrode line and a weak broad cluster line whose amount is what the classes turn on; the
# ``procs`` PHC0 of each frame is off by a few degrees, as TopSpin's per-frame phasing leaves it.
from lisentry.datasets.processing.align import drift_points, residual_phase  # noqa: E402

LINES = [(4.0, 1.0), (245.0, 0.4)]
CLUSTER = (80.0, 0.02)


def _with_phase(raw: RawFrame, p0: float, p1: float) -> RawFrame:
    return dataclasses.replace(raw, phase_deg=(p0, p1))


def _frames(jitter_deg, cluster_amp):
    """Frames of the same lines (the cluster line growing), the procs PHC0 off by ``jitter_deg``."""
    p0, p1 = expected_phase(0.0, 44.75, 0.0)
    return [_with_phase(make_raw(LINES + [(CLUSTER[0], a)], expno=i + 1, fwhm_Hz=600.0), p0 + j, p1)
            for i, (j, a) in enumerate(zip(jitter_deg, cluster_amp))]


def _cluster_integral(pipe: Pipeline, y: np.ndarray) -> float:
    g = pipe.ppm_grid
    return float(np.nansum(y[(g >= 10) & (g <= 130)]) * 0.5)


@pytest.mark.parametrize("p0_deg,slope_deg", [(3.0, 0.0), (-4.0, 6.0), (25.0, -10.0)])
def test_residual_phase_recovers_a_known_twist_despite_drift(p0_deg, slope_deg):
    x = np.linspace(-100, 400, 1001)
    ref = 1 / (1 + 1j * (x - 4) / 1.0) + 0.4 / (1 + 1j * (x - 245) / 4)
    twist = np.deg2rad(p0_deg) + np.deg2rad(slope_deg) * (x - 150) / 250
    moved = 1 / (1 + 1j * (x - 4.8) / 1.0) + 0.4 / (1 + 1j * (x - 245.8) / 4)  # +0.8 ppm drift
    th = residual_phase(moved * np.exp(-1j * twist), ref)
    at = np.searchsorted(x, [4.0, 245.0])
    # without the drift correction a 0.8 ppm shift of a 2 ppm wide line reads as ~20 degrees
    np.testing.assert_allclose(np.rad2deg(th[at]), np.rad2deg(twist[at]), atol=0.5)
    assert drift_points(moved, ref) == pytest.approx(1.6, abs=0.1)   # 0.8 ppm on a 0.5 grid


def test_jitter_no_longer_reaches_the_cluster_window():
    jitter = [0.0, 2.5, -2.0, 3.0, -3.5, 1.5]
    amps = [0.02] * len(jitter)                       # nothing changes but the phase
    out = {}
    for mode in ("none", "reference"):
        pipe = Pipeline(ProcessingConfig(phase="procs", phase_align=mode, lb_Hz=0.0))
        ys = [pipe.process(r) for r in _frames(jitter, amps)]
        out[mode] = np.array([_cluster_integral(pipe, y) - _cluster_integral(pipe, ys[0])
                              for y in ys[1:]])
    scale = Pipeline(ProcessingConfig(lb_Hz=0.0)).process(_frames([0.0], [0.02])[0])
    total = float(np.nansum(np.abs(scale)) * 0.5)
    # a 3 degree error leaves a dispersive tail of percent of the total signal in 10-130 ppm ...
    assert np.max(np.abs(out["none"])) / total > 0.01
    # ... that alignment removes (far below the 0.5 % detection limit)
    assert np.max(np.abs(out["reference"])) / total < 0.001


def test_aligned_growth_is_what_exact_phases_give():
    """With jittered procs phases, the aligned cluster growth equals the growth measured with
    exact phases (the cell's signal), while the unaligned one is dominated by the jitter."""
    amps = [0.0, 0.01, 0.02, 0.03, 0.04]

    def growth(jitter, mode):
        pipe = Pipeline(ProcessingConfig(phase="procs", phase_align=mode, lb_Hz=0.0))
        ys = [pipe.process(r) for r in _frames(jitter, amps)]
        return np.array([_cluster_integral(pipe, y) - _cluster_integral(pipe, ys[0]) for y in ys])

    exact = growth([0.0] * 5, "none")
    jitter = [0.0, -3.0, 2.0, 3.0, -2.5]
    assert np.all(np.diff(exact) > 0)
    # the growing line's own long complex tail moves the estimate by ~0.1 degree: a few % of
    # the growth; the unaligned jitter of 2-3 degrees is larger than the whole growth
    np.testing.assert_allclose(growth(jitter, "reference"), exact, atol=0.2 * np.ptp(exact))
    assert np.max(np.abs(growth(jitter, "none") - exact)) > 1.0 * np.ptp(exact)


def test_alignment_state_resumes_identically():
    raws = _frames([0.0, 2.0, -1.0, 3.0], [0.0, 0.01, 0.02, 0.03])
    c = ProcessingConfig(phase="procs", phase_align="reference")
    a = Pipeline(c)
    out_a = [a.process(r) for r in raws]
    b = Pipeline(c)
    b.process(raws[0])
    resumed = Pipeline.from_dict(json.loads(json.dumps(b.to_dict())))
    for r, want in zip(raws[1:], out_a[1:]):
        np.testing.assert_array_equal(resumed.process(r), want)
    np.testing.assert_array_equal(Pipeline(c).process_many(raws), np.stack(out_a))
    a.reset()
    assert a.align_ref_ is None


def test_none_is_the_previous_processing_and_bad_values_are_refused():
    raws = _frames([0.0, 2.0], [0.0, 0.01])
    assert ProcessingConfig().phase_align == "none"
    # configs, manifests and cards written before the option stay as they were
    assert "phase_align" not in ProcessingConfig().to_dict()
    on = ProcessingConfig(phase_align="reference")
    assert ProcessingConfig.from_dict(on.to_dict()) == on
    plain = Pipeline(ProcessingConfig(phase="procs"))
    assert plain.process(raws[1]) is not None and plain.align_ref_ is None
    with pytest.raises(ConfigError, match="phase_align"):
        ProcessingConfig(phase_align="first")
    bad = Pipeline(ProcessingConfig(phase_align="reference")).state_dict()
    bad["align_ref"] = [[0.0] * 3, [0.0] * 3]
    with pytest.raises(ConfigError, match="align_ref"):
        Pipeline(ProcessingConfig(phase_align="reference")).load_state_dict(bad)


def test_simulated_run_amounts_closer_to_the_truth():
    """On simulated hold runs (procs phases with the simulator's per-frame jitter) the cluster
    window's growth tracks the latent cluster amount far better when aligned."""
    from lisentry.datasets.sim.run import simulate_run, to_run
    from lisentry.training.baselines import spectral_descriptors
    err = {"none": [], "reference": []}
    for seed in (1, 2):
        sim = simulate_run("hc_sulfide_hold", seed, max_frames=40)
        cl = np.array([lat["cluster_amount"] for lat in sim.latents])
        for mode in err:
            pipe = Pipeline(ProcessingConfig(phase_align=mode))
            S = np.stack([f.intensity for f in to_run(sim, pipe).frames])
            d = spectral_descriptors(S, pipe.ppm_grid)
            err[mode].append(np.nanstd(d["cluster_rel"] - (cl - cl[:3].mean())))
    assert np.mean(err["reference"]) < 0.5 * np.mean(err["none"])


def test_lines_drifting_differently_are_each_aligned():
    """Bulk magnetic susceptibility moves the electrolyte and the metal line by different
    amounts; each line is compared at its own drift, so the twist is recovered at both."""
    x = np.linspace(-100, 400, 1001)
    ref = 1 / (1 + 1j * x / 3.0) + 0.8 / (1 + 1j * (x - 245) / 3)
    moved = 1 / (1 + 1j * (x - 1.0) / 3.0) + 0.8 / (1 + 1j * (x - 245.3) / 3)
    twist = np.deg2rad(4.0) + np.deg2rad(6.0) * (x - 150) / 250
    th = residual_phase(moved * np.exp(-1j * twist), ref)
    at = np.searchsorted(x, [0.0, 245.0])
    np.testing.assert_allclose(np.rad2deg(th[at]), np.rad2deg(twist[at]), atol=0.2)


def test_a_line_that_changed_shape_is_left_out_of_the_comparison():
    """Li | Li: the metal line loses intensity and a broad microstructure line grows beside it.
    Its shape score is low, so it gives no drift and no phase; the electrolyte line does."""
    from lisentry.datasets.processing.align import align_lines, line_drifts
    x = np.linspace(-100, 400, 1001)
    ref = 1 / (1 + 1j * x / 3.0) + 0.8 / (1 + 1j * (x - 245) / 3)
    new = (1 / (1 + 1j * (x - 1.0) / 3.0) + 0.3 / (1 + 1j * (x - 245) / 3)
           + 0.6 / (1 + 1j * (x - 265) / 8))
    (lo0, hi0, s0, score0), (lo1, hi1, s1, score1) = line_drifts(new, ref)
    assert x[lo0] < 0 < x[hi0 - 1] and x[lo1] < 245 < x[hi1 - 1]
    assert score0 > 0.99 and score1 < 0.5
    # 1 ppm = 2 points; the new line's dispersive tail biases it by ~0.15 point
    assert s0 == pytest.approx(2.0, abs=0.2)
    assert drift_points(new, ref) == s0               # the best-kept line gives the drift
    aligned = align_lines(new, ref)
    assert np.isnan(aligned[lo1:hi1]).all() and np.isfinite(aligned[lo0:hi0]).all()
    # the phase, from the electrolyte line alone: within 2 degrees (the tail's bias costs ~1.5)
    th = residual_phase(new * np.exp(-1j * np.deg2rad(4.0)), ref)
    assert abs(np.rad2deg(th[np.searchsorted(x, 0.0)]) - 4.0) < 2.0


def test_an_empty_or_masked_frame_has_no_drift():
    """A frame with nothing in it (all masked, or zero) gives no lag, not the search edge."""
    from lisentry.datasets.processing.align import align_lines, line_drifts
    x = np.linspace(-100, 400, 1001)
    ref = 1 / (1 + 1j * x / 3.0) + 0.8 / (1 + 1j * (x - 245) / 3)
    for empty in (np.full(x.size, np.nan + 0j), np.zeros(x.size, complex)):
        assert drift_points(empty, ref) == 0.0
        assert all(s == 0.0 and score == -np.inf for _, _, s, score in line_drifts(empty, ref))
        assert np.isnan(align_lines(empty, ref)).all()
