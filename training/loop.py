"""Training of the learned detector: whole runs as sequences, early stopping on the validation
runs' smoothed macro-F1, temperature scaling and an OOD threshold fitted on validation runs,
then a model bundle (safetensors + JSON card) and MLflow logging."""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lisentry.datasets.fingerprint import environment
from lisentry.datasets.frame import CLASSES
from lisentry.datasets.store import Dataset
from lisentry.detector.hysteresis import AlarmPolicy
from lisentry.models.bundle import attach_ood_scorer, load_bundle, save_bundle
from lisentry.models.ood_scorer import fit_on_runs
from lisentry.training.presence import fit_and_attach
from lisentry.models.calibration import (energy_score, expected_calibration_error, fit_temperature,
                                         ood_threshold, softmax_t)
from lisentry.models.features import ECHEM_FEATURES, ECHEM_FEATURES_VERSION, N_ECHEM
from lisentry.models.registry import MODELS
from lisentry.models.window_features import FEATURE_SETS, WindowInputs
from lisentry.training.config import TrainConfig
from lisentry.training.data import (RunTensors, augment_run, class_weights, collate, load_runs,
                                    mask_current, noise_window_mask, plus_current_free,
                                    widen_runs)
from lisentry.training.evaluate import evaluate_predictions, format_table, predict_runs, tune_policy
from lisentry.training.metrics import pooled_macro_f1
from lisentry.training.tracking import Tracker


@dataclass
class TrainResult:
    bundle_dir: Path
    metrics: dict
    best_val_f1: float
    epochs_run: int


def pick_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def build_model(cfg: TrainConfig, n_ppm: int, ppm_grid=None):
    mc = dict(cfg["model"])
    if (mc.get("descriptors") or mc.get("heads") == "factored") and ppm_grid is not None:
        mc.update(ppm_min=float(ppm_grid[0]), ppm_step=float(ppm_grid[1] - ppm_grid[0]))
    name = mc.pop("name", "lisentry_net")
    if name not in MODELS:
        import difflib
        hint = difflib.get_close_matches(name, list(MODELS), n=1)
        from lisentry.datasets.errors import ConfigError
        raise ConfigError(f"unknown model {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else
                                                       f"; known: {sorted(MODELS)}"))
    inputs = cfg["inputs"]
    n_window = len(FEATURE_SETS[inputs["window_feature_set"]]) if inputs["window_features"] else 0
    n_echem = N_ECHEM + n_window
    return MODELS[name](n_ppm=n_ppm, n_echem=n_echem, classes=CLASSES, **mc)


def echem_input_names(cfg: TrainConfig) -> tuple[str, ...]:
    """Names of the model's echem input columns: the echem features, then the window features
    of ``inputs`` (some names occur twice: the potentiostat's copies)."""
    inputs = cfg["inputs"]
    window = FEATURE_SETS[inputs["window_feature_set"]] if inputs["window_features"] else ()
    return tuple(ECHEM_FEATURES) + tuple(window)


def binned_columns(cfg: TrainConfig) -> np.ndarray | None:
    """Which echem columns ``model.echem_bins`` encodes: those named in
    ``inputs.binned_features`` (every column of a name), or all when the list is empty."""
    want = list(cfg["inputs"].get("binned_features") or [])
    if not want:
        return None
    names = echem_input_names(cfg)
    unknown = [n for n in want if n not in names]
    if unknown:
        from lisentry.datasets.errors import ConfigError
        raise ConfigError(f"inputs.binned_features: {unknown} are not inputs of this model; "
                          f"expected some of {sorted(set(names))}")
    return np.array([n in want for n in names])


