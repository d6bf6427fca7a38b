"""Protocol language: parsing into typed SI steps, round trip, errors."""
import pytest

from lisentry.datasets.errors import ConfigError
from lisentry.datasets.sim.protocol import (EXAMPLES, CurrentStep, HoldStep, Limit, Protocol,
                                            RestStep, parse_step)


def test_tagami_ccv_protocol_parses_to_si():
    p = Protocol.parse(["Lithiate at 25 mA/g until 0.2 mV", "Hold at 0.2 mV until 16.3 h",
                        "Delithiate at 50 mA/g until 1.8 V", "Rest for 2 h"])
    lith, hold, deli, rest = p.steps
    assert isinstance(lith, CurrentStep) and lith.direction == +1
    assert lith.value_A_per_g == pytest.approx(0.025)
    assert lith.limits == (Limit("potential_V", pytest.approx(2e-4)),)
    assert isinstance(hold, HoldStep) and hold.value_V == pytest.approx(2e-4)
    assert hold.limits[0].kind == "time_s" and hold.limits[0].value == pytest.approx(16.3 * 3600)
    assert deli.direction == -1 and deli.value_A_per_g == pytest.approx(0.05)
    assert isinstance(rest, RestStep) and rest.duration_s == pytest.approx(7200)
    assert [s.description for s in p.steps][1] == "Hold at 0.2 mV until 16.3 h"


@pytest.mark.parametrize("text, field, value", [
    ("Lithiate at C/10 for 5 h", "c_rate", 0.1),
    ("Lithiate at 0.4C for 6 h", "c_rate", 0.4),
    ("Lithiate at 2 C for 6 min", "c_rate", 2.0),
    ("Lithiate at 0.1 mA/cm2 for 9 days", "value_A_per_m2", 1.0),
    ("Discharge at 100 uA for 1 h", "value_A", 1e-4),
    ("Charge at 1.5 A/g until 2 V", "value_A_per_g", 1.5),
])
def test_current_units(text, field, value):
    step = parse_step(text)
    assert getattr(step, field) == pytest.approx(value)
    assert step.direction == (-1 if text.startswith("Charge") else 1)


def test_current_in_amperes_for_an_electrode():
    step = parse_step("Lithiate at C/10 for 5 h")
    # 1.6 mg of a 330 mAh/g material: C/10 = 0.1 * 0.33 Ah/g * 1.6e-3 g = 52.8 uA
    assert step.current_A(1.6e-3, 0.5e-4, 0.33) == pytest.approx(52.8e-6)
    assert parse_step("Delithiate at 50 mA/g for 1 h").current_A(1.6e-3, 1, 1) == pytest.approx(-80e-6)


def test_or_limits_and_durations():
    step = parse_step("Lithiate at 25 mA/g until 0.2 mV or 12 h")
    assert step.limits == (Limit("potential_V", 2e-4), Limit("time_s", 43200.0))
    step = parse_step("Delithiate at 50 mA/g until 1.8 V or for 90 min")
    assert step.limits[1] == Limit("duration_s", 5400.0)
    assert parse_step("Hold at -5.5 mV for 10 h").limits == (Limit("duration_s", 36000.0),)
    assert parse_step("Rest until 20 h").limits == (Limit("time_s", 72000.0),)


def test_round_trip():
    p = Protocol.parse(list(EXAMPLES) + ["Rest for 30 s", "Lithiate at 0.1 mA/cm2 for 1 d"])
    d = p.to_dict()
    assert Protocol.from_dict(d) == p
    import json
    assert Protocol.from_dict(json.loads(json.dumps(d))) == p


@pytest.mark.parametrize("bad, fragment", [
    ("Lithate at 25 mA/g until 0.2 mV", "did you mean 'Lithiate'"),
    ("Lithiate at 25 mAg until 0.2 mV", "did you mean"),
    ("Hold at -5.5 mV", "needs an end"),
    ("Lithiate at 25 mA/g", "needs an end"),
    ("Lithiate at 25 mA/g until 3 mA", "not a limit unit"),
    ("Hold at 5 mA/g for 1 h", "not a potential unit"),
    ("Rest until 2 V", "'for DURATION'"),
    ("Lithiate at -25 mA/g for 1 h", "positive magnitude"),
    ("Lithiate at 25 mA/g for 1 h then rest", "unexpected"),
    ("", "empty step"),
])
def test_errors_quote_step_and_give_examples(bad, fragment):
    with pytest.raises(ConfigError) as err:
        Protocol.parse(["Rest for 1 h", bad])
    msg = str(err.value)
    assert fragment in msg
    assert repr(bad) in msg
    assert all(ex in msg for ex in EXAMPLES)
    assert "\n" not in msg


def test_bad_step_dict():
    with pytest.raises(ConfigError):
        Protocol.from_dict({"steps": [{"kind": "jump", "limits": []}]})
