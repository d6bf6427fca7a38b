"""The operando figure: heat map, potential, label band, and the latent-estimate panel."""
from __future__ import annotations

import struct
from datetime import datetime, timezone

import numpy as np
import pytest

from lisentry.datasets.frame import AcquisitionParams, Frame, Run
from lisentry.datasets.pipeline import Pipeline
from lisentry.detector.plots import figure_run, plot_run

T0 = datetime(2023, 8, 11, 11, 0, 0, tzinfo=timezone.utc)


def _run(n=6):
    grid = Pipeline().ppm_grid
    acq = AcquisitionParams(nucleus="7Li", sfo1_MHz=116.67, bf1_MHz=116.64, o1_Hz=29000.0,
                            sw_Hz=93457.9, td=1024, ns=8, ds=2, d1_s=0.5, group_delay_pts=0.0,
                            sr_Hz=0.0, extra={})
    frames = []
    for i in range(n):
        spec = np.exp(-0.5 * ((grid - 250.0) / 3.0) ** 2).astype(np.float32) * (1 + 0.1 * i)
        frames.append(Frame("r", i, i + 1, T0, T0, 600.0 * i + 300.0, "7Li", acq.sfo1_MHz,
                            grid, spec, acq, potential_V=0.1 - 0.01 * i))
    return Run("r", frames)


def _png_width(path):
    return struct.unpack(">I", path.read_bytes()[16:20])[0]


def test_latent_panel_and_cluster_shift_on_the_heat_map(tmp_path):
    import matplotlib.pyplot as plt
    run = _run()
    shift = [np.nan, np.nan, 80.0, 92.5, 350.0, 101.0]          # 350: outside the 0-300 window
    latents = {"cluster_amount": [0, 0, 0.01, 0.03, 0.05, 0.06], "metal_amount": [0.0] * 6,
               "ce_amount": [0.5] * 6, "cluster_shift_ppm": shift}
    fig = figure_run(run, labels=["normal_lithiation"] * 6, latents=latents)
    try:
        assert len(fig.axes) == 3
        ax_map, _, ax_lat = fig.axes
        marks = [ln for ln in ax_map.get_lines() if ln.get_label() == "estimated cluster shift"]
        assert len(marks) == 1
        t_h = run.t_s() / 3600.0
        np.testing.assert_allclose(marks[0].get_xdata(), [80.0, 92.5, 101.0])
        np.testing.assert_allclose(marks[0].get_ydata(), t_h[[2, 3, 5]])
        drawn = {ln.get_label(): ln for ln in ax_lat.get_lines()}
        assert set(drawn) == {"cluster", "metal", "counter electrode"}
        np.testing.assert_allclose(drawn["cluster"].get_xdata(), latents["cluster_amount"])
    finally:
        plt.close(fig)

    plain = plot_run(run, tmp_path / "plain.png")
    wide = plot_run(run, tmp_path / "wide.png", latents=latents)
    assert _png_width(wide) > _png_width(plain)


def test_no_latents_or_all_nan_amounts_keep_two_panels():
    import matplotlib.pyplot as plt
    run = _run()
    for latents in (None, {"metal_amount": [np.nan] * 6}):
        fig = figure_run(run, latents=latents)
        try:
            assert len(fig.axes) == 2
        finally:
            plt.close(fig)


def test_latent_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match="metal_amount.*5 values for 6 frames"):
        figure_run(_run(), latents={"metal_amount": [0.0] * 5})
