"""Scenario families (YAML registry, randomization) and ground-truth labels."""
import dataclasses

import numpy as np
import pytest
import yaml

from lisentry.datasets.errors import ConfigError, InputError
from lisentry.datasets.frame import CLASSES
from lisentry.datasets.sim.cell import CellTrajectory
from lisentry.datasets.sim.scenarios import (FAMILIES, FAMILY_FILES, PARAMS_DIR, Family,
                                             ce_shift_ppm, get_family, load_family_yaml,
                                             sample_params, with_initial_rest)
from lisentry.datasets.sim.truth import label_frames

REQUIRED = {"hc_sulfide_ccv", "hc_sulfide_overlithiation", "hc_sulfide_lowpressure",
            "hc_sulfide_hold", "hc_liquid", "graphite_overcharge", "li_llzo_li",
            "hc_normal_cycling", "graphite_normal_cycling"}


def test_registry_has_every_family_and_files_exist():
    assert REQUIRED <= set(FAMILIES)
    for name, fname in FAMILY_FILES.items():
        assert (PARAMS_DIR / fname).is_file()
        fam = FAMILIES[name]
        assert isinstance(fam, Family) and fam.name == name
        assert fam.description and fam.precursors
        assert set(fam.nmr) >= {"electrolyte_shift_ppm", "host_kind", "ce_orientation_deg",
                                "metal_shift_ppm"}
        assert set(fam.acquisition) >= {"field_MHz", "ns", "frame_period_s"}
        assert fam.nmr["host_kind"] == fam.cell.host_kind


def test_nmr_params_per_electrolyte():
    for name in REQUIRED:
        fam = FAMILIES[name]
        shift = fam.nmr["electrolyte_shift_ppm"]
        kind = fam.cell.electrolyte_kind
        assert {"sulfide": 3 <= shift <= 5, "liquid": abs(shift) <= 1,
                "llzo": abs(shift - 1.2) < 0.1}[kind]
        assert 260 <= fam.nmr["metal_shift_ppm"] <= 278
    assert FAMILIES["li_llzo_li"].nmr["metal_shift_ppm"] == 264.5
    assert FAMILIES["li_llzo_li"].acquisition["frame_period_s"] >= 1800


def test_precursor_flags():
    assert FAMILIES["hc_sulfide_hold"].has_short_precursors is False
    for name in ("hc_sulfide_overlithiation", "hc_sulfide_lowpressure", "hc_sulfide_ccv",
                 "li_llzo_li"):
        assert FAMILIES[name].has_short_precursors is True


def test_unknown_family_did_you_mean():
    with pytest.raises(ConfigError, match="Did you mean 'hc_sulfide_hold'"):
        get_family("hc_sulfide_hlod")


def test_ce_shift_follows_orientation():
    assert ce_shift_ppm(0) == 272 and ce_shift_ppm(90) == 242
    assert ce_shift_ppm(30) == 265 and ce_shift_ppm(45) == 252
    assert 252 < ce_shift_ppm(40) < 265


def test_sample_params_ranges_and_determinism():
    fam = FAMILIES["hc_sulfide_overlithiation"]
    a, b = sample_params(fam, 7), sample_params("hc_sulfide_overlithiation", 7)
    assert a.to_dict() == b.to_dict()
    draws = [sample_params(fam, s) for s in range(20)]
    fields = np.array([d.acquisition["field_MHz"] for d in draws])
    assert fields.min() >= 300 and fields.max() <= 850 and fields.std() > 50
    for d in draws:
        assert 0 <= d.nmr["ce_orientation_deg"] <= 90
        assert 300 <= d.acquisition["frame_period_s"] <= 600
        assert 25 <= d.cell.stack_pressure_MPa <= 45
        assert d.cell.larmor_MHz == pytest.approx(d.acquisition["field_MHz"] * 0.38863)
    # current scaling changes the protocol's current, not the family's
    scaled = [next(s for s in d.protocol.steps if s.kind == "current").value_A_per_g for d in draws]
    assert min(scaled) >= 0.05 * 0.8 - 1e-12 and max(scaled) <= 0.05 * 1.25 + 1e-12
    assert fam.protocol.steps[0].value_A_per_g == 0.05
    # randomized variants still short, at varied times
    t = [d.simulate(i).t_short_s for i, d in enumerate(draws[:6])]
    assert all(x is not None for x in t) and np.std(t) > 300


