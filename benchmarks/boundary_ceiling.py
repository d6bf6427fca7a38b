"""How much of the per-run macro-F1 a detector loses by being one or two frames late (or early).

The evaluation's macro-F1 (interfaces.md) is computed per run over the classes present in that
run and then averaged over runs. Many runs hold a class for only 1-3 frames (the
``plating_onset`` frames of ``hc_sulfide_lowpressure`` between the first visible dendrite and
``t_short - H``, the first ``normal_lithiation`` frames of ``hc_liquid``), so one frame at a class
boundary can cost a whole class of that run. This script scores *the truth itself, shifted in
time*: every label moved ``k`` frames later (``k > 0``, a detector that is right about every
transition but ``k`` frames late) or earlier (``k < 0``). No model is involved; the numbers are a
ceiling for any detector with that lag, and show how far a target such as 0.97 is from
"frame-exact boundaries".

Usage::

    .venv/bin/python benchmarks/boundary_ceiling.py data/train --split-from models/default \\
        --split test [--lags -1,1,2]

``--split-from BUNDLE --split NAME`` scores the runs of that split recorded in the bundle's card
(the default model's test runs); without it, every run of the dataset.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from lisentry.datasets.frame import CLASSES
from lisentry.datasets.store import Dataset
from lisentry.training.data import load_runs
from lisentry.training.metrics import aggregate, aggregate_by, run_metrics


def shift_labels(y: np.ndarray, lag: int) -> np.ndarray:
    """Class indices moved ``lag`` frames later (``lag < 0``: earlier), edges held.

    >>> shift_labels(np.array([0, 0, 1, 1, 3]), 1).tolist()
    [0, 0, 0, 1, 1]
    >>> shift_labels(np.array([0, 0, 1, 1, 3]), -1).tolist()
    [0, 1, 1, 3, 3]
    """
    y = np.asarray(y)
    if lag == 0 or len(y) == 0:
        return y.copy()
    if lag > 0:
        return np.concatenate([np.repeat(y[:1], min(lag, len(y))), y[:-lag]])[:len(y)]
    lag = -lag
    return np.concatenate([y[lag:], np.repeat(y[-1:], min(lag, len(y)))])[:len(y)]


def ceiling(runs, lags, horizon_s: float = 3600.0) -> dict:
    out = {}
    for lag in lags:
        per_run = []
        for r in runs:
            y = np.asarray(r.y)
            truth = [CLASSES[k] if k >= 0 else None for k in y]
            # unlabelled frames (-1) take their neighbour's label after the shift, else the baseline
            pred = [CLASSES[k] if k >= 0 else CLASSES[0] for k in shift_labels(y, lag)]
            per_run.append(run_metrics(r.t_s, truth, pred, r.t_onset_s, r.t_short_s, horizon_s,
                                       run_id=r.run_id, family=r.family,
                                       has_short_precursors=r.has_short_precursors))
        out[lag] = {"overall": aggregate(per_run)["macro_f1_mean"],
                    "by_family": {f: a["macro_f1_mean"] for f, a in aggregate_by(per_run, "family").items()
                                  if f != "all"}}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--split-from", type=Path, help="bundle whose card lists the split's runs")
    ap.add_argument("--split", default="test")
    ap.add_argument("--lags", default="-1,1,2", help="frame shifts, comma separated")
    ap.add_argument("--out", type=Path, help="JSON file for the numbers")
    a = ap.parse_args(argv)
    ds = Dataset(a.dataset)
    ids = ds.run_ids
    if a.split_from:
        card = json.loads((a.split_from / "card.json").read_text())
        wanted = set(card.get("training_split", {}).get(a.split, []))
        ids = [r for r in ids if r in wanted]
        if not ids:
            print(f"error: no runs of split {a.split!r} of {a.split_from} in {a.dataset}", file=sys.stderr)
            return 2
    lags = [int(x) for x in a.lags.split(",") if x.strip()]
    runs = load_runs(ds, ids)
    res = ceiling(runs, lags)
    fams = sorted(next(iter(res.values()))["by_family"]) if res else []
    head = ["family"] + [f"{lag:+d} frame" for lag in lags]
    rows = [[f] + [f"{res[lag]['by_family'][f]:.3f}" for lag in lags] for f in fams]
    rows.append(["all"] + [f"{res[lag]['overall']:.3f}" for lag in lags])
    w = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    print(f"macro-F1 of the truth shifted in time ({len(runs)} runs of {a.dataset}"
          + (f", split {a.split} of {a.split_from}" if a.split_from else "") + ")")
    for r in [head] + rows:
        print("  ".join(c.ljust(x) for c, x in zip(r, w)))
    if a.out:
        a.out.write_text(json.dumps({"dataset": str(a.dataset), "n_runs": len(runs),
                                     "split": a.split if a.split_from else "all",
                                     "lags": {str(k): v for k, v in res.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
