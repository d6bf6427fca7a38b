"""What a *causal* detector could score at best: oracles that know the simulator's latent truth.

The truth of ``datasets/sim/truth.py`` is computed from the whole trajectory. Two of its rules
look ahead: ``cluster_growth`` uses a *centred* slope of the cluster amount (+-5 min around
the frame) against 2 % of the *run's maximum* cluster amount per hour, and
``imminent_short`` starts at ``t_short - H``, an instant known only once the short happens. An
online detector sees neither. This script re-simulates each run's cell trajectory from its seed
(cheap: no FIDs) and scores, against the stored truth, oracles that know far more than any
detector can, with the evaluation's own metrics (``training/metrics.py``):

* ``causal_slope``: noise-free latent amounts up to the frame's midpoint, the run's maximum
  cluster amount (which a causal detector cannot know), the exact ``plating_onset`` rule (it
  is causal) and the exact ``imminent_short`` frames (perfect foresight of the short). Only the
  cluster slope is causal: the backward slope over the last ``window`` s, with the best
  window and threshold scale over a grid, chosen on the scored runs themselves.
* ``causal_slope_extrapolated``: the same, the backward slope corrected by its own trend
  (slope now + (slope now - slope one half-window ago)), a linear forecast of the centred slope.
* ``short_causal``: everything exact (the cluster rule with its centred slope and run maximum
  too) except ``imminent_short``, which a detector that knows the latent hazard ``H(t)`` and
  its rate calls when the linear forecast of the short, ``t + (1 - H)/(dH/dt)``, is within the
  horizon (best forecast window over a grid). The simulator's hazard is not observable; this
  is the best a detector with the cell's internal state could do.
* ``all_causal``: both causal at once: the extrapolated backward cluster slope (with the
  run's maximum still known) and the hazard forecast of the short; plating exact.
* ``plating_from_nucleation``: the truth, with ``plating_onset`` from the first frame whose
  midpoint is past the metal nucleation (what a detector would have to do to flag within 10 min
  of nucleation, when the metal takes ~14 min to reach the detection limit).

* ``noisy_latents_<sigma>``: how exact the amounts must be. The truth's cluster and plating
  rules applied causally (backward cluster slope over ``window`` s, run maximum and initial
  metal known, ``imminent_short`` exact) to the latent amounts *at the frames* plus Gaussian
  noise of ``sigma`` (fraction of the initial total signal; independent per frame, fixed seed)
  — what a detector whose amount estimates scatter by ``sigma`` could reach.

With ``--model BUNDLE`` the bundle's own smoothed labels (exactly what ``lisentry evaluate``
scores) are decomposed against the truth, which says where its macro-F1 goes:

* ``model``: the labels as they are;
* ``model_short_only``: the truth everywhere, except that ``imminent_short`` is where the model
  says it is (and the truth's ``imminent_short`` frames the model does not flag get the truth of
  the other classes): the cost of the model's short timing alone;
* ``model_short_exact``: the model's labels with the truth's ``imminent_short`` frames put
  back exactly (and the model's own short calls outside them replaced by the truth): the cost of
  everything but the short.

Each oracle's labels are scored like a detector's (per-run macro-F1 averaged over runs; plating
delay from nucleation with the 2-frame persistence). If an oracle that knows more than any
detector stays below a target, no causal detector reaches that target on these runs.

Usage::

    .venv/bin/python benchmarks/causal_oracle.py data/train --split-from models/default \\
        --split test --out docs/results/causal_oracle-test.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from lisentry.datasets.frame import CLASSES
from lisentry.datasets.sim.run import _acq_config
from lisentry.datasets.sim.scenarios import get_family, sample_params
from lisentry.datasets.sim.truth import DEFAULT_DETECTION_LIMIT, label_frames
from lisentry.datasets.store import Dataset
from lisentry.training.metrics import aggregate, aggregate_by, run_metrics

NORMAL, CLUSTER, PLATING, SHORT = CLASSES


def resimulate(info: dict):
    """The cell trajectory of a stored simulated run, its first frame's start and the frame
    period and acquisition duration, s (protocol clock).

    Replays the random stream of :func:`lisentry.datasets.sim.run.simulate_run` up to the first
    frame's start (parameters, cell, acquisition), so the trajectory and the frame midpoints are
    the ones the run's truth came from (the stored ``t_s`` comes from the acquisition
    timestamps and can differ from them by a second or so).
    """
    if not info.get("randomized", True):
        raise ValueError("only randomized runs are replayed")
    rng = np.random.default_rng(int(info["seed"]))
    fam = sample_params(get_family(info["family"]), rng)
    traj = fam.simulate(rng)
    acq = _acq_config(fam, rng, True)
    period = float(fam.acquisition.get("frame_period_s", 600.0))
    duration = (acq.ns + acq.ds) * (acq.d1_s + (acq.td // 2) / acq.sw_Hz)
    first = float(rng.uniform(0.0, min(period, 120.0)))
    return traj, first, period, duration


def backward_rate_per_h(grid, y, t, window_s):
    """Slope of ``y`` over ``[t - window_s, t]`` (per hour), from values up to ``t`` only."""
    lo_t = np.maximum(t - window_s, grid[0])
    span = t - lo_t
    hi = np.interp(t, grid, y)
    lo = np.interp(lo_t, grid, y)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(span > 0, (hi - lo) / span * 3600.0, 0.0)


def compose(cluster, plating, short):
    lab = np.full(cluster.shape, NORMAL, dtype=object)
    lab[cluster] = CLUSTER
    lab[plating] = PLATING
    lab[short] = SHORT
    return lab.astype(str)


def forecast_short(traj, t_mid, horizon_s, window_s, scale, quadratic=False):
    """``imminent_short`` from the latent hazard ``H(t)`` (the short happens at ``H = 1``) up to
    each frame: called when the linear forecast ``t + (1 - H) / (dH/dt)`` (rate over the last
    ``window_s``) is within ``scale * horizon_s`` (``quadratic``: the rate's trend too); held
    once called, and from the short on."""
    grid = traj.t_s
    H = np.interp(t_mid, grid, traj.hazard)
    H_prev = np.interp(t_mid - window_s, grid, traj.hazard)
    rate = (H - H_prev) / window_s
    with np.errstate(invalid="ignore", divide="ignore"):
        eta = np.where(rate > 0, (1.0 - H) / rate, np.inf)
        if quadratic:
            # H + r tau + a tau^2 / 2 = 1, with the rate's own trend a
            H_prev2 = np.interp(t_mid - 2 * window_s, grid, traj.hazard)
            acc = (rate - (H_prev - H_prev2) / window_s) / window_s
            disc = rate**2 + 2 * acc * (1.0 - H)
            tau = np.where(acc > 0, (-rate + np.sqrt(np.maximum(disc, 0.0))) / np.where(acc > 0, acc, 1.0),
                           eta)
            eta = np.where(np.isfinite(tau) & (tau >= 0), tau, eta)
    called = np.maximum.accumulate((eta <= horizon_s * scale) | (H >= 1.0))
    if traj.t_short_s is not None:
        called |= t_mid >= traj.t_short_s
    return called


def oracle_labels(traj, t_mid, horizon_s, *, kind, window_s=600.0, scale=1.0, extrapolate=False,
                  cluster_window_s=300.0, cluster_scale=1.0, quadratic=False):
    """Labels of one oracle at the frame midpoints ``t_mid`` (protocol clock, s)."""
    grid = traj.t_s
    cl_grid = traj.cluster_amount
    cl_max = float(np.max(cl_grid)) if cl_grid.size else 0.0
    cl = np.interp(t_mid, grid, cl_grid)
    limit = DEFAULT_DETECTION_LIMIT
    # the truth's own rules (datasets/sim/truth.py), without the pre-short window: frames it
    # calls imminent_short are at or after the short, where every oracle says short as well
    exact = label_frames(t_mid, traj, horizon_s=0.0)
    plating, cluster_exact = exact == PLATING, exact == CLUSTER
    short = label_frames(t_mid, traj, horizon_s=horizon_s) == SHORT
    if kind == "causal_slope":
        rate = backward_rate_per_h(grid, cl_grid, t_mid, window_s)
        if extrapolate:
            prev = backward_rate_per_h(grid, cl_grid, t_mid - window_s / 2, window_s)
            rate = rate + (rate - prev)
        cluster = (cl_max > 0) & (rate > scale * 0.02 * cl_max) & (cl > limit)
        return compose(cluster, plating, short)
    if kind in ("short_causal", "all_causal"):
        called = forecast_short(traj, t_mid, horizon_s, window_s, scale, quadratic)
        cluster = cluster_exact
        if kind == "all_causal":
            w, sc = cluster_window_s, cluster_scale
            rate = backward_rate_per_h(grid, cl_grid, t_mid, w)
            prev = backward_rate_per_h(grid, cl_grid, t_mid - w / 2, w)
            cluster = (cl_max > 0) & (2 * rate - prev > sc * 0.02 * cl_max) & (cl > limit)
        return compose(cluster, plating, called)
    if kind == "plating_from_nucleation":
        nuc = np.zeros(t_mid.shape, bool)
        if traj.t_metal_onset_s is not None:
            nuc = t_mid >= traj.t_metal_onset_s
        # from nucleation until the metal is visible, then the truth's own rule
        before_visible = plating.cumsum() == 0
        return compose(cluster_exact, plating | (nuc & before_visible), short)
    raise ValueError(f"unknown oracle {kind!r}")


def noisy_latent_labels(traj, t_mid, horizon_s, sigma, rng, window_frames=1):
    """Labels from the latent amounts at the frames plus Gaussian noise ``sigma``, by the
    truth's rules applied causally (see the module docstring)."""
    grid = traj.t_s
    cl_true = np.interp(t_mid, grid, traj.cluster_amount)
    cl_max = float(np.max(traj.cluster_amount)) if traj.cluster_amount.size else 0.0
    cl = cl_true + rng.normal(0.0, sigma, cl_true.shape)
    extra = (np.interp(t_mid, grid, traj.metal_amount) - float(traj.metal_amount[0])
             + rng.normal(0.0, sigma, t_mid.shape))
    limit = DEFAULT_DETECTION_LIMIT
    k = int(window_frames)
    rate = np.zeros_like(cl)
    if len(cl) > k:
        rate[k:] = (cl[k:] - cl[:-k]) / (t_mid[k:] - t_mid[:-k]) * 3600.0
    cluster = (cl_max > 0) & (rate > 0.02 * cl_max) & (cl > limit)
    short = np.zeros(t_mid.shape, bool)
    if traj.t_short_s is not None:
        short = t_mid >= traj.t_short_s - horizon_s
    return compose(cluster, extra > limit, short)


def score(items, horizon_s, label_fn):
    per_run = []
    for it in items:
        pred = label_fn(it)
        per_run.append(run_metrics(it["t_s"], it["truth"], list(pred), it["t_onset_s"], it["t_short_s"],
                                   horizon_s, run_id=it["run_id"], family=it["family"],
                                   has_short_precursors=it["has_short_precursors"]))
    return per_run


def summary(per_run):
    agg = aggregate(per_run)
    by = aggregate_by(per_run, "family")
    d = agg["plating"]["delay_s"]["median"]
    return {"macro_f1": agg["macro_f1_mean"],
            "plating_delay_min_median": None if d is None else d / 60.0,
            "plating_detected": f"{agg['plating']['n_detected']}/{agg['plating']['n_runs_with_onset']}",
            "short_lead_min_median": (None if agg["short"]["lead_s"]["median"] is None
                                      else agg["short"]["lead_s"]["median"] / 60.0),
            "by_family": {f: a["macro_f1_mean"] for f, a in by.items() if f != "all"}}


def truth_without_short(it):
    """The truth's class of every frame had the cell not been about to short (cluster and
    plating rules of the truth, at the replayed frame midpoints)."""
    lab = label_frames(it["t_mid"], it["traj"], horizon_s=0.0)
    # horizon 0: imminent_short only from the short itself; before it the other classes
    return np.array([str(x) for x in lab], dtype=object)


def decompose(items, dataset: Path, model_dir: Path, horizon_s: float) -> dict:
    """Scores of the model's labels, and of its labels mixed with the truth (see the module
    docstring)."""
    from lisentry.detector.hysteresis import AlarmPolicy
    from lisentry.models.bundle import load_bundle
    from lisentry.training.data import load_runs
    from lisentry.training.evaluate import predict_runs
    ds = Dataset(dataset)
    bundle = load_bundle(str(model_dir), expect_grid=ds.ppm_grid,
                         expect_processing=ds.manifest.get("processing"))
    det = bundle.card.get("detector", {})
    policy = AlarmPolicy(enter=det.get("enter", 0.6), exit=det.get("exit", 0.4),
                         min_consecutive=det.get("min_consecutive", 2))
    runs = load_runs(ds, [it["run_id"] for it in items], window=bundle.window_inputs,
                     symmetric_cells=bundle.symmetric_cells)
    preds = predict_runs(bundle.model, runs, temperature=float(bundle.card.get("temperature", 1.0)),
                         policy=policy)
    by_id = {p.run_id: p.labels.astype(object) for p in preds}
    for it in items:
        it["model"] = by_id[it["run_id"]]
        if len(it["model"]) != len(it["truth"]):
            raise ValueError(f"{it['run_id']}: {len(it['model'])} predicted frames, "
                             f"{len(it['truth'])} stored")

    def short_only(it):
        truth = np.array(it["truth"], dtype=object)
        base = np.where(truth == SHORT, truth_without_short(it), truth)
        return np.where(it["model"] == SHORT, SHORT, base)

    def short_exact(it):
        truth = np.array(it["truth"], dtype=object)
        m = it["model"]
        out = np.where(m == SHORT, truth_without_short(it), m)
        return np.where(truth == SHORT, SHORT, out)

    # the auxiliary amount estimates against the stored latent amounts, per frame; the metal
    # as the change since the run's first frame (what the plating rule reads)
    names = list(bundle.model.aux_names)
    errors = {}
    for name in ("cluster_amount", "metal_amount"):
        if name not in names:
            continue
        j = names.index(name)
        err = []
        for r, p in zip(runs, preds):
            est, true = p.aux[:, j].astype(float), r.aux[:, j].astype(float)
            if name == "metal_amount":
                est, true = est - est[0], true - true[0]
            ok = np.isfinite(true) & np.isfinite(est)
            err.append(est[ok] - true[ok])
        e = np.concatenate(err) if err else np.zeros(0)
        key = "metal_change" if name == "metal_amount" else name
        errors[key] = {"rmse": float(np.sqrt(np.mean(e**2))) if e.size else None,
                       "median_abs": float(np.median(np.abs(e))) if e.size else None,
                       "n_frames": int(e.size)}
    return ({"model": summary(score(items, horizon_s, lambda it: it["model"])),
             "model_short_only": summary(score(items, horizon_s, short_only)),
             "model_short_exact": summary(score(items, horizon_s, short_exact))}, errors)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--split-from", type=Path, help="bundle whose card lists the split's runs")
    ap.add_argument("--split", default="test")
    ap.add_argument("--out", type=Path, help="JSON file for the numbers")
    ap.add_argument("--model", type=Path, help="bundle whose labels are decomposed against the truth")
    a = ap.parse_args(argv)
    import pandas as pd
    ds = Dataset(a.dataset)
    runs = pd.read_parquet(a.dataset / "runs.parquet")
    frames = pd.read_parquet(a.dataset / "frames.parquet", columns=["run_id", "index", "t_s", "label"])
    if a.split_from:
        card = json.loads((a.split_from / "card.json").read_text())
        wanted = set(card.get("training_split", {}).get(a.split, []))
        runs = runs[runs.run_id.isin(wanted)]
        if runs.empty:
            print(f"error: no runs of split {a.split!r} of {a.split_from} in {a.dataset}", file=sys.stderr)
            return 2
    del ds
    items, mismatches = [], 0
    for row in runs.itertuples():
        info = json.loads(row.info)
        fr = frames[frames.run_id == row.run_id].sort_values("index")
        traj, first, period, duration = resimulate(info)
        t_run = fr.t_s.to_numpy(float)
        truth = fr.label.to_numpy(object)
        t_mid = first + period * fr["index"].to_numpy(float) + duration / 2
        horizon_s = float(info.get("horizon_s", 3600.0))
        check = label_frames(t_mid, traj, horizon_s=horizon_s)
        ok = np.array([c == tr for c, tr in zip(check, truth) if tr is not None])
        mismatches += int((~ok).sum())
        items.append({"run_id": row.run_id, "family": row.family, "traj": traj, "t_mid": t_mid,
                      "t_s": t_run, "truth": [t if t is not None else None for t in truth],
                      "t_onset_s": info.get("t_onset_s"), "t_short_s": info.get("t_short_s"),
                      "has_short_precursors": info.get("has_short_precursors"), "horizon_s": horizon_s})
    n_frames = sum(len(it["t_s"]) for it in items)
    print(f"{len(items)} runs, {n_frames} frames re-simulated; "
          f"{mismatches} frames whose replayed truth differs from the stored one")
    H = 3600.0
    res = {"dataset": str(a.dataset), "split": a.split if a.split_from else "all", "n_runs": len(items),
           "replay_mismatched_frames": mismatches, "oracles": {}}
    exact = score(items, H, lambda it: it["truth"])
    res["oracles"]["truth_itself"] = summary(exact)

    best = None
    grid = []
    for extrap in (False, True):
        for w in (300.0, 600.0, 900.0, 1200.0):
            for s in (0.5, 0.75, 1.0, 1.5, 2.0):
                m = summary(score(items, H, lambda it: oracle_labels(
                    it["traj"], it["t_mid"], it["horizon_s"], kind="causal_slope", window_s=w,
                    scale=s, extrapolate=extrap)))
                grid.append({"extrapolate": extrap, "window_s": w, "scale": s, "macro_f1": m["macro_f1"]})
                key = "causal_slope_extrapolated" if extrap else "causal_slope"
                if key not in res["oracles"] or m["macro_f1"] > res["oracles"][key]["macro_f1"]:
                    res["oracles"][key] = {**m, "window_s": w, "scale": s}
    res["causal_slope_grid"] = grid

    ce = res["oracles"]["causal_slope_extrapolated"]
    for kind in ("short_causal", "all_causal"):
        for quad in (False, True):
            for w in (300.0, 600.0, 1200.0, 1800.0, 3600.0):
                for s in (0.5, 0.75, 1.0, 1.25, 1.5):
                    m = summary(score(items, H, lambda it: oracle_labels(
                        it["traj"], it["t_mid"], it["horizon_s"], kind=kind, window_s=w, scale=s,
                        cluster_window_s=ce["window_s"], cluster_scale=ce["scale"], quadratic=quad)))
                    if kind not in res["oracles"] or m["macro_f1"] > res["oracles"][kind]["macro_f1"]:
                        res["oracles"][kind] = {**m, "window_s": w, "scale": s, "quadratic": quad}
    res["oracles"]["plating_from_nucleation"] = summary(score(items, H, lambda it: oracle_labels(
        it["traj"], it["t_mid"], it["horizon_s"], kind="plating_from_nucleation")))
    res["noisy_latents_grid"] = []
    for sigma in (0.0005, 0.001, 0.002, 0.005, 0.01):
        best_sig = None
        for wf in (1, 2, 3):
            rng = np.random.default_rng(0)
            m = summary(score(items, H, lambda it: noisy_latent_labels(
                it["traj"], it["t_mid"], it["horizon_s"], sigma, rng, wf)))
            res["noisy_latents_grid"].append({"sigma": sigma, "window_frames": wf,
                                              "macro_f1": m["macro_f1"]})
            if best_sig is None or m["macro_f1"] > best_sig["macro_f1"]:
                best_sig = {**m, "sigma": sigma, "window_frames": wf}
        res["oracles"][f"noisy_latents_{sigma:g}"] = best_sig
    if a.model:
        decomp, errors = decompose(items, a.dataset, a.model, H)
        res["oracles"].update(decomp)
        res["model_amount_errors"] = errors
        print("the model's amount estimates against the latent truth (fraction of the initial "
              "total signal): " + ", ".join(f"{k} RMSE {v['rmse']:.4f} (median |err| "
                                            f"{v['median_abs']:.4f})" for k, v in errors.items()))

    fams = sorted(res["oracles"]["truth_itself"]["by_family"])
    names = list(res["oracles"])
    print("macro-F1 of oracles that know the latent truth (per-run macro-F1, mean over runs)")
    head = ["family"] + names
    rows = [[f] + [f"{res['oracles'][n]['by_family'].get(f, float('nan')):.3f}" for n in names] for f in fams]
    rows.append(["all"] + [f"{res['oracles'][n]['macro_f1']:.3f}" for n in names])
    rows.append(["plating delay min"] + [
        "-" if res["oracles"][n]["plating_delay_min_median"] is None
        else f"{res['oracles'][n]['plating_delay_min_median']:.1f} ({res['oracles'][n]['plating_detected']})"
        for n in names])
    rows.append(["short lead min"] + [
        "-" if res["oracles"][n]["short_lead_min_median"] is None
        else f"{res['oracles'][n]['short_lead_min_median']:.1f}" for n in names])
    w = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    for r in [head] + rows:
        print("  ".join(c.ljust(x) for c, x in zip(r, w)))
    for n in ("causal_slope", "causal_slope_extrapolated", "short_causal", "all_causal"):
        o = res["oracles"].get(n)
        if o:
            print(f"{n}: best window {o['window_s']:.0f} s, scale {o['scale']}"
                  + (f", quadratic {o['quadratic']}" if "quadratic" in o else ""))
    if a.out:
        a.out.write_text(json.dumps(res, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
