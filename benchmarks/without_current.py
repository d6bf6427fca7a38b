"""The learned model and the feature baseline (HGB) on logs with and without a current column.

EC-Lab exports of time and Ewe only (the measured Li | Li run's) have no current: the features
computed from it (current, charge passed, time since the last step, current rates) are
undefined. The learned default is trained for that (``train.augment.drop_current``); the HGB of
``make compare`` is not. This script scores, on the same runs:

* ``model``: a learned bundle (``--model``);
* ``hgb``: the feature baseline as in ``benchmarks/compare_models.py`` (training split of the
  dataset, alarm policy tuned on its validation runs);
* ``hgb+nocurrent``: the same baseline fitted on the training runs plus a copy of each with the
  current's features masked, the baseline's counterpart of the model's augmentation;

each on every evaluation set as recorded (``as_is``) and with the current's features masked
(``no_current``: the columns of :data:`lisentry.models.window_features.CURRENT_FEATURES`
undefined, the window features computed from the masked log, as the detector computes them).
It prints one table and the paired per-run differences (model minus each HGB) with bootstrap
95 % intervals; ``--out`` saves everything as JSON.

Usage::

    python benchmarks/without_current.py data/train --model models/default \\
        --also heldout=data/heldout --also snr=data/heldout-snr --out without_current.json
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from lisentry.datasets.store import Dataset
from lisentry.detector.hysteresis import AlarmPolicy
from lisentry.models.features import ECHEM_FEATURES
from lisentry.models.window_features import CURRENT_FEATURES
from lisentry.training.baselines import BASELINES
from lisentry.training.config import DEFAULTS
from lisentry.training.data import RunTensors, load_runs, widen_runs
from lisentry.training.evaluate import evaluate_predictions, predict_runs, save_json, tune_policy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_models import (_per_run, format_comparison, format_paired,  # noqa: E402
                            paired_difference, summary_row)



def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def without_current(runs: list[RunTensors], names=CURRENT_FEATURES) -> list[RunTensors]:
    """Copies of runs loaded without window features, as if their log had no current column
    (``names``: the echem features masked, by default those a potential-only log lacks)."""
    unknown = [n for n in names if n not in ECHEM_FEATURES]
    if unknown:
        raise ValueError(f"unknown echem feature(s) {unknown}; known: {list(ECHEM_FEATURES)}")
    ix = [ECHEM_FEATURES.index(n) for n in names]
    out = []
    for rt in runs:
        if rt.echem.shape[1] != len(ECHEM_FEATURES):
            raise ValueError(f"{rt.run_id}: expected the {len(ECHEM_FEATURES)} echem columns "
                             f"before window features, got {rt.echem.shape[1]}")
        echem, mask = rt.echem.copy(), rt.echem_mask.copy()
        echem[:, ix], mask[:, ix] = 0, 0
        out.append(dataclasses.replace(rt, echem=echem, echem_mask=mask))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path, help="training dataset (its split as in make compare)")
    ap.add_argument("--model", required=True, help="learned bundle folder")
    ap.add_argument("--also", action="append", default=[], metavar="NAME=DIR",
                    help="also evaluate on all runs of dataset DIR, reported as NAME")
    ap.add_argument("--out", type=Path, default=None, help="JSON with all results")
    ap.add_argument("--no-hgb", action="store_true",
                    help="score the model only (no HGB fits, no paired differences)")
    ap.add_argument("--masked", default=",".join(CURRENT_FEATURES),
                    help="comma-separated echem features masked in the no_current condition "
                         "(default: all that a potential-only log lacks), e.g. "
                         "charge_asinh,log1p_h_since_step to ask what the charge passed explains")
    a = ap.parse_args(argv)
    masked = tuple(n.strip() for n in a.masked.split(",") if n.strip())
    if unknown := [n for n in masked if n not in ECHEM_FEATURES]:
        ap.error(f"--masked: unknown echem feature(s) {unknown}; known: {list(ECHEM_FEATURES)}")

    from lisentry.detector.online import policy_from_card
    from lisentry.models.bundle import load_bundle

    ds = Dataset(a.dataset)
    sp = DEFAULTS["split"]
    split = ds.split(val_frac=sp["val_frac"], test_frac=sp["test_frac"], seed=sp["seed"])
    det = DEFAULTS["detector"]
    policy = AlarmPolicy(enter=det["enter"], exit=det["exit"],
                         min_consecutive=det["min_consecutive"])
    horizon = float(det["horizon_s"])
    train, val = ([], []) if a.no_hgb else (load_runs(ds, split["train"]), load_runs(ds, split["val"]))
    sets = {"test": load_runs(ds, split["test"])}
    for spec in a.also:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder or name in sets:
            ap.error(f"--also expects NAME=DIR with a new NAME, got {spec!r}")
        other = Dataset(Path(folder))
        sets[name] = load_runs(other, other.run_ids)
    _log(f"{a.dataset}: {len(train)} training runs; " + ", ".join(
        f"{k}: {len(v)} runs" for k, v in sets.items()))

    bundle = load_bundle(a.model, expect_grid=ds.ppm_grid,
                         expect_processing=ds.manifest.get("processing"))
    mpolicy = policy_from_card(bundle.card)
    if bundle.symmetric_cells != "signed":
        # the runs are loaded once, signed, for the HGB and the model alike
        ap.error(f"{a.model} reads symmetric cells {bundle.symmetric_cells}; this script scores "
                 "models that read them signed only")

    def model_predict(runs):
        wide = widen_runs(runs, bundle.window_inputs, copy=True)
        return wide, predict_runs(bundle.model, wide, temperature=bundle.temperature,
                                  policy=mpolicy)

    methods = {}
    for name, fit_runs in (() if a.no_hgb else
                           (("hgb", train), ("hgb+nocurrent", train + without_current(train)))):
        est = BASELINES["features_hgb"]()
        t0 = time.perf_counter()
        est.fit(fit_runs)
        fit_s = time.perf_counter() - t0
        bpolicy, _ = tune_policy(val, est.predict_runs(val, policy), horizon_s=horizon,
                                 max_false_alarms_per_100h=det["max_false_alarms_per_100h"])
        _log(f"{name}: fitted on {len(fit_runs)} runs in {fit_s:.1f} s; policy {bpolicy.to_dict()}")
        methods[name] = (lambda runs, est=est, p=bpolicy: (runs, est.predict_runs(runs, p)), fit_s)
    methods["model"] = (model_predict, None)

    results = {"dataset": str(a.dataset), "model": str(a.model), "sha256": bundle.sha256,
               "masked_columns": list(masked), "eval": {}, "paired": {}}
    rows = []
    for sset, runs in sets.items():
        for cond, cruns in (("as_is", runs), ("no_current", without_current(runs, masked))):
            key = f"{sset}/{cond}"
            per = {}
            results["eval"][key] = {}
            for name, (predict, fit_s) in methods.items():
                scored, preds = predict(cruns)
                res = evaluate_predictions(scored, preds, horizon)
                per[name] = _per_run(res)
                results["eval"][key][name] = {"overall": res["overall"],
                                              "by_family": res["by_family"],
                                              "per_run_macro_f1": per[name]}
                rows.append((key, name, summary_row(res["overall"]), fit_s))
                _log(f"{key} {name}: macro-F1 {res['overall']['macro_f1_mean']:.3f}")
            for base in () if a.no_hgb else ("hgb", "hgb+nocurrent"):
                d = paired_difference(per["model"], per[base])
                results["paired"][f"{key}:model-{base}"] = d
    print(format_comparison(rows))
    print("\n".join(format_paired(k, d) for k, d in results["paired"].items()))
    if a.out:
        save_json(results, a.out)   # the path the user gave
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
