"""Compare the three baselines (and optionally a learned bundle) on the same runs and metrics.

The baselines of :mod:`lisentry.training.baselines` are trained on the dataset's training split
(``Dataset.split`` with the seed and fractions of ``lisentry.training.config.DEFAULTS``, and
``--leave-out`` families held out whole) and evaluated on the test runs and the left-out runs
with :func:`lisentry.training.evaluate.evaluate_predictions` after the same hysteresis as the
detector, its alarm policy chosen per baseline on the validation runs
(:func:`lisentry.training.evaluate.tune_policy`, as ``detector.tune_policy`` does for the learned
model; ``--fixed-policy`` keeps the default policy). ``--model BUNDLE`` adds a learned bundle, run through
:func:`lisentry.training.evaluate.predict_runs` with the bundle's temperature and
:func:`lisentry.detector.online.policy_from_card`.

Usage::

    python benchmarks/compare_models.py data/train [--leave-out li_llzo_li] \\
        [--model models/default] [--out compare.json] [--only rules,features_hgb] \\
        [--also heldout=data/heldout]

``--also NAME=DIR`` scores every method, unchanged (trained on ``data/train``'s training split,
policy from its validation runs), on all runs of another dataset as well, e.g. the held-out runs
at a field and SNR outside the training range; the paired differences are given for it too.

Prints one table (rows: evaluation set x method; columns: macro-F1, accuracy, median plating
delay, median short lead, false alarms per 100 h, fit time) on stdout; progress on stderr;
``--out`` writes everything (overall and per-family metrics, thresholds, timings) as JSON.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from lisentry.datasets.store import Dataset
from lisentry.detector.hysteresis import AlarmPolicy
from lisentry.training.baselines import BASELINES
from lisentry.training.config import DEFAULTS
from lisentry.training.data import load_runs, widen_runs
from lisentry.training.evaluate import (evaluate_predictions, format_table, save_json,
                                        tune_policy)

LABELS = {"rules": "RuleBaseline", "features_hgb": "FeatureBaseline (HGB)",
          "minirocket": "MiniRocket + ridge"}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _fmt_min(x):
    return "-" if x is None else f"{x / 60.0:.1f}"


def summary_row(agg: dict) -> dict:
    """The compared numbers of one aggregate (``evaluate_predictions(...)["overall"]``)."""
    pl, sh, fa = agg["plating"], agg["short"], agg["false_alarms"]
    return {"n_runs": agg["n_runs"], "macro_f1": agg["macro_f1_mean"], "accuracy": agg["accuracy"],
            "plating_delay_median_s": pl["delay_s"]["median"],
            "plating_detected": f"{pl['n_detected']}/{pl['n_runs_with_onset']}",
            "short_lead_median_s": sh["lead_s"]["median"],
            "short_detected": f"{sh['n_detected']}/{sh['n_runs_with_short']}",
            "false_alarms_per_100h": fa["per_100h"]}


def format_comparison(rows: list[tuple[str, str, dict, float | None]]) -> str:
    """Plain-text table of ``(eval set, method, summary_row, fit seconds)`` rows."""
    head = ("set", "method", "runs", "macro-F1", "accuracy", "plating delay min (det/n)",
            "short lead min (det/n)", "false alarms /100h", "fit s")
    out = [head]
    for sset, name, s, fit_s in rows:
        f = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
        out.append((sset, name, str(s["n_runs"]), f(s["macro_f1"]), f(s["accuracy"]),
                    f"{_fmt_min(s['plating_delay_median_s'])} ({s['plating_detected']})",
                    f"{_fmt_min(s['short_lead_median_s'])} ({s['short_detected']})",
                    "-" if s["false_alarms_per_100h"] is None
                    else f"{s['false_alarms_per_100h']:.2f}",
                    "-" if fit_s is None else f"{fit_s:.1f}"))
    w = [max(len(r[i]) for r in out) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(k) for c, k in zip(r, w)) for r in out)


def _per_run(res: dict) -> dict[str, float]:
    """``{run_id: macro-F1}`` of an evaluation (for paired comparisons)."""
    return {p["run_id"]: p["macro_f1"] for p in res["per_run"] if p.get("macro_f1") is not None}


def paired_difference(a: dict[str, float], b: dict[str, float], *, n_boot: int = 10000,
                      seed: int = 0) -> dict:
    """Mean per-run macro-F1 difference ``a - b`` over the runs both scored, with a paired
    bootstrap 95 % interval (runs resampled with replacement; the runs, not the frames, are the
    independent units)."""
    ids = sorted(set(a) & set(b))
    d = np.array([a[i] - b[i] for i in ids], dtype=float)
    if not d.size:
        return {"n_runs": 0, "mean": float("nan"), "ci95": [float("nan")] * 2, "n_better": 0,
                "n_worse": 0}
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"n_runs": int(d.size), "mean": float(d.mean()), "ci95": [float(lo), float(hi)],
            "n_better": int((d > 1e-9).sum()), "n_worse": int((d < -1e-9).sum())}


def format_paired(label: str, d: dict) -> str:
    """One line for a :func:`paired_difference` result."""
    return (f"{label}: {d['mean']:+.3f} macro-F1 over {d['n_runs']} runs (paired bootstrap 95 % "
            f"interval {d['ci95'][0]:+.3f} .. {d['ci95'][1]:+.3f}; better on {d['n_better']}, "
            f"worse on {d['n_worse']})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path, help="dataset folder (lisentry datasets build)")
    ap.add_argument("--leave-out", action="append", default=[], metavar="FAMILY",
                    help="family held out of training and evaluated separately (repeatable)")
    ap.add_argument("--fixed-policy", action="store_true",
                    help="smooth baselines with the default alarm policy instead of tuning it on "
                         "the validation runs (the learned model uses the policy of its card)")
    ap.add_argument("--model", default=None, help="learned bundle folder to compare as well")
    ap.add_argument("--out", type=Path, default=None, help="JSON with all results")
    ap.add_argument("--only", default=",".join(BASELINES),
                    help=f"comma-separated baselines (default all: {','.join(BASELINES)})")
    ap.add_argument("--also", action="append", default=[], metavar="NAME=DIR",
                    help="also evaluate on all runs of dataset DIR, reported as NAME (repeatable)")
    ap.add_argument("--seed", type=int, default=DEFAULTS["split"]["seed"])
    ap.add_argument("--val-frac", type=float, default=DEFAULTS["split"]["val_frac"])
    ap.add_argument("--test-frac", type=float, default=DEFAULTS["split"]["test_frac"])
    a = ap.parse_args(argv)

    names = [n.strip() for n in a.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        ap.error(f"unknown baseline(s) {unknown}; known: {list(BASELINES)}")
    ds = Dataset(a.dataset)
    split = ds.split(val_frac=a.val_frac, test_frac=a.test_frac, seed=a.seed,
                     leave_out_families=a.leave_out)
    det = DEFAULTS["detector"]
    policy = AlarmPolicy(enter=det["enter"], exit=det["exit"],
                         min_consecutive=det["min_consecutive"])
    horizon = float(det["horizon_s"])
    train = load_runs(ds, split["train"])
    val = load_runs(ds, split["val"]) if not a.fixed_policy else []
    eval_sets = {k: load_runs(ds, split[k]) for k in ("test", "leave_out") if split[k]}
    for spec in a.also:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder or name in ("test", "leave_out"):
            ap.error(f"--also expects NAME=DIR with a new NAME, got {spec!r}")
        other = Dataset(Path(folder))
        if not np.array_equal(np.asarray(other.ppm_grid), np.asarray(ds.ppm_grid)):
            ap.error(f"--also {spec}: {folder} has another ppm grid than {a.dataset}")
        eval_sets[name] = load_runs(other, other.run_ids)
    if not train or not eval_sets:
        _log(f"error: {a.dataset}: need training and test runs; got {len(train)} train, "
             f"{len(split['test'])} test, {len(split['leave_out'])} left out")
        return 2
    _log(f"{a.dataset}: {len(train)} training runs ({sum(len(r) for r in train)} frames); "
         + ", ".join(f"{k}: {len(v)} runs" for k, v in eval_sets.items()))

    results: dict = {"dataset": str(a.dataset), "split_seed": a.seed, "val_frac": a.val_frac,
                     "test_frac": a.test_frac, "leave_out_families": a.leave_out,
                     "policy": policy.to_dict(), "horizon_s": horizon,
                     "n_train_runs": len(train), "methods": {}}
    rows = []
    for name in names:
        est = BASELINES[name]()
        t0 = time.perf_counter()
        est.fit(train)
        fit_s = time.perf_counter() - t0
        entry = {"params": {k: v for k, v in est.get_params().items()
                            if k not in ("policy", "ppm_grid")},
                 "fit_s": fit_s, "eval": {}}
        if hasattr(est, "thresholds_"):
            entry["thresholds"] = est.thresholds_
            entry["train_score"] = est.train_score_
        if hasattr(est, "temperature_"):
            entry["temperature"] = est.temperature_
        _log(f"{LABELS[name]}: fitted in {fit_s:.1f} s")
        bpolicy = policy
        if val:
            # The same treatment as the learned model (detector.tune_policy): the alarm policy
            # is chosen on validation runs, never on the evaluation runs.
            bpolicy, search = tune_policy(val, est.predict_runs(val, policy), horizon_s=horizon,
                                          max_false_alarms_per_100h=det["max_false_alarms_per_100h"])
            entry["policy"] = bpolicy.to_dict()
            entry["policy_val_macro_f1"] = search["chosen"]["macro_f1"]
            _log(f"{LABELS[name]}: alarm policy tuned on {len(val)} validation runs: "
                 f"{bpolicy.to_dict()}")
        for sset, runs in eval_sets.items():
            t0 = time.perf_counter()
            preds = est.predict_runs(runs, bpolicy)
            n_frames = sum(len(r) for r in runs)
            ms = (time.perf_counter() - t0) / max(n_frames, 1) * 1e3
            res = evaluate_predictions(runs, preds, horizon)
            entry["eval"][sset] = {"overall": res["overall"], "by_family": res["by_family"],
                                   "predict_ms_per_frame": ms, "per_run_macro_f1": _per_run(res)}
            rows.append((sset, LABELS[name], summary_row(res["overall"]), fit_s))
            _log(f"\n{LABELS[name]} on {sset}:\n{format_table(res)}")
        results["methods"][name] = entry

    if a.model:
        from lisentry.detector.online import policy_from_card
        from lisentry.models.bundle import load_bundle
        from lisentry.training.evaluate import predict_runs
        bundle = load_bundle(a.model, expect_grid=ds.ppm_grid,
                             expect_processing=ds.manifest.get("processing"))
        if bundle.symmetric_cells != "signed":   # the runs above were loaded signed, once for all
            raise SystemExit(f"error: {a.model} reads symmetric cells {bundle.symmetric_cells}; "
                             "this script scores models that read them signed only")
        mpolicy = policy_from_card(bundle.card)
        entry = {"bundle": str(a.model), "sha256": bundle.sha256,
                 "temperature": bundle.temperature, "policy": mpolicy.to_dict(), "eval": {}}
        overlap = set((bundle.card.get("training_split") or {}).get("train", [])) & {
            r.run_id for runs in eval_sets.values() for r in runs}
        if overlap:
            _log(f"warning: {len(overlap)} evaluation runs were in the bundle's training split")
            entry["runs_seen_in_training"] = sorted(overlap)
        for sset, runs in eval_sets.items():
            runs = widen_runs(runs, bundle.window_inputs, copy=True)  # baselines keep theirs
            preds = predict_runs(bundle.model, runs, temperature=bundle.temperature,
                                 policy=mpolicy)
            res = evaluate_predictions(runs, preds, horizon)
            entry["eval"][sset] = {"overall": res["overall"], "by_family": res["by_family"],
                                   "per_run_macro_f1": _per_run(res)}
            rows.append((sset, f"model {Path(str(a.model)).name}", summary_row(res["overall"]),
                         None))
            _log(f"\nmodel on {sset}:\n{format_table(res)}")
        results["methods"]["model"] = entry

    rows.sort(key=lambda r: list(eval_sets).index(r[0]))
    print(format_comparison(rows))
    if a.model:
        results["paired"] = {}
        for sset in eval_sets:
            model_runs = results["methods"]["model"]["eval"][sset]["per_run_macro_f1"]
            for name in names:
                d = paired_difference(model_runs, results["methods"][name]["eval"][sset]["per_run_macro_f1"])
                results["paired"][f"{sset}:model-{name}"] = d
                print(format_paired(f"{sset}: model - {LABELS[name]}", d))
    results["table"] = [{"set": s, "method": m, **row, "fit_s": f} for s, m, row, f in rows]
    if a.out:
        _log(f"results written to {save_json(results, a.out)}")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
