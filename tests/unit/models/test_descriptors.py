"""Tests of lisentry.models.descriptors: the physics descriptors read what the spectra show."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lisentry.models.descriptors import AMOUNT_SCALE, DESCRIPTOR_NAMES, SpectralDescriptors

GRID = np.arange(-100.0, 400.0 + 0.25, 0.5)  # the datasets' default grid


def lorentz(center_ppm: float, fwhm_ppm: float, area: float) -> np.ndarray:
    g = fwhm_ppm / 2
    return area / math.pi * g / ((GRID - center_ppm) ** 2 + g**2)


def first_frame() -> np.ndarray:
    # electrolyte at 0 ppm, counter electrode at 245 ppm (area fractions of the total)
    return lorentz(0.0, 3.0, 0.7) + lorentz(245.0, 8.0, 0.3)


def describe(frames: list[np.ndarray], noise: float = 2e-4, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = torch.tensor(np.stack(frames) + rng.normal(0, noise, (len(frames), len(GRID))),
                     dtype=torch.float32)
    m = torch.ones_like(x)
    d = SpectralDescriptors(len(GRID), GRID[0], 0.5)(x, m, x[:1].expand_as(x), m)
    return {n: d[:, j].numpy() for j, n in enumerate(DESCRIPTOR_NAMES)}


def test_first_frame_reads_as_nothing_new():
    d = describe([first_frame(), first_frame()])
    for n in ("cluster_rel", "metal_extra", "metal_diff", "ce_change"):
        assert abs(d[n][1]) < 0.3, (n, d[n][1])
    assert d["metal_peak"][1] == 0.0 and d["cluster_peak"][1] == 0.0  # nothing above 3 sigma


def test_new_metal_line_is_measured_and_located():
    new = first_frame() + lorentz(268.0, 6.0, 0.05)
    d = describe([first_frame(), new])
    # the 255-285 ppm window holds ~91 % of a 6-ppm Lorentzian centred at 268 ppm
    assert d["metal_diff"][1] == pytest.approx(math.asinh(0.05 * 0.91 / AMOUNT_SCALE), abs=0.15)
    assert d["metal_extra"][1] > 2.0 and d["metal_snr"][1] > 2.0
    assert d["metal_peak"][1] == pytest.approx((268.0 - 260.0) / 25.0, abs=0.04)
    assert abs(d["cluster_rel"][1]) < 0.3


def test_cluster_growth_and_counter_electrode_loss():
    new = lorentz(0.0, 3.0, 0.7) + lorentz(245.0, 8.0, 0.15) + lorentz(90.0, 20.0, 0.04)
    d = describe([first_frame(), new])
    assert d["cluster_rel"][1] == pytest.approx(math.asinh(0.04 * 0.95 / AMOUNT_SCALE), abs=0.2)
    # a 20-ppm-wide line: its smoothed maximum sits within a few ppm of the centre
    assert d["cluster_peak"][1] == pytest.approx((90.0 - 70.0) / 60.0, abs=0.06)
    assert d["ce_change"][1] == pytest.approx(-0.5, abs=0.08)  # half the electrode signal lost
    assert d["metal_extra"][1] < 0.5  # a shrinking electrode line is not new metal


def test_uncovered_grid_points_are_ignored():
    x = torch.tensor(np.stack([first_frame(), first_frame() + lorentz(268.0, 6.0, 0.05)]),
                     dtype=torch.float32)
    m = torch.ones_like(x)
    m[:, GRID < -50] = 0
    x = x * m
    d = SpectralDescriptors(len(GRID), GRID[0], 0.5)(x, m, x[:1].expand_as(x), m[:1].expand_as(m))
    assert torch.isfinite(d).all()
    assert d[1, DESCRIPTOR_NAMES.index("metal_diff")] > 2.0


def test_lower_median_is_torch_median():
    from lisentry.models.descriptors import lower_median
    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 7, 8, 131):
        X = torch.randn(4, n, generator=g)
        X[0, : n // 2] = 0.0                       # zero-filled (uncovered) points tie
        assert torch.equal(lower_median(X), X.median(dim=1).values)
