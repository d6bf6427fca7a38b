"""Score several trained bundles (seeds, configs) side by side, each paired against a baseline.

Why: the per-run macro-F1 mean over ~60 runs has a standard error of about 2 points and one
training run of the learned model can land 10 points from another of the same config, so a
config is judged over several seeds, on the test split *and* on runs outside the training range,
and against the baseline's scores on the very same runs (paired bootstrap), not against one
number.

Usage::

    python benchmarks/seed_study.py runs/noise-seed0 runs/noise-seed1 models/default \\
        --dataset data/train --also heldout=data/heldout \\
        --baseline docs/results/compare.json:features_hgb --out docs/results/seed-study.json

Each bundle is evaluated as ``lisentry evaluate`` does (its own temperature and alarm policy):
on the test runs of its recorded split in ``--dataset`` and on all runs of every ``--also``
dataset. ``--baseline FILE:METHOD`` takes that method's per-run macro-F1 from a
``compare_models.py --out`` file (its sets must carry the same names: ``test``, and the
``--also`` names). Prints one line per bundle; ``--out`` writes everything as JSON, with the
mean and spread over the bundles of each group (``--group`` regular expression on the bundle
path; by default the path with a trailing ``-seedN`` / ``seedN`` removed).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np

from lisentry.datasets.store import Dataset
from lisentry.detector.online import policy_from_card
from lisentry.models.bundle import load_bundle
from lisentry.training.data import load_runs
from lisentry.training.evaluate import evaluate_predictions, predict_runs, save_json

_spec = importlib.util.spec_from_file_location(
    "compare_models", Path(__file__).resolve().with_name("compare_models.py"))
_cm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_cm)
paired_difference = _cm.paired_difference


def group_of(bundle: str) -> str:
    """The config a bundle stands for: its folder name without a trailing seed number."""
    name = Path(bundle).name
    return re.sub(r"[-_]?seed\d+$", "", name) or name


def evaluate_bundle(bundle_path: str, sets: dict[str, tuple[Dataset, list[str] | None]]) -> dict:
    """``{set: evaluation}`` of one bundle; ``None`` run ids = the bundle's recorded test split."""
    out = {}
    bundle = None
    for name, (ds, ids) in sets.items():
        if bundle is None:
            bundle = load_bundle(bundle_path, expect_grid=ds.ppm_grid,
                                 expect_processing=ds.manifest.get("processing"))
        if ids is None:
            test = set((bundle.card.get("training_split") or {}).get("test", []))
            ids = [r for r in ds.run_ids if r in test]
            if not ids:
                raise SystemExit(f"error: {bundle_path}: none of its test runs are in {ds.path}")
        runs = load_runs(ds, ids, window=bundle.window_inputs, symmetric_cells=bundle.symmetric_cells)
        preds = predict_runs(bundle.model, runs, temperature=bundle.temperature,
                             policy=policy_from_card(bundle.card))
        # the horizon the bundle was tuned with, as `lisentry evaluate` reads it
        horizon = float((bundle.card.get("detector") or {}).get("horizon_s", 3600.0))
        res = evaluate_predictions(runs, preds, horizon)
        out[name] = {"overall": res["overall"], "by_family": res["by_family"],
                     "per_run_macro_f1": _cm._per_run(res)}
    m = bundle.card.get("metrics", {})
    return {"bundle": bundle_path, "sha256": bundle.sha256, "group": group_of(bundle_path),
            "val_macro_f1": m.get("val_macro_f1"), "epochs_run": m.get("epochs_run"),
            "eval": out}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+", help="bundle folders")
    ap.add_argument("--dataset", type=Path, required=True,
                    help="the dataset the bundles were trained on (their test split is scored)")
    ap.add_argument("--also", action="append", default=[], metavar="NAME=DIR",
                    help="also score all runs of dataset DIR, reported as NAME (repeatable)")
    ap.add_argument("--baseline", default=None, metavar="FILE:METHOD",
                    help="per-run scores to pair against, from compare_models.py --out")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)

    sets: dict[str, tuple[Dataset, list[str] | None]] = {"test": (Dataset(a.dataset), None)}
    for spec in a.also:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder or name in sets:
            ap.error(f"--also expects NAME=DIR with a new NAME, got {spec!r}")
        ds = Dataset(Path(folder))
        sets[name] = (ds, ds.run_ids)
    base = None
    if a.baseline:
        file, sep, method = a.baseline.rpartition(":")
        try:
            methods = json.loads(Path(file).read_text())["methods"]
            base = {s: methods[method]["eval"][s]["per_run_macro_f1"] for s in sets}
        except (OSError, ValueError, KeyError) as exc:
            ap.error(f"--baseline {a.baseline}: expected a compare_models.py JSON with method "
                     f"{method!r} scored on sets {list(sets)} ({type(exc).__name__}: {exc})")

    results = {"dataset": str(a.dataset), "also": a.also, "baseline": a.baseline, "bundles": []}
    for b in a.bundles:
        r = evaluate_bundle(b, sets)
        if base is not None:
            r["paired"] = {s: paired_difference(r["eval"][s]["per_run_macro_f1"], base[s])
                           for s in sets}
        results["bundles"].append(r)
        parts = [f"{b}: val {r['val_macro_f1'] or float('nan'):.3f}, {r['epochs_run']} epochs"]
        for s in sets:
            txt = f"{s} {r['eval'][s]['overall']['macro_f1_mean']:.3f}"
            if base is not None:
                d = r["paired"][s]
                txt += f" (vs baseline {d['mean']:+.3f}, {d['ci95'][0]:+.3f} .. {d['ci95'][1]:+.3f})"
            parts.append(txt)
        print(" | ".join(parts), flush=True)

    groups: dict[str, dict] = {}
    for r in results["bundles"]:
        g = groups.setdefault(r["group"], {"bundles": [], **{s: [] for s in sets}})
        g["bundles"].append(r["bundle"])
        for s in sets:
            g[s].append(r["eval"][s]["overall"]["macro_f1_mean"])
    for name, g in groups.items():
        for s in sets:
            v = np.asarray(g[s], dtype=float)
            g[s] = {"values": v.tolist(), "mean": float(v.mean()), "min": float(v.min()),
                    "max": float(v.max())}
        print(f"{name} ({len(g['bundles'])} bundles): " + ", ".join(
            f"{s} mean {g[s]['mean']:.3f} ({g[s]['min']:.3f}-{g[s]['max']:.3f})" for s in sets))
    results["groups"] = groups
    if a.out:
        print(f"results written to {save_json(results, a.out)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
