"""Hyper-parameter tuning with Optuna: pruning, resumable storage, MLflow nested runs.

Storage: a local journal file (``<out>/study.journal``) by default — it resumes after an
interruption and several local workers may share it (SQLite locks under parallel writers);
a ``postgresql://`` URL lets several machines run trials of one study. MLflow gets one parent
run per study and a nested run per trial through our own bridge (Optuna's MLflow callback is
deprecated and racy with n_jobs > 1).
"""
from __future__ import annotations

import sys
from pathlib import Path

from lisentry.training.config import TrainConfig, load_train_config
from lisentry.training.tracking import Tracker

#: Search space: name -> (kind, low, high) or (categorical, choices).
SPACE = {
    "train.lr": ("log", 3e-4, 5e-3),
    "train.weight_decay": ("log", 1e-6, 1e-3),
    "train.aux_weight": ("float", 0.0, 1.0),
    "model.hidden": ("cat", [32, 48, 64, 96]),
    "model.dropout": ("float", 0.0, 0.3),
    "detector.enter": ("float", 0.5, 0.8),
}


def storage_for(storage: str | None, out_dir: Path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    if storage is None or storage.startswith("journal:") or storage.endswith(".journal"):
        path = (storage.split(":", 1)[1] if storage and storage.startswith("journal:") else storage) \
            or str(out_dir / "study.journal")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(path))
    return optuna.storages.RDBStorage(storage) if "://" in storage else storage


def suggest_overrides(trial) -> list[str]:
    out = []
    for name, spec in SPACE.items():
        if spec[0] == "log":
            v = trial.suggest_float(name, spec[1], spec[2], log=True)
        elif spec[0] == "float":
            v = trial.suggest_float(name, spec[1], spec[2])
        else:
            v = trial.suggest_categorical(name, spec[1])
        out.append(f"{name}={v}")
    return out


def tune(config_path: str | Path, n_trials: int, *, storage: str | None = None,
         study_name: str = "lisentry", overrides=(), progress: bool = False) -> dict:
    """Run ``n_trials`` more trials of a (resumed) study; returns the best trial's summary."""
    import optuna
    from lisentry.training.loop import train
    base = load_train_config(config_path, overrides)
    out_dir = Path(base["out"]).with_name(Path(base["out"]).name + ".tuning")
    out_dir.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(storage=storage_for(storage, out_dir), study_name=study_name,
                                direction="maximize", load_if_exists=True,
                                pruner=optuna.pruners.MedianPruner(n_warmup_steps=3),
                                sampler=optuna.samplers.TPESampler(seed=int(base["seed"])))
    ml = base["mlflow"]
    tracker = Tracker(enabled=ml["enabled"], experiment=ml["experiment"],
                      tracking_uri=ml["tracking_uri"])

    def objective(trial):
        cfg = load_train_config(config_path, [*overrides, *suggest_overrides(trial)])
        with tracker.run(f"trial-{trial.number}", nested=True):
            tracker.log_params({"trial": trial.number, **trial.params})
            res = train(cfg, tracker=tracker, trial=trial, progress=progress,
                        out_dir=out_dir / f"trial-{trial.number}", register=False)
        return res.best_val_f1

    with tracker.run(f"study-{study_name}"):
        study.optimize(objective, n_trials=n_trials, gc_after_trial=True)
        done = [t for t in study.trials if t.value is not None]
        if done:
            tracker.log_params({"best_params": study.best_params})
            tracker.log_metrics({"best_val_macro_f1": study.best_value})
    if not done:
        print("no trial completed", file=sys.stderr)
        return {"n_trials": len(study.trials)}
    return {"n_trials": len(study.trials), "best_value": study.best_value,
            "best_params": study.best_params,
            "best_bundle": str(out_dir / f"trial-{study.best_trial.number}")}
