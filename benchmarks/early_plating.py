#!/usr/bin/env python
# Usage: python benchmarks/early_plating.py [NAME=BUNDLE ...] [--runs 12] [--out FILE.json]
#        (default: default=models/default; under a minute for the default)
"""How soon each bundle calls plating in one-way Li | liquid | Li runs, with and without a
current column in the potentiostat log (not a speed benchmark).

The measured run (``../shared/real/li_li_tegdme_operando``) has an electrode line at 248 ppm,
290 s frames, and a potential log with no current column that starts at frame 6. Its
microstructure line is measurable from frame 4; the default of 2026-12-07 labels it
``plating_onset`` from frame 25. This script simulates the ``li_plating_liquid_li`` family in that
regime (electrode plane at 75-90 deg to B0, 240-360 s frames, 300 MHz, SNR 200-400) and feeds each
run to each bundle three ways: the log as simulated, without its current column (an EC-Lab
time/Ewe export), and without current and without potential on the first five frames (the measured
run's log). It prints the median lag of the bundle's first ``plating_onset`` label behind the
truth's, in frames and minutes, side by side. With ``../shared/real`` present it also prints the
frame from which each bundle labels the measured run ``plating_onset``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from lisentry.datasets.pipeline import Pipeline, ProcessingConfig
from lisentry.datasets.sim.protocol import Protocol, RestStep
from lisentry.datasets.sim.run import simulate_run, to_run
from lisentry.datasets.sim.scenarios import get_family
from lisentry.detector.online import OnlineDetector
from lisentry.models.bundle import load_bundle

FAMILY = "li_plating_liquid_li"
REAL = Path(__file__).resolve().parents[1].parent / "shared" / "real" / "li_li_tegdme_operando"
MEASURED_LIKE = {"nmr.ce_orientation_deg": [75, 90],
                 "acquisition.frame_period_s": [240, 360], "acquisition.field_MHz": [300, 300],
                 "acquisition.snr": {"log": [200, 400]}}
NAN = float("nan")


def _without(frames, *, current: bool, potential_before: int = 0):
    """The frames with the log's current column removed and/or its potential missing on the
    first ``potential_before`` frames."""
    out = []
    for i, f in enumerate(frames):
        ch = {}
        if current:
            ch.update(current_A=NAN, current_min_A=NAN, current_max_A=NAN, charge_C=NAN)
        if i < potential_before:
            ch.update(potential_V=NAN, potential_min_V=NAN, potential_max_V=NAN)
        out.append(dataclasses.replace(f, **ch) if ch else f)
    return out


LOGS = {"as simulated": lambda fr: fr,
        "no current": lambda fr: _without(fr, current=True),
        "no current, potential from frame 6": lambda fr: _without(fr, current=True, potential_before=5)}


def first_index(labels, cls="plating_onset") -> int | None:
    """Index of the first frame labelled ``cls`` (None when there is none)."""
    hits = np.flatnonzero(np.asarray(labels) == cls)
    return int(hits[0]) if len(hits) else None


def measured_like_family(polarized_from_start: bool = False):
    """The family in the measured run's regime; ``polarized_from_start`` also drops its leading
    1-h rest and the random initial rest, so the current flows from the first spectrum (as in the
    measured run; every training run of the family rests first)."""
    fam = get_family(FAMILY)
    rnd = {**dict(fam.randomize), **MEASURED_LIKE}
    if polarized_from_start:
        rnd["initial_rest_h"] = [-1.0, -0.5]
        steps = fam.protocol.steps
        if isinstance(steps[0], RestStep):
            fam = dataclasses.replace(fam, protocol=Protocol(tuple(steps[1:])))
    return dataclasses.replace(fam, randomize=rnd)


def lags(bundles: dict, n_runs: int, max_frames: int = 60, polarized_from_start: bool = False) -> dict:
    """Plating lag of each bundle behind the truth, per log.

    Parameters
    ----------
    bundles : dict of str to Bundle
    n_runs : int
        Simulated runs (seeds 20000...); the same runs for every bundle and log.
    max_frames : int
        Frames simulated per run (60 frames of 240-360 s: 4-6 h).
    polarized_from_start : bool
        See :func:`measured_like_family`.

    Returns
    -------
    dict
        ``{log: {bundle: {"lag_frames": [...], "lag_min": [...], "missed": n, "no_truth": n}}}``:
        lag of the first ``plating_onset`` label behind the truth's first, in frames and minutes
        (negative: early); runs where the bundle never says plating count as ``missed`` and runs
        whose truth has no plating in ``max_frames`` as ``no_truth``, both outside the lags.
    """
    fam = measured_like_family(polarized_from_start)
    res = {log: {k: {"lag_frames": [], "lag_min": [], "missed": 0, "no_truth": 0} for k in bundles}
           for log in LOGS}
    for seed in range(n_runs):
        sim = simulate_run(fam, 20_000 + seed, max_frames=max_frames)
        processed = {}      # bundles with the same processing share one pass of the pipeline
        for name, b in bundles.items():
            key = json.dumps(b.processing, sort_keys=True)
            if key not in processed:
                processed[key] = to_run(sim, Pipeline(ProcessingConfig.from_dict(b.processing)))
            run = processed[key]
            truth = first_index([f.label for f in run.frames])
            if truth is None:
                for log in LOGS:
                    res[log][name]["no_truth"] += 1
                continue
            t = [f.t_s for f in run.frames]
            for log, edit in LOGS.items():
                rows = OnlineDetector(b, cell=cell_for(b)).label_frames(edit(run.frames))
                got = first_index([r["label"] for r in rows])
                r = res[log][name]
                if got is None:
                    r["missed"] += 1
                    continue
                r["lag_frames"].append(got - truth)
                r["lag_min"].append((t[got] - t[truth]) / 60.0)
    return res


def cell_for(bundle) -> str:
    """Both the simulated family and the measured cell are symmetric Li | Li: read as such by
    models trained to (``inputs.symmetric_cells: sign_free``), as half cells by older ones."""
    return "symmetric" if bundle.symmetric_cells == "sign_free" else "half"


def real_run_first(bundles: dict) -> dict:
    """Expno of the measured run's first ``plating_onset`` frame for each bundle (None: never),
    read as ``make real-run`` reads it."""
    from lisentry.datasets.loading import LoadOptions, load_run
    echem = next((REAL / "echem").glob("*_03_GCPL_C05.txt"), None)
    if echem is None:
        raise SystemExit(f"{REAL / 'echem'}: no *_03_GCPL_C05.txt potential export")
    # the export has no absolute start; the sequence start comes from the .mpr files (docs/real_run.md)
    out = {}
    for name, b in bundles.items():
        run = load_run(REAL / "nmr", LoadOptions(echem=echem, echem_start="2023-08-11T12:40:15+01:00"),
                       pipeline=Pipeline(ProcessingConfig.from_dict(b.processing)), on_note=None,
                       on_skip=None)
        i = first_index([r["label"] for r in
                         OnlineDetector(b, cell=cell_for(b)).label_frames(run.frames)])
        out[name] = None if i is None else run.frames[i].expno
    return out


def _median(x) -> float:
    return float(np.median(x)) if x else math.nan


def print_lags(result: dict) -> None:
    """One line per log and bundle: median lag (frames, minutes), largest lag, misses."""
    for start in ("logs", "polarized_from_start"):
        for log, by_bundle in result.get(start, {}).items():
            label = log if start == "logs" else f"{log} (no rest)"
            for name, v in by_bundle.items():
                print(f"{label:46s} {name:12s} plating lag behind the truth: median "
                      f"{_median(v['lag_frames']):5.1f} frames, {_median(v['lag_min']):6.1f} min (max "
                      f"{max(v['lag_frames'], default=math.nan)} frames); missed {v['missed']}, "
                      f"no plating in the truth {v['no_truth']}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="*", help="NAME=BUNDLE (default: default=models/default)")
    ap.add_argument("--runs", type=int, default=12, help="simulated runs per regime")
    ap.add_argument("--out", type=Path, help="JSON file for the numbers")
    ap.add_argument("--polarized-from-start", action="store_true",
                    help="also simulate runs polarized from their first spectrum (no rest)")
    a = ap.parse_args(argv)
    paths = dict(s.split("=", 1) for s in a.bundles) or {"default": "models/default"}
    bundles = {k: load_bundle(v) for k, v in paths.items()}
    result = {"runs": a.runs, "regime": MEASURED_LIKE, "logs": lags(bundles, a.runs)}
    if a.polarized_from_start:
        result["polarized_from_start"] = lags(bundles, a.runs, polarized_from_start=True)
    print_lags(result)
    if (REAL / "nmr").is_dir():
        result["measured_run_plating_from_frame"] = real_run_first(bundles)
        for name, f in result["measured_run_plating_from_frame"].items():
            print(f"measured run   {name:14s} plating_onset from frame {f} (the line is measurable "
                  f"from frame 4)")
    if a.out:
        a.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
