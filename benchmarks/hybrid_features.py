"""Experiment: the learned model with the HGB baseline's hand-made features as extra inputs.

Why: the feature baseline (HGB on :func:`lisentry.training.baselines.frame_features`) is level
with or ahead of the CNN + GRU everywhere, and ahead outside the training field and SNR. This
asks whether the GRU does better than the trees when it is given the same 31 causal features
next to its own spectrum encoder: the features are appended to the electrochemistry input
(each scaled as ``asinh(x / s)``, ``s`` the median absolute value over the training runs;
masked where NaN), and the config is otherwise unchanged.

Offline only: the online detector does not compute these features, so a bundle trained here
is for this comparison, not for ``watch``/``label`` (its card names only the echem features).

Usage::

    python benchmarks/hybrid_features.py configs/train-default.yaml --out runs/hybrid \\
        [--set seed=1] [--also heldout=data/heldout] [--baseline docs/results/compare.json:features_hgb]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch

import lisentry.training.data as tdata
import lisentry.training.loop as tloop
from lisentry.datasets.store import Dataset
from lisentry.detector.hysteresis import AlarmPolicy
from lisentry.models.features import N_ECHEM
from lisentry.training.baselines import FEATURE_NAMES, frame_features
from lisentry.training.config import load_train_config as load_config
from lisentry.training.evaluate import evaluate_predictions, predict_runs, save_json

_spec = importlib.util.spec_from_file_location(
    "compare_models", Path(__file__).resolve().with_name("compare_models.py"))
_cm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_cm)

N_HAND = len(FEATURE_NAMES)
_original_run_tensors = tdata.run_tensors


def hybrid_run_tensors(scale: np.ndarray, ppm_grid: np.ndarray):
    """A replacement for ``run_tensors`` appending the scaled hand-made features to echem."""
    def run_tensors(view, *args, **kw):
        rt = _original_run_tensors(view, *args, **kw)
        f = frame_features(rt, ppm_grid)
        ok = np.isfinite(f)
        z = np.where(ok, np.arcsinh(np.where(ok, f, 0.0) / scale), 0.0).astype(np.float32)
        rt.echem = np.concatenate([rt.echem, z], axis=1).astype(np.float32)
        rt.echem_mask = np.concatenate([rt.echem_mask, ok.astype(rt.echem_mask.dtype)], axis=1)
        return rt
    return run_tensors


def feature_scale(ds: Dataset, run_ids, ppm_grid) -> np.ndarray:
    vals = [frame_features(_original_run_tensors(ds.run(r)), ppm_grid) for r in run_ids]
    v = np.abs(np.concatenate(vals))
    with np.errstate(all="ignore"):
        s = np.nanmedian(np.where(v > 0, v, np.nan), axis=0)
    return np.where(np.isfinite(s) & (s > 0), s, 1.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--also", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--baseline", default=None, metavar="FILE:METHOD")
    a = ap.parse_args(argv)
    cfg = load_config(a.config, [*a.overrides, f"out={a.out}", "mlflow.enabled=false"])
    ds = Dataset(cfg["dataset"])
    split = ds.split(**{k: cfg["split"][k] for k in ("val_frac", "test_frac", "seed",
                                                      "leave_out_families")})
    scale = feature_scale(ds, split["train"][::4], ds.ppm_grid)
    tdata.run_tensors = hybrid_run_tensors(scale, ds.ppm_grid)
    tloop.N_ECHEM = N_ECHEM + N_HAND
    res = tloop.train(cfg, register=False)

    # the bundle's own loader would refuse the wider input: rebuild the net and load its weights
    from safetensors.torch import load_file
    card = json.loads((res.bundle_dir / "card.json").read_text())
    model = tloop.build_model(cfg, len(ds.ppm_grid), ds.ppm_grid)
    model.load_state_dict(load_file(str(res.bundle_dir / "weights.safetensors")))
    model.eval()
    det = card["detector"]
    policy = AlarmPolicy(enter=det["enter"], exit=det["exit"], min_consecutive=det["min_consecutive"])
    sets = {"test": (ds, card["training_split"]["test"])}
    for spec in a.also:
        name, _, folder = spec.partition("=")
        other = Dataset(Path(folder))
        sets[name] = (other, other.run_ids)
    base = None
    if a.baseline:
        file, _, method = a.baseline.rpartition(":")
        base = json.loads(Path(file).read_text())["methods"][method]["eval"]
    out = {"config": str(a.config), "overrides": a.overrides, "feature_names": list(FEATURE_NAMES),
           "feature_scale": scale.tolist(), "val_macro_f1": res.best_val_f1,
           "epochs_run": res.epochs_run, "policy": det, "eval": {}}
    for name, (d, ids) in sets.items():
        runs = tdata.load_runs(d, ids)
        preds = predict_runs(model, runs, temperature=float(card["temperature"]), policy=policy)
        r = evaluate_predictions(runs, preds, float(det.get("horizon_s", 3600.0)))
        entry = {"overall": r["overall"], "by_family": r["by_family"],
                 "per_run_macro_f1": _cm._per_run(r)}
        line = f"{name}: macro-F1 {r['overall']['macro_f1_mean']:.3f}"
        if base is not None and name in base:
            dd = _cm.paired_difference(entry["per_run_macro_f1"], base[name]["per_run_macro_f1"])
            entry["paired_vs_baseline"] = dd
            line += f" (vs baseline {dd['mean']:+.3f}, {dd['ci95'][0]:+.3f} .. {dd['ci95'][1]:+.3f})"
        out["eval"][name] = entry
        print(line, flush=True)
    save_json(out, a.out.with_suffix(".json"))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    raise SystemExit(main())
