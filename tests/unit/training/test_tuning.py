"""Tests of lisentry.training.tuning with a stand-in for training (no model is fitted)."""
from __future__ import annotations

import time
from types import SimpleNamespace

import optuna
import pytest

from lisentry.datasets.errors import ConfigError
from lisentry.training import tuning

CFG = """dataset: {root}/data
out: {root}/model
seed: 3
mlflow: {{enabled: false}}
"""


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    """A config whose 'training' is instant: the value is a function of the trial's lr."""
    import lisentry.training.loop as loop
    monkeypatch.setattr(loop, "train", lambda cfg, **kw: SimpleNamespace(best_val_f1=cfg["train"]["lr"]))
    p = tmp_path / "train.yaml"
    p.write_text(CFG.format(root=tmp_path))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return p


def _params(tmp_path, out="model"):
    st = tuning.storage_for(None, tmp_path / f"{out}.tuning")
    study = optuna.load_study(study_name="lisentry", storage=st)
    return [t.params for t in study.trials]


def test_resumed_study_draws_new_points_and_a_fresh_one_repeats(cfg, tmp_path):
    tuning.tune(cfg, 2)
    res = tuning.tune(cfg, 2)
    assert res["n_trials"] == 4 and res["n_complete"] == 4
    first = _params(tmp_path)
    assert first[2] != first[0] and first[3] != first[1]   # not a replay of the first call
    tuning.tune(cfg, 2, overrides=[f"out={tmp_path / 'again'}"])
    assert _params(tmp_path, "again") == first[:2]            # same seed, fresh study: same points


def test_killed_trial_is_failed_and_not_counted_as_complete(cfg, tmp_path):
    """A tune killed mid-trial leaves a RUNNING trial; the next call fails it (no heartbeat
    for grace_period s) and reports completed trials apart from all trials."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    journal = tmp_path / "model.tuning" / "study.journal"
    journal.parent.mkdir(parents=True)
    dead = optuna.create_study(storage=JournalStorage(JournalFileBackend(str(journal))),
                               study_name="lisentry", direction="maximize")
    dead.ask()  # the killed worker's trial: RUNNING, never told
    time.sleep(1.2)
    res = tuning.tune(cfg, 1, heartbeat_interval=1, grace_period=1)
    assert res["n_trials"] == 2 and res["n_complete"] == 1
    assert res["n_failed"] == 1 and res["n_running"] == 0
    assert res["best_bundle"].endswith("trial-1")


def test_live_trial_keeps_its_heartbeat(tmp_path):
    st = tuning.storage_for(None, tmp_path, heartbeat_interval=1, grace_period=60)
    assert optuna.storages._heartbeat.is_heartbeat_enabled(st)
    study = optuna.create_study(storage=st, study_name="s")
    with pytest.warns(UserWarning, match="Heartbeat"):
        trial = study.ask()
    st.record_heartbeat(trial._trial_id)
    assert st._get_stale_trial_ids(study._study_id) == []
    st._grace_period = 0
    time.sleep(0.05)
    assert st._get_stale_trial_ids(study._study_id) == [trial._trial_id]


@pytest.mark.parametrize("storage, message", [
    ("foo", "--storage must be a journal file"),
    ("bogus://x", "--storage must be a journal file"),
    ("sqlite:////nonexistent-dir/x/study.db", "cannot open the Optuna storage"),
])
def test_bad_storage_is_one_line(tmp_path, storage, message):
    with pytest.raises(ConfigError) as ei:
        tuning.storage_for(storage, tmp_path)
    assert message in str(ei.value) and "\n" not in str(ei.value)


def test_trials_must_be_positive(cfg, tmp_path):
    for n in (-1, 0):
        with pytest.raises(ConfigError, match=f"--trials must be an int >= 1. Got {n}."):
            tuning.tune(cfg, n)
    assert not (tmp_path / "model.tuning").exists()


def test_cli_refuses_bad_trials_and_storage_in_one_line(cfg):
    from typer.testing import CliRunner

    from lisentry.detector.cli import app
    runner = CliRunner()
    for args, message in ((["--trials", "-1"], "--trials must be an int >= 1"),
                          (["--storage", "bogus://x"], "--storage must be")):
        res = runner.invoke(app, ["tune", str(cfg), *args])
        assert res.exit_code == 2, res.output
        assert message in res.output and "Traceback" not in res.output