def selection_score(val_overall: dict, select_by: str = "per_run") -> float:
    """The validation score that picks a member's best epoch (``train.select_by``).

    ``per_run``: the mean per-run macro-F1, the issue's metric. ``pooled``: the macro-F1 of
    the frames pooled over the runs (the mean of ``per_class_f1``). One spurious frame can move
    a run's macro-F1 by a third, so the per-run mean over ~60 validation runs jumps from epoch to
    epoch; the pooled score weighs every frame alike and picks among epochs less by luck."""
    if select_by == "pooled":
        return float(pooled_macro_f1(val_overall) or 0.0)
    return float(val_overall["macro_f1_mean"] or 0.0)


def _loss(model, batch, weights, aux_weight, run_balance: float = 0.0):
    from lisentry.models.net import aux_loss, classification_loss, run_balanced_weights
    out = model(batch["spectra"], batch["echem"], lengths=batch["lengths"],
                echem_mask=batch["echem_mask"])
    fw = (run_balanced_weights(batch["y"], out["logits"].shape[-1], run_balance, batch["valid"])
          if run_balance else None)
    loss = classification_loss(out["logits"], batch["y"], batch["valid"], weights, fw)
    if aux_weight:
        loss = loss + aux_weight * aux_loss(out["aux"], batch["aux"], model.aux_names, batch["valid"])
    return loss


@dataclass
class MemberFit:
    """One network's training: its best weights and how it got there."""
    state: dict
    best_val_f1: float
    best_epoch_f1: float
    weight_average_f1: float | None
    epochs_run: int
    minutes: float
    seed: int
    model: torch.nn.Module | None = None  # with the best weights loaded (in-process fits only)
    history: list = dataclasses.field(default_factory=list)  # per epoch: [train_loss, val_macro_f1]


def config_policy(cfg: TrainConfig) -> AlarmPolicy:
    """The alarm policy of the config's ``detector`` section (before any tuning), with which
    each epoch is scored for selection. It keeps passed-through labels
    (``drop_passed_through=False``), the rule every shipped selection was made with: dropping
    them re-selects epochs, so retraining would no longer give the shipped weights back
    (docs/results/journal.md, 2026-12-07 tenth part). The tuned policy the bundle ships drops
    them, as the detector does."""
    return AlarmPolicy(enter=cfg["detector"]["enter"], exit=cfg["detector"]["exit"],
                       min_consecutive=cfg["detector"]["min_consecutive"],
                       drop_passed_through=False)


def _prepare(cfg: TrainConfig):
    """The dataset, its split, the loaded training and validation runs (with window features
    when the config asks for them), the noise window mask and the window inputs (or None)."""
    ds = Dataset(cfg["dataset"])
    sp = cfg["split"]
    split = ds.split(val_frac=sp["val_frac"], test_frac=sp["test_frac"], seed=sp.get("seed", 0),
                     leave_out_families=sp.get("leave_out_families", []))
    if not split["train"] or not split["val"]:
        from lisentry.datasets.errors import ConfigError
        raise ConfigError(f"{cfg['dataset']}: need training and validation runs; got "
                          f"{len(split['train'])} train / {len(split['val'])} val")
    unknown = set(cfg["train"].get("oversample_families") or []) - set(ds.runs["family"])
    if unknown:
        from lisentry.datasets.errors import ConfigError
        raise ConfigError(f"train.oversample_families: {sorted(unknown)} are not families of "
                          f"{cfg['dataset']}; it has {sorted(set(ds.runs['family']))}")
    sym = cfg["inputs"]["symmetric_cells"]
    train_runs = load_runs(ds, split["train"], symmetric_cells=sym)
    val_runs = load_runs(ds, split["val"], symmetric_cells=sym)
    window = window_inputs(cfg, ds, train_runs)
    widen_runs(train_runs, window)
    widen_runs(val_runs, window)
    noise_window = noise_window_mask(ds.ppm_grid)
    if cfg["train"].get("augment", {}).get("noise_prob", 0.0) and noise_window is None:
        from lisentry.datasets.errors import ConfigError
        raise ConfigError(
            f"train.augment.noise_prob needs a line-free window of the ppm grid to measure the noise "
            f"(330-400 ppm); the grid of {cfg['dataset']} spans {ds.ppm_grid[0]:g}-{ds.ppm_grid[-1]:g} ppm")
    return ds, split, train_runs, val_runs, noise_window, window


