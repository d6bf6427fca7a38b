"""Tests of lisentry.models.net: shapes, causality, streaming == batch, masking, losses."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lisentry.datasets.errors import ConfigError
from lisentry.models.features import N_ECHEM
from lisentry.models.net import (AUX_DEFAULT, LisentryNet, aux_loss, classification_loss,
                                 run_balanced_weights)

P = 96  # a small ppm grid keeps the tests fast


def small_net(seed: int = 0, **kw) -> LisentryNet:
    torch.manual_seed(seed)
    return LisentryNet(n_ppm=P, n_echem=N_ECHEM, hidden=24, channels=(8, 8, 8),
                       pooled_bins=6, echem_hidden=8, **kw).eval()


def data(B=3, T=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, P, generator=g) * 0.3
    x[:, :, :10] = float("nan")  # grid points not covered
    e = torch.randn(B, T, N_ECHEM, generator=g)
    e[0, 4:7, 0] = float("nan")  # potential missing for a while
    return x, e


def test_default_size_and_shapes():
    net = LisentryNet()
    assert 100_000 <= net.n_parameters() <= 300_000
    small = small_net()
    x, e = data()
    out = small(x, e)
    assert out["logits"].shape == (3, 12, 4)
    assert out["aux"].shape == (3, 12, len(AUX_DEFAULT))
    assert torch.isfinite(out["logits"]).all() and torch.isfinite(out["aux"]).all()


@pytest.mark.parametrize("num_layers,descriptors,cnn,heads", [
    (1, False, True, "softmax"), (2, False, True, "softmax"), (1, True, True, "softmax"),
    (1, True, False, "softmax"), (1, False, True, "factored"), (2, True, True, "factored"),
    (1, True, True, "factored+echem")])
def test_streaming_equals_batch(num_layers, descriptors, cnn, heads):
    # ppm_step 5 puts the descriptor windows (10-285 ppm) on the small 96-point grid
    net = small_net(num_layers=num_layers, descriptors=descriptors, ppm_step=5.0, cnn=cnn,
                    heads=heads.split("+")[0], branch_echem=heads.endswith("+echem"))
    x, e = data()
    lengths = torch.tensor([12, 7, 10])
    with torch.no_grad():
        out = net(x, e, lengths=lengths, return_state=True)
        st = net.init_state(3)
        logits, aux = [], []
        for t in range(12):
            o, st = net.step(x[:, t], e[:, t], st)
            logits.append(o["logits"])
            aux.append(o["aux"])
    L, A = torch.stack(logits, 1), torch.stack(aux, 1)
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(L[b, :n], out["logits"][b, :n], atol=1e-5, rtol=0)
        torch.testing.assert_close(A[b, :n], out["aux"][b, :n], atol=1e-5, rtol=0)
        assert torch.all(out["logits"][b, n:] == 0)  # padding zeroed
    # the returned state is the state after each run's last valid frame
    with torch.no_grad():
        one = net(x[1:2, :7], e[1:2, :7], return_state=True)["state"]
    torch.testing.assert_close(out["state"]["h"][:, 1], one["h"][:, 0], atol=1e-5, rtol=0)
    assert out["state"]["n_seen"].tolist() == [12, 7, 10]


def test_chunked_forward_continues_from_state():
    net = small_net()
    x, e = data(B=2, T=10)
    with torch.no_grad():
        full = net(x, e)
        a = net(x[:, :4], e[:, :4], return_state=True)
        b = net(x[:, 4:], e[:, 4:], state=a["state"])
    torch.testing.assert_close(torch.cat([a["logits"], b["logits"]], 1), full["logits"],
                               atol=1e-5, rtol=0)


def test_causal_future_frames_do_not_change_the_past():
    net = small_net()
    x, e = data(B=1, T=10)
    x2, e2 = x.clone(), e.clone()
    x2[:, 6:] += 5.0
    e2[:, 6:] = -e2[:, 6:]
    with torch.no_grad():
        a, b = net(x, e)["logits"], net(x2, e2)["logits"]
    torch.testing.assert_close(a[:, :6], b[:, :6], atol=0, rtol=0)
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_padding_does_not_leak_into_other_rows():
    net = small_net()
    x, e = data(B=2, T=9)
    with torch.no_grad():
        both = net(x, e, lengths=torch.tensor([9, 5]))["logits"]
        alone = net(x[1:, :5], e[1:, :5])["logits"]
        by_mask = net(x, e, mask=torch.arange(9)[None] < torch.tensor([[9], [5]]))["logits"]
    torch.testing.assert_close(both[1, :5], alone[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(by_mask, both, atol=0, rtol=0)


def test_frame_difference_uses_the_first_frame():
    # Two runs whose frame 3 is identical but whose first frames differ: with the GRU state
    # reset to zero at frame 3, the outputs still differ only through the difference channel.
    net = small_net()
    x, e = data(B=1, T=4)
    other_first = x.clone()
    other_first[:, 0] += 1.0
    with torch.no_grad():
        s1 = net(x[:, :3], e[:, :3], return_state=True)["state"]
        s2 = net(other_first[:, :3], e[:, :3], return_state=True)["state"]
        s2 = dict(s2, h=s1["h"])  # same GRU memory, different reference frame
        o1, _ = net.step(x[:, 3], e[:, 3], s1)
        o2, _ = net.step(x[:, 3], e[:, 3], s2)
    assert torch.allclose(s1["ref"], x[:, 0].nan_to_num(0.0))
    assert not torch.allclose(o1["logits"], o2["logits"])


def test_missing_echem_is_masked_not_zero_filled():
    net = small_net()
    x, e = data(B=1, T=5)
    e_nan, e_zero = e.clone(), e.clone()
    e_nan[:, 2, 0] = float("nan")
    e_zero[:, 2, 0] = 0.0
    mask = torch.ones_like(e)
    mask[:, 2, 0] = 0
    with torch.no_grad():
        a = net(x, e_nan)["logits"]
        b = net(x, e_zero)["logits"]  # a genuine 0 V reading
        c = net(x, e_zero, echem_mask=mask)["logits"]  # 0 value + mask 0 == NaN
    assert not torch.allclose(a[:, 2], b[:, 2])
    torch.testing.assert_close(a, c, atol=0, rtol=0)


def test_bad_arguments_are_clear():
    with pytest.raises(ConfigError, match="The 'hidden' parameter of LisentryNet must be"):
        LisentryNet(hidden=-3)
    net = small_net()
    with pytest.raises(ValueError, match="must have 96 values"):
        net(torch.zeros(1, 2, 50), torch.zeros(1, 2, N_ECHEM))
    with pytest.raises(ValueError, match="lengths must be"):
        net(torch.zeros(1, 2, P), torch.zeros(1, 2, N_ECHEM), lengths=torch.tensor([0]))


def test_run_balanced_weights_make_each_class_of_a_run_count_alike():
    labels = torch.tensor([[0, 0, 0, 0, 0, 0, 2, 2, -1], [1, 1, 3, 3, 3, 3, -1, -1, -1]])
    valid = torch.tensor([[True] * 8 + [False], [True] * 6 + [False] * 3])
    w = run_balanced_weights(labels, 4, 1.0, valid)
    # run 0: six frames of class 0 and two of class 2 carry equal total weight
    assert w[0, :6].sum().item() == pytest.approx(w[0, 6:8].sum().item())
    assert w[0, 8].item() == 0 and w[1, 6:].sum().item() == 0
    # mean weight 1 over each run's labelled frames
    assert w[0, :8].mean().item() == pytest.approx(1.0)
    assert w[1, :6].mean().item() == pytest.approx(1.0)
    assert torch.allclose(run_balanced_weights(labels, 4, 0.0, valid)[0, :8], torch.ones(8))


def test_frame_weighted_loss_is_the_weighted_mean_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 4)
    labels = torch.tensor([[0, 1, 1, 2, -1], [3, 3, 0, 0, 0]])
    fw = torch.rand(2, 5)
    cw = torch.tensor([1.0, 2.0, 0.5, 1.5])
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 4), labels.reshape(-1).clamp(min=0),
                                           reduction="none")
    keep = labels.reshape(-1) >= 0
    wt = (cw[labels.reshape(-1).clamp(min=0)] * fw.reshape(-1))[keep]
    expect = (ce[keep] * wt).sum() / wt.sum()
    torch.testing.assert_close(classification_loss(logits, labels, None, cw, fw), expect)
    # all-ones frame weights give the usual class-weighted mean
    torch.testing.assert_close(classification_loss(logits, labels, None, cw, torch.ones(2, 5)),
                               classification_loss(logits, labels, None, cw))


def test_classification_loss_ignores_unlabelled_and_padding():
    logits = torch.tensor([[[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [5.0, 0, 0, 0]]])
    labels = torch.tensor([[0, -1, 3]])
    valid = torch.tensor([[True, True, False]])
    expect = -torch.log_softmax(logits[0, 0], -1)[0]  # only frame 0 counts
    torch.testing.assert_close(classification_loss(logits, labels, valid), expect)


def test_aux_loss_masks_undefined_cluster_shift():
    names = ("cluster_amount", "cluster_shift_ppm")
    pred = torch.tensor([[[0.1, 80.0], [0.3, 50.0]]], requires_grad=True)
    tgt = torch.tensor([[[0.2, float("nan")], [0.3, 90.0]]])
    loss = aux_loss(pred, tgt, names)
    # counted: amount 0.1 vs 0.2 (0.5 * 0.01), amount exact (0), shift (50-90)/100 -> 0.5*0.16
    expect = (0.5 * 0.1 ** 2 + 0.0 + 0.5 * 0.4 ** 2) / 3
    assert float(loss.detach()) == pytest.approx(expect, rel=1e-5)
    loss.backward()
    assert pred.grad[0, 0, 1] == 0  # NaN target gives no gradient
    present = {"cluster_shift_ppm": torch.tensor([[True, False]])}
    assert float(aux_loss(pred, tgt, names, present=present).detach()) == pytest.approx(
        0.5 * 0.1 ** 2 / 2, rel=1e-5)


# ---------------------------------------------------------------------- calibration
from lisentry.models.calibration import (energy_score, expected_calibration_error,  # noqa: E402
                                         fit_temperature, fpr_at_tpr, ood_threshold, softmax_t)


def test_fit_temperature_matches_a_grid_search_and_recovers_overconfidence():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2000, 4, generator=g) * 2
    y = torch.multinomial(torch.softmax(z, -1), 1, generator=g)[:, 0]
    over = 3.0 * z  # a model three times too confident
    t = fit_temperature(over, y)
    grid = torch.linspace(1.5, 5.0, 351, dtype=torch.float64)
    nll = [torch.nn.functional.cross_entropy(over.double() / s, y) for s in grid]
    t_grid = float(grid[int(torch.argmin(torch.stack(nll)))])
    assert t == pytest.approx(t_grid, abs=0.015)
    assert t == pytest.approx(3.0, rel=0.1)
    y_pad = torch.cat([y, torch.full((5,), -1)])  # unlabelled rows are ignored
    t_pad = fit_temperature(torch.cat([over, torch.zeros(5, 4)]), y_pad)
    assert t_pad == pytest.approx(t, abs=1e-4)
    p = softmax_t(over, t)
    assert p.shape == (2000, 4) and np.allclose(p.sum(-1), 1)


def test_expected_calibration_error_hand_computed():
    probs = [[0.9, 0.1], [0.6, 0.4], [0.55, 0.45], [0.3, 0.7]]
    # bins of width 1/15: 0.9 -> bin 13 (acc 1), 0.6 and 0.55 -> bin 8 (acc 1/2, conf 0.575),
    # 0.7 -> bin 10 (acc 1)
    expect = 0.25 * 0.1 + 0.5 * abs(0.5 - 0.575) + 0.25 * 0.3
    assert expected_calibration_error(probs, [0, 1, 0, 1]) == pytest.approx(expect)
    assert expected_calibration_error([[1.0, 0.0]], [0]) == 0.0


def test_energy_and_fpr_at_95_tpr():
    e = energy_score(np.array([[1.0, 2.0, 3.0]]), temperature=2.0)
    assert e[0] == pytest.approx(-2 * np.log(np.exp(0.5) + np.exp(1.0) + np.exp(1.5)))
    scores_in = np.arange(1, 101, dtype=float)  # 95 of 100 are <= 95
    assert ood_threshold(scores_in) == 95.0
    assert fpr_at_tpr(scores_in, [50.0, 95.0, 96.0, 200.0]) == 0.5


# ---------------------------------------------------------------- factored heads
PPM = -100.0 + 5.0 * np.arange(P)  # the grid of small_net(ppm_step=5.0)


def _conditions(logits):
    """The factored model's three condition logits, recovered from its log-probabilities."""
    c = logits[..., 1] - logits[..., 0]
    p = logits[..., 2] - torch.logsumexp(logits[..., :2], dim=-1)
    s = logits[..., 3] - torch.logsumexp(logits[..., :3], dim=-1)
    return c, p, s


