"""``lisentry evaluate`` refuses a model made for another nucleus than the dataset's."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import torch

from lisentry.datasets.frame import AcquisitionParams, Frame, Run
from lisentry.datasets.store import DatasetWriter
from lisentry.models.bundle import save_bundle
from lisentry.models.net import LisentryNet

GRID = np.arange(0.0, 32.0, 0.5)  # 64 points
PROC = {"lb_Hz": 50.0, "nucleus": "7Li"}


def _run(run_id: str, n: int = 3) -> Run:
    rng = np.random.default_rng(0)
    acq = AcquisitionParams("7Li", 194.4, 194.38, 0.0, 1e5, 8192, ns=16)
    t0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
    frames = [Frame(run_id, i, i + 1, t0 + timedelta(minutes=5 * i),
                    t0 + timedelta(minutes=5 * i + 4), 120.0 + 300 * i, "7Li", 194.4, GRID,
                    rng.normal(size=GRID.size).astype(np.float32), acq, potential_V=0.1,
                    label="normal_lithiation") for i in range(n)]
    return Run(run_id, frames)


@pytest.fixture
def data(tmp_path):
    w = DatasetWriter(tmp_path / "ds", ppm_grid=GRID, processing=PROC)
    w.add_run(_run("r0"), family="f")
    w.close()
    torch.manual_seed(0)
    net = LisentryNet(n_ppm=64, hidden=8, channels=(4, 4), pooled_bins=4, echem_hidden=4).eval()
    grid = {"min": 0.0, "max": 31.5, "step": 0.5}
    na = save_bundle(tmp_path / "na", net, {"ppm_grid": grid, "processing": PROC, "nucleus": "23Na"})
    li = save_bundle(tmp_path / "li", net, {"ppm_grid": grid, "processing": PROC, "nucleus": "7Li"})
    return tmp_path, na, li


def test_evaluate_refuses_another_nucleus(data):
    from typer.testing import CliRunner

    from lisentry.detector.cli import app
    root, na, li = data
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", str(na), str(root / "ds"), "--out", str(root / "e.json")])
    assert res.exit_code == 2, res.output
    assert f"{na}/card.json: nucleus 23Na does not match the data's 7Li" in res.output
    assert not (root / "e.json").exists()
    res = runner.invoke(app, ["evaluate", str(li), str(root / "ds"), "--out", str(root / "e.json")])
    assert res.exit_code == 0, res.output
    assert (root / "e.json").exists()
