"""Tests of lisentry.training.data.augment_run: the normal-donor mix keeps what is abnormal; the
noise augmentation lowers the SNR by the drawn factor."""
from __future__ import annotations

import numpy as np
import pytest

from lisentry.training.data import (RunTensors, augment_run, longest_normal_stretch,
                                    noise_window_mask, normal_donor_spectra, spectral_noise)

P = 40


def run(family: str, y, value: float, seed: int = 0) -> RunTensors:
    y = np.asarray(y, dtype=np.int64)
    T = len(y)
    spectra = np.full((T, P), value, np.float32) + np.arange(T, dtype=np.float32)[:, None]
    spectra[:, :3] = np.nan  # not covered
    return RunTensors(f"{family}-{seed}", family, np.arange(T) * 600.0, spectra,
                      np.zeros((T, 2), np.float32), np.ones((T, 2), np.float32), y,
                      np.full((T, 4), 0.5, np.float32), None, None)


def test_longest_normal_stretch():
    assert longest_normal_stretch(np.array([0, 0, 1, 0, 0, 0, 2])) == (3, 6)
    assert longest_normal_stretch(np.array([2, 2])) == (0, 0)
    assert longest_normal_stretch(np.array([0, 0, 0])) == (0, 3)


def test_donor_is_another_family_and_only_normal_frames():
    rng = np.random.default_rng(0)
    target = run("a", [0, 0, 2, 2, 2, 2], 0.0)
    same = run("a", [0] * 10, 100.0)
    other = run("b", [2, 0, 0, 0, 1, 1], 1000.0)  # normal frames 1..3 (values 1001..1003)
    for _ in range(20):
        d = normal_donor_spectra([same, other], target, len(target), rng)
        assert d is not None and d.shape == (6, P)
        # frames 1, 2, 3 of the donor, then its last normal frame held
        assert np.nanmax(d[:, 5]) == 1003.0 and np.nanmin(d[:, 5]) == 1001.0
        assert np.allclose(d[:, 5], [1001, 1002, 1003, 1003, 1003, 1003])
    assert normal_donor_spectra([same], target, 6, rng) is None  # no other family


def test_mix_keeps_labels_and_coverage_and_drops_latents():
    rng = np.random.default_rng(1)
    target = run("a", [0, 0, 2, 2, 2, 2], 0.0)
    donors = [run("b", [0] * 8, 1000.0)]
    cfg = {"mix_prob": 1.0, "mix_scale": [0.5, 0.5]}
    out = augment_run(target, rng, cfg, 0.5, donors)
    np.testing.assert_array_equal(out.y, target.y)
    assert np.isnan(out.aux).all()
    assert np.array_equal(np.isnan(out.spectra), np.isnan(target.spectra))
    # (run + 0.5 donor) / 1.5 with donor frames k0..k0+5 of values 1000 + k
    diff = out.spectra[:, 5] - target.spectra[:, 5] / 1.5
    assert np.all(diff >= 1000 * 0.5 / 1.5 - 1e-3) and np.all(np.diff(diff) > 0)
    # without the mix (probability 0 or no donors) the spectra are untouched
    same = augment_run(target, rng, {"mix_prob": 0.0}, 0.5, donors)
    np.testing.assert_array_equal(same.spectra, target.spectra)
    assert augment_run(target, rng, cfg, 0.5, None).spectra is target.spectra


def _noisy_run(sigma: float, T: int = 30, P_: int = 1001, seed: int = 0) -> tuple[RunTensors, np.ndarray]:
    """A run on the -100..400 ppm grid: one broad line, a slow baseline and white noise."""
    grid = np.linspace(-100.0, 400.0, P_)
    r = np.random.default_rng(seed)
    line = 0.1 * np.exp(-0.5 * ((grid - 10.0) / 5.0) ** 2)
    base = 1e-3 * (grid / 400.0) ** 2
    spectra = (line + base + r.normal(0, sigma, (T, P_))).astype(np.float32)
    spectra[:, :4] = np.nan
    rt = RunTensors("a-0", "a", np.arange(T) * 600.0, spectra, np.zeros((T, 2), np.float32),
                    np.ones((T, 2), np.float32), np.zeros(T, np.int64),
                    np.full((T, 4), 0.5, np.float32), None, None)
    return rt, grid


def test_spectral_noise_reads_white_noise_and_ignores_the_baseline():
    rt, grid = _noisy_run(2e-4)
    w = noise_window_mask(grid)
    assert w is not None and w.sum() == 141
    assert spectral_noise(rt.spectra, w) == pytest.approx(2e-4, rel=0.05)
    assert noise_window_mask(np.linspace(-100, 300, 801)) is None  # no line-free window


