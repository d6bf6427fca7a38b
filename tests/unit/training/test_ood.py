"""Tests of the OOD set generator, the OOD metrics and the feature OOD scorer (training.ood*)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lisentry.datasets.pipeline import ProcessingConfig
from lisentry.datasets.sim.run import simulate_run
from lisentry.training.ood import (OOD_GROUPS, OOD_KINDS, OODSetConfig, auroc, fpr_at_tpr,
                                   generate_ood_set, id_runs, make_variant, process_raws,
                                   threshold_at_tpr)
from lisentry.models.ood_scorer import FeatureOODScorer, frames_inputs, head_inputs

DEFAULT_BUNDLE = Path(__file__).resolve().parents[3] / "models" / "default"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _build_config(tmp: Path, families: dict) -> str:
    p = tmp / "ood-test.yaml"
    p.write_text(yaml.safe_dump({"name": "ood-test", "seed": 0, "horizon_s": 3600, "randomize": True,
                                 "randomize_override": {"acquisition.field_MHz": [300, 700],
                                                        "acquisition.snr": {"log": [40, 400]}},
                                 "families": families}))
    return str(p)


# ---------------------------------------------------------------------- metrics
def test_metrics_hand_checked():
    ids = [0.0, 1.0, 2.0, 3.0]
    # OOD 2.5, 3, 4, 5: catching 95 % needs all 4 -> t = 2.5; ID 3 >= 2.5 -> FPR 1/4
    assert threshold_at_tpr([2.5, 3, 4, 5]) == 2.5
    assert fpr_at_tpr(ids, [2.5, 3, 4, 5]) == 0.25
    # 20 OOD scores 1..20: 95 % = 19 of them -> t = 2; ID >= 2 are 2 and 3 -> 0.5
    assert threshold_at_tpr(np.arange(1, 21)) == 2.0
    assert fpr_at_tpr(ids, np.arange(1, 21)) == 0.5
    assert fpr_at_tpr(ids, np.arange(1, 21), tpr=0.5) == 0.0      # t = 11
    assert fpr_at_tpr(ids, [10, 11]) == 0.0
    assert fpr_at_tpr(ids, [-5, -4]) == 1.0
    # AUROC: pairs (id, ood) won / tied / lost
    assert auroc([0, 1], [2, 3]) == 1.0
    assert auroc([2, 3], [0, 1]) == 0.0
    assert auroc([0, 1, 2], [1]) == 0.5                 # beats 0, ties 1, loses to 2
    assert auroc([0, 0], [0, 1]) == pytest.approx(0.75)  # 2 ties (0.5 each) + 2 wins of 4
    assert auroc([1.0], [np.inf]) == 1.0                 # inf is a valid score
    with pytest.raises(ValueError, match="NaN"):
        fpr_at_tpr([0.0, np.nan], [1.0])
    with pytest.raises(ValueError, match="tpr"):
        threshold_at_tpr([1.0], tpr=0.0)


def test_auroc_matches_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    a = np.round(rng.normal(0, 1, 300), 1)          # rounding makes ties
    b = np.round(rng.normal(0.7, 1, 200), 1)
    y = np.r_[np.zeros(a.size), np.ones(b.size)]
    assert auroc(a, b) == pytest.approx(sk.roc_auc_score(y, np.r_[a, b]))


# ---------------------------------------------------------------------- generator
@pytest.fixture(scope="module")
def one_sim():
    return simulate_run("hc_sulfide_overlithiation", 123, max_frames=8)


def _same(r1, r2) -> bool:
    for a, b in zip(r1, r2):
        for x, y in ((a.fid, b.fid), (a.spectrum, b.spectrum), (a.spectrum_ppm, b.spectrum_ppm)):
            if (x is None) != (y is None) or (x is not None and not np.array_equal(x, y)):
                return False
        if a.phase_deg != b.phase_deg or a.acq != b.acq:
            return False
    return True


def test_kinds_cover_the_four_groups():
    assert set(OOD_GROUPS) == {"nucleus", "processing", "chemistry", "garbage"}
    assert all(k.scope in ("run", "onset") for k in OOD_KINDS.values())
    with pytest.raises(Exception, match="Did you mean 'pure_noise'"):
        OODSetConfig(kinds=("pure_nois",))


@pytest.mark.parametrize("kind", list(OOD_KINDS))
def test_each_kind_is_deterministic_and_changes_the_spectra(kind, one_sim):
    raws1, on1 = make_variant(one_sim, kind, seed=5)
    raws2, on2 = make_variant(one_sim, kind, seed=5)
    assert on1 == on2 and _same(raws1, raws2)
    assert len(raws1) == len(one_sim.raws)
    # the input run is not modified (its frames are shared with the ID run)
    assert _same(one_sim.raws, simulate_run("hc_sulfide_overlithiation", 123, max_frames=8).raws)
    if OOD_KINDS[kind].scope == "run":
        assert on1 == 0
    else:
        assert 1 <= on1 < len(raws1)
        assert _same(raws1[:on1], one_sim.raws[:on1])        # clean prefix
    pc = ProcessingConfig()
    clean, _ = process_raws("id", one_sim.raws, one_sim, pc)
    bad, idx = process_raws("ood", raws1, one_sim, pc)
    if kind == "truncated_fid":
        # exact zeros after the first few % of the FID: the pipeline refuses those frames
        assert idx == list(range(on1))
        return
    assert idx == list(range(len(raws1)))                   # nothing refused
    a = np.nan_to_num(np.stack([f.intensity for f in clean]))
    b = np.nan_to_num(np.stack([f.intensity for f in bad]))
    diff = np.abs(a - b).sum(axis=1) / np.abs(a).sum(axis=1)
    assert np.all(diff[on1:] > 0.05), diff                  # every OOD frame really differs


@pytest.mark.parametrize("kind", [k for k in OOD_KINDS
                                  if k not in ("no_phase", "no_digital_filter", "reversed",
                                               "time_domain")])
def test_random_kinds_depend_on_the_seed(kind, one_sim):
    assert not _same(make_variant(one_sim, kind, seed=5)[0], make_variant(one_sim, kind, seed=6)[0])


def test_generate_ood_set_marks_frames(tmp_path):
    cfg = OODSetConfig(build_config=_build_config(tmp_path, {"hc_sulfide_overlithiation": 1,
                                                             "graphite_overcharge": 1}),
                       seed=9, runs_per_family=1, max_frames=6,
                       kinds=("signal_loss", "wrong_reference"), variants_per_kind=2)
    runs = generate_ood_set(cfg)
    assert [r.kind for r in runs] == ["id"] * 2 + ["signal_loss"] * 2 + ["wrong_reference"] * 2
    for r in runs:
        assert len(r.frames) == len(r.is_ood) == len(r.keep) == 6
        if r.kind == "id":
            assert not r.is_ood.any() and r.keep.all()
        elif r.kind == "wrong_reference":
            assert r.is_ood.all()
        else:
            assert r.is_ood.tolist() == [i >= r.onset for i in range(6)] and 1 <= r.onset
            assert r.keep.tolist() == r.is_ood.tolist()
    again = generate_ood_set(cfg)
    for r1, r2 in zip(runs, again):
        assert np.array_equal(np.stack([f.intensity for f in r1.frames]),
                              np.stack([f.intensity for f in r2.frames]), equal_nan=True)


# ---------------------------------------------------------------------- scorer
def test_scorer_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    S, H, y = rng.normal(size=(120, 30)), rng.normal(size=(120, 5)), rng.integers(0, 3, 120)
    sc = FeatureOODScorer(n_components=4, smooth_points=3).fit(S, H, y, S[:40], H[:40])
    sc.save(tmp_path / "ood", {"note": "test"})
    sc2 = FeatureOODScorer.load(tmp_path / "ood")
    assert sc2.thresholds_ == sc.thresholds_ and sc2.get_params() == sc.get_params()
    np.testing.assert_array_equal(sc2.score(S[40:], H[40:]), sc.score(S[40:], H[40:]))
    assert sc.thresholds_["q0.95"] <= sc.thresholds_["q0.99"]
    with pytest.raises(Exception, match="n_components"):
        FeatureOODScorer(n_components=0).fit(S, H, y, S, H)
    # every component set round-trips; one without the Mahalanobis distance needs no features
    for comps in (("mahalanobis", "pca_residual", "negative_area"), ("negative_area",)):
        sc = FeatureOODScorer(n_components=4, components=comps).fit(S, H, y, S[:40], H[:40])
        sc.save(tmp_path / "o2")
        sc2 = FeatureOODScorer.load(tmp_path / "o2")
        assert sc2.components == comps and sc2.uses_features == ("mahalanobis" in comps)
        np.testing.assert_array_equal(sc2.score(S[40:], H[40:]), sc.score(S[40:], H[40:]))
    assert FeatureOODScorer(components=("negative_area",)).fit(S, None, y, S[:40], None).n_val_ == 40
    with pytest.raises(Exception, match="components"):
        FeatureOODScorer(components=("energy",)).fit(S, H, y, S, H)


def test_negative_area_flags_wrong_phase_and_not_a_dispersive_metal_line():
    """A phased spectrum with a skin-effect (45 deg) metal line keeps most of its area
    positive; the same spectrum 120 deg out of phase puts much of it below zero."""
    x = np.linspace(-100, 400, 1001)

    def lines(phase_deg, metal_disp):
        out = np.zeros_like(x)
        for x0, w, a, disp in ((0.0, 5.0, 1.0, 0.0), (248.0, 7.0, 1.0, metal_disp)):
            u = (x - x0) / (w / 2)
            absorb, dispn = 1 / (1 + u * u), u / (1 + u * u)
            ph = np.arcsin(disp) + np.radians(phase_deg)
            out += a * (np.cos(ph) * absorb - np.sin(ph) * dispn)
        return out

    rng = np.random.default_rng(1)
    ok = np.stack([lines(rng.normal(0, 8), rng.uniform(0, 0.75)) + rng.normal(0, 1e-3, x.size)
                   for _ in range(60)])
    sc = FeatureOODScorer(n_components=4, components=("negative_area",)).fit(
        ok[:40], None, np.zeros(40), ok[40:], None)
    bad = np.stack([lines(120.0, 0.3), lines(-150.0, 0.3), -lines(0.0, 0.3)])
    assert sc.score(bad).min() > sc.thresholds_["q0.99"] + 1.0
    assert np.median(sc.score(ok[40:])) < sc.thresholds_["q0.95"]


@pytest.mark.skipif(not (DEFAULT_BUNDLE / "card.json").is_file(), reason="no shipped default model")
def test_garbage_scores_above_in_distribution_with_the_shipped_model(tmp_path):
    """Fit the feature scorer on a few simulated ID runs through the shipped model, then score
    other ID runs and garbage variants (pure noise, signal loss, clipped FID) of them."""
    from lisentry.models.bundle import load_bundle
    bundle = load_bundle(DEFAULT_BUNDLE)
    pc = ProcessingConfig.from_dict(bundle.card["processing"])
    fams = {"hc_sulfide_overlithiation": 1, "hc_normal_cycling": 1, "graphite_overcharge": 1}
    bc = _build_config(tmp_path, fams)

    def arrays(runs):
        S, H, Y = [], [], []
        for r in runs:
            s, e, m = frames_inputs(r.frames, bundle.window_inputs)
            _, h = head_inputs(bundle.model, s, e, m)
            S.append(s[r.keep])
            H.append(h[r.keep])
            Y.append(np.array([["normal_lithiation", "cluster_growth", "plating_onset",
                                "imminent_short"].index(f.label) for f in r.frames])[r.keep])
        return np.concatenate(S), np.concatenate(H), np.concatenate(Y)

    def id_set(seed, n):
        cfg = OODSetConfig(build_config=bc, seed=seed, runs_per_family=n, max_frames=30, kinds=())
        return [r for r in generate_ood_set(cfg, pc) if r.kind == "id"]

    S, H, Y = arrays(id_set(11, 5))
    Sv, Hv, _ = arrays(id_set(12, 2))
    sc = FeatureOODScorer(n_components=8).fit(S, H, Y, Sv, Hv)
    test = generate_ood_set(OODSetConfig(build_config=bc, seed=13, runs_per_family=1, max_frames=30,
                                         kinds=("pure_noise", "signal_loss", "clipped"),
                                         variants_per_kind=3), pc)
    St, Ht, _ = arrays(test)
    kinds = np.concatenate([[r.kind] * int(r.keep.sum()) for r in test])
    s = sc.score(St, Ht)
    s_id, s_bad = s[kinds == "id"], s[kinds != "id"]
    assert auroc(s_id, s_bad) > 0.95
    assert fpr_at_tpr(s_id, s_bad) <= 0.2
    for k in ("pure_noise", "signal_loss", "clipped"):
        assert np.median(s[kinds == k]) > np.quantile(s_id, 0.95), k
