"""OOD detection of a model bundle on the held-out OOD set of ``lisentry.training.ood``.

Target (issue 4): false-positive rate at 95 % recall of OOD frames <= 0.20. Positives are OOD
frames; FPR@95TPR is the fraction of in-distribution (ID) frames flagged at the threshold that
catches 95 % of the OOD frames; AUROC beside it; both overall, per kind and per group.

Scores compared:

* ``shipped``: the detector's own ``ood_score`` column and ``ood`` flag, i.e. what a user gets:
  the bundle's feature scorer (:class:`lisentry.models.ood_scorer.FeatureOODScorer`:
  Mahalanobis distance on the classification head's input + smoothed PCA residual of the
  spectrum, fitted by ``lisentry train`` on the model's training runs, threshold from its
  validation runs) when the bundle has one, else the energy score; its two components are
  reported as ``shipped.mahalanobis`` and ``shipped.pca_residual``;
* ``energy``: the energy of the calibrated logits, with the card's ``ood_threshold``;
* ``refit`` (``--refit``): a feature scorer fitted here on ``--train-data`` (checked against
  the card's data hash), for bundles trained before the scorer shipped.

Every run is scored in frame order from a fresh state (the model is causal), through
``OnlineDetector.label_frames``, which equals streaming ``update``.

Usage::

    .venv/bin/python benchmarks/ood_eval.py                       # default model, ~2 min
    .venv/bin/python benchmarks/ood_eval.py --model models/default --out docs/results/ood.json
    .venv/bin/python benchmarks/ood_eval.py --refit --save-scorer build/ood-scorer

Exits 1 when the detector's shipped score misses the target.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_read import machine, table  # noqa: E402  (one report format for all benchmarks)

from lisentry.datasets.pipeline import ProcessingConfig  # noqa: E402
from lisentry.detector.online import OnlineDetector  # noqa: E402
from lisentry.models.calibration import energy_score  # noqa: E402
from lisentry.models.bundle import load_bundle  # noqa: E402
from lisentry.training.ood import (OOD_KINDS, OODSetConfig, auroc, fpr_at_tpr,  # noqa: E402
                                   generate_ood_set, threshold_at_tpr)
from lisentry.models.ood_scorer import (FeatureOODScorer, fit_on_runs, frames_inputs,  # noqa: E402
                                        head_inputs)

TARGET_FPR = 0.20


def score_set(bundle, runs) -> dict[str, np.ndarray]:
    """Per kept frame: kind, group, the detector's shipped ``ood_score`` and flag, the energy
    score of the logits, spectra and head inputs."""
    if bundle.symmetric_cells != "signed":   # the OOD set is fed as half cells, signed
        raise SystemExit(f"error: {bundle.path} reads symmetric cells {bundle.symmetric_cells}; "
                         "this script scores models that read them signed only")
    det = OnlineDetector(bundle)
    cols = {k: [] for k in ("kind", "group", "run", "shipped", "flag", "energy", "spectra", "features")}
    for r in runs:
        if not r.frames:
            continue
        rows = det.label_frames(r.frames)
        S, E, M = frames_inputs(r.frames, bundle.window_inputs)
        logits, H = head_inputs(bundle.model, S, E, M)
        k = r.keep
        cols["kind"] += [r.kind] * int(k.sum())
        cols["group"] += [r.group] * int(k.sum())
        cols["run"] += [r.run_id] * int(k.sum())
        cols["shipped"].append(np.array([x["ood_score"] for x in rows])[k])
        cols["flag"].append(np.array(["ood" in x["status"] for x in rows])[k])
        cols["energy"].append(energy_score(logits, bundle.temperature)[k])
        cols["spectra"].append(S[k])
        cols["features"].append(H[k])
    return {k: (np.array(v) if k in ("kind", "group", "run") else np.concatenate(v))
            for k, v in cols.items()}


def fit_scorer(bundle, train_data: Path, fit_runs: int, seed: int) -> tuple[FeatureOODScorer, dict]:
    """Fit the feature scorer on the bundle's training runs, calibrate on its validation runs."""
    from lisentry.datasets.store import Dataset
    from lisentry.training.data import load_runs
    ds = Dataset(train_data)
    want = bundle.card.get("training_data_hash")
    if want and ds.manifest.get("content_hash") != want:
        raise SystemExit(f"{train_data}: content hash {ds.manifest.get('content_hash')} is not the "
                         f"card's training_data_hash {want}; pass the model's training data")
    split = bundle.card.get("training_split") or {}
    if not split.get("train") or not split.get("val"):
        raise SystemExit(f"{bundle.path}/card.json: no training_split train/val run lists")
    rng = np.random.default_rng(seed)
    ids = sorted(split["train"])
    ids = sorted(rng.choice(ids, min(fit_runs, len(ids)), replace=False).tolist())

    # the runs are chosen above (recorded in meta); fit_on_runs then uses all of them
    w = bundle.window_inputs
    sym = bundle.symmetric_cells
    sc = fit_on_runs(bundle.model, load_runs(ds, ids, w, sym), load_runs(ds, sorted(split["val"]), w, sym),
                     max_fit_runs=len(ids))
    meta = {"train_data": str(train_data), "training_data_hash": want, "fit_runs": ids,
            "val_runs": sorted(split["val"]), "bundle_sha256": bundle.sha256}
    return sc, meta