def test_initial_rest_prepends_open_circuit_and_moves_events():
    """A randomized initial rest: some draws have none, the others start at open circuit
    (zero current, no event during it) and every later event moves by about the rest."""
    fam = FAMILIES["hc_sulfide_overlithiation"]
    draws = [sample_params(fam, s) for s in range(30)]
    rests = [d.protocol.steps[0].duration_s if d.protocol.steps[0].kind == "rest" else 0.0
             for d in draws]
    assert sum(r == 0 for r in rests) >= 4 and sum(r > 0 for r in rests) >= 10
    assert max(rests) <= 3600.0
    base = fam.simulate(0)
    for rest_h in (0.5, 1.0):
        moved = dataclasses.replace(fam, protocol=with_initial_rest(fam.protocol, rest_h * 3600))
        assert moved.protocol.steps[1:] == fam.protocol.steps
        tr = moved.simulate(0)
        t = np.arange(0, rest_h * 3600 - 60, 60.0)
        assert np.all(tr.echem_at(t)["current_A"] == 0)
        lat = tr.latent_at(t)
        # at open circuit only a slow redistribution, far below the 0.5 % detection limit
        assert np.ptp(lat["cluster_amount"]) < 1e-3 and np.ptp(lat["metal_amount"]) < 1e-6
        assert set(label_frames(t, tr)) == {"normal_lithiation"}
        # overlithiation shorts ~3 h after the current starts, stochastic hazard: within 30 min
        assert abs((tr.t_short_s - rest_h * 3600) - base.t_short_s) < 1800
    # protocol-clock limits ("until 16.3 h") move with the rest
    ccv = FAMILIES["hc_sulfide_ccv"].protocol
    shifted = with_initial_rest(ccv, 1800.0)
    for a, b in zip(ccv.steps, shifted.steps[1:]):
        for la, lb in zip(a.limits, b.limits):
            assert lb.value == (la.value + 1800.0 if la.kind == "time_s" else la.value)


def test_user_family_yaml(tmp_path):
    d = {"name": "my_fast_overlith", "protocol": ["Lithiate at 100 mA/g for 3 h"],
         "cell": {**FAMILIES["hc_sulfide_overlithiation"].cell.to_dict()},
         "has_short_precursors": True, "precursors": "potential decay",
         "randomize": {"cell.stack_pressure_MPa": [30, 40]}}
    path = tmp_path / "fast.yaml"
    path.write_text(yaml.safe_dump(d))
    fam = load_family_yaml(path)
    base = FAMILIES["hc_sulfide_overlithiation"].simulate(0)
    assert fam.simulate(0).t_short_s < base.t_short_s   # twice the current shorts earlier
    FAMILIES["my_fast_overlith"] = fam
    try:
        assert "my_fast_overlith" in FAMILIES and get_family("my_fast_overlith") is fam
    finally:
        dict.pop(FAMILIES, "my_fast_overlith")


