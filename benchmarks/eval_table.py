"""One table of saved evaluations: the per-run macro-F1 (the issue's metric) beside the
frame-pooled macro-F1 and the event numbers, so that candidates can be read side by side.

The per-run macro-F1 averages, over runs, the F1 of the classes present in each run's truth or
prediction: one spurious frame of an absent class takes a run from 1.0 to 0.67, so on sets of
8-run families it moves by a point with a handful of frames. The pooled macro-F1 (the mean of
``overall.per_class_f1``, which ``lisentry evaluate`` prints) weighs every frame alike and is far
steadier between seeds; both are shown.

Usage::

    python benchmarks/eval_table.py "D seeds 0+1"=docs/results/eval-heldout.json \\
        cand=docs/results/binned/cand-ple8-heldout.json
    # a compare_models.py JSON: NAME=FILE:METHOD:SET (METHOD e.g. features_hgb or model)
    python benchmarks/eval_table.py hgb=docs/results/compare-heldout-factors.json:features_hgb:heldout
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lisentry.training.metrics import pooled_macro_f1


def overall_of(spec: str) -> dict:
    """The ``overall`` block named by ``FILE`` (an evaluate JSON) or ``FILE:METHOD:SET`` (a
    compare_models JSON)."""
    parts = spec.split(":")
    path = Path(parts[0])
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: {path}: cannot read an evaluation JSON ({e})")
    if len(parts) == 1:
        if "overall" not in d:
            raise SystemExit(f"error: {path}: no 'overall' block (a compare JSON needs FILE:METHOD:SET)")
        return d["overall"]
    if len(parts) != 3:
        raise SystemExit(f"error: {spec}: expected FILE or FILE:METHOD:SET")
    try:
        return d["methods"][parts[1]]["eval"][parts[2]]["overall"]
    except KeyError:
        raise SystemExit(f"error: {path}: no method {parts[1]!r} with set {parts[2]!r}")


def row(name: str, o: dict) -> list[str]:
    pl, sh, fa = o["plating"], o["short"], o["false_alarms"]
    delay = pl["delay_s"]["median"]
    return [name, str(o["n_runs"]), f"{o['macro_f1_mean']:.3f}", f"{pooled_macro_f1(o):.3f}",
            "-" if delay is None else f"{delay / 60:.1f}",
            f"{pl['n_detected']}/{pl['n_runs_with_onset']}",
            f"{sh['n_detected']}/{sh['n_runs_with_short']}",
            "-" if fa["per_100h"] is None else f"{fa['per_100h']:.2f}"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("items", nargs="+", metavar="NAME=SPEC",
                    help="a name and an evaluate JSON, or FILE:METHOD:SET of a compare JSON")
    a = ap.parse_args(argv)
    head = ["", "runs", "per-run macro-F1", "pooled macro-F1", "plating delay min",
            "plating found", "shorts alarmed", "false alarms /100 h"]
    rows = [head]
    for item in a.items:
        if "=" not in item:
            print(f"error: {item!r}: expected NAME=SPEC", file=sys.stderr)
            return 2
        name, spec = item.split("=", 1)
        rows.append(row(name, overall_of(spec)))
    w = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        print("  ".join(c.ljust(k) for c, k in zip(r, w)).rstrip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
