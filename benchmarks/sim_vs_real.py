"""Simulated vs real 7Li spectra of the Li | LiTFSI-TEGDME | Li operando run.

Measures on the real run (TopSpin's processed ``pdata/1/1r``): noise std relative to the
tallest peak, baseline roll, FWHM of the Li metal line (245-270 ppm) and of the
electrolyte line (~0 ppm), and the spread of TopSpin's PHC0/PHC1; simulates frames 1
and 300 of that run with the default NMR parameters and the run's acquisition settings,
processes them like TopSpin (TDeff, LB, SI, PHC0/PHC1 from the simulation's truth) and
prints both side by side. Writes docs/figures/sim_vs_real.png and times the simulator.

Usage: python benchmarks/sim_vs_real.py [REAL_RUN_DIR]   (default ../shared/real/li_li_tegdme_operando)
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from lisentry.datasets.sim.acquisition import (AcquisitionConfig, FrameArtefacts, REAL_RUN_SNR,
                                               draw_run_artefacts, synthesize_fid, topspin_spectrum)
from lisentry.datasets.sim.nmr_params import NMRParams
from lisentry.datasets.sim.spectra import baseline_roll, lines_from_latent, noise_std, peak_fwhm

ROOT = Path(__file__).resolve().parents[1]
#: TopSpin processing of the real run (procs): TDeff 4096 (2048 complex), LB 50 Hz, SI 8192.
TOPSPIN = dict(td_eff=2048, lb_Hz=50.0, si=8192)
#: Latent states that mimic frames 1 and 300 of the real run (amounts from the measured areas).
LATENT_FRAME1 = dict(host_kind="li_metal", host_amount=0.34, ce_amount=0.34, electrolyte_amount=0.27,
                     sei_amount=0.05, electrolyte_shift_ppm=-1.0, ce_orientation_deg=63.0,
                     cluster_amount=0.0, cluster_shift_ppm=float("nan"), metal_amount=0.0)
LATENT_FRAME300 = dict(LATENT_FRAME1, host_amount=0.2, ce_amount=0.2, ce_orientation_deg=70.0,
                       metal_amount=1.1, metal_shift_ppm=267.0)


def read_real(run_dir: Path, expno: int):
    """(ppm descending, 1r, procs) of one real frame."""
    import nmrglue as ng
    dic, r1 = ng.bruker.read_pdata(str(run_dir / "nmr" / str(expno) / "pdata" / "1"), scale_data=True)
    p = dic["procs"]
    ppm = p["OFFSET"] - np.arange(p["SI"]) * p["SW_p"] / p["SF"] / p["SI"]
    return ppm, np.asarray(r1, float), p


def frame_stats(ppm, spec) -> dict:
    """The calibration statistics of one processed real spectrum."""
    xm, hm, wm = peak_fwhm(ppm, spec, 225.0, 295.0)
    xe, he, we = peak_fwhm(ppm, spec, -20.0, 20.0)
    top = max(hm, he)
    return dict(noise_rel=noise_std(ppm, spec) / top, roll_rel=baseline_roll(ppm, spec) / top,
                metal_ppm=xm, metal_fwhm_ppm=wm, electrolyte_ppm=xe, electrolyte_fwhm_ppm=we)


def real_stats(run_dir: Path, expnos) -> dict:
    rows, phases = [], []
    for e in expnos:
        ppm, r1, p = read_real(run_dir, e)
        rows.append(frame_stats(ppm, r1))
        phases.append((p["PHC0"], p["PHC1"]))
    out = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    ph = np.array(phases)
    out["PHC0"], out["PHC1"] = ph[:, 0], ph[:, 1]
    return out


def simulate(latent: dict, seed: int, acq: AcquisitionConfig | None = None, art: FrameArtefacts | None = None,
             nmr: NMRParams | None = None):
    """One simulated frame processed like TopSpin: (ppm, real spectrum)."""
    acq = acq or AcquisitionConfig.li_li_tegdme()
    rng = np.random.default_rng(seed)
    art = art if art is not None else draw_run_artefacts(1, rng)[0]
    fid, params = synthesize_fid(lines_from_latent(latent, nmr), acq, rng, frame_artefacts=art)
    ppm, s = topspin_spectrum(fid, params, phase_deg=(art.phc0_deg, art.phc1_deg), **TOPSPIN)
    return ppm, s.real


def sim_stats(latent: dict, seeds) -> dict:
    rows = [frame_stats(*simulate(latent, s)) for s in seeds]
    return {k: np.array([r[k] for r in rows]) for k in rows[0]}


def speed(n_complex: int = 4096, n: int = 400) -> float:
    acq = AcquisitionConfig(td=2 * n_complex)
    rng = np.random.default_rng(0)
    arts = draw_run_artefacts(n, rng)
    lines = lines_from_latent(dict(LATENT_FRAME300, host_kind="hard_carbon", cluster_amount=0.1,
                                   cluster_shift_ppm=80.0))
    t0 = time.perf_counter()
    for a in arts:
        synthesize_fid(lines, acq, rng, frame_artefacts=a)
    return n / (time.perf_counter() - t0)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    run_dir = Path(argv[0]) if argv else ROOT.parent / "shared" / "real" / "li_li_tegdme_operando"
    real = real_stats(run_dir, range(1, 601))
    print("REAL run (600 frames, TopSpin 1r): median [5%, 95%]")
    for k, v in real.items():
        print(f"  {k:22s} {np.median(v):10.4g} [{np.percentile(v, 5):10.4g}, {np.percentile(v, 95):10.4g}]"
              f"  std {np.std(v):.3g}" + (f"  frame-to-frame std {np.std(np.diff(v)):.3g}" if k.startswith("PHC") else ""))
    r1, r300 = real_stats(run_dir, [1]), real_stats(run_dir, [300])
    s1, s300 = sim_stats(LATENT_FRAME1, range(8)), sim_stats(LATENT_FRAME300, range(8))
    print(f"SIM (REAL_RUN_SNR={REAL_RUN_SNR}) vs REAL, frame 1 / frame 300 (sim: mean of 8 seeds)")
    for k in s1:
        print(f"  {k:22s} sim {np.mean(s1[k]):10.4g} real {r1[k][0]:10.4g}   |  sim {np.mean(s300[k]):10.4g} real {r300[k][0]:10.4g}")
    print(f"  SNR that matches frame 1 noise: {REAL_RUN_SNR * np.mean(s1['noise_rel']) / r1['noise_rel'][0]:.0f}")
    for nc in (4096, 8192):
        print(f"speed: {speed(nc):.0f} frames/s at {nc} complex points (TD {2 * nc}), one process")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 2, figsize=(12, 7))
    for row, (e, lat) in enumerate([(1, LATENT_FRAME1), (300, LATENT_FRAME300)]):
        ppm_r, r, _ = read_real(run_dir, e)
        ppm_s, s = simulate(lat, seed=e)
        scale = r.max() / s.max()
        for col, (lo, hi, ylim) in enumerate([(-260, 540, None), (-60, 330, (-0.03, 0.08))]):
            ax = axes[row, col]
            ax.plot(ppm_r, r / r.max(), lw=0.8, label=f"real frame {e} (TopSpin 1r)")
            ax.plot(ppm_s, s * scale / r.max(), lw=0.8, alpha=0.8, label="simulated (same processing)")
            ax.set_xlim(hi, lo)
            if ylim:
                ax.set_ylim(*ylim)
            ax.set_xlabel("7Li shift / ppm")
            ax.set_ylabel("intensity / max" + (" (zoom)" if ylim else ""))
            ax.legend(fontsize=8)
    fig.suptitle("Li | LiTFSI-TEGDME | Li, 116.7 MHz, NS 256: real vs simulated")
    fig.tight_layout()
    out = ROOT / "docs" / "figures" / "sim_vs_real.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