def test_noise_augmentation_raises_the_noise_by_the_drawn_factor():
    rt, grid = _noisy_run(2e-4)
    w = noise_window_mask(grid)
    cfg = {"noise_prob": 1.0, "noise_max_factor": 10.0, "intensity_jitter": 0.0, "shift_ppm": 0.0}
    factors = []
    for seed in range(40):
        out = augment_run(rt, np.random.default_rng(seed), cfg, 0.5, None, w)
        assert np.isnan(out.spectra[:, :4]).all()  # uncovered points stay uncovered
        factors.append(spectral_noise(out.spectra, w) / 2e-4)
    factors = np.array(factors)
    assert factors.min() >= 0.95 and factors.max() <= 10.5
    assert factors.max() > 4 and np.median(factors) > 1.5  # log-uniform over [1, 10]
    # the line is unchanged beyond the noise
    out = augment_run(rt, np.random.default_rng(1), cfg, 0.5, None, w)
    assert abs(float(np.nanmax(out.spectra.mean(axis=0))) - 0.1) < 0.01


def test_noise_augmentation_off_leaves_spectra_and_random_stream_alone():
    rt, grid = _noisy_run(2e-4)
    w = noise_window_mask(grid)
    cfg = {"noise_prob": 0.0, "intensity_jitter": 0.0, "shift_ppm": 0.0}
    r1, r2 = np.random.default_rng(3), np.random.default_rng(3)
    out = augment_run(rt, r1, cfg, 0.5, None, w)
    np.testing.assert_array_equal(out.spectra, rt.spectra)
    augment_run(rt, r2, cfg, 0.5, None)  # as before the option existed
    assert r1.random() == r2.random()  # so the default training draws what it always drew


def test_drop_echem_prefix_masks_only_the_first_frames():
    """A potential log that starts late: the first 1..max frames lose their echem, the rest
    and the run's own arrays are untouched; a whole-run drop takes precedence."""
    rt = run("a", [0] * 20, 0.0)
    rt.echem[:] = 1.0
    rng = np.random.default_rng(3)
    seen = set()
    for _ in range(60):
        out = augment_run(rt, rng, {"drop_echem_prefix": 1.0, "drop_echem_prefix_max_frames": 5}, 0.5)
        k = int((out.echem_mask[:, 0] == 0).sum())
        assert 1 <= k <= 5
        assert np.all(out.echem_mask[:k] == 0) and np.all(out.echem[:k] == 0)
        assert np.all(out.echem_mask[k:] == 1) and np.all(out.echem[k:] == 1)
        seen.add(k)
    assert seen == {1, 2, 3, 4, 5}
    assert np.all(rt.echem_mask == 1) and np.all(rt.echem == 1)      # not changed in place
    full = augment_run(rt, rng, {"drop_echem": 1.0, "drop_echem_prefix": 1.0}, 0.5)
    assert np.all(full.echem_mask == 0)
    # probability 0 draws nothing: the random stream of older configs is unchanged
    a, b = np.random.default_rng(9), np.random.default_rng(9)
    augment_run(rt, a, {"drop_echem": 0.5}, 0.5)
    augment_run(rt, b, {"drop_echem": 0.5, "drop_echem_prefix": 0.0}, 0.5)
    assert a.random() == b.random()


def test_noise_min_snr_caps_the_factor_at_the_runs_snr():
    """``noise_min_snr``: no augmented run is noisier than that SNR (a held-out SNR range below
    the training data's stays unseen); a run without a recorded SNR gets no noise; a cap above
    ``noise_max_factor`` changes nothing."""
    import dataclasses
    rt, grid = _noisy_run(2e-4)
    w = noise_window_mask(grid)
    cfg = {"noise_prob": 1.0, "noise_max_factor": 10.0, "noise_min_snr": 40.0,
           "intensity_jitter": 0.0, "shift_ppm": 0.0}
    at_80 = dataclasses.replace(rt, snr=80.0)
    factors = [spectral_noise(augment_run(at_80, np.random.default_rng(s), cfg, 0.5, None,
                                          w).spectra, w) / 2e-4 for s in range(30)]
    assert max(factors) <= 2.1 and max(factors) > 1.5
    for snr in (None, 40.0, 25.0):
        out = augment_run(dataclasses.replace(rt, snr=snr), np.random.default_rng(5), cfg, 0.5,
                          None, w)
        np.testing.assert_array_equal(out.spectra, rt.spectra)
    loud = dataclasses.replace(rt, snr=1000.0)   # cap 25 > 10
    np.testing.assert_array_equal(
        augment_run(loud, np.random.default_rng(5), cfg, 0.5, None, w).spectra,
        augment_run(rt, np.random.default_rng(5), {**cfg, "noise_min_snr": None}, 0.5, None,
                    w).spectra)
