"""``lisentry label --dask-scheduler``: runs labelled as tasks on a Dask cluster give the same
outputs as the local path, with the model loaded once per worker."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

distributed = pytest.importorskip(
    "distributed", reason="dask[distributed] not installed (pip install 'lisentry[dask]')")


def invoke(*args):
    from lisentry.detector.cli import app
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two short finished runs as RUN/nmr/<expno> + RUN/echem/*.mpt."""
    from lisentry.datasets.sim.run import simulate_run, write_run
    root = tmp_path_factory.mktemp("dask_runs")
    for name, family, seed, n in (("runA", "hc_sulfide_overlithiation", 3, 6),
                                  ("runB", "hc_sulfide_hold", 5, 5)):
        write_run(simulate_run(family, seed, max_frames=n, run_id=name), root / name)
    return [root / "runA", root / "runB"]


@pytest.fixture(scope="module")
def cluster():
    # threads, not processes: a process worker would import torch afresh (slow on 2 cores);
    # the task, the plugin and the outputs are the same either way
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as c:
        yield c


def test_dask_outputs_equal_local_and_model_loaded_once_per_worker(two_runs, tiny_bundle,
                                                                    tmp_path, cluster,
                                                                    monkeypatch):
    import lisentry.detector.label as label_mod
    loads = []
    real_load = label_mod.load_model
    monkeypatch.setattr(label_mod, "load_model", lambda p: loads.append(str(p)) or real_load(p))
    monkeypatch.setattr(label_mod, "_WORKER_BUNDLE", None)
    local, remote = tmp_path / "local", tmp_path / "dask"
    res = invoke("label", *two_runs, "--echem-tz", "UTC", "--out", local, "--model", tiny_bundle)
    assert res.exit_code == 0, res.stdout + res.stderr
    monkeypatch.setattr(label_mod, "_WORKER_BUNDLE", None)    # workers start without a model
    loads.clear()
    res = invoke("label", *two_runs, "--echem-tz", "UTC", "--out", remote, "--model",
                 tiny_bundle, "--dask-scheduler", cluster.scheduler_address)
    assert res.exit_code == 0, res.stdout + res.stderr
    assert "2 of 2 runs labelled" in res.stderr
    # the CLI checks the bundle once; then one load per worker, none per run
    n_workers = len(cluster.scheduler_info["workers"])
    assert len(loads) == 1 + n_workers, loads
    for run in ("runA", "runB"):
        a = pd.read_csv(local / f"{run}.csv")
        b = pd.read_csv(remote / f"{run}.csv")
        assert len(a) > 0
        pd.testing.assert_frame_equal(a, b)
        pa = json.loads((local / f"{run}.json").read_text())
        pb = json.loads((remote / f"{run}.json").read_text())
        for key in ("model", "pipeline", "run", "alarm_episodes", "inputs"):
            assert pa[key] == pb[key], key
        assert (remote / f"{run}.skipped.csv").exists()


def test_dask_failed_run_reported_others_go_on(two_runs, tiny_bundle, tmp_path, cluster):
    broken = tmp_path / "broken"
    (broken / "nmr" / "1").mkdir(parents=True)
    (broken / "nmr" / "1" / "fid").write_bytes(b"\0" * 10)       # no acqus
    res = invoke("label", two_runs[0], broken, "--echem-tz", "UTC", "--out", tmp_path / "o",
                 "--model", tiny_bundle, "--dask-scheduler", cluster.scheduler_address)
    assert res.exit_code == 0, res.stdout + res.stderr
    assert "1 of 2 runs labelled" in res.stderr
    assert "broken: FAILED:" in res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    assert (tmp_path / "o" / "runA.csv").exists()


def test_unreachable_scheduler_is_one_line_error(two_runs, tiny_bundle, tmp_path):
    import dask
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        res = invoke("label", *two_runs, "--echem-tz", "UTC", "--out", tmp_path / "o",
                     "--model", tiny_bundle, "--dask-scheduler", "tcp://127.0.0.1:9")
    assert res.exit_code != 0
    err = res.stderr.strip().splitlines()
    assert any("cannot connect to the Dask scheduler at tcp://127.0.0.1:9" in ln for ln in err), err
    assert "Traceback" not in res.stdout + res.stderr


@pytest.mark.slow
def test_dask_process_worker_equals_local(two_runs, tiny_bundle, tmp_path):
    """A worker in its own process (how a real cluster runs): the task and the model plugin
    must pickle and import there."""
    res = invoke("label", *two_runs, "--echem-tz", "UTC", "--out", tmp_path / "local",
                 "--model", tiny_bundle)
    assert res.exit_code == 0, res.stdout + res.stderr
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as c:
        res = invoke("label", *two_runs, "--echem-tz", "UTC", "--out", tmp_path / "dask",
                     "--model", tiny_bundle, "--dask-scheduler", c.scheduler_address)
    assert res.exit_code == 0, res.stdout + res.stderr
    for run in ("runA", "runB"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "local" / f"{run}.csv"),
                                      pd.read_csv(tmp_path / "dask" / f"{run}.csv"))
