"""Leave-one-family-out for the baselines: the same protocol as ``lofo.py``, with
``compare_models.py --leave-out FAMILY`` per family (rules and gradient boosting by default).

Usage::

    .venv/bin/python benchmarks/lofo_baselines.py data/train --out docs/results/lofo-baselines.json \\
        [--only features_hgb,rules] [--families hc_liquid,li_llzo_li]

Prints one row per (family, method): the left-out runs' macro-F1 and accuracy, and the
macro-F1 on the other families' test runs; writes every row as JSON. About 40 s per family
for the two default baselines on 2 cores.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare_models  # noqa: E402

from lisentry.datasets.store import Dataset  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--only", default="features_hgb,rules")
    ap.add_argument("--families", default=None, help="comma-separated (default: all)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--compare-dir", type=Path, default=None,
                    help="keep each family's compare_models JSON here as FAMILY.json; an existing "
                         "one is reused (resumes an interrupted sweep)")
    a = ap.parse_args(argv)
    families = sorted(set(Dataset(a.dataset).runs["family"]))
    if a.families:
        families = [f.strip() for f in a.families.split(",") if f.strip()]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = a.compare_dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for fam in families:
            out = folder / f"{fam}.json"
            if out.exists():
                print(f"== {fam}: reusing {out}", file=sys.stderr, flush=True)
            else:
                print(f"== leaving out {fam}", file=sys.stderr, flush=True)
                with contextlib.redirect_stdout(io.StringIO()):
                    compare_models.main([str(a.dataset), "--leave-out", fam, "--only", a.only,
                                         "--out", str(out)])
            table = json.loads(out.read_text())["table"]
            test = {r["method"]: r for r in table if r["set"] == "test"}
            for r in table:
                if r["set"] == "leave_out":
                    rows.append({"family": fam, "method": r["method"], "leave_out": r,
                                 "test_other_families_macro_f1": test[r["method"]]["macro_f1"]})
    print(f"{'left-out family':28s} {'method':24s} {'macro-F1':>8s} {'accuracy':>8s} "
          f"{'others test F1':>14s}")
    for r in rows:
        lo = r["leave_out"]
        print(f"{r['family']:28s} {r['method']:24s} {lo['macro_f1']:8.3f} {lo['accuracy']:8.3f} "
              f"{r['test_other_families_macro_f1']:14.3f}")
    for m in dict.fromkeys(r["method"] for r in rows):
        f1 = [r["leave_out"]["macro_f1"] for r in rows if r["method"] == m]
        print(f"{m}: median left-out macro-F1 {statistics.median(f1):.3f}, "
              f"{sum(v >= 0.90 for v in f1)}/{len(f1)} families >= 0.90")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"dataset": str(a.dataset), "methods": a.only.split(","),
                                     "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
