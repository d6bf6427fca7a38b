"""Fit the latent amounts' presence gate (:mod:`lisentry.models.presence`) and store it in a
bundle: after training (:func:`lisentry.training.loop.train` calls :func:`fit_and_attach`), or
afterwards for a bundle trained without one::

    python -m lisentry.training.presence models/default data/train

The second form takes the bundle's own training runs (the card's ``training_split``) from the
dataset it was trained on (checked by the card's ``training_data_hash`` or content sketch) and
the card's resolved ``presence`` settings, or the defaults; the gate is then the one
``lisentry train`` would have fitted. The weights, probabilities and labels do not change.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Mapping

from lisentry.datasets.errors import ConfigError, InputError
from lisentry.models.bundle import attach_presence_gate
from lisentry.models.presence import NoLatentTruth, fit_on_runs, gate_report


def fit_and_attach(bundle_dir, model, train_runs, val_runs, pc: Mapping,
                   data_hash: str | None) -> dict | None:
    """Fit the gate on ``train_runs`` with settings ``pc`` (the config's ``presence``
    section), store it in ``bundle_dir`` with its effect on ``val_runs`` in
    ``presence.json``, and return that report; ``None`` (with a note on stderr) when the
    training runs hold no simulated latents to fit it on (measured runs only). Settings that
    do not fit the model raise ConfigError."""
    t0 = time.monotonic()
    try:
        gate = fit_on_runs(model, train_runs, latents=pc["latents"],
                           detect_limit=pc["detect_limit"], free_below=pc["free_below"],
                           C=pc["C"], threshold=pc["threshold"])
    except NoLatentTruth as exc:
        print(f"presence gate not fitted: {exc}", file=sys.stderr)
        return None
    report = gate_report(gate, model, val_runs)
    attach_presence_gate(bundle_dir, gate, meta={"training_data_hash": data_hash,
                                                 "validation": report})
    parts = [f"{k} reported on {v['absent_reported_ungated']:.1%} -> {v['absent_reported']:.1%} "
             f"of frames without it, {v['present_reported_ungated']:.1%} -> "
             f"{v['present_reported']:.1%} of frames with it"
             for k, v in report.items() if v["absent_reported"] is not None
             and v["present_reported"] is not None]
    print(f"presence gate fitted in {time.monotonic() - t0:.0f} s"
          + (": on validation runs " + "; ".join(parts) if parts else ""), file=sys.stderr)
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Fit a bundle's presence gate on its training runs.")
    ap.add_argument("bundle", type=Path, help="bundle folder (changed in place)")
    ap.add_argument("dataset", type=Path, help="the dataset the bundle was trained on")
    a = ap.parse_args(argv)
    from lisentry.datasets.fingerprint import compare_sketches  # noqa: PLC0415
    from lisentry.datasets.store import Dataset  # noqa: PLC0415
    from lisentry.models.bundle import load_bundle  # noqa: PLC0415
    from lisentry.training.config import DEFAULTS  # noqa: PLC0415
    from lisentry.training.data import load_runs  # noqa: PLC0415
    from safetensors import SafetensorError  # noqa: PLC0415
    try:
        if a.bundle.is_dir() and not os.access(a.bundle, os.W_OK):
            raise InputError(a.bundle, "is not writable (the gate is written into the bundle)")
        # not the gate it may have: this command is also how a broken one is replaced
        bundle = load_bundle(a.bundle, presence=False)
        ds = Dataset(a.dataset)
        card = bundle.card
        want, have = card.get("training_data_sketch"), ds.manifest.get("content_sketch")
        if ds.manifest.get("content_hash") != card.get("training_data_hash") and not (
                want and have and compare_sketches(want, have)[0]):
            raise InputError(a.dataset, f"is not the data {a.bundle} was trained on (hash "
                                        f"{ds.manifest.get('content_hash')}, card "
                                        f"{card.get('training_data_hash')})")
        split = card.get("training_split") or {}
        if not split.get("train"):
            raise InputError(a.bundle / "card.json", "names no training runs (training_split)")
        tc = card.get("training_config") or {}
        pc = {**DEFAULTS["presence"], **(tc.get("presence") or {})}
        threads = int((tc.get("train") or {}).get("threads") or 0)
        if threads > 0:
            # as in training: the thread count sets the order of float sums in the features
            import torch  # noqa: PLC0415
            torch.set_num_threads(threads)
        known = set(ds.run_ids)
        runs = {k: load_runs(ds, [r for r in split.get(k, []) if r in known],
                             window=bundle.window_inputs,
                             symmetric_cells=bundle.symmetric_cells) for k in ("train", "val")}
        if getattr(bundle.model, "routed", False):
            # as in training: also the frames the current-free members answer
            from lisentry.training.data import plus_current_free  # noqa: PLC0415
            runs = {k: plus_current_free(v) for k, v in runs.items()}
        try:
            report = fit_and_attach(a.bundle, bundle.model, runs["train"], runs["val"], pc,
                                    ds.manifest.get("content_hash"))
        except (ConfigError, ValueError) as exc:
            raise InputError(a.bundle / "card.json", f"presence gate not fitted: {exc}") from None
        except (OSError, SafetensorError) as exc:
            raise InputError(a.bundle, f"cannot write the presence gate: {exc}") from None
        if report is None:
            raise InputError(a.dataset, "holds no simulated latent amounts to fit the gate on")
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
