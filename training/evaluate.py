"""Evaluation of a model on dataset runs: frame metrics and event metrics (interfaces.md).

Predictions go through the same path as the detector: calibrated probabilities
(``softmax(logits / T)``) then the hysteresis labeller; metrics are computed on the smoothed
labels, exactly what a user of ``label``/``watch`` would see.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from lisentry.datasets.frame import CLASSES
from lisentry.detector.hysteresis import AlarmPolicy, smooth_labels
from lisentry.models.calibration import energy_score, softmax_t
from lisentry.training.data import RunTensors, collate
from lisentry.training.metrics import aggregate, aggregate_by, run_metrics


@dataclass
class RunPrediction:
    run_id: str
    family: str
    logits: np.ndarray      # (T, C)
    proba: np.ndarray       # (T, C) calibrated
    aux: np.ndarray         # (T, A)
    energy: np.ndarray      # (T,)
    labels: np.ndarray      # (T,) smoothed class names


@torch.no_grad()
def predict_runs(model, runs: Sequence[RunTensors], *, temperature: float = 1.0,
                 policy: AlarmPolicy | None = None, batch_runs: int = 8,
                 device="cpu") -> list[RunPrediction]:
    model.eval()
    out = []
    for i in range(0, len(runs), batch_runs):
        chunk = list(runs[i:i + batch_runs])
        b = collate(chunk, device)
        res = model(b["spectra"], b["echem"], lengths=b["lengths"], echem_mask=b["echem_mask"])
        for j, r in enumerate(chunk):
            n = len(r)
            z = res["logits"][j, :n].double().cpu().numpy()
            p = softmax_t(z, temperature)
            out.append(RunPrediction(r.run_id, r.family, z, p,
                                     res["aux"][j, :n].cpu().numpy(),
                                     energy_score(z, temperature),
                                     smooth_labels(p, policy)))
    return out


def evaluate_predictions(runs: Sequence[RunTensors], preds: Sequence[RunPrediction],
                         horizon_s: float = 3600.0) -> dict:
    """Per-run metrics, pooled metrics and metrics by family (JSON-safe)."""
    per_run = []
    for r, p in zip(runs, preds):
        y_true = [CLASSES[k] if k >= 0 else None for k in r.y]
        per_run.append(run_metrics(r.t_s, y_true, p.labels.tolist(), r.t_onset_s, r.t_short_s,
                                   horizon_s, run_id=r.run_id, family=r.family,
                                   has_short_precursors=r.has_short_precursors))
    return {"overall": aggregate(per_run), "by_family": aggregate_by(per_run, "family"),
            "per_run": per_run}


def frame_macro_f1(runs: Sequence[RunTensors], preds: Sequence[RunPrediction]) -> float:
    """Mean per-run macro-F1 of the smoothed labels (the model-selection criterion)."""
    res = evaluate_predictions(runs, preds)
    v = res["overall"]["macro_f1_mean"]
    return float(v) if v is not None else 0.0


def format_table(result: dict) -> str:
    """A plain-text table: one row per family plus 'all'."""
    rows = [("family", "runs", "macro-F1", "accuracy", "plating delay min (det/n)",
             "from visible min", "short lead min (det/n)", "missed shorts", "false alarms /100h")]

    def fmt(x, scale=1.0):
        return "-" if x is None else (f"{x:.3f}" if scale == 1.0 else f"{x / scale:.1f}")

    def row(name, agg):
        pl, sh, fa = agg["plating"], agg["short"], agg["false_alarms"]
        return (name, str(agg["n_runs"]), fmt(agg["macro_f1_mean"]), fmt(agg["accuracy"]),
                fmt(pl["delay_s"]["median"], 60.0) + f" ({pl['n_detected']}/{pl['n_runs_with_onset']})",
                fmt((pl.get("delay_from_visible_s") or {}).get("median"), 60.0),
                fmt(sh["lead_s"]["median"], 60.0) + f" ({sh['n_detected']}/{sh['n_runs_with_short']})",
                f"{sh['n_missed']}+{sh['n_premature']} premature",
                "-" if fa["per_100h"] is None else f"{fa['per_100h']:.2f} ({fa['event_free_h']:.0f} h)")

    for fam, agg in result["by_family"].items():
        if fam != "all":
            rows.append(row(fam, agg))
    rows.append(row("all", result["overall"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


#: Latent amounts whose estimates :func:`latent_metrics` scores (the detector's output columns).
LATENT_AMOUNTS = ("cluster_amount", "metal_amount", "ce_amount")


def latent_metrics_from(reported: np.ndarray, truth: np.ndarray, aux_names: Sequence[str], *,
                        detect: float = 0.005, free_below: float = 1e-4) -> dict | None:
    """How good the latent estimates are, from ``(N, n_aux)`` reported and true values.

    Per amount (clipped at 0, as the detector reports it): mean absolute error over frames
    with a true value; the share of frames without it (truth below ``free_below``) on which
    at least ``detect`` is reported; the share of frames with it (truth at least ``detect``)
    on which it is. For the cluster shift: median and 90th-percentile absolute error (ppm) on
    frames with a true cluster whose reported amount reaches ``detect`` (where a shift is
    reported). ``None`` when no frame has a true value (measured runs).
    """
    names = list(aux_names)
    rep, tru = np.asarray(reported, float), np.asarray(truth, float)
    if not np.isfinite(tru).any():
        return None
    out: dict = {}
    for a in LATENT_AMOUNTS:
        if a not in names:
            continue
        j = names.index(a)
        e, t = np.maximum(rep[:, j], 0.0), tru[:, j]
        ok = np.isfinite(t) & np.isfinite(e)
        if not ok.any():
            continue
        out[a] = {"mae": float(np.mean(np.abs(e[ok] - t[ok]))),
                  **reported_shares(e, t, detect=detect, free_below=free_below),
                  "n_frames": int(ok.sum())}
        for key in ("n_absent", "n_present"):
            out[a].pop(key)
    if {"cluster_amount", "cluster_shift_ppm"} <= set(names):
        k, j = names.index("cluster_amount"), names.index("cluster_shift_ppm")
        out["cluster_shift_ppm"] = shift_error(rep[:, j], tru[:, j], tru[:, k], rep[:, k],
                                               detect=detect)
    return out


def reported_shares(reported, truth, *, detect: float = 0.005, free_below: float = 1e-4) -> dict:
    """Of the frames without an amount (truth below ``free_below``) and with it (truth at least
    ``detect``), the shares on which at least ``detect`` is reported (``None`` where there are
    no such frames), and how many frames each share is over. NaN truths count as neither."""
    e, t = np.asarray(reported, float), np.asarray(truth, float)
    ok = np.isfinite(t)
    free, real = ok & (t < free_below), ok & (t >= detect)
    hit = e >= detect
    return {"absent_reported": float(np.mean(hit[free])) if free.any() else None,
            "present_reported": float(np.mean(hit[real])) if real.any() else None,
            "n_absent": int(free.sum()), "n_present": int(real.sum())}


def shift_error(estimate_ppm, truth_ppm, true_amount, reported_amount, *,
                detect: float = 0.005) -> dict:
    """Error of the reported cluster shift (ppm) on frames with a true cluster >= ``detect``
    whose reported amount reaches ``detect`` too (where the detector reports a shift): median
    and 90th percentile of the absolute error (``None`` without such frames), and their number."""
    e, t = np.asarray(estimate_ppm, float), np.asarray(truth_ppm, float)
    ta, ra = np.asarray(true_amount, float), np.asarray(reported_amount, float)
    m = np.isfinite(e) & np.isfinite(t) & (ta >= detect) & (ra >= detect)
    err = np.abs(e[m] - t[m])
    return {"median_abs": float(np.median(err)) if m.any() else None,
            "p90_abs": float(np.quantile(err, 0.9)) if m.any() else None, "n_frames": int(m.sum())}


def latent_metrics(model, runs: Sequence[RunTensors], presence_gate=None, **kw) -> dict | None:
    """:func:`latent_metrics_from` on ``model``'s estimates of ``runs``, with the bundle's
    presence gate applied as the detector applies it."""
    from lisentry.models.presence import run_outputs  # noqa: PLC0415
    if not runs or not any(np.isfinite(r.aux).any() for r in runs):
        return None
    est, feats, truth = run_outputs(model, runs)
    if presence_gate is not None:
        est = presence_gate.apply(est, model.aux_names, feats)
    res = latent_metrics_from(est, truth, model.aux_names, **kw)
    if res is not None:
        res["presence_gate"] = presence_gate is not None
    return res


def format_latents(lat: dict) -> str:
    """A few lines for the table printed by ``lisentry evaluate``."""
    def pct(x):
        return "-" if x is None else f"{100 * x:.1f} %"
    lines = [f"latent estimates{' (presence gate applied)' if lat.get('presence_gate') else ''}:"]
    for a in LATENT_AMOUNTS:
        if a in lat:
            v = lat[a]
            lines.append(f"  {a:15s} MAE {v['mae']:.4f}; reported on {pct(v['absent_reported'])} of "
                         f"frames without it, {pct(v['present_reported'])} of frames with it")
    sh = lat.get("cluster_shift_ppm")
    if sh and sh["n_frames"]:
        lines.append(f"  cluster shift   median error {sh['median_abs']:.1f} ppm, 90th percentile "
                     f"{sh['p90_abs']:.1f} ppm ({sh['n_frames']} frames)")
    return "\n".join(lines)


def save_json(obj, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
    tmp.replace(path)
    return path


#: Candidate alarm policies for :func:`tune_policy`: (enter, exit, min_consecutive).
POLICY_GRID: tuple[tuple[float, float, int], ...] = tuple(
    (enter, exit_, k)
    for enter in (0.5, 0.6, 0.7, 0.8)
    for exit_ in (0.3, 0.4, 0.5)
    if exit_ < enter
    for k in (1, 2, 3))


def tune_policy(runs: Sequence[RunTensors], preds: Sequence[RunPrediction], *,
                horizon_s: float = 3600.0, max_false_alarms_per_100h: float = 1.0,
                grid: Sequence[tuple[float, float, int]] = POLICY_GRID) -> tuple[AlarmPolicy, dict]:
    """The hysteresis policy that maximises macro-F1 on validation runs.

    Only policies whose false-alarm rate on the validation runs stays at or below
    ``max_false_alarms_per_100h`` compete (interfaces.md's target is 1 per 100 h); when none does,
    the one with the fewest false alarms wins. The calibrated probabilities of ``preds`` are
    re-smoothed for every candidate, so the model is run once. Ties go to the earlier grid entry.

    Returns
    -------
    (policy, table): the chosen :class:`AlarmPolicy` and a JSON-safe record of every candidate
    (``enter``, ``exit``, ``min_consecutive``, ``macro_f1``, ``false_alarms_per_100h``).
    """
    if not runs:
        raise ValueError("tune_policy needs at least one validation run.")
    table = []
    for enter, exit_, k in grid:
        pol = AlarmPolicy(enter=enter, exit=exit_, min_consecutive=k)
        smoothed = [RunPrediction(p.run_id, p.family, p.logits, p.proba, p.aux, p.energy,
                                  smooth_labels(p.proba, pol)) for p in preds]
        ov = evaluate_predictions(runs, smoothed, horizon_s)["overall"]
        fa = ov["false_alarms"]["per_100h"]
        table.append({"enter": enter, "exit": exit_, "min_consecutive": k,
                      "macro_f1": ov["macro_f1_mean"] or 0.0,
                      "false_alarms_per_100h": fa if fa is not None else 0.0})
    ok = [r for r in table if r["false_alarms_per_100h"] <= max_false_alarms_per_100h + 1e-9]
    if ok:
        best = max(ok, key=lambda r: r["macro_f1"])
    else:
        best = min(table, key=lambda r: (r["false_alarms_per_100h"], -r["macro_f1"]))
    return AlarmPolicy(enter=best["enter"], exit=best["exit"],
                       min_consecutive=best["min_consecutive"]), {"chosen": best, "grid": table}
