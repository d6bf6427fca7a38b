"""Where frame-level differences between the learned model and the HGB sit: class boundaries
entered early, on time or late, missed, and spurious episodes.

For every class boundary of the truth (frame ``i`` where the true class changes to ``c``), the
predicted entry is the change of the prediction into ``c`` nearest to ``i``, after the previous
true boundary and at most ``late`` frames after ``i`` (and not after the next boundary); its
offset ``j - i`` in frames is counted (negative: early), or "missed" when there is none.
A predicted episode (a maximal stretch of one class) that overlaps no true frame of its class is
"spurious"; its frames are counted too. Macro-F1 averages hide which of these a model loses
on; this table shows it, per kind of boundary (``normal_lithiation -> cluster_growth``...).

The HGB is fitted on the training split and its alarm policy tuned on the validation runs, as in
``benchmarks/compare_models.py``; the learned bundle uses the policy of its card.

Usage::

    python benchmarks/boundary_timing.py data/train --model models/default \\
        --also heldout=data/heldout --out docs/results/boundary-timing.json
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from lisentry.datasets.frame import CLASSES
from lisentry.datasets.store import Dataset
from lisentry.detector.hysteresis import AlarmPolicy
from lisentry.training.baselines import BASELINES
from lisentry.training.config import DEFAULTS
from lisentry.training.data import load_runs, widen_runs
from lisentry.training.evaluate import predict_runs, tune_policy

SHORT = {"normal_lithiation": "N", "cluster_growth": "C", "plating_onset": "P",
         "imminent_short": "S"}


def _episodes(labels: np.ndarray):
    """(class, start, end) of each maximal stretch of one label (end exclusive)."""
    out, start = [], 0
    for k in range(1, len(labels) + 1):
        if k == len(labels) or labels[k] != labels[start]:
            out.append((labels[start], start, k))
            start = k
    return out


def boundary_offsets(truth: np.ndarray, pred: np.ndarray, *,
                     late: int = 6) -> tuple[list[tuple[str, str, int | None]], list[tuple[str, int]]]:
    """Boundaries of ``truth`` and the prediction's entry offset at each, and spurious episodes.

    The entry that answers a true boundary at frame ``i`` (into class ``c``) is the predicted
    change into ``c`` nearest to ``i`` after the previous true boundary and no later than the
    next one or ``i + late``, whichever comes first. A run that starts with the prediction
    already in ``c`` counts as entering at frame 0.

    Parameters
    ----------
    truth, pred : arrays of class indices, same length; truth < 0 marks unlabelled frames
        (a boundary needs labelled frames on both sides).
    late : how many frames after the true boundary a predicted entry may come.

    Returns
    -------
    boundaries : ``(from_class, to_class, offset)`` per true boundary; offset in frames
        (negative = early) or None when missed.
    spurious : ``(class, n_frames)`` per predicted episode with no true frame of its class.
    """
    truth, pred = np.asarray(truth), np.asarray(pred)
    if truth.shape != pred.shape:
        raise ValueError(f"truth and prediction differ in length: {truth.shape} vs {pred.shape}")
    changes = [i for i in range(1, len(truth)) if truth[i] != truth[i - 1]]
    bounds = []
    for n, i in enumerate(changes):
        a, c = truth[i - 1], truth[i]
        if a < 0 or c < 0:
            continue
        lo = changes[n - 1] + 1 if n else 0
        hi = min(changes[n + 1] if n + 1 < len(changes) else len(truth), i + late + 1)
        entries = [j for j in range(lo, hi)
                   if pred[j] == c and (j == 0 or pred[j - 1] != c)]
        offset = min((j - i for j in entries), key=abs, default=None)
        bounds.append((CLASSES[a], CLASSES[c], offset))
    spurious = [(CLASSES[c], e - s) for c, s, e in _episodes(pred)
                if not np.any(truth[s:e] == c)]
    return bounds, spurious


def summarize(runs, labels_by_run, late: int = 6) -> dict:
    """Counts per boundary kind: offsets (early/0/+1/+2/+3 or more/missed), spurious episodes,
    and the families of the missed boundaries, of those entered 3 or more frames early and of
    the spurious episodes."""
    per_kind: dict[str, Counter] = defaultdict(Counter)
    spurious: Counter = Counter()
    spurious_frames: Counter = Counter()
    missed_by_family: dict[str, Counter] = defaultdict(Counter)
    spurious_by_family: dict[str, Counter] = defaultdict(Counter)
    early_by_family: dict[str, Counter] = defaultdict(Counter)
    for r, lab in zip(runs, labels_by_run):
        bounds, spur = boundary_offsets(r.y, lab, late=late)
        for a, c, off in bounds:
            key = f"{SHORT[a]}->{SHORT[c]}"
            bucket = ("missed" if off is None else "-3 or more" if off <= -3 else
                      "-2" if off == -2 else "-1" if off == -1 else
                      "on time" if off == 0 else "+1" if off == 1 else "+2" if off == 2 else "+3 or more")
            per_kind[key][bucket] += 1
            if off is None:
                missed_by_family[key][r.family] += 1
            elif off <= -3:
                early_by_family[key][r.family] += 1
        for c, n in spur:
            spurious[SHORT[c]] += 1
            spurious_frames[SHORT[c]] += n
            spurious_by_family[SHORT[c]][r.family] += 1
    return {"boundaries": {k: dict(v) for k, v in sorted(per_kind.items())},
            "spurious_episodes": dict(spurious), "spurious_frames": dict(spurious_frames),
            "missed_by_family": {k: dict(v.most_common()) for k, v in sorted(missed_by_family.items())},
            "early_by_family": {k: dict(v.most_common()) for k, v in sorted(early_by_family.items())},
            "spurious_by_family": {k: dict(v.most_common())
                                   for k, v in sorted(spurious_by_family.items())}}


BUCKETS = ("-3 or more", "-2", "-1", "on time", "+1", "+2", "+3 or more", "missed")


def format_summary(name: str, s: dict) -> str:
    rows = [["boundary", *BUCKETS]]
    for k, v in s["boundaries"].items():
        rows.append([k, *(str(v.get(b, 0)) for b in BUCKETS)])
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"{name}:"] + ["  " + "  ".join(c.ljust(x) for c, x in zip(r, w)) for r in rows]
    lines.append("  spurious episodes (frames): " + ", ".join(
        f"{c} {s['spurious_episodes'][c]} ({s['spurious_frames'][c]})"
        for c in sorted(s["spurious_episodes"])) if s["spurious_episodes"] else "  spurious episodes: none")
    for what, key in (("missed", "missed_by_family"), ("3+ frames early", "early_by_family"),
                      ("spurious", "spurious_by_family")):
        for k, fams in s.get(key, {}).items():
            lines.append(f"  {what} {k}: " + ", ".join(f"{f} {n}" for f, n in fams.items()))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path, help="training dataset (its split as in make compare)")
    ap.add_argument("--model", required=True, help="learned bundle folder")
    ap.add_argument("--also", action="append", default=[], metavar="NAME=DIR",
                    help="also score all runs of dataset DIR, reported as NAME (repeatable)")
    ap.add_argument("--out", type=Path, default=None, help="JSON with all counts")
    a = ap.parse_args(argv)
    from lisentry.detector.online import policy_from_card
    from lisentry.models.bundle import load_bundle

    ds = Dataset(a.dataset)
    sp = DEFAULTS["split"]
    split = ds.split(val_frac=sp["val_frac"], test_frac=sp["test_frac"], seed=sp["seed"])
    sets = {"test": load_runs(ds, split["test"])}
    for spec in a.also:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            ap.error(f"--also expects NAME=DIR, got {spec!r}")
        other = Dataset(Path(folder))
        sets[name] = load_runs(other, other.run_ids)
    det = DEFAULTS["detector"]
    hgb = BASELINES["features_hgb"]()
    hgb.fit(load_runs(ds, split["train"]))
    val = load_runs(ds, split["val"])
    start = AlarmPolicy(enter=det["enter"], exit=det["exit"], min_consecutive=det["min_consecutive"])
    hpolicy, _ = tune_policy(val, hgb.predict_runs(val, start), horizon_s=float(det["horizon_s"]),
                             max_false_alarms_per_100h=det["max_false_alarms_per_100h"])
    bundle = load_bundle(a.model, expect_grid=ds.ppm_grid,
                         expect_processing=ds.manifest.get("processing"))
    if bundle.symmetric_cells != "signed":   # the runs above were loaded signed, for the HGB too
        raise SystemExit(f"error: {a.model} reads symmetric cells {bundle.symmetric_cells}; "
                         "this script scores models that read them signed only")
    mpolicy = policy_from_card(bundle.card)
    index = {c: k for k, c in enumerate(CLASSES)}
    results = {"dataset": str(a.dataset), "model": str(a.model), "sets": {}}
    for sname, runs in sets.items():
        preds_h = hgb.predict_runs(runs, hpolicy)
        wide = widen_runs(runs, bundle.window_inputs, copy=True)
        preds_m = predict_runs(bundle.model, wide, temperature=bundle.temperature, policy=mpolicy)
        results["sets"][sname] = {}
        for mname, preds in (("model", preds_m), ("hgb", preds_h)):
            labs = [np.array([index[x] for x in p.labels]) for p in preds]
            s = summarize(runs, labs)
            results["sets"][sname][mname] = s
            print(format_summary(f"{sname}, {mname}", s))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(results, indent=1), encoding="utf-8")
        print(f"written to {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
