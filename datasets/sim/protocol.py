"""Cycling protocols written as short English steps, PyBaMM-``Experiment`` style.

>>> p = Protocol.parse(["Lithiate at 25 mA/g until 0.2 mV", "Hold at 0.2 mV until 16.3 h",
...                     "Delithiate at 50 mA/g until 1.8 V", "Rest for 2 h"])
>>> p.steps[0].value_A_per_g, p.steps[0].limits[0].kind, p.steps[0].limits[0].value
(0.025, 'potential_V', 0.0002)
>>> p.steps[1].limits[0].kind, p.steps[1].limits[0].value
('time_s', 58680.0)
>>> Protocol.from_dict(p.to_dict()) == p
True

Grammar (one tokenizer, one unit table)::

    step      := current | hold | rest
    current   := ("Lithiate" | "Delithiate" | "Discharge" | "Charge") "at" NUMBER CURRENT_UNIT ends
               | ... "at" C_RATE ends                  (C_RATE: "C/10", "0.4C", "2 C")
    hold      := "Hold at" NUMBER POTENTIAL_UNIT ends
    rest      := "Rest" ends
    ends      := end ("or" end)*
    end       := "for" NUMBER TIME_UNIT                -> Limit("duration_s")
               | "until" NUMBER POTENTIAL_UNIT         -> Limit("potential_V")
               | "until" NUMBER TIME_UNIT              -> Limit("time_s")  (since protocol start)
    (after "or", the keyword may be left out: "until 0.2 mV or 12 h" reads "12 h" as "until 12 h")

Sign and naming conventions: "Lithiate" inserts Li into the working electrode (positive current,
interfaces.md); for a half cell against Li metal "Discharge" means the same and "Charge" means
"Delithiate". A step ends at whichever of its limits comes first. Current and hold steps must
have at least one limit; "Rest" needs a duration or a time.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence, Union

from lisentry.datasets.errors import ConfigError

__all__ = ["Limit", "CurrentStep", "HoldStep", "RestStep", "Step", "Protocol", "parse_step",
           "UNITS", "EXAMPLES"]

#: Three valid steps quoted by every parse error.
EXAMPLES: tuple[str, ...] = (
    "Lithiate at 25 mA/g until 0.2 mV",
    "Hold at -5.5 mV for 10 h",
    "Delithiate at C/10 until 1.8 V or 12 h",
)

#: The one unit table: unit text (lower case) -> (quantity, factor to SI).
#: quantities: current_per_mass [A/g], current_per_area [A/m^2], current [A], potential [V], time [s].
UNITS: dict[str, tuple[str, float]] = {
    "a/g": ("current_per_mass", 1.0), "ma/g": ("current_per_mass", 1e-3),
    "ua/g": ("current_per_mass", 1e-6), "mah/g/h": ("current_per_mass", 1e-3),
    "a/cm2": ("current_per_area", 1e4), "ma/cm2": ("current_per_area", 10.0),
    "ua/cm2": ("current_per_area", 1e-2), "a/m2": ("current_per_area", 1.0),
    "a": ("current", 1.0), "ma": ("current", 1e-3), "ua": ("current", 1e-6),
    "v": ("potential", 1.0), "mv": ("potential", 1e-3), "uv": ("potential", 1e-6),
    "s": ("time", 1.0), "sec": ("time", 1.0), "second": ("time", 1.0), "seconds": ("time", 1.0),
    "min": ("time", 60.0), "mins": ("time", 60.0), "minute": ("time", 60.0),
    "minutes": ("time", 60.0), "h": ("time", 3600.0), "hr": ("time", 3600.0),
    "hour": ("time", 3600.0), "hours": ("time", 3600.0), "d": ("time", 86400.0),
    "day": ("time", 86400.0), "days": ("time", 86400.0),
}

_VERBS = {"lithiate": +1, "discharge": +1, "delithiate": -1, "charge": -1, "hold": 0, "rest": 0}
_KEYWORDS = ("at", "for", "until", "or")

# One tokenizer: C-rate, number, unit/word. Units may contain "/" and "^" ("mA/cm^2").
_TOKEN_RE = re.compile(r"""
    (?P<crate>(?:C/(?P<cden>\d+(?:\.\d*)?))|(?:(?P<cnum>[-+]?\d+(?:\.\d*)?|[-+]?\.\d+)\s*C(?![A-Za-z/])))
  | (?P<number>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<word>[A-Za-z\u00b5\u03bc][A-Za-z0-9\u00b5\u03bc/^]*)
  | (?P<space>\s+)
  | (?P<bad>.)