@pytest.mark.parametrize("mutate, fragment", [
    (lambda d: d.update(protocl=["Rest for 1 h"]), "did you mean 'protocol'"),
    (lambda d: d.update(protocol=["Lithiate at 25 mA/g"]), "needs an end"),
    (lambda d: d["cell"].update(stack_presure_MPa=5), "stack_pressure_MPa"),
    (lambda d: d.update(randomize={"cell.stack_presure_MPa": [1, 2]}), "stack_pressure_MPa"),
    (lambda d: d.update(randomize={"current_scale": [2, 1]}), "lo <= hi"),
    (lambda d: d.update(nmr={"ce_orientation": 10}), "ce_orientation_deg"),
])
def test_bad_family_files_name_the_file(tmp_path, mutate, fragment):
    d = {"name": "x", "protocol": ["Rest for 1 h"], "cell": {}}
    mutate(d)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(d))
    with pytest.raises(InputError) as err:
        load_family_yaml(path)
    assert str(path) in str(err.value) and fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        load_family_yaml(tmp_path / "nope.yaml")
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    with pytest.raises(InputError, match="invalid YAML"):
        load_family_yaml(tmp_path / "broken.yaml")


# ---- ground truth -------------------------------------------------------------------------

def hand_made(t_short_s=None):
    """10 h on a 60-s grid: cluster grows 2-5 h then flat; metal appears at 6 h, stripped at 8 h."""
    t = np.arange(0, 10 * 3600 + 1, 60.0)
    h = t / 3600
    cluster = np.clip((h - 2) / 3, 0, 1) * 0.04            # 0.04 max, rises 0.0133/h (33 %/h)
    metal = np.where((h >= 6) & (h < 8), 0.002 + 0.01 * (h - 6), 0.002)  # 0.002 = initial line
    z = np.zeros_like(t)
    shift = np.where(cluster > 0, 15 + 2000 * cluster, np.nan)
    return CellTrajectory(t_s=t, potential_V=z, current_A=z, host_amount=z, cluster_amount=cluster,
                          cluster_shift_ppm=shift, metal_amount=metal, ce_amount=z + 0.2,
                          electrolyte_amount=z + 0.7, sei_amount=z, hazard=z,
                          step_index=z.astype(int), t_short_s=t_short_s,
                          short_kind="hard" if t_short_s else None, t_metal_onset_s=6 * 3600.0,
                          t_precursor_s=None)


def test_labels_from_rules_on_hand_made_trajectory():
    tr = hand_made(t_short_s=9.5 * 3600)
    t = np.array([1.0, 2.05, 2.5, 4.0, 5.5, 6.05, 6.7, 7.9, 8.2, 8.4, 8.6, 9.0]) * 3600
    labels = label_frames(t, tr, horizon_s=3600, detection_limit=0.005)
    assert list(labels) == [
        "normal_lithiation",   # no cluster yet
        "normal_lithiation",   # growing but below the detection limit (0.0007 < 0.005)
        "cluster_growth",      # 0.0067 > limit, rising 33 %/h of its max
        "cluster_growth",
        "normal_lithiation",   # cluster flat after 5 h
        "normal_lithiation",   # metal 0.0005 above the initial line: below the limit
        "plating_onset",       # 0.007 above the initial line: above the limit
        "plating_onset",
        "normal_lithiation",   # stripped at 8 h
        "normal_lithiation",
        "imminent_short",      # >= t_short - H = 8.5 h
        "imminent_short",
    ]
    assert set(labels) <= set(CLASSES)


def test_label_thresholds_move():
    tr = hand_made()
    t = np.array([2.5, 6.7]) * 3600
    assert list(label_frames(t, tr, detection_limit=0.05)) == ["normal_lithiation"] * 2
    assert list(label_frames(t, tr, detection_limit=[0.001, 0.001])) == ["cluster_growth",
                                                                         "plating_onset"]
    # a growth threshold above 33 %/h of the maximum turns cluster_growth off
    assert label_frames(t[:1], tr, cluster_rate_frac_per_h=0.5)[0] == "normal_lithiation"
    with pytest.raises(ConfigError):
        label_frames(t, tr, detection_limit=[0.1, 0.1, 0.1])
    tr2 = dataclasses.replace(tr, t_short_s=7.0 * 3600)
    assert list(label_frames(t, tr2, horizon_s=1800)) == ["cluster_growth", "imminent_short"]


