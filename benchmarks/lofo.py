"""Leave-one-family-out: how the learned model does on scenario families it never trained on.

For every family of the dataset (or those named with ``--families``), the training config is
trained again with that family left out whole (``split.leave_out_families``) under a time budget
(``--minutes``, default 5), and the bundle's metrics on the left-out runs and on the test runs of
the other families are collected. Issue 4's target is macro-F1 >= 0.90 on every left-out family.

Usage::

    .venv/bin/python benchmarks/lofo.py configs/train-default.yaml --minutes 5 \\
        --out docs/results/lofo.json [--families hc_liquid,li_llzo_li]

Prints one row per family (left-out macro-F1, plating delay, short lead, false alarms, and the
macro-F1 on the other families' test runs) and writes all metrics as JSON. Bundles go to a
temporary folder unless ``--keep DIR``. MLflow is off (these are experiments, not releases).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lisentry.datasets.store import Dataset
from lisentry.training.config import load_train_config
from lisentry.training.loop import train


def _min(x):
    return None if x is None else x / 60.0


def _fmt(v, spec=".3f"):
    return "—" if v is None else format(v, spec)


def _row(fam: str, entry: dict) -> tuple:
    lo, te = entry["leave_out"], entry["test_other_families"]
    return (fam, lo.get("macro_f1_mean"),
            _min((lo.get("plating") or {}).get("delay_s", {}).get("median")),
            (lo.get("plating") or {}).get("n_detected"),
            (lo.get("plating") or {}).get("n_runs_with_onset"),
            _min((lo.get("short") or {}).get("lead_s", {}).get("median")),
            (lo.get("short") or {}).get("n_detected"),
            (lo.get("short") or {}).get("n_runs_with_short"),
            (lo.get("false_alarms") or {}).get("per_100h"),
            te.get("macro_f1_mean"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--minutes", type=float, default=5.0, help="training budget per family")
    ap.add_argument("--families", default=None, help="comma-separated (default: all)")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="extra config override (repeatable)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--keep", type=Path, default=None, help="keep the bundles under this folder")
    ap.add_argument("--resume", action="store_true",
                    help="keep the families already in --out (same config, overrides and "
                         "minutes) and train only the others")
    a = ap.parse_args(argv)

    base = load_train_config(a.config, a.overrides)
    ds = Dataset(base["dataset"])
    families = sorted(set(ds.runs["family"]))
    if a.families:
        wanted = [f.strip() for f in a.families.split(",") if f.strip()]
        unknown = sorted(set(wanted) - set(families))
        if unknown:
            ap.error(f"unknown families {unknown}; the dataset has {families}")
        families = wanted
    root = a.keep or Path(tempfile.mkdtemp(prefix="lofo-"))
    results = {"config": str(a.config), "dataset": str(base["dataset"]),
               "minutes_per_family": a.minutes, "overrides": a.overrides, "families": {}}
    done = {}
    if a.resume and a.out and a.out.exists():
        old = json.loads(a.out.read_text())
        same = {k: old.get(k) for k in ("config", "dataset", "minutes_per_family", "overrides")}
        want = {k: results[k] for k in same}
        if same != want:
            ap.error(f"--resume: {a.out} was made with {same}, not {want}")
        done = old["families"]
    rows = []
    for fam in families:
        if fam in done:
            print(f"== {fam}: kept from {a.out}", file=sys.stderr, flush=True)
            results["families"][fam] = entry = done[fam]
            rows.append(_row(fam, entry))
            continue
        cfg = load_train_config(a.config, a.overrides + [
            f"split.leave_out_families=[{fam}]", f"train.max_minutes={a.minutes}",
            f"out={root / ('lofo-' + fam)}", "mlflow.enabled=false"])
        t0 = time.monotonic()
        print(f"== leaving out {fam}", file=sys.stderr, flush=True)
        res = train(cfg, progress=False, register=False)
        m = res.metrics
        lo = m.get("leave_out", {}).get("overall", {})
        te = m.get("test", {}).get("overall", {})
        entry = {"minutes": (time.monotonic() - t0) / 60, "epochs": res.epochs_run,
                 "val_macro_f1": res.best_val_f1, "leave_out": lo, "test_other_families": te,
                 "policy": {k: m.get("policy_search", {}).get("chosen", {}).get(k)
                            for k in ("enter", "exit", "min_consecutive")}}
        results["families"][fam] = entry
        rows.append(_row(fam, entry))
        if a.out:  # after every family, so an interrupted sweep keeps what it measured
            a.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = a.out.with_suffix(".tmp")
            tmp.write_text(json.dumps(results, indent=1, default=float))
            tmp.replace(a.out)

    print("| left-out family | macro-F1 | plating delay min (det/n) | short lead min (det/n) "
          "| false alarms /100 h | other families' test macro-F1 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for fam, f1, dl, nd, no, ld, sd, sn, fa, other in rows:
        print(f"| {fam} | {_fmt(f1)} | {_fmt(dl, '.1f')} ({nd}/{no}) | {_fmt(ld, '.1f')} ({sd}/{sn}) "
              f"| {_fmt(fa, '.2f')} | {_fmt(other)} |")
    f1s = [r[1] for r in rows if r[1] is not None]
    if f1s:
        print(f"\nleft-out macro-F1: min {min(f1s):.3f}, median {float(np.median(f1s)):.3f}; "
              f"families >= 0.90: {sum(f >= 0.90 for f in f1s)}/{len(f1s)}")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