def metrics(s_id: np.ndarray, s_ood: np.ndarray, flag_id=None, flag_ood=None) -> dict:
    out = {"n_ood": int(s_ood.size), "fpr_at_95tpr": fpr_at_tpr(s_id, s_ood, 0.95),
           "auroc": auroc(s_id, s_ood), "threshold_at_95tpr": threshold_at_tpr(s_ood, 0.95)}
    if flag_ood is not None:
        out["recall_at_threshold"] = float(np.mean(flag_ood))
    return out


def evaluate(scores: dict[str, np.ndarray], flags: dict[str, np.ndarray], kind: np.ndarray,
             group: np.ndarray) -> dict:
    is_id = kind == "id"
    res = {}
    for name, s in scores.items():
        f = flags.get(name)
        r = {"id": {"n": int(is_id.sum()),
                    "flagged_at_threshold": None if f is None else float(np.mean(f[is_id]))},
             "overall": metrics(s[is_id], s[~is_id], None, None if f is None else f[~is_id]),
             "by_group": {}, "by_kind": {}}
        for g in dict.fromkeys(group[~is_id]):
            sel = group == g
            r["by_group"][g] = metrics(s[is_id], s[sel], None, None if f is None else f[sel])
        for k in dict.fromkeys(kind[~is_id]):
            sel = kind == k
            r["by_kind"][k] = metrics(s[is_id], s[sel], None, None if f is None else f[sel])
        res[name] = r
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/default", help="bundle folder or models:/NAME@ALIAS")
    ap.add_argument("--train-data", default="data/train",
                    help="the model's training dataset (to fit the feature scorer)")
    ap.add_argument("--out", default="docs/results/ood.json")
    ap.add_argument("--runs-per-family", type=int, default=2)
    ap.add_argument("--max-frames", type=int, default=128)
    ap.add_argument("--variants-per-kind", type=int, default=6)
    ap.add_argument("--seed", type=int, default=OODSetConfig.seed)
    ap.add_argument("--build-config", default=OODSetConfig.build_config)
    ap.add_argument("--fit-runs", type=int, default=120, help="training runs for the scorer fit")
    ap.add_argument("--refit", action="store_true",
                    help="also fit a fresh feature scorer on --train-data and report it as 'refit'")
    ap.add_argument("--save-scorer", help="write the fitted scorer (ood.safetensors + ood.json) here")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    bundle = load_bundle(a.model)
    cfg = OODSetConfig(build_config=a.build_config, seed=a.seed, runs_per_family=a.runs_per_family,
                       max_frames=a.max_frames, variants_per_kind=a.variants_per_kind)
    runs = generate_ood_set(cfg, ProcessingConfig.from_dict(bundle.card["processing"]))
    t_gen = time.perf_counter() - t0
    train_seeds = _train_seeds(Path(a.train_data))
    overlap = sorted({r.info.get("seed") for r in runs if r.kind == "id"} & train_seeds)
    if overlap:
        print(f"warning: ID seeds {overlap} are also training seeds", file=sys.stderr)
    d = score_set(bundle, runs)
    kind, group = d["kind"], d["group"]
    shipped_kind = "feature" if bundle.ood_scorer is not None else "energy"
    # "shipped": the detector's own ood_score column and ood flag (what users get)
    scores = {"shipped": d["shipped"], "energy": d["energy"]}
    flags = {"shipped": d["flag"],
             "energy": None if bundle.ood_threshold is None else d["energy"] > bundle.ood_threshold}
    scorer_info = None
    if bundle.ood_scorer is not None:
        sc = bundle.ood_scorer
        for name, z in sc.score_components(d["spectra"], d["features"]).items():
            scores[f"shipped.{name}"] = z
        scorer_info = {**sc.config(), "threshold": bundle.ood_score_threshold,
                       "id_flagged": float(np.mean(d["flag"][kind == "id"])),
                       "ood_caught": float(np.mean(d["flag"][kind != "id"]))}
    if a.refit:
        if not (Path(a.train_data) / "manifest.json").is_file():
            print(f"{a.train_data}: no dataset; refit skipped (make data)", file=sys.stderr)
        else:
            sc, meta = fit_scorer(bundle, Path(a.train_data), a.fit_runs, a.seed)
            scores["refit"] = sc.score(d["spectra"], d["features"])
            flags["refit"] = scores["refit"] > sc.thresholds_["q0.99"]
            if a.save_scorer:
                sc.save(a.save_scorer, meta)
                print(f"scorer written to {a.save_scorer}", file=sys.stderr)
    res = evaluate(scores, flags, kind, group)

    # ---- report
    names = [n for n in ("shipped", "energy", "refit") if n in res]
    rows = []
    for k in [*OOD_KINDS, "ALL"]:
        if k != "ALL" and k not in res["energy"]["by_kind"]:
            continue
        row = [k, OOD_KINDS[k].group if k in OOD_KINDS else "",
               res["energy"]["overall"]["n_ood"] if k == "ALL" else res["energy"]["by_kind"][k]["n_ood"]]
        for n in names:
            m = res[n]["overall"] if k == "ALL" else res[n]["by_kind"][k]
            rec = m.get("recall_at_threshold")
            row += [f"{m['fpr_at_95tpr']:.2f}", f"{m['auroc']:.3f}", "" if rec is None else f"{rec:.2f}"]
        rows.append(row)
    heads = ["kind", "group", "OOD frames"]
    for n in names:
        heads += [f"{n} FPR@95", f"{n} AUROC", f"{n} recall@thr"]
    n_id = res["energy"]["id"]["n"]
    print(f"OOD set: {n_id} ID frames ({sum(r.kind == 'id' for r in runs)} runs), "
          f"{int((kind != 'id').sum())} OOD frames ({sum(r.kind != 'id' for r in runs)} variant runs), "
          f"{sum(r.skipped for r in runs)} frames refused by the pipeline; built in {t_gen:.0f} s")
    print(f"model {bundle.path} (sha256 {bundle.sha256[:12]}); {machine()}")
    print(table(rows, tuple(heads)))
    sh = res["shipped"]
    print(f"\nshipped score ({shipped_kind}): threshold {bundle.ood_score_threshold}; ID frames "
          f"flagged at it: {sh['id']['flagged_at_threshold']:.3f}; OOD frames flagged: "
          f"{sh['overall']['recall_at_threshold']:.3f}")
    ok = {n: res[n]["overall"]["fpr_at_95tpr"] <= TARGET_FPR for n in names}
    for n in names:
        print(f"target FPR@95TPR <= {TARGET_FPR}: {n} "
              f"{res[n]['overall']['fpr_at_95tpr']:.3f} {'met' if ok[n] else 'MISSED'}")
    out = {"target": {"fpr_at_95tpr_max": TARGET_FPR, "met": ok},
           "definition": "positives = OOD frames; FPR@95TPR = fraction of ID frames with score >= "
                         "the largest threshold that flags 95% of OOD frames; AUROC with ties as 1/2",
           "model": {"path": str(bundle.path), "sha256": bundle.sha256, "shipped_score": shipped_kind,
                     "shipped_threshold": bundle.ood_score_threshold,
                     "energy_threshold": bundle.ood_threshold, "temperature": bundle.temperature},
           "set": {"config": {k: getattr(cfg, k) for k in ("build_config", "seed", "runs_per_family",
                                                           "max_frames", "variants_per_kind")},
                   "n_id_frames": n_id, "n_ood_frames": int((kind != "id").sum()),
                   "n_id_runs": sum(r.kind == "id" for r in runs),
                   "n_variant_runs": sum(r.kind != "id" for r in runs),
                   "refused_by_pipeline": {k: sum(r.skipped for r in runs if r.kind == k)
                                           for k in dict.fromkeys(r.kind for r in runs)},
                   "kinds": {k: {"group": v.group, "scope": v.scope, "description": v.description}
                             for k, v in OOD_KINDS.items()}},
           "scores": res, "feature_scorer": scorer_info, "machine": machine(),
           "seconds": time.perf_counter() - t0}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1, allow_nan=False) + "\n")
    print(f"written {a.out}", file=sys.stderr)
    return 0 if ok["shipped"] else 1


def _train_seeds(path: Path) -> set:
    try:
        m = json.loads((path / "manifest.json").read_text())
        seeds = m.get("seeds") or {}
        if isinstance(seeds, str):
            import ast
            seeds = ast.literal_eval(seeds)
        return {int(v) for v in seeds.values()}
    except (OSError, ValueError, SyntaxError):
        return set()


if __name__ == "__main__":
    sys.exit(main())
