"""One figure per scenario family (paper defaults) and ``docs/simulator.md``.

For every family in ``FAMILIES``: ``simulate_run(name, 0, randomize=False)`` -> ``to_run`` with the
default pipeline -> ``lisentry.detector.plots.plot_run`` (heat map 0-300 ppm + potential, true
labels) into ``docs/figures/family_<name>.png``; then events measured FROM THE PROCESSED SPECTRA
(3-frame average, 5 ppm boxcar, ``find_peaks`` prominence >= 3 x sqrt(2) x noise of 320-400 ppm,
detections count only in runs of 4 in a row) next to the papers' numbers, written to ``docs/simulator.md``.

Usage::

    python benchmarks/sim_families.py [--out-doc docs/simulator.md] [--fig-dir docs/figures]
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.signal import find_peaks

ROOT = Path(__file__).resolve().parents[1]

#: Paper numbers (domain.md): Tagami et al. 2025 unless noted.
PAPER = {
    "hc_sulfide_ccv": "cluster from 8.7 h (<13 mV), 91 ppm at 16.3 h, collapses on delithiation; "
                      "partial short near 1.7 V at the end",
    "hc_sulfide_overlithiation": "min -20 mV at 50 min, -0.22 V after 2 h; weak cluster ~80 ppm; CE signal "
                                 "falls from 1.5 h, mostly gone by 2.5 h; no dendrite; partial short ~3 h",
    "hc_sulfide_lowpressure": "no clusters, plateau ~-0.1 V; dendrite 278 ppm from 1.7 h; short 3.1 h",
    "hc_sulfide_hold": "cluster 74 -> 98 ppm, keeps growing; no dendrite; total short 10.8 h",
    "hc_liquid": "(Gotoh 2020) clusters > 100 ppm in closed pores; holds -50 mV > 5 h without short; "
                 "dendrites only after pores fill",
    "graphite_overcharge": "(review) LiC6/LiC12 40-45 ppm; plated Li ~260 ppm after full lithiation, "
                           "partly re-inserts on rest",
    "li_llzo_li": "(Liu et al. 2025) ~50 mV polarisation creeping up; dendrite 264.5 ppm in four "
                  "stages; hard short after ~7.6 d (182 h)",
    "hc_normal_cycling": "(negative control) normal cycling, no abnormal species",
    "graphite_normal_cycling": "(negative control) normal cycling, no abnormal species",
    "li_liquid_li_cycling": "(negative control for shorts; generic Li | ether | Li behaviour, not a "
                            "paper run) microstructure 260-272 ppm accumulating over days of "
                            "cycling, tens of mV polarization, no short",
    "li_plating_liquid_li": "(modelled on the measured Li | TEGDME | Li run of shared/real) two days "
                            "of one-way polarization at 1 mA with pauses, positive potential "
                            "falling from 0.13 to 0.08 V in the first 1.5 h, then rising to "
                            "0.10-0.12 V, microstructure accumulating, no short",
}

#: Known deviations from the papers and limits of the checks (tests/unit/datasets/test_sim_timelines_spectra.py).
DEVIATIONS = [
    "hc_sulfide_ccv: the cluster peak is the fast-exchange average of cluster Li (~260 ppm) and "
    "82 % of the host Li (10 ppm) (Tagami Sec. 3.5); it is first detected at ~9.4 h at ~24 ppm, "
    "0.7 h after the paper's 8.7 h (a peak below ~22 ppm does not separate from the electrolyte "
    "and host tails). Its soft short (leak matching the 80 uA current) is recorded at ~22.7 h, "
    "frame potential ~1.6 V; the delithiation then runs at the pinned potential to its 23 h limit.",
    "Peak detector of the tests and of this page (not the simulator): a prominence of 3 x sqrt(2) "
    "x noise is not a per-window false-alarm rate. On pure white noise it finds an SNR >= 3 "
    "'peak' in 40-200 ppm in 86 % of frames; the 'peaks at 125-160 ppm in every family' are these "
    "(the mean simulated spectrum is flat there; the DC offset is removed by dc_correct to a "
    "single-point residual of ~2 noise sigma at the carrier). For this reason the CC-CV collapse "
    "on delithiation is asserted from the 40-130 ppm band integral, not from peak picking, and "
    "this page counts a detection only in runs of 4 frames in a row (so its 'first visible' "
    "times are later than the single-frame onsets the tests assert, e.g. CC-CV 10.25 h vs 9.4 h).",
    "`write_run(layout='ser')` writes no `pdata/1/procs` (SR and per-row phases are lost: read back "
    "with `--sr-hz`). TopSpin stores no per-row times in a pseudo-2D ser; the writer gives audita "
    "start/end = row 1 start / start + rows x period, and `read_ser` gives each row the nominal "
    "(NS+DS)(D1+AQ) acquisition time with rows spaced evenly over the audit window, so read-back "
    "midpoints equal the simulated ones (tests/integration/test_sim_disk_roundtrip.py).",
]


def _peaks(ppm, spectra, lo, hi, snr_min=3.0, smooth_ppm=5.0):
    """Per frame: (position, snr) of the most prominent peak in [lo, hi] on 3-frame averages."""
    s = uniform_filter1d(np.nan_to_num(spectra), 3, axis=0, mode="nearest")
    n = max(int(round(smooth_ppm / float(ppm[1] - ppm[0]))), 1)
    s = uniform_filter1d(s, n, axis=1)
    m = (ppm > 320) & (ppm < 400)
    out = np.full((len(s), 2), np.nan)
    out[:, 1] = 0.0
    for k, y in enumerate(s):
        noise = np.std(y[m] - np.polyval(np.polyfit(ppm[m], y[m], 2), ppm[m])) * math.sqrt(2.0)
        idx, pr = find_peaks(y, prominence=snr_min * noise)
        keep = (ppm[idx] >= lo) & (ppm[idx] <= hi)
        if keep.any():
            j = int(np.argmax(pr["prominences"][keep]))
            out[k] = ppm[idx[keep][j]], pr["prominences"][keep][j] / noise
    return out


def _first(t, found, n=4):
    run = 0
    for k, f in enumerate(found):
        run = run + 1 if f else 0
        if run == n:
            return float(t[k - n + 1])
    return float("nan")


def _streaks(found, n=4):
    """Mask of detections that belong to a run of at least ``n`` in a row."""
    out = np.zeros(len(found), bool)
    k = 0
    while k < len(found):
        if found[k]:
            j = k
            while j < len(found) and found[j]:
                j += 1
            if j - k >= n:
                out[k:j] = True
            k = j
        else:
            k += 1
    return out


def _fmt(x, unit="", nd=1):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}{unit}"


def family_row(name: str, fig_dir: Path) -> dict:
    from lisentry.datasets.pipeline import Pipeline, ProcessingConfig
    from lisentry.datasets.sim.run import simulate_run, to_run
    from lisentry.detector.plots import plot_run
    sim = simulate_run(name, 0, randomize=False)
    run = to_run(sim, Pipeline(ProcessingConfig()))
    fig = fig_dir / f"family_{name}.png"
    plot_run(run, fig, labels=sim.labels, title=f"{name} (defaults, seed 0)")
    ppm = np.asarray(run.ppm_grid, float)
    spectra = np.asarray(run.spectra(), float)
    t = np.asarray(run.t_s(), float) / 3600.0
    pot = np.array([f.potential_V for f in run.frames])
    cl = _peaks(ppm, spectra, 40.0, 125.0)
    me = _peaks(ppm, spectra, 258.0, 282.0)
    det_c, det_m = _streaks(cl[:, 1] >= 3), _streaks(me[:, 1] >= 3)
    t_c, t_m = _first(t, det_c), _first(t, det_m)
    ce = sim.family.ce_shift_ppm
    band = (ppm >= ce - 12) & (ppm <= ce + 8)
    area = np.nan_to_num(spectra)[:, band].sum(axis=1)
    area = uniform_filter1d(area, 3, mode="nearest") / area[:3].mean()
    return {
        "name": name, "fig": fig, "frames": len(run), "period_min": sim.info["frame_period_s"] / 60,
        "t_short_h": sim.t_short_s / 3600 if sim.t_short_s is not None else float("nan"),
        "t_onset_h": sim.t_onset_s / 3600 if sim.t_onset_s is not None else float("nan"),
        "cluster_first_h": t_c,
        "cluster_first_ppm": float(cl[np.argmin(np.abs(t - t_c)), 0]) if not math.isnan(t_c) else float("nan"),
        "cluster_max_ppm": float(np.nanmax(np.where(det_c, cl[:, 0], np.nan))) if det_c.any() else float("nan"),
        "metal_first_h": t_m,
        "metal_ppm": float(np.nanmedian(me[det_m, 0])) if det_m.any() else float("nan"),
        "ce_min_rel": float(area.min()), "v_min": float(pot.min()), "v_max": float(pot.max()),
        "duration_h": float(t[-1]), "precursors": sim.family.precursors,
        "has_precursors": sim.family.has_short_precursors, "source": sim.family.source,
    }


def write_doc(rows: list[dict], out: Path) -> None:
    lines = ["# Simulator families: simulated vs observed", "",
             "Generated by `python benchmarks/sim_families.py` (paper defaults, seed 0). Event times "
             "and peak positions are measured on the PROCESSED spectra (default `Pipeline`; 3-frame "
             "average, 5 ppm boxcar, `find_peaks` prominence >= 3 x sqrt(2) x noise in 320-400 ppm, "
             "detections count only in runs of 4 in a row); the short and metal onset are the simulator's ground "
             "truth (run clock). Cluster window 40-125 ppm (above it, peaks at 125-160 ppm appear in every family, including those without clusters: noise false positives of this peak detector, see Known deviations; LLZO shows one at the 124.5 ppm edge), working-side metal 258-282 ppm, CE band "
             "CE shift -12/+8 ppm (integral relative to the first frames). The same checks are "
             "asserted in `tests/unit/datasets/test_sim_timelines_spectra.py`.", ""]
    for r in rows:
        rel = r["fig"].relative_to(out.parent) if r["fig"].is_relative_to(out.parent) else r["fig"]
        lines += [f"## {r['name']}", "", f"Source: {r['source'] or '-'}", "",
                  f"Paper: {PAPER.get(r['name'], '-')}", "",
                  "| quantity | simulated |", "| --- | --- |",
                  f"| frames (period) | {r['frames']} ({r['period_min']:.0f} min), {r['duration_h']:.1f} h |",
                  f"| potential range | {r['v_min'] * 1e3:.1f} ... {r['v_max'] * 1e3:.1f} mV |",
                  f"| cluster peak first visible | {_fmt(r['cluster_first_h'], ' h', 2)} at "
                  f"{_fmt(r['cluster_first_ppm'], ' ppm')} |",
                  f"| cluster peak highest shift | {_fmt(r['cluster_max_ppm'], ' ppm')} |",
                  f"| metal onset (truth) | {_fmt(r['t_onset_h'], ' h', 2)} |",
                  f"| dendrite/metal peak first visible | {_fmt(r['metal_first_h'], ' h', 2)} at "
                  f"{_fmt(r['metal_ppm'], ' ppm')} |",
                  f"| CE band minimum (rel. to start) | {r['ce_min_rel']:.2f} |",
                  f"| short (truth) | {_fmt(r['t_short_h'], ' h', 2)} |",
                  f"| short precursors | {'yes' if r['has_precursors'] else 'no'}: {r['precursors'] or '-'} |",
                  "", f"![{r['name']}]({rel})", ""]
    lines += ["## Known deviations", ""] + [f"- {d}" for d in DEVIATIONS] + [""]
    out.write_text("\n".join(lines), encoding="utf-8")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-doc", type=Path, default=ROOT / "docs" / "simulator.md")
    ap.add_argument("--fig-dir", type=Path, default=ROOT / "docs" / "figures")
    ap.add_argument("--families", nargs="*", default=None)
    a = ap.parse_args(argv)
    from lisentry.datasets.sim.scenarios import FAMILIES
    a.fig_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in a.families or sorted(FAMILIES):
        r = family_row(name, a.fig_dir)
        rows.append(r)
        print(f"{name}: short {_fmt(r['t_short_h'], ' h', 2)}, cluster {_fmt(r['cluster_first_h'], ' h', 2)}"
              f"/{_fmt(r['cluster_max_ppm'], ' ppm')}, metal {_fmt(r['metal_first_h'], ' h', 2)}"
              f"/{_fmt(r['metal_ppm'], ' ppm')}")
    write_doc(rows, a.out_doc)
    print(f"wrote {a.out_doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