@pytest.mark.parametrize("descriptors", [False, True])
def test_factored_heads_are_a_distribution_with_the_class_precedence(descriptors):
    net = small_net(descriptors=descriptors, ppm_step=5.0, heads="factored")
    x, e = data()
    with torch.no_grad():
        lp = net(x, e)["logits"]
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(lp.shape[:2]), atol=1e-5, rtol=0)
    # P(plating) = sigma(-s) sigma(p) and P(short) = sigma(s), exactly
    c, p, s = _conditions(lp)
    torch.testing.assert_close(lp[..., 3].exp(), torch.sigmoid(s), atol=1e-5, rtol=0)
    torch.testing.assert_close(lp[..., 2].exp(), torch.sigmoid(-s) * torch.sigmoid(p),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("descriptors", [False, True])
def test_factored_branches_see_only_their_window(descriptors):
    net = small_net(seed=3, descriptors=descriptors, ppm_step=5.0, heads="factored")
    x, e = data()
    x = torch.nan_to_num(x, nan=0.0)
    in_cluster = torch.from_numpy((PPM >= 8) & (PPM <= 160))
    in_metal = torch.from_numpy((PPM >= 200) & (PPM <= 300))
    # the descriptors also read the empty 150-215 ppm region (offset and noise), and their
    # 5-point smoothing reaches 2 points (here 10 ppm) beyond a window's edge
    keep = in_cluster | in_metal | torch.from_numpy((PPM >= 150) & (PPM <= 215))
    keep = torch.nn.functional.max_pool1d(keep[None].float(), 5, 1, 2)[0] > 0
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        c0, p0, s0 = _conditions(net(x, e)["logits"])
        # other electrochemistry and other lines outside both windows (a host's signature)
        x2 = torch.where(keep, x, x + torch.randn(x.shape, generator=g))
        c1, p1, s1 = _conditions(net(x2, e * 3 + 1)["logits"])
        torch.testing.assert_close(c1, c0, atol=1e-5, rtol=0)
        torch.testing.assert_close(p1, p0, atol=1e-5, rtol=0)
        assert (s1 - s0).abs().max() > 1e-3  # the short head sees everything
        # a line growing at metal shifts moves p, not c (away from the shared 150-215 ppm
        # offset/noise region of the descriptors)
        at_metal = torch.from_numpy((PPM >= 230) & (PPM <= 290))
        grow = torch.linspace(0, 20, x.shape[1])[None, :, None] * at_metal
        c2, p2, _ = _conditions(net(x + grow, e)["logits"])
        torch.testing.assert_close(c2, c0, atol=1e-5, rtol=0)
        assert (p2 - p0).abs().max() > 1e-4
        at_cluster = torch.from_numpy((PPM >= 20) & (PPM <= 130))
        grow = torch.linspace(0, 20, x.shape[1])[None, :, None] * at_cluster
        c3, p3, _ = _conditions(net(x + grow, e)["logits"])
        torch.testing.assert_close(p3, p0, atol=1e-5, rtol=0)
        assert (c3 - c0).abs().max() > 1e-4


def test_factored_heads_refuse_other_classes_or_a_grid_without_the_windows():
    with pytest.raises(ConfigError, match="heads='factored'"):
        LisentryNet(n_ppm=P, hidden=8, ppm_step=5.0, heads="factored",
                    classes=("a", "b", "c", "d"))
    with pytest.raises(ConfigError, match="covering 8.0-160.0 ppm"):
        LisentryNet(n_ppm=P, hidden=8, ppm_min=300.0, ppm_step=0.5, heads="factored")
    with pytest.raises(ConfigError, match="'heads'"):
        LisentryNet(n_ppm=P, hidden=8, heads="hierarchical")


def test_factored_branches_with_echem_see_their_window_and_the_echem():
    net = small_net(seed=3, ppm_step=5.0, heads="factored", branch_echem=True)
    x, e = data()
    x = torch.nan_to_num(x, nan=0.0)
    keep = torch.from_numpy(((PPM >= 8) & (PPM <= 160)) | ((PPM >= 200) & (PPM <= 300)))
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        c0, p0, _ = _conditions(net(x, e)["logits"])
        c1, p1, _ = _conditions(net(torch.where(keep, x, x + torch.randn(x.shape, generator=g)),
                                    e)["logits"])
        c2, p2, _ = _conditions(net(x, e * 3 + 1)["logits"])
    torch.testing.assert_close(c1, c0, atol=1e-5, rtol=0)
    torch.testing.assert_close(p1, p0, atol=1e-5, rtol=0)
    assert (c2 - c0).abs().max() > 1e-4 and (p2 - p0).abs().max() > 1e-4


def _binned_net(bins: int = 4) -> LisentryNet:
    net = small_net(echem_bins=bins)
    g = np.random.default_rng(3)
    values = g.normal(size=(400, N_ECHEM))
    values[:, 1] = np.where(g.random(400) < 0.7, 0.0, values[:, 1])  # a mostly-zero column
    net.fit_echem_edges(values, np.ones_like(values, bool))
    return net


def test_piecewise_linear_echem_edges_are_training_quantiles_and_encode_position():
    net = _binned_net(4)
    edges = net.echem_edges.numpy()
    assert edges.shape == (N_ECHEM, 5)
    assert np.all(np.diff(edges, axis=1) >= 0)
    # a value at a column's median fills the lower half of the bins exactly
    v = torch.tensor(edges[:, 2], dtype=torch.float32)[None]
    u = net._piecewise_linear(v, torch.ones_like(v)).view(N_ECHEM, 4)
    torch.testing.assert_close(u[0], torch.tensor([1.0, 1.0, 0.0, 0.0]))
    # below the lowest edge all zero, above the highest all one; a missing value all zero
    lo = torch.full((1, N_ECHEM), -1e3)
    hi = torch.full((1, N_ECHEM), 1e3)
    assert net._piecewise_linear(lo, torch.ones_like(lo)).abs().sum() == 0
    assert torch.all(net._piecewise_linear(hi, torch.ones_like(hi)) == 1)
    assert net._piecewise_linear(hi, torch.zeros_like(hi)).abs().sum() == 0
    # unobserved training values do not move the edges
    other = np.full((400, N_ECHEM), 50.0)
    before = net.echem_edges.clone()
    net.fit_echem_edges(other, np.zeros_like(other, bool))
    torch.testing.assert_close(net.echem_edges, before, atol=0, rtol=0)
    with pytest.raises(ValueError, match=f"needs \\(frames, {N_ECHEM}\\)"):
        net.fit_echem_edges(np.zeros((5, 3)), np.ones((5, 3), bool))
    with pytest.raises(ConfigError, match="echem_bins"):
        small_net(echem_bins=1)


def test_binned_echem_streams_like_the_batch_and_masks_missing_values():
    net = _binned_net(4)
    assert net.config["echem_bins"] == 4 and "echem_bins" not in small_net().config
    x, e = data()
    with torch.no_grad():
        out = net(x, e)
        st, got = net.init_state(3), []
        for t in range(e.shape[1]):
            o, st = net.step(x[:, t], e[:, t], st)
            got.append(o["logits"])
    torch.testing.assert_close(torch.stack(got, 1), out["logits"], atol=1e-5, rtol=0)
    e_nan, e_zero = e.clone(), e.clone()
    e_nan[:, 2, 0], e_zero[:, 2, 0] = float("nan"), 0.0
    mask = torch.ones_like(e)
    mask[:, 2, 0] = 0
    with torch.no_grad():
        a = net(x, e_nan)["logits"]
        c = net(x, e_zero, echem_mask=mask)["logits"]
        b = net(x, e_zero)["logits"]
    torch.testing.assert_close(a, c, atol=0, rtol=0)
    assert not torch.allclose(a[:, 2], b[:, 2])


def test_unbinned_columns_encode_to_zero():
    net = small_net(echem_bins=4)
    values = np.random.default_rng(0).normal(size=(300, N_ECHEM))
    cols = np.zeros(N_ECHEM, bool)
    cols[1] = True
    net.fit_echem_edges(values, np.ones_like(values, bool), cols)
    u = net._piecewise_linear(torch.full((1, N_ECHEM), 1e6), torch.ones(1, N_ECHEM)).view(N_ECHEM, 4)
    assert torch.all(u[1] == 1) and u[[0, *range(2, N_ECHEM)]].abs().sum() == 0
    with pytest.raises(ValueError, match=f"columns must be {N_ECHEM} bools"):
        net.fit_echem_edges(values, np.ones_like(values, bool), cols[:3])
