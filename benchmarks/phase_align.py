"""How far the cluster and new-metal amounts read from the spectra are from the simulator's
latent truth, with and without phase alignment to the run's first frame.

Three ways of phasing the same simulated runs (same seeds, same FIDs):

* ``procs``: the per-frame ``procs`` phases as they come (the simulator gives them TopSpin-like
  errors: a per-run offset and a per-frame jitter of a few degrees) -- the default pipeline;
* ``aligned``: the same, then ``phase_align="reference"``
  (:mod:`lisentry.datasets.processing.align`);
* ``exact``: ``procs`` phases without any error (not available on real data: the floor).

For each run it prints the standard deviation over frames of (window integral of frame minus
the first three frames) minus (the latent amount's change), for the cluster window (10-130 ppm)
and the new-metal window (255-285 ppm), in units of the run's initial total 7Li signal; the
classes turn on 0.5 % (the detection limit). Medians over runs per family at the end.

With ``--real NMR_DIR`` (e.g. ``../shared/real/li_li_tegdme_operando/nmr``) it also processes
that real run both ways and prints, per frame, the integral over 20-150 ppm (no 7Li species
in a Li | Li liquid cell: pure leakage of phase errors) and over 255-285 ppm (the metal and its
microstructure): their scatter, frame-to-frame change and where the metal ends up.

Usage::

    .venv/bin/python benchmarks/phase_align.py [--families a,b] [--seeds 3] [--frames 80] [--real DIR]
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import warnings

import numpy as np

from lisentry.datasets.pipeline import Pipeline, ProcessingConfig
from lisentry.datasets.sim.acquisition import ArtefactConfig
from lisentry.datasets.sim.run import simulate_run, to_run
from lisentry.datasets.sim.scenarios import FAMILIES
from lisentry.training.baselines import spectral_descriptors

EXACT = dataclasses.replace(ArtefactConfig(), procs_phc0_error_deg=0.0, procs_phc1_error_deg=0.0,
                            procs_phc0_jitter_deg=0.0, procs_phc1_jitter_deg=0.0)
WAYS = {"procs": (None, "none"), "aligned": (None, "reference"), "exact": (EXACT, "none")}


def amount_errors(family: str, seed: int, frames: int) -> dict[str, tuple[float, float]]:
    out = {}
    for way, (art, align) in WAYS.items():
        sim = simulate_run(family, seed, artefacts=art, max_frames=frames)
        pipe = Pipeline(ProcessingConfig(phase_align=align))
        S = np.stack([f.intensity for f in to_run(sim, pipe).frames])
        d = spectral_descriptors(S, pipe.ppm_grid)
        cl = np.array([lat["cluster_amount"] for lat in sim.latents])
        me = np.array([lat["metal_amount"] for lat in sim.latents])
        out[way] = (float(np.nanstd(d["cluster_rel"] - (cl - cl[:3].mean()))),
                    float(np.nanstd(d["metal_diff"] - (me - me[:3].mean()))))
    return out


def real_run(nmr_dir: str) -> None:
    from pathlib import Path

    from lisentry.datasets.io.bruker import iter_raw_frames
    raws = [r for r in iter_raw_frames(Path(nmr_dir)) if not isinstance(r, Exception)]
    print(f"\nreal run {nmr_dir}: {len(raws)} frames (integrals in units of the first frame's "
          "total signal)")
    for align in ("none", "reference"):
        pipe = Pipeline(ProcessingConfig(phase_align=align))
        S = np.stack([pipe.normalise(pipe.process(r), i) for i, r in enumerate(raws)])
        g = pipe.ppm_grid

        def integ(lo, hi):
            return np.nansum(S[:, (g >= lo) & (g <= hi)], axis=1) * pipe.config.ppm_step

        empty, metal = integ(20.0, 150.0), integ(255.0, 285.0)
        step = lambda x: float(np.median(np.abs(np.diff(x))))  # noqa: E731
        print(f"  phase_align={align:9s}  20-150 ppm: sd {np.std(empty):.4f}, median |frame-to-frame| "
              f"{step(empty):.4f}  |  255-285 ppm: median |frame-to-frame| {step(metal):.4f}, "
              f"min {metal.min():.3f}, first/middle/last {metal[0]:.3f} / {metal[len(metal) // 2]:.3f}"
              f" / {metal[-1]:.3f}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", default=",".join(sorted(FAMILIES)))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--frames", type=int, default=80)
    ap.add_argument("--real", default=None, metavar="NMR_DIR")
    a = ap.parse_args(argv)
    warnings.simplefilter("ignore", RuntimeWarning)
    print(f"{'family':27s} {'seed':>4s}  " + "  ".join(f"{w + ' cl/metal':>19s}" for w in WAYS),
          flush=True)
    per_family: dict[str, dict[str, list]] = {}
    for fam in [f.strip() for f in a.families.split(",") if f.strip()]:
        acc = per_family.setdefault(fam, {w: [] for w in WAYS})
        for seed in range(1, a.seeds + 1):
            e = amount_errors(fam, seed, a.frames)
            for w in WAYS:
                acc[w].append(e[w])
            print(f"{fam:27s} {seed:4d}  " + "  ".join(f"{e[w][0]:9.4f}/{e[w][1]:9.4f}" for w in WAYS),
                  flush=True)
    print("\nmedian over runs (cluster / metal error, fraction of the initial signal)")
    for fam, acc in per_family.items():
        cells = []
        for w in WAYS:
            cells.append(f"{statistics.median(c for c, _ in acc[w]):.4f}/"
                         f"{statistics.median(m for _, m in acc[w]):.4f}")
        print(f"{fam:27s}       " + "  ".join(f"{c:>19s}" for c in cells))
    if a.real:
        real_run(a.real)
    return 0


if __name__ == "__main__":
    sys.exit(main())
