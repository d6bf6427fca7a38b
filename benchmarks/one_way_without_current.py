"""How a bundle's plating call on simulated one-way Li | liquid | Li runs moves when the
potentiostat log lacks the current (EC-Lab time/Ewe exports, as the measured run's) and also
starts late (the measured run's covers frames 9 on).

    python benchmarks/one_way_without_current.py BUNDLE [BUNDLE ...]

Six randomized ``li_plating_liquid_li`` runs (seeds 900-905, first 120 frames); for each, the
frame index of the truth's first two consecutive ``plating_onset`` frames, then the bundle's
with the full log, without current, and without current with no potential for frames 1-8.
"""
import sys, math, dataclasses, numpy as np
from lisentry.datasets.sim.run import simulate_run, to_run
from lisentry.datasets.pipeline import Pipeline, ProcessingConfig
from lisentry.detector.online import OnlineDetector
from lisentry.models.bundle import load_bundle
bundles = {b: load_bundle(b) for b in sys.argv[1:]}
def first2(lab):
    return next((i for i in range(len(lab)-1) if lab[i]=="plating_onset" and lab[i+1]=="plating_onset"), None)
runs = []
for seed in range(900, 906):
    sim = simulate_run("li_plating_liquid_li", seed, randomize=True, max_frames=120)
    frames = to_run(sim, Pipeline(ProcessingConfig())).frames
    runs.append((seed, frames, list(sim.labels)))
for b, bundle in bundles.items():
    out = []
    for seed, frames, truth in runs:
        t = first2(truth)
        res = [t]
        for mode in ("full", "no_current", "no_current_late_log"):
            fr = frames
            if mode != "full":
                fr = [dataclasses.replace(f, current_A=math.nan, charge_C=math.nan) for f in fr]
            if mode == "no_current_late_log":
                fr = [dataclasses.replace(f, potential_V=math.nan) if i < 8 else f for i, f in enumerate(fr)]
            lab = [r["label"] for r in OnlineDetector(bundle, cell="symmetric" if bundle.symmetric_cells == "sign_free" else "half").label_frames(fr)]
            res.append(first2(lab))
        out.append(res)
    print(b, "truth / full / no current / no current + log from frame 9:", out)