def test_labels_on_simulated_lowpressure_run():
    tr = FAMILIES["hc_sulfide_lowpressure"].simulate(0)
    t = np.arange(150, 4 * 3600, 300.0)
    labels = label_frames(t, tr, horizon_s=600)
    assert np.any(labels == "plating_onset")
    first_plating = t[np.argmax(labels == "plating_onset")]
    assert tr.t_metal_onset_s <= first_plating <= tr.t_metal_onset_s + 1800
    assert np.all(labels[t >= tr.t_short_s - 600] == "imminent_short")
    assert np.all(label_frames(t, tr)[t >= tr.t_short_s - 3600] == "imminent_short")
    assert "cluster_growth" not in set(labels)


def test_reversed_polarity_swaps_the_electrodes_of_a_symmetric_cell():
    """A symmetric Li | Li cell wired the other way round: the same run with the potential's sign
    flipped, the same metal growth and the same labels (the sign says which foil is plated)."""
    from lisentry.datasets.sim.scenarios import get_family, reversed_polarity
    from lisentry.datasets.sim.protocol import HoldStep, Protocol
    p = Protocol.parse(["Delithiate at 1 mA/cm2 until 0.5 V", "Hold at -5.5 mV for 1 h",
                        "Rest for 10 min", "Lithiate at 1 mA until 2 h"])
    r = reversed_polarity(p)
    assert r.steps[0].direction == -p.steps[0].direction
    assert r.steps[0].limits[0].value == -0.5
    assert r.steps[3].direction == -p.steps[3].direction
    assert r.steps[3].limits == p.steps[3].limits          # a clock limit keeps its sign
    assert isinstance(r.steps[1], HoldStep) and r.steps[1].value_V == 5.5e-3
    assert r.steps[2] == p.steps[2]
    assert reversed_polarity(r).steps[0].direction == p.steps[0].direction

    fam = get_family("li_plating_liquid_li")
    runs = {}
    for pol in ((0.5, 1.0), (-1.0, -0.5)):
        f = dataclasses.replace(fam, randomize={**dict(fam.randomize), "polarity": list(pol)})
        traj = sample_params(f, 3).simulate(3)
        runs[pol[0] > 0] = traj
    a, b = runs[True], runs[False]
    on = np.abs(a.current_A) > 0
    assert np.all(a.current_A[on] < 0) and np.all(b.current_A[on] > 0)
    np.testing.assert_allclose(b.potential_V, -a.potential_V, atol=1e-9)
    np.testing.assert_allclose(b.metal_amount, a.metal_amount, atol=1e-12)
    la, lb = (label_frames(x.t_s[::30], x) for x in (a, b))
    assert list(la) == list(lb) and "plating_onset" in list(la)


def test_polarity_is_refused_outside_symmetric_li_cells():
    from lisentry.datasets.sim.scenarios import get_family
    fam = get_family("hc_sulfide_hold")
    bad = dataclasses.replace(fam, randomize={**dict(fam.randomize), "polarity": [-1, 1]})
    with pytest.raises(ConfigError, match="only for symmetric"):
        sample_params(bad, 0)


def test_polarity_is_drawn_only_where_a_family_names_it():
    """Adding the key draws it last (keys are drawn in sorted order), so the family's other
    parameters are unchanged."""
    from lisentry.datasets.sim.scenarios import get_family
    fam = get_family("li_plating_liquid_li")
    assert "polarity" not in fam.randomize
    with_key = dataclasses.replace(fam, randomize={**dict(fam.randomize), "polarity": [0.5, 1.0]})
    a, b = sample_params(with_key, 7), sample_params(fam, 7)
    assert (a.cell, a.nmr, a.acquisition) == (b.cell, b.nmr, b.acquisition)
    assert a.protocol.to_dict() == b.protocol.to_dict()