""", re.VERBOSE)


@dataclass(frozen=True)
class Limit:
    """One end condition of a step.

    Parameters
    ----------
    kind : {"potential_V", "duration_s", "time_s"}
        ``potential_V``: the step ends when the cell potential reaches ``value`` (volts; from
        above for lithiation, from below for delithiation). ``duration_s``: after ``value``
        seconds in the step. ``time_s``: when the protocol clock (seconds since the start of
        the first step) reaches ``value``.
    value : float
        SI value (V or s).
    """

    kind: str
    value: float

    def __post_init__(self):
        if self.kind not in ("potential_V", "duration_s", "time_s"):
            raise ConfigError(f"Limit kind must be potential_V, duration_s or time_s. Got {self.kind!r}.")


@dataclass(frozen=True)
class CurrentStep:
    """Galvanostatic step: the model returns the potential.

    Exactly one of ``value_A_per_g`` (per gram of working-electrode active material),
    ``value_A_per_m2`` (per electrode area), ``value_A`` (absolute) and ``c_rate`` (multiples of
    the cell's nominal capacity per hour) is set; all are magnitudes (> 0).

    Parameters
    ----------
    direction : {+1, -1}
        +1 lithiates the working electrode (positive current), -1 delithiates it.
    limits : tuple[Limit, ...]
        The step ends at the first limit reached.
    description : str
        The step as written.
    """

    direction: int
    limits: tuple[Limit, ...]
    description: str = ""
    value_A_per_g: float | None = None
    value_A_per_m2: float | None = None
    value_A: float | None = None
    c_rate: float | None = None
    kind: str = field(default="current", init=False)

    @property
    def unit(self) -> str:
        """Which of the value fields is set: ``"A/g"``, ``"A/m2"``, ``"A"`` or ``"C"``."""
        for name, unit in (("value_A_per_g", "A/g"), ("value_A_per_m2", "A/m2"),
                           ("value_A", "A"), ("c_rate", "C")):
            if getattr(self, name) is not None:
                return unit
        raise ConfigError(f"protocol step {self.description!r} has no current value")

    def current_A(self, mass_g: float, area_m2: float, nominal_capacity_Ah_per_g: float) -> float:
        """Signed current in A (positive lithiates) for a given electrode.

        Parameters
        ----------
        mass_g : float
            Active material mass of the working electrode, g.
        area_m2 : float
            Electrode area, m^2.
        nominal_capacity_Ah_per_g : float
            Capacity that defines 1C, Ah/g.
        """
        unit = self.unit
        if unit == "A/g":
            mag = self.value_A_per_g * mass_g
        elif unit == "A/m2":
            mag = self.value_A_per_m2 * area_m2
        elif unit == "A":
            mag = self.value_A
        else:
            mag = self.c_rate * nominal_capacity_Ah_per_g * mass_g
        return self.direction * mag


@dataclass(frozen=True)
class HoldStep:
    """Potentiostatic step: the cell potential is held at ``value_V``; the model returns the current."""

    value_V: float
    limits: tuple[Limit, ...]
    description: str = ""
    kind: str = field(default="hold", init=False)


@dataclass(frozen=True)
class RestStep:
    """Open circuit (zero current)."""

    limits: tuple[Limit, ...]
    description: str = ""
    kind: str = field(default="rest", init=False)

    @property
    def duration_s(self) -> float | None:
        """The duration limit in seconds, if the step has one."""
        for lim in self.limits:
            if lim.kind == "duration_s":
                return lim.value
        return None


Step = Union[CurrentStep, HoldStep, RestStep]


def _error(text: str, problem: str) -> ConfigError:
    ex = "; ".join(f'"{e}"' for e in EXAMPLES)
    return ConfigError(f"Cannot parse protocol step {text!r}: {problem}. Valid examples: {ex}.")


def _tokenize(text: str) -> list[tuple[str, object]]:
    tokens: list[tuple[str, object]] = []
    for m in _TOKEN_RE.finditer(text):
        kind = m.lastgroup
        if kind in ("cden", "cnum"):  # inner groups of crate
            kind = "crate"
        if m.group("crate") is not None:
            if m.group("cden") is not None:
                den = float(m.group("cden"))
                if den <= 0:
                    raise _error(text, "C-rate denominator must be > 0")
                tokens.append(("crate", 1.0 / den))
            else:
                tokens.append(("crate", float(m.group("cnum"))))
        elif m.group("number") is not None:
            tokens.append(("number", float(m.group("number"))))
        elif m.group("word") is not None:
            w = m.group("word").replace("\u00b5", "u").replace("\u03bc", "u").replace("^", "")
            tokens.append(("word", w.lower()))
        elif m.group("bad") is not None:
            raise _error(text, f"unexpected character {m.group('bad')!r}")
    return tokens


class _Cursor:
    def __init__(self, text: str, tokens):
        self.text, self.tokens, self.i = text, tokens, 0

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else (None, None)

    def take(self):
        tok = self.peek()
        self.i += 1
        return tok

    def expect_word(self, word: str):
        kind, val = self.take()
        if kind != "word" or val != word:
            got = "end of step" if kind is None else repr(val)
            raise _error(self.text, f"expected {word!r}, got {got}")

    def quantity(self, allowed: tuple[str, ...], what: str) -> tuple[str, float, float]:
        """NUMBER UNIT -> (quantity, SI value, number as written)."""
        kind, num = self.take()
        if kind != "number":
            got = "end of step" if kind is None else repr(num)
            raise _error(self.text, f"expected a number for the {what}, got {got}")
        kind, unit = self.take()
        if kind != "word":
            raise _error(self.text, f"expected a unit after {num:g}")
        if unit not in UNITS:
            close = difflib.get_close_matches(unit, list(UNITS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _error(self.text, f"unknown unit {unit!r}{hint}")
        q, factor = UNITS[unit]
        if q not in allowed:
            raise _error(self.text, f"{unit!r} is a {q.replace('_', ' ')} unit, not a {what} unit")
        return q, num * factor, num


def _parse_ends(cur: _Cursor) -> tuple[Limit, ...]:
    limits: list[Limit] = []
    keyword = None
    while True:
        kind, val = cur.peek()
        if kind is None:
            break
        if kind == "word" and val in ("for", "until"):
            cur.take()
            keyword = val
        elif kind == "word" and val == "or" and limits:
            cur.take()
            continue
        elif limits and kind == "number" and keyword is not None:
            pass  # "until 0.2 mV or 12 h": keep the previous keyword
        else:
            raise _error(cur.text, f"expected 'for', 'until' or 'or', got {val!r}")
        if keyword == "for":
            _, seconds, _ = cur.quantity(("time",), "duration")
            if seconds <= 0:
                raise _error(cur.text, "duration must be > 0")
            limits.append(Limit("duration_s", seconds))
        else:
            q, value, _ = cur.quantity(("potential", "time"), "limit")
            limits.append(Limit("potential_V" if q == "potential" else "time_s", value))
        kind, val = cur.peek()
        if kind is not None and not (kind == "word" and val == "or"):
            raise _error(cur.text, f"unexpected {val!r} after a limit (join limits with 'or')")
    return tuple(limits)


def parse_step(text: str) -> Step:
    """Parse one step string into a typed step.

    Parameters
    ----------
    text : str
        e.g. ``"Lithiate at 25 mA/g until 0.2 mV or 12 h"``.

    Returns
    -------
    CurrentStep | HoldStep | RestStep

    Raises
    ------
    ConfigError
        The step does not follow the grammar; the message quotes it and gives three examples.

    Examples
    --------
    >>> parse_step("Hold at -5.5 mV for 10 h")
    HoldStep(value_V=-0.0055, limits=(Limit(kind='duration_s', value=36000.0),), description='Hold at -5.5 mV for 10 h', kind='hold')
    """
    if not isinstance(text, str) or not text.strip():
        raise _error(str(text), "empty step")
    cur = _Cursor(text, _tokenize(text))
    kind, verb = cur.take()
    if kind != "word" or verb not in _VERBS:
        close = difflib.get_close_matches(str(verb), [v.capitalize() for v in _VERBS]
                                          + list(_VERBS), n=1)
        hint = f" (did you mean {close[0].capitalize()!r}?)" if close else ""
        raise _error(text, f"unknown action {verb!r}{hint}; use Lithiate, Delithiate, Discharge, "
                           f"Charge, Hold or Rest")
    if verb == "rest":
        limits = _parse_ends(cur)
        if not any(lim.kind in ("duration_s", "time_s") for lim in limits):
            raise _error(text, "a rest needs 'for DURATION' or 'until TIME'")
        return RestStep(limits=limits, description=text)
    cur.expect_word("at")
    if verb == "hold":
        _, value_V, _ = cur.quantity(("potential",), "potential")
        limits = _parse_ends(cur)
        if not limits:
            raise _error(text, "a hold needs an end ('for 10 h', 'until 16.3 h')")
        if any(lim.kind == "potential_V" for lim in limits):
            raise _error(text, "a hold cannot end at a potential")
        return HoldStep(value_V=value_V, limits=limits, description=text)
    direction = _VERBS[verb]
    kind, val = cur.peek()
    fields: dict[str, float] = {}
    if kind == "crate":
        cur.take()
        fields["c_rate"] = float(val)
    else:
        q, value, _ = cur.quantity(("current_per_mass", "current_per_area", "current"), "current")
        fields[{"current_per_mass": "value_A_per_g", "current_per_area": "value_A_per_m2",
                "current": "value_A"}[q]] = value
    (name, value), = fields.items()
    if value <= 0:
        raise _error(text, "give the current as a positive magnitude; the verb sets the sign")
    limits = _parse_ends(cur)
    if not limits:
        raise _error(text, "a current step needs an end ('until 0.2 mV', 'for 5 h')")
    return CurrentStep(direction=direction, limits=limits, description=text, **fields)


def _step_to_dict(step: Step) -> dict:
    d = {k: v for k, v in dataclasses.asdict(step).items() if v is not None}
    d["limits"] = [dataclasses.asdict(lim) for lim in step.limits]
    return d


def _step_from_dict(d: dict) -> Step:
    d = dict(d)
    kind = d.pop("kind", None)
    limits = tuple(Limit(**lim) for lim in d.pop("limits", ()))
    cls = {"current": CurrentStep, "hold": HoldStep, "rest": RestStep}.get(kind)
    if cls is None:
        raise ConfigError(f"protocol step dict has unknown kind {kind!r}; expected current, hold or rest")
    try:
        return cls(limits=limits, **d)
    except TypeError as exc:
        raise ConfigError(f"protocol step dict {d!r} does not fit {cls.__name__}: {exc}") from None


@dataclass(frozen=True)
class Protocol:
    """An ordered list of typed steps.

    Build it with :meth:`parse` from step strings; ``to_dict``/``from_dict`` round-trip it.
    """

    steps: tuple[Step, ...]

    @classmethod
    def parse(cls, steps: Iterable[str] | str) -> "Protocol":
        """Parse step strings (a single string is one step).

        Raises
        ------
        ConfigError
            For the first step that does not parse.
        """
        if isinstance(steps, str):
            steps = [steps]
        parsed = tuple(parse_step(s) for s in steps)
        if not parsed:
            raise ConfigError(f"A protocol needs at least one step. Valid examples: {list(EXAMPLES)}")
        return cls(parsed)

    @property
    def descriptions(self) -> list[str]:
        return [s.description for s in self.steps]

    def to_dict(self) -> dict:
        return {"steps": [_step_to_dict(s) for s in self.steps]}

    @classmethod
    def from_dict(cls, d: dict) -> "Protocol":
        return cls(tuple(_step_from_dict(s) for s in d["steps"]))

    def __len__(self) -> int:
        return len(self.steps)

    def __add__(self, other: "Protocol") -> "Protocol":
        return Protocol(self.steps + other.steps)

    def repeat(self, n: int) -> "Protocol":
        """The steps ``n`` times in a row (for cycling)."""
        return Protocol(self.steps * int(n))


def as_protocol(p: Protocol | Sequence[str] | dict) -> Protocol:
    """Accept a :class:`Protocol`, a list of step strings or a ``to_dict`` mapping."""
    if isinstance(p, Protocol):
        return p
    if isinstance(p, dict):
        return Protocol.from_dict(p)
    return Protocol.parse(p)
