"""Check that the shipped default bundle is what its documented command produces.

Two checks, the second optional because it trains (about 6 min on 2 cores):

1. the dataset's ``content_hash`` (``data/train/manifest.json``, built by ``make data/train``)
   equals the bundle card's ``training_data_hash``: the bundle was trained on exactly this data;
2. ``--retrain``: ``lisentry train CONFIG --set out=OUT --set mlflow.enabled=false`` and a
   tensor-by-tensor comparison of the new weights with the bundle's (largest absolute
   difference; 0.0 = bit-identical). A different CPU or torch build may round differently, so a
   small difference there is not by itself an error; the script reports it and exits 1.

Usage::

    python benchmarks/verify_default.py [--bundle models/default] [--dataset data/train] \\
        [--retrain --config configs/train-default.yaml --out runs/verify-default]

Exit status 0 when every check run passed, 1 when one failed, 2 on unusable input.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np


def weight_difference(a_dir: Path, b_dir: Path) -> float:
    """Largest absolute difference between two bundles' weights (inf if the tensors differ in
    name or shape)."""
    from safetensors.numpy import load_file
    a = load_file(str(Path(a_dir) / "weights.safetensors"))
    b = load_file(str(Path(b_dir) / "weights.safetensors"))
    if sorted(a) != sorted(b) or any(a[k].shape != b[k].shape for k in a):
        return float("inf")
    return max((float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64))))
                for k in a if a[k].size), default=0.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path("models/default"))
    ap.add_argument("--dataset", type=Path, default=Path("data/train"))
    ap.add_argument("--retrain", action="store_true", help="retrain and compare the weights")
    ap.add_argument("--config", type=Path, default=Path("configs/train-default.yaml"))
    ap.add_argument("--out", type=Path, default=Path("runs/verify-default"))
    a = ap.parse_args(argv)
    try:
        card = json.loads((a.bundle / "card.json").read_text())
        manifest = json.loads((a.dataset / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ok = True
    want, have = card.get("training_data_hash"), manifest.get("content_hash")
    same = bool(want) and want == have
    ok &= same
    print(f"training data: bundle {str(want)[:12]}…, {a.dataset} {str(have)[:12]}… -> "
          f"{'same' if same else 'DIFFERENT (rebuild the dataset, or the bundle was trained on other data)'}")
    if a.retrain:
        cmd = [sys.executable, "-m", "lisentry.detector.cli", "train", str(a.config),
               "--set", f"dataset={a.dataset}", "--set", f"out={a.out}",
               "--set", "mlflow.enabled=false"]
        print("retraining:", " ".join(cmd[2:]), flush=True)
        if subprocess.run(cmd).returncode != 0:
            print("error: training failed", file=sys.stderr)
            return 1
        diff = weight_difference(a.bundle, a.out)
        ok &= diff == 0.0
        print(f"weights: largest difference {diff:g} -> "
              f"{'bit-identical' if diff == 0.0 else 'DIFFERENT'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
