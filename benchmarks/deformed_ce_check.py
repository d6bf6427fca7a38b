#!/usr/bin/env python
# Usage: python benchmarks/deformed_ce_check.py [NAME=BUNDLE ...]   (default: default=models/default; ~3 min)
"""Event-free runs with a deformed CE (272 ppm, 25 % of the CE signal): how often does each
default raise a plating alarm? (previous default: trained without any deformed-CE runs)."""
import dataclasses, sys
from lisentry.datasets.sim.scenarios import FAMILIES
from lisentry.datasets.sim.run import simulate_run, to_run
from lisentry.datasets.pipeline import Pipeline, ProcessingConfig
from lisentry.models.bundle import load_bundle
from lisentry.detector.online import OnlineDetector

paths = dict(a.split("=", 1) for a in sys.argv[1:]) or {"default": "models/default"}
bundles = {k: load_bundle(v) for k, v in paths.items()}
fams = ["graphite_normal_cycling", "hc_normal_cycling"]
for frac in (0.0, 0.25):
    counts = {k: [0, 0, 0] for k in bundles}   # runs with a plating frame, plating frames, frames
    for fam_name in fams:
        fam = FAMILIES[fam_name]
        rnd = {k: v for k, v in fam.randomize.items() if k != "cell.ce_deformed_fraction"}
        fam2 = dataclasses.replace(fam, cell=fam.cell.replace(ce_deformed_fraction=frac), randomize=rnd)
        for seed in range(100, 106):
            sim = simulate_run(fam2, seed, max_frames=250)
            for k, b in bundles.items():
                run = to_run(sim, Pipeline(ProcessingConfig.from_dict(b.processing)))
                rows = OnlineDetector(b).label_frames(run.frames)  # half cells
                lab = [r["label"] for r in rows]
                n = sum(l == "plating_onset" for l in lab)
                counts[k][0] += n > 0; counts[k][1] += n; counts[k][2] += len(lab)
    for k, (r, n, t) in counts.items():
        print(f"deformed fraction {frac}: {k:8s} runs with plating_onset {r}/12, plating frames {n}/{t}")