def window_inputs(cfg: TrainConfig, ds, train_runs) -> WindowInputs | None:
    """The window-feature inputs of ``inputs.window_features`` (None when off): scaled on every
    4th training run, or taken from the ``init_from`` bundle so that its weights see the same
    columns."""
    want = bool(cfg["inputs"]["window_features"])
    if cfg["init_from"]:
        have = load_bundle(cfg["init_from"], expect_grid=ds.ppm_grid).window_inputs
        wanted_set = cfg["inputs"]["window_feature_set"]
        if (have is not None) != want or (want and have.feature_set != wanted_set):
            from lisentry.datasets.errors import ConfigError
            had = f"true ({have.feature_set})" if have is not None else "false"
            asked = f"true ({wanted_set})" if want else "false"
            raise ConfigError(f"init_from {cfg['init_from']} was trained with inputs.window_features "
                              f"{had}; this config sets {asked}")
        return have
    if not want:
        return None
    return WindowInputs.fit([(r.spectra, r.t_s, r.echem, r.echem_mask) for r in train_runs[::4]],
                            ds.ppm_grid, feature_set=cfg["inputs"]["window_feature_set"])


def _new_model(cfg: TrainConfig, ds):
    if cfg["init_from"]:
        return load_bundle(cfg["init_from"], expect_grid=ds.ppm_grid).model
    return build_model(cfg, len(ds.ppm_grid), ds.ppm_grid)


