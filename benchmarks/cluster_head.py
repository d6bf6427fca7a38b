"""How far to trust the cluster head: its estimated cluster amount against the simulator's
latent truth, on cluster-free frames and on frames with a cluster.

The detector reports ``cluster_shift_ppm`` only where the estimated cluster amount is at least
``lisentry.detector.online.CLUSTER_SHIFT_MIN_AMOUNT`` (the detection limit, 0.005 of the run's
initial 7Li signal). This script measures, for that and other reporting thresholds, the share
of cluster-free frames (true amount below 1e-4) that would still get a shift
("spurious") and the share of frames with a true cluster at or above the detection limit that
keep theirs ("kept"), plus the estimate's error and its largest value on cluster-free frames by
family. When the bundle has a presence gate (:mod:`lisentry.models.presence`) the same table
is given for the amounts the detector reports, i.e. 0 where the gate is closed.

Usage::

    python benchmarks/cluster_head.py --model models/default data/train:val data/heldout \\
        --out docs/results/cluster-head.json

``DIR:SPLIT`` takes the runs of the bundle's recorded split (``val``, ``test``) of that dataset;
a plain ``DIR`` takes all its runs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

THRESHOLDS = (0.005, 0.01, 0.02, 0.03, 0.05)


def threshold_table(estimate: np.ndarray, truth: np.ndarray, thresholds=THRESHOLDS, *,
                    free_below: float = 1e-4, detect: float = 0.005) -> list[dict]:
    """For each reporting threshold: the share of cluster-free frames whose estimate reaches it
    (spurious) and the share of frames with a true cluster >= ``detect`` that reach it (kept).

    Parameters
    ----------
    estimate, truth : array of float
        Estimated and true cluster amounts per frame (fractions of the initial 7Li signal);
        NaN truths are ignored.
    """
    e, t = np.asarray(estimate, float), np.asarray(truth, float)
    ok = np.isfinite(t) & np.isfinite(e)
    e, t = e[ok], t[ok]
    free, real = t < free_below, t >= detect
    rows = []
    for th in thresholds:
        rows.append({"threshold": float(th),
                     "spurious": float(np.mean(e[free] >= th)) if free.any() else None,
                     "kept": float(np.mean(e[real] >= th)) if real.any() else None,
                     "n_free": int(free.sum()), "n_cluster": int(real.sum())})
    return rows


def family_errors(estimate: np.ndarray, truth: np.ndarray, family: np.ndarray, *,
                  free_below: float = 1e-4) -> dict[str, dict]:
    """Per family: mean absolute error of the estimate, and its largest value on cluster-free
    frames (``None`` when the family has none)."""
    e, t, f = np.asarray(estimate, float), np.asarray(truth, float), np.asarray(family)
    out = {}
    for fam in sorted(set(f.tolist())):
        m = (f == fam) & np.isfinite(t)
        free = m & (t < free_below)
        out[fam] = {"mae": float(np.mean(np.abs(e[m] - t[m]))) if m.any() else None,
                    "max_estimate_cluster_free": float(e[free].max()) if free.any() else None,
                    "n_frames": int(m.sum())}
    return out


def shift_errors(estimate_ppm, truth_ppm, true_amount, reported_amount, *,
                 detect: float = 0.005) -> dict:
    """:func:`lisentry.training.evaluate.shift_error` under this script's JSON keys."""
    from lisentry.training.evaluate import shift_error
    r = shift_error(estimate_ppm, truth_ppm, true_amount, reported_amount, detect=detect)
    return {"median_abs_ppm": r["median_abs"], "p90_abs_ppm": r["p90_abs"], "n_frames": r["n_frames"]}


def _collect(bundle, spec: str):
    from lisentry.datasets.store import Dataset
    from lisentry.training.data import load_runs
    folder, _, split = spec.partition(":")
    ds = Dataset(Path(folder))
    ids = ds.run_ids
    if split:
        ids = [r for r in (bundle.card.get("training_split") or {}).get(split, []) if r in set(ids)]
        if not ids:
            raise SystemExit(f"error: {spec}: no runs of the bundle's split {split!r} in {folder}")
    if "latent_cluster_amount" not in ds.frames.columns:
        raise SystemExit(f"error: {folder}: no latent cluster amounts (a simulated dataset is needed)")
    from lisentry.models.presence import run_outputs
    names = list(bundle.model.aux_names)
    k = names.index("cluster_amount")
    runs = load_runs(ds, ids, window=bundle.window_inputs, symmetric_cells=bundle.symmetric_cells)
    aux, feats, truth = run_outputs(bundle.model, runs)
    gate = bundle.presence_gate
    gated = None if gate is None else gate.apply(aux, names, feats)[:, k]
    fam = np.concatenate([np.full(len(r), r.family, dtype=object) for r in runs])
    j = names.index("cluster_shift_ppm")
    shift = shift_errors(aux[:, j], truth[:, j], truth[:, k], aux[:, k] if gated is None else gated)
    return aux[:, k], gated, truth[:, k], fam, shift


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sets", nargs="+", help="DIR or DIR:SPLIT (simulated datasets)")
    ap.add_argument("--model", default="models/default")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    from lisentry.models.bundle import load_bundle
    bundle = load_bundle(a.model)
    result = {"model": a.model, "sets": {}}
    for spec in a.sets:
        est, gated, tru, fam, shift = _collect(bundle, spec)
        free = tru < 1e-4
        rows = threshold_table(est, tru)
        rows_gated = None if gated is None else threshold_table(gated, tru)
        result["sets"][spec] = {
            "thresholds": rows,
            **({"thresholds_gated": rows_gated} if rows_gated is not None else {}),
            "cluster_free_quantiles": dict(zip(("q90", "q95", "q99"),
                                               np.quantile(est[free], [0.9, 0.95, 0.99]).tolist()))
            if free.any() else None,
            "by_family": family_errors(est, tru, fam),
            "shift_error": shift}
        print(f"== {spec}: {rows[0]['n_free']} cluster-free frames, {rows[0]['n_cluster']} with a cluster")
        def share(x):
            return "-" if x is None else f"{x:.3f}"
        print("threshold  spurious  kept" + ("   | gated: spurious  kept" if rows_gated else ""))
        for i, r in enumerate(rows):
            line = f"{r['threshold']:<9.3f}  {share(r['spurious']):<8}  {share(r['kept']):<5}"
            if rows_gated:
                g = rows_gated[i]
                line += f"  |         {share(g['spurious']):<8}  {share(g['kept'])}"
            print(line)
        if shift["n_frames"]:
            print(f"cluster shift where reported on a true cluster ({shift['n_frames']} frames): "
                  f"median error {shift['median_abs_ppm']:.1f} ppm, 90th percentile "
                  f"{shift['p90_abs_ppm']:.1f} ppm")
        for f, v in result["sets"][spec]["by_family"].items():
            mx = v["max_estimate_cluster_free"]
            print(f"  {f:28s} MAE {v['mae']:.4f}  max on cluster-free frames "
                  f"{'-' if mx is None else f'{mx:.3f}'}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=2))
        print(f"written to {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
