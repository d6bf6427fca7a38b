"""Average the calibrated probabilities of several bundles trained on the same split: the
ensemble's alarm policy is tuned on the validation runs (as ``lisentry train`` does for one
model) and it is scored on the test runs, beside each member.

Usage::

    .venv/bin/python benchmarks/ensemble.py data/train models/default runs/desc-seed2
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from lisentry.datasets.store import Dataset
from lisentry.detector.hysteresis import AlarmPolicy, smooth_labels
from lisentry.models.bundle import load_bundle
from lisentry.training.data import load_runs, widen_runs
from lisentry.training.evaluate import RunPrediction, evaluate_predictions, predict_runs, tune_policy


def average(member_preds):
    """One prediction per run: the mean of the members' calibrated probabilities."""
    out = []
    for items in zip(*member_preds):
        p = np.mean([x.proba for x in items], axis=0)
        first = items[0]
        out.append(RunPrediction(first.run_id, first.family, first.logits, p, first.aux,
                                 first.energy, first.labels))
    return out


def scored(val, test, pv, pt, max_fa: float, horizon_s: float) -> dict:
    policy, search = tune_policy(val, pv, horizon_s=horizon_s, max_false_alarms_per_100h=max_fa)
    sm = [RunPrediction(p.run_id, p.family, p.logits, p.proba, p.aux, p.energy,
                        smooth_labels(p.proba, policy)) for p in pt]
    ov = evaluate_predictions(test, sm, horizon_s)["overall"]
    d = ov["plating"]["delay_s"]["median"]
    return {"val_macro_f1": search["chosen"]["macro_f1"], "policy": policy.to_dict(),
            "test_macro_f1": ov["macro_f1_mean"],
            "shorts": f"{ov['short']['n_detected']}/{ov['short']['n_runs_with_short']}",
            "false_alarms_per_100h": ov["false_alarms"]["per_100h"],
            "plating_delay_min": None if d is None else d / 60.0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("bundles", nargs="+", type=Path)
    a = ap.parse_args(argv)
    ds = Dataset(a.dataset)
    bundles = [load_bundle(str(b), expect_grid=ds.ppm_grid,
                           expect_processing=ds.manifest.get("processing")) for b in a.bundles]
    split = bundles[0].card["training_split"]
    if any(b.symmetric_cells != "signed" for b in bundles):
        print("error: the runs are loaded signed for all bundles; give bundles that read "
              "symmetric cells signed", file=sys.stderr)
        return 2
    for path, b in zip(a.bundles[1:], bundles[1:]):
        if b.card["training_split"]["test"] != split["test"]:
            print(f"error: {path} was trained on another split than {a.bundles[0]}", file=sys.stderr)
            return 2
    det = bundles[0].card.get("detector", {})
    horizon_s, max_fa = float(det.get("horizon_s", 3600.0)), float(det.get("max_false_alarms_per_100h", 1.0))
    val, test = load_runs(ds, split["val"]), load_runs(ds, split["test"])
    start = AlarmPolicy(0.6, 0.4, 2)  # re-smoothed by the policy search

    # a bundle with window features gets them appended to copies of the runs
    pv = [predict_runs(b.model, widen_runs(val, b.window_inputs, copy=True),
                       temperature=b.temperature, policy=start) for b in bundles]
    pt = [predict_runs(b.model, widen_runs(test, b.window_inputs, copy=True),
                       temperature=b.temperature, policy=start) for b in bundles]
    rows = [(str(p), scored(val, test, v, t, max_fa, horizon_s)) for p, v, t in zip(a.bundles, pv, pt)]
    rows.append(("ensemble (mean probability)", scored(val, test, average(pv), average(pt), max_fa, horizon_s)))
    for name, r in rows:
        print(f"{name}: validation {r['val_macro_f1']:.3f}, test {r['test_macro_f1']:.3f}, shorts "
              f"{r['shorts']}, false alarms {r['false_alarms_per_100h']:.2f}/100 h, plating delay "
              f"{'-' if r['plating_delay_min'] is None else format(r['plating_delay_min'], '.1f')} min; policy enter {r['policy']['enter']} exit "
              f"{r['policy']['exit']} min_consecutive {r['policy']['min_consecutive']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