def _fit_member(cfg: TrainConfig, seed: int, ds, train_runs, val_runs, noise_window, device, *,
                tracker: Tracker | None = None, trial=None, progress: bool = True,
                ckpt_dir: Path | None = None, label: str = "epochs",
                on_epoch=None, window: WindowInputs | None = None,
                init_state: dict | None = None, epochs: int | None = None,
                lr: float | None = None) -> MemberFit:
    """Train one network from ``seed``: the epochs, early stopping on the validation runs'
    macro-F1 and the optional weight average. Returns its best weights.

    ``on_epoch(epoch, train_loss, val_macro_f1)`` is called after each epoch (progress lines of
    parallel ensemble members, which have no bar). ``window``: the runs' window inputs (for
    augmentations that recompute window features). ``init_state``: start from these weights (a
    fine-tune, e.g. a current-free member from its regular member), for ``epochs`` epochs
    (default ``train.epochs``) from learning rate ``lr`` (default ``train.lr``)."""
    t_start = time.monotonic()
    tc = cfg["train"]
    n_epochs = int(epochs or tc["epochs"])
    seed_everything(int(seed))
    step_ppm = float(ds.ppm_grid[1] - ds.ppm_grid[0])
    model = _new_model(cfg, ds)
    if init_state is not None:
        model.load_state_dict(init_state)
    elif not cfg["init_from"] and hasattr(model, "fit_echem_edges"):
        model.fit_echem_edges(np.concatenate([r.echem for r in train_runs]),
                              np.concatenate([r.echem_mask for r in train_runs]) > 0.5,
                              binned_columns(cfg))
    model.to(device)
    weights = class_weights(train_runs, tc["class_weight"])
    weights = weights.to(device) if weights is not None else None
    opt = torch.optim.AdamW(model.parameters(), lr=float(lr or tc["lr"]),
                            weight_decay=tc["weight_decay"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=n_epochs)
    policy = config_policy(cfg)
    rng = np.random.default_rng(int(seed))

    best, best_state, bad, epoch = -1.0, None, 0, 0
    wa_from = float(tc.get("weight_average_from") or 0.0)
    wa = WeightAverage() if wa_from else None
    wa_first = max(1, int(round(wa_from * n_epochs)))
    tracker = tracker or Tracker(enabled=False)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n_epochs, desc=label, file=sys.stderr, leave=False)
    history = []
    min_epochs = min(int(tc.get("min_epochs", 0)), n_epochs)
    epoch_runs = oversampled(train_runs, tc.get("oversample_families") or [],
                             int(tc.get("oversample_factor", 1)))
    for epoch in range(1, n_epochs + 1):
        model.train()
        losses = []
        for idx in length_buckets([len(train_runs[k]) for k in epoch_runs], tc["batch_runs"],
                                  rng):
            chunk = [augment_run(train_runs[epoch_runs[k]], rng, tc.get("augment", {}), step_ppm,
                                 train_runs, noise_window, window)
                     for k in idx]
            batch = collate(chunk, device)
            loss = _loss(model, batch, weights, tc["aux_weight"], tc.get("run_balance", 0.0))
            opt.zero_grad()
            loss.backward()
            if tc.get("grad_clip"):
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc["grad_clip"])
            opt.step()
            losses.append(float(loss.detach()))
        sched.step()
        if wa is not None and epoch >= wa_first:
            wa.update(model)
        preds = predict_runs(model, val_runs, policy=policy, device=device)
        val = evaluate_predictions(val_runs, preds, cfg["detector"]["horizon_s"])["overall"]
        f1 = selection_score(val, tc.get("select_by", "per_run"))
        history.append([float(np.mean(losses)), float(f1)])
        if on_epoch is not None:
            on_epoch(epoch, float(np.mean(losses)), float(f1))
        tracker.log_metrics({"train_loss": float(np.mean(losses)), "val_macro_f1": f1,
                             "val_accuracy": val["accuracy"] or 0.0}, step=epoch)
        if bar:
            bar.set_postfix(loss=f"{np.mean(losses):.3f}", val_f1=f"{f1:.3f}")
            bar.update(1)
        if f1 > best + 1e-4:
            best, best_state, bad = f1, copy.deepcopy(model.state_dict()), 0
            if ckpt_dir is not None:
                _save_checkpoint(model, ckpt_dir, epoch, f1)
        else:
            bad += 1
        if trial is not None:
            trial.report(f1, epoch)
            if trial.should_prune():
                if bar:
                    bar.close()
                import optuna
                raise optuna.TrialPruned()
        if bad >= tc["patience"] and epoch >= min_epochs:
            break
        if (time.monotonic() - t_start) / 60 > tc["max_minutes"]:
            print(f"stopping: time budget of {tc['max_minutes']} min reached", file=sys.stderr)
            break
    if bar:
        bar.close()
    best_epoch_f1, wa_f1 = best, None
    if wa is not None and wa.n:
        # The averaged weights compete with the best single epoch on the same validation runs.
        model.load_state_dict(wa.state_dict())
        wa_f1 = selection_score(
            evaluate_predictions(val_runs, predict_runs(model, val_runs, policy=policy, device=device),
                                 cfg["detector"]["horizon_s"])["overall"], tc.get("select_by", "per_run"))
        print(f"weight average of {wa.n} epochs: val macro-F1 {wa_f1:.3f} "
              f"(best single epoch {best:.3f})", file=sys.stderr)
        if wa_f1 > best:
            best, best_state = wa_f1, wa.state_dict()
    model.load_state_dict(best_state)
    return MemberFit(state={k: v.detach().cpu() for k, v in best_state.items()}, best_val_f1=best,
                     best_epoch_f1=best_epoch_f1, weight_average_f1=wa_f1, epochs_run=epoch,
                     minutes=(time.monotonic() - t_start) / 60, seed=int(seed), model=model,
                     history=history)


