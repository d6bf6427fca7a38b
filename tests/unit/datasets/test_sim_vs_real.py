"""The simulator against the real Li | LiTFSI-TEGDME | Li run (skips when the run is absent).

Real statistics come from TopSpin's own processed spectra (pdata/1/1r, procs); simulated
frames are processed the TopSpin way (TDeff 2048 complex, LB 50 Hz, SI 8192, the truth
PHC0/PHC1) and measured with the same functions."""
from __future__ import annotations

import nmrglue as ng
import numpy as np
import pytest

from lisentry.datasets.frame import AcquisitionParams
from lisentry.datasets.sim.acquisition import (AcquisitionConfig, draw_run_artefacts, synthesize_fid,
                                               topspin_spectrum)
from lisentry.datasets.sim.spectra import lines_from_latent, noise_std, peak_fwhm

TOPSPIN = dict(td_eff=2048, lb_Hz=50.0, si=8192)
FRAME1 = dict(host_kind="li_metal", host_amount=0.34, ce_amount=0.34, electrolyte_amount=0.27,
              sei_amount=0.05, electrolyte_shift_ppm=-1.0, ce_orientation_deg=63.0)
FRAME300 = dict(FRAME1, host_amount=0.2, ce_amount=0.2, ce_orientation_deg=70.0, metal_amount=1.1,
                metal_shift_ppm=267.0)


def real_frame(run_dir, expno):
    dic, r1 = ng.bruker.read_pdata(str(run_dir / "nmr" / str(expno) / "pdata" / "1"), scale_data=True)
    p = dic["procs"]
    ppm = p["OFFSET"] - np.arange(p["SI"]) * p["SW_p"] / p["SF"] / p["SI"]
    return ppm, np.asarray(r1, float), p


def stats(ppm, spec):
    xm, hm, wm = peak_fwhm(ppm, spec, 225.0, 295.0)
    xe, he, we = peak_fwhm(ppm, spec, -20.0, 20.0)
    return dict(noise_rel=noise_std(ppm, spec) / max(hm, he), metal_ppm=xm, metal_fwhm=wm, electrolyte_fwhm=we)


def sim_stats(latent, seeds=range(4)):
    acq = AcquisitionConfig.li_li_tegdme()
    rows = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        art = draw_run_artefacts(1, rng)[0]
        fid, params = synthesize_fid(lines_from_latent(latent), acq, rng, frame_artefacts=art)
        ppm, s = topspin_spectrum(fid, params, phase_deg=(art.phc0_deg, art.phc1_deg), **TOPSPIN)
        rows.append(stats(ppm, s.real))
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


@pytest.mark.real
@pytest.mark.parametrize("expno,latent", [(1, FRAME1), (300, FRAME300)])
def test_noise_and_linewidths_within_factor_two(real_run_dir, expno, latent):
    real = stats(*real_frame(real_run_dir, expno)[:2])
    sim = sim_stats(latent)
    for key in ("noise_rel", "metal_fwhm", "electrolyte_fwhm"):
        assert 0.5 < sim[key] / real[key] < 2.0, (key, sim[key], real[key])
    assert abs(sim["metal_ppm"] - real["metal_ppm"]) < 3.0


@pytest.mark.real
def test_topspin_convention_reproduces_real_1r(real_run_dir):
    """The FID sign/phase convention the simulator follows is TopSpin's: processing the real
    FID with topspin_spectrum and TopSpin's PHC0/PHC1 reproduces its 1r."""
    d = real_run_dir / "nmr" / "1"
    dic, fid = ng.bruker.read(str(d))
    ppm_r, r1, p = real_frame(real_run_dir, 1)
    a = dic["acqus"]
    params = AcquisitionParams(nucleus="7Li", sfo1_MHz=a["SFO1"], bf1_MHz=a["BF1"], o1_Hz=a["O1"],
                               sw_Hz=a["SW_h"], td=a["TD"], group_delay_pts=44.75,
                               sr_Hz=(p["SF"] - a["BF1"]) * 1e6, extra={"DECIM": 2, "DSPFVS": 10})
    ppm, s = topspin_spectrum(fid, params, phase_deg=(p["PHC0"], p["PHC1"]), td_eff=p["TDeff"] // 2,
                              lb_Hz=p["LB"], si=p["SI"])
    np.testing.assert_allclose(ppm, ppm_r, atol=1e-3)
    assert np.corrcoef(s.real, r1)[0, 1] > 0.99
