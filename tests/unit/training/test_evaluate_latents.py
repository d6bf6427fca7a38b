"""latent_metrics_from: errors and reported shares of the latent estimates against the truth."""
from __future__ import annotations

import numpy as np
import pytest

from lisentry.training.evaluate import format_latents, latent_metrics_from

NAMES = ("cluster_amount", "cluster_shift_ppm", "metal_amount", "ce_amount")


def test_shares_errors_and_shift():
    truth = np.array([[0.0, np.nan, 0.0, 1.0],
                      [0.0, np.nan, 0.0, 1.0],
                      [0.1, 90.0, 0.2, 1.0],
                      [0.002, 80.0, np.nan, 1.0]])
    rep = np.array([[0.01, 95.0, -0.01, 0.9],      # a spurious cluster; metal clipped to 0
                    [0.0, np.nan, 0.0, 1.1],
                    [0.08, 100.0, 0.0, 1.0],       # metal missed
                    [0.0, np.nan, 0.0, 1.0]])
    out = latent_metrics_from(rep, truth, NAMES)
    c, m = out["cluster_amount"], out["metal_amount"]
    assert c["absent_reported"] == 0.5 and c["present_reported"] == 1.0 and c["n_frames"] == 4
    assert c["mae"] == pytest.approx((0.01 + 0 + 0.02 + 0.002) / 4)
    assert m["absent_reported"] == 0.0 and m["present_reported"] == 0.0 and m["n_frames"] == 3
    assert m["mae"] == pytest.approx(0.2 / 3)       # the clipped -0.01 counts as 0
    assert out["ce_amount"]["present_reported"] == 1.0 and out["ce_amount"]["absent_reported"] is None
    # only frame 2 has a true cluster >= 0.005 with a reported one
    assert out["cluster_shift_ppm"] == {"median_abs": 10.0, "p90_abs": 10.0, "n_frames": 1}
    text = format_latents(out)
    assert "cluster_amount" in text and "50.0 % of frames without it" in text and "10.0 ppm" in text


def test_measured_runs_have_no_latent_metrics():
    nan = np.full((3, 4), np.nan)
    assert latent_metrics_from(np.zeros((3, 4)), nan, NAMES) is None