def train(cfg: TrainConfig, *, tracker: Tracker | None = None, trial=None, progress: bool = True,
          out_dir: str | Path | None = None, register: bool = True) -> TrainResult:
    """Train a model from a resolved config; returns the bundle folder and its metrics.

    ``trial`` (an Optuna trial) receives the validation macro-F1 each epoch and may prune.
    With ``ensemble.seeds`` set, one network is trained per seed (``ensemble.workers`` at a
    time, see :mod:`lisentry.training.ensemble`) and the bundle holds their
    :class:`~lisentry.models.ensemble.LisentryEnsemble`; calibration, the alarm policy and the
    OOD scorer are then fitted to the ensemble.
    """
    t_start = time.monotonic()
    tc = cfg["train"]
    seed_everything(int(cfg["seed"]))
    if tc.get("threads"):
        torch.set_num_threads(int(tc["threads"]))
    device = pick_device(tc["device"])
    ds, split, train_runs, val_runs, noise_window, window = _prepare(cfg)
    step_ppm = float(ds.ppm_grid[1] - ds.ppm_grid[0])
    out_dir = Path(out_dir or cfg["out"])
    ckpt_dir = out_dir.with_name(out_dir.name + ".checkpoint")
    tracker = tracker or Tracker(enabled=False)

    policy = config_policy(cfg)
    seeds = list(cfg["ensemble"]["seeds"] or [])
    member_fits: list[MemberFit] = []
    if seeds:
        if trial is not None:
            from lisentry.datasets.errors import ConfigError
            raise ConfigError("ensemble.seeds cannot be tuned trial by trial; tune one network "
                              "(ensemble.seeds=[]) and train the ensemble from the best config")
        from lisentry.models.ensemble import LisentryEnsemble
        from lisentry.training.ensemble import fit_members
        free_seeds = list(cfg["ensemble"].get("current_free_seeds") or [])
        member_fits = fit_members(cfg, seeds, ckpt_dir, ds, train_runs, val_runs, noise_window,
                                  device, progress=progress, tracker=tracker, window=window,
                                  current_free_seeds=free_seeds)
        nets = []
        for mf in member_fits:
            net = _new_model(cfg, ds)
            net.load_state_dict(mf.state)
            nets.append(net)
        flags = [False] * len(seeds) + [True] * len(free_seeds)
        model = LisentryEnsemble.from_members(nets, current_free=flags if free_seeds else None)
        model = model.to(device)
        model.eval()
        best = evaluate_predictions(val_runs, predict_runs(model, val_runs, policy=policy,
                                                           device=device),
                                    cfg["detector"]["horizon_s"])["overall"]["macro_f1_mean"] or 0.0
        best_epoch_f1, wa_f1, epoch = best, None, max(m.epochs_run for m in member_fits)
        free = f", current-free {free_seeds}" if free_seeds else ""
        print(f"ensemble of {len(nets)} (seeds {seeds}{free}): val macro-F1 {best:.3f}; members "
              + ", ".join(f"{m.best_val_f1:.3f}" for m in member_fits), file=sys.stderr)
    else:
        fit = _fit_member(cfg, int(cfg["seed"]), ds, train_runs, val_runs, noise_window, device,
                          tracker=tracker, trial=trial, progress=progress, ckpt_dir=ckpt_dir,
                          window=window)
        model = fit.model
        best, best_epoch_f1, wa_f1, epoch = (fit.best_val_f1, fit.best_epoch_f1,
                                             fit.weight_average_f1, fit.epochs_run)
    model.eval()

    # Calibration and OOD threshold on whole held-out (validation) runs; a routed ensemble
    # (current-free members) also on their current-free copies, the frames its other half serves.
    cal_runs = val_runs
    if getattr(model, "routed", False):
        cal_runs = val_runs + [dataclasses.replace(r, run_id=f"{r.run_id}#nocurrent")
                               for r in mask_current(val_runs)]
    preds = predict_runs(model, cal_runs, policy=policy, device=device)
    z = np.concatenate([p.logits for p in preds])
    y = np.concatenate([r.y for r in cal_runs])
    temperature = float(fit_temperature(z, y))
    p_cal = softmax_t(z, temperature)
    keep = y >= 0
    ece = float(expected_calibration_error(p_cal[keep], y[keep])) if keep.any() else None
    ood_thr = float(ood_threshold(energy_score(z, temperature)))
    detector_cfg = dict(cfg["detector"])
    policy_search = None
    if detector_cfg.get("tune_policy"):
        # Same calibrated probabilities the detector will see (from the logits computed above
        # for the temperature fit, not a second pass); chosen on validation runs only.
        cal = [dataclasses.replace(p, proba=softmax_t(p.logits, temperature)) for p in preds]
        policy, policy_search = tune_policy(
            cal_runs, cal, horizon_s=detector_cfg["horizon_s"],
            max_false_alarms_per_100h=detector_cfg["max_false_alarms_per_100h"])
        detector_cfg.update(enter=policy.enter, exit=policy.exit,
                            min_consecutive=policy.min_consecutive)
        c = policy_search["chosen"]
        print(f"alarm policy tuned on validation runs: enter {c['enter']}, exit {c['exit']}, "
              f"min_consecutive {c['min_consecutive']} (val macro-F1 {c['macro_f1']:.3f}, "
              f"{c['false_alarms_per_100h']:.2f} false alarms/100 h)", file=sys.stderr)
    # the test metrics with the rule the detector applies (it reads the card's thresholds)
    policy = dataclasses.replace(policy, drop_passed_through=True)

    metrics = {"val_macro_f1": best, "val_macro_f1_best_epoch": best_epoch_f1,
               "val_macro_f1_weight_average": wa_f1, "temperature": temperature, "val_ece": ece,
               "epochs_run": epoch, "train_minutes": (time.monotonic() - t_start) / 60}
    if member_fits:
        flags = getattr(model, "current_free", None) or [False] * len(member_fits)
        metrics["members"] = [{"seed": m.seed, "val_macro_f1": m.best_val_f1,
                               "epochs_run": m.epochs_run, "train_minutes": m.minutes,
                               **({"current_free": True} if f else {})}
                              for m, f in zip(member_fits, flags)]
    if policy_search is not None:
        metrics["policy_search"] = policy_search
    eval_sets = {"test": split["test"], "leave_out": split["leave_out"]}
    for name, ids in eval_sets.items():
        if not ids:
            continue
        runs = load_runs(ds, ids, window=window, symmetric_cells=cfg["inputs"]["symmetric_cells"])
        res = evaluate_predictions(runs, predict_runs(model, runs, temperature=temperature,
                                                      policy=policy, device=device),
                                   cfg["detector"]["horizon_s"])
        metrics[name] = {"overall": res["overall"], "by_family": res["by_family"]}
        print(f"\n{name} runs:\n" + format_table(res), file=sys.stderr)

    card = {
        "processing": ds.manifest.get("processing"),
        "ppm_grid": {"min": float(ds.ppm_grid[0]), "max": float(ds.ppm_grid[-1]), "step": step_ppm},
        "nucleus": "7Li",
        "temperature": temperature,
        "ood_threshold": ood_thr,
        "detector": detector_cfg,
        "echem_features": {"names": list(ECHEM_FEATURES), "version": ECHEM_FEATURES_VERSION},
        **({"window_features": window.card()} if window is not None else {}),
        "symmetric_cells": cfg["inputs"]["symmetric_cells"],
        "normalisation": ds.manifest.get("normalisation"),
        "training_config": cfg.to_dict(),
        "training_data_hash": ds.manifest.get("content_hash"),
        "training_data_sketch": ds.manifest.get("content_sketch"),
        "training_environment": environment(),
        "training_split": {k: sorted(v) for k, v in split.items()},
        "metrics": metrics,
    }
    bundle_dir = save_bundle(out_dir, model.cpu(), card)
    oc = cfg["ood"]
    if oc["score"] == "feature":
        # fitted on the training runs, thresholded on the validation runs (never the test runs)
        t_ood = time.monotonic()
        scorer = fit_on_runs(model, train_runs, val_runs, max_fit_runs=oc["fit_runs"],
                             seed=cfg["seed"], components=tuple(oc["components"]))
        attach_ood_scorer(bundle_dir, scorer, quantile=oc["quantile"],
                          meta={"training_data_hash": ds.manifest.get("content_hash"),
                                "fit_runs_max": oc["fit_runs"], "seed": cfg["seed"]})
        q = "q%g" % oc["quantile"]
        print(f"OOD scorer fitted in {time.monotonic() - t_ood:.0f} s: threshold "
              f"{scorer.thresholds_[q]:.2f} ({q} of {scorer.n_val_} validation frames)",
              file=sys.stderr)
    if cfg["presence"]["enabled"]:
        # a routed ensemble's gate also sees the frames its current-free members answer
        p_train, p_val = ((plus_current_free(train_runs), cal_runs)
                          if getattr(model, "routed", False) else (train_runs, val_runs))
        fit_and_attach(bundle_dir, model, p_train, p_val, cfg["presence"],
                       ds.manifest.get("content_hash"))
    tracker.log_params({"config": cfg.to_dict()})
    tracker.log_metrics({"final": {"val_macro_f1": best, "temperature": temperature,
                                   "val_ece": ece or 0.0}})
    tracker.log_artifacts(bundle_dir, "bundle")
    if register and cfg["mlflow"].get("register_as"):
        v = tracker.register("bundle", cfg["mlflow"]["register_as"], cfg["mlflow"].get("alias"))
        if v:
            print(f"registered {cfg['mlflow']['register_as']} version {v}"
                  f" (alias {cfg['mlflow'].get('alias')})", file=sys.stderr)
    return TrainResult(Path(bundle_dir), metrics, best, epoch)


