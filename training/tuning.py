"""Hyper-parameter tuning with Optuna: pruning, resumable storage, MLflow nested runs.

Storage: a local journal file (``<out>/study.journal``) by default — it resumes after an
interruption and several local workers may share it (SQLite locks under parallel writers);
a ``postgresql://`` URL lets several machines run trials of one study. Running trials record a
heartbeat (Optuna's own for databases, :func:`_journal_storage_class` for journals), so the
trials of a killed call are failed rather than left RUNNING. MLflow gets one parent
run per study and a nested run per trial through our own bridge (Optuna's MLflow callback is
deprecated and racy with n_jobs > 1).
"""
from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

from lisentry.datasets.errors import ConfigError
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


#: Seconds between a running trial's heartbeats, and without one before it counts as dead.
HEARTBEAT_INTERVAL_S = 30
GRACE_PERIOD_S = 120
_HEARTBEAT_ATTR = "lisentry:heartbeat"
#: Database URL schemes Optuna's RDBStorage (SQLAlchemy) is asked to open.
RDB_SCHEMES = ("sqlite", "postgresql", "mysql")


def _journal_storage_class():
    """JournalStorage with the heartbeat Optuna gives only RDBStorage (optuna 5.x).

    A trial records a wall-clock heartbeat (a system attribute) every ``heartbeat_interval``
    seconds while it runs; ``optuna.storages.fail_stale_trials`` (called by ``optimize`` before
    each trial) then fails RUNNING trials of a killed worker, whose heartbeat stopped.
    """
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.storages import JournalStorage
    from optuna.storages._heartbeat import BaseHeartbeat  # the interface RDBStorage implements
    from optuna.trial import TrialState

    class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
        def __init__(self, backend, heartbeat_interval: int, grace_period: int | None = None):
            super().__init__(backend)
            self._heartbeat_interval = int(heartbeat_interval)
            self._grace_period = int(grace_period or 2 * heartbeat_interval)

        def record_heartbeat(self, trial_id: int) -> None:
            try:
                self.set_trial_system_attr(trial_id, _HEARTBEAT_ATTR, time.time())
            except (UpdateFinishedTrialError, KeyError):
                pass  # finished meanwhile

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            now = time.time()
            stale = []
            for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                last = t.system_attrs.get(_HEARTBEAT_ATTR)
                if last is None:  # started by a worker without heartbeat: its start time
                    last = t.datetime_start.timestamp() if t.datetime_start else now
                if now - float(last) > self._grace_period:
                    stale.append(t._trial_id)
            return stale

        def get_heartbeat_interval(self) -> int | None:
            return self._heartbeat_interval

        def get_heartbeat_stale_trial_callback(self):
            return None

    return HeartbeatJournalStorage


def storage_for(storage: str | None, out_dir: Path, *, heartbeat_interval: int = HEARTBEAT_INTERVAL_S,
                grace_period: int = GRACE_PERIOD_S):
    """The Optuna storage named by ``--storage``, with a heartbeat that fails the trials of a
    killed worker after ``grace_period`` seconds.

    ``None``: ``<out_dir>/study.journal``; ``journal:PATH`` or ``*.journal``: a journal file;
    ``sqlite:///…``, ``postgresql://…``, ``mysql://…`` (optionally ``+driver``): a database.

    Raises
    ------
    ConfigError
        For anything else, or a database URL that cannot be opened (one line).
    """
    import optuna
    from optuna.storages.journal import JournalFileBackend
    if storage is None or storage.startswith("journal:") or storage.endswith(".journal"):
        path = (storage.split(":", 1)[1] if storage and storage.startswith("journal:") else storage) \
            or str(out_dir / "study.journal")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return _journal_storage_class()(JournalFileBackend(path), heartbeat_interval, grace_period)
    scheme = storage.split("://", 1)[0].split("+", 1)[0].lower() if "://" in storage else None
    if scheme not in RDB_SCHEMES:
        raise ConfigError(f"--storage must be a journal file (PATH.journal or journal:PATH) or a "
                          f"database URL ({', '.join(s + '://…' for s in RDB_SCHEMES)}). "
                          f"Got {storage!r}.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(storage, heartbeat_interval=heartbeat_interval,
                                              grace_period=grace_period)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy and DB drivers raise many types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"--storage {storage!r}: cannot open the Optuna storage "
                          f"({type(exc).__name__}: {first})") from None


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


def summarize(study, out_dir: Path) -> dict:
    """Counts of the study's trials by state, and the best completed trial.

    ``n_trials`` counts every trial (failed, pruned and still running included);
    ``n_complete`` only those that finished with a value.
    """
    from optuna.trial import TrialState
    states = [t.state for t in study.trials]
    out = {"n_trials": len(states),
           "n_complete": sum(s == TrialState.COMPLETE for s in states),
           "n_pruned": sum(s == TrialState.PRUNED for s in states),
           "n_failed": sum(s == TrialState.FAIL for s in states),
           "n_running": sum(s in (TrialState.RUNNING, TrialState.WAITING) for s in states)}
    if out["n_complete"]:
        out.update(best_value=study.best_value, best_params=study.best_params,
                   best_bundle=str(out_dir / f"trial-{study.best_trial.number}"))
    return out


def tune(config_path: str | Path, n_trials: int, *, storage: str | None = None,
         study_name: str = "lisentry", overrides=(), progress: bool = False,
         heartbeat_interval: int = HEARTBEAT_INTERVAL_S, grace_period: int = GRACE_PERIOD_S) -> dict:
    """Run ``n_trials`` more trials of a (resumed) study; returns :func:`summarize`'s counts and
    the best trial.

    The TPE sampler is seeded with the config's ``seed`` plus the number of trials the study
    already has: a fresh study is reproducible, and a resumed one draws new start-up points
    instead of replaying the first call's. Trials of a killed call (RUNNING, no heartbeat for
    ``grace_period`` s) are marked failed.

    Raises
    ------
    ConfigError
        ``n_trials`` < 1, a bad config or ``storage``; before any training starts.
    """
    import optuna
    from lisentry.training.loop import train
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ConfigError(f"--trials must be an int >= 1. Got {n_trials!r}.")
    base = load_train_config(config_path, overrides)
    out_dir = Path(base["out"]).with_name(Path(base["out"]).name + ".tuning")
    st = storage_for(storage, out_dir, heartbeat_interval=heartbeat_interval,
                     grace_period=grace_period)
    out_dir.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(storage=st, study_name=study_name,
                                direction="maximize", load_if_exists=True,
                                pruner=optuna.pruners.MedianPruner(n_warmup_steps=3))
    study.sampler = optuna.samplers.TPESampler(seed=int(base["seed"]) + len(study.trials))
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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # a worker killed during this call
        summary = summarize(study, out_dir)
        if summary["n_complete"]:
            tracker.log_params({"best_params": study.best_params})
            tracker.log_metrics({"best_val_macro_f1": study.best_value})
    if not summary["n_complete"]:
        print("no trial completed", file=sys.stderr)
    return summary