class WeightAverage:
    """Running mean of a model's weights (stochastic weight averaging, uniform over updates).

    Floating-point tensors are averaged; any other state (integer buffers) is taken from the
    last update. The model has no batch-norm statistics to recompute.
    """

    def __init__(self):
        self.n = 0
        self._mean: dict | None = None

    def update(self, model) -> None:
        sd = model.state_dict()
        self.n += 1
        if self._mean is None:
            self._mean = {k: v.detach().clone() for k, v in sd.items()}
            return
        for k, v in sd.items():
            if v.is_floating_point():
                self._mean[k] += (v.detach() - self._mean[k]) / self.n
            else:
                self._mean[k] = v.detach().clone()

    def state_dict(self) -> dict:
        if self._mean is None:
            raise ValueError("WeightAverage has no update yet.")
        return {k: v.clone() for k, v in self._mean.items()}


def oversampled(runs: list[RunTensors], families, factor: int) -> np.ndarray:
    """Indices into ``runs`` that one epoch visits: every run once, and the runs of
    ``families`` ``factor`` times (``factor`` 1 or no families: ``0..len(runs)-1``, so that the
    batches are drawn as before the option existed)."""
    idx = np.arange(len(runs))
    if factor <= 1 or not families:
        return idx
    fams = set(families)
    extra = [i for i, r in enumerate(runs) if r.family in fams]
    return np.concatenate([idx, np.tile(np.asarray(extra, dtype=int), factor - 1)])


def length_buckets(lengths, batch_runs: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Batches of runs of similar length (little padding), in random order.

    Runs are sorted by length with a random tie-break, cut into batches, and the batches
    shuffled: an LLZO run of 400 frames is not padded onto seven runs of 40.
    """
    lengths = np.asarray(lengths)
    order = np.lexsort((rng.random(len(lengths)), lengths))
    batches = [order[i:i + batch_runs] for i in range(0, len(order), batch_runs)]
    rng.shuffle(batches)
    return batches


def _save_checkpoint(model, ckpt_dir: Path, epoch: int, f1: float) -> None:
    from safetensors.torch import save_file
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tmp = ckpt_dir / ".weights.tmp"
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, ckpt_dir / "weights.safetensors")
    (ckpt_dir / "checkpoint.json").write_text(json.dumps({"epoch": epoch, "val_macro_f1": f1}))
