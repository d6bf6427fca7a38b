"""Model inputs computed from frames: the masked spectrum and causal electrochemistry features.

Every feature at frame ``i`` depends only on frames ``0..i`` (causal), so the batch function
:func:`echem_features` and the streaming :class:`EchemFeatureState` give identical values;
the batch function is in fact a loop over the streaming state.

Missing values are never silently zero-filled: each feature comes with a mask (1 = valid,
0 = missing) and the value is set to 0 only where the mask says so. The model sees both.

Electrochemistry features (:data:`ECHEM_FEATURES`, in this order; all scaled to be O(1)):

==========================  ================================================================
``potential_V``             working-electrode potential, V (as is)
``current_asinh``           ``asinh(I / 0.1 mA)``; current positive = lithiating
``dVdt_asinh``              ``asinh((dV/dt) / 0.1 V/h)``, dV/dt in V/h over the interval to
                            the most recent earlier frame with a known potential
``charge_asinh``            ``asinh(Q / 3.6 C)``, i.e. charge passed in mAh, asinh-scaled
``log1p_h_since_step``      ``log(1 + h)``, h = hours since the last step change of the
                            current (sign change, or a jump of more than 30 % of the larger
                            magnitude); the first frame with a known current counts as a step
``potential_noise_asinh``   ``asinh(rms / 1 mV)``, rms = residual of a straight-line fit of
                            potential vs time over the last 5 frames (soft-short spikes and
                            noise, not the normal ramp); needs >= 3 known potentials
``dlnI_dt_asinh``           ``asinh((d ln|I| / dt) / 0.1 per h)`` over the interval to the most
                            recent earlier frame with a known current; defined when both
                            currents are non-zero with the same sign
``dlnI_dt_3_asinh``         the same over the 3rd most recent earlier frame with a known
                            current (less noisy)
==========================  ================================================================

Symmetric cells (``sign_free``): in a Li | Li cell both electrodes are lithium metal in the
coil, and which one is the "working" electrode is a wiring convention; a positive potential
plates the counter foil just as a negative one plates the working foil. With ``sign_free`` the
potential, current and charge enter as magnitudes (``|V|``, ``|I|``, ``|Q|``; dV/dt and the
potential noise from ``|V|``), so that the features of a cell and of the same cell wired the
other way are identical. Steps and ``d ln|I|/dt`` are computed as always (both are unchanged
when every sign flips). Models trained on half cells only learned "positive potential = no
plating", which a symmetric cell contradicts (docs/results/journal.md, 2026-12-07, seventh part).

Why relative current trends: during a potential hold the current of a healthy cell decays
slowly (about -10 %/h); a soft short's leak turns it upward tens of minutes before a hard
short (Menkin, Grey et al., Faraday Discuss. 2023). On the ``asinh(I / 0.1 mA)`` scale a
2 % change of a 10 uA hold current is invisible, on ``d ln|I| / dt`` it is not.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Sequence

import numpy as np

#: Names of the electrochemistry features, in column order.
ECHEM_FEATURES: tuple[str, ...] = (
    "potential_V",
    "current_asinh",
    "dVdt_asinh",
    "charge_asinh",
    "log1p_h_since_step",
    "potential_noise_asinh",
    "dlnI_dt_asinh",
    "dlnI_dt_3_asinh",
)
#: Bumped whenever a feature's definition or scale changes (stored in model cards).
ECHEM_FEATURES_VERSION = 2

I_REF_A = 1e-4  #: current scale, A (0.1 mA)
DVDT_REF_V_PER_H = 0.1  #: dV/dt scale, V/h
Q_REF_C = 3.6  #: charge scale, C (1 mAh)
NOISE_REF_V = 1e-3  #: potential-noise scale, V (1 mV)
NOISE_WINDOW = 5  #: frames in the potential-noise window (current frame included)
I_ZERO_A = 1e-7  #: currents with magnitude <= this are "rest" (sign 0), A
REL_JUMP = 0.3  #: relative current change that counts as a step
DLNI_REF_PER_H = 0.1  #: relative current-change scale, 1/h (10 % per hour)
CURRENT_LAGS = 3  #: frames back for ``dlnI_dt_3_asinh``

N_ECHEM = len(ECHEM_FEATURES)
_COL_DLNI_1 = ECHEM_FEATURES.index("dlnI_dt_asinh")
_COL_DLNI_3 = ECHEM_FEATURES.index("dlnI_dt_3_asinh")


def spectrum_inputs(spectra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split spectra into zero-filled values and a coverage mask.

    Parameters
    ----------
    spectra : np.ndarray
        ``(..., n_ppm)`` per-run-normalised intensities; NaN (or inf) where the acquisition
        does not cover the grid point.

    Returns
    -------
    values : np.ndarray
        float32, same shape, non-finite entries replaced by 0.
    mask : np.ndarray
        float32, same shape, 1 where covered and 0 where not.

    Examples
    --------
    >>> v, m = spectrum_inputs(np.array([1.0, np.nan, 2.0]))
    >>> v.tolist(), m.tolist()
    ([1.0, 0.0, 2.0], [1.0, 0.0, 1.0])
    """
    x = np.asarray(spectra, dtype=np.float32)
    finite = np.isfinite(x)
    return np.where(finite, x, np.float32(0)).astype(np.float32), finite.astype(np.float32)


def _finite(x) -> bool:
    return x is not None and math.isfinite(float(x))


def _sign(i: float) -> int:
    return 0 if abs(i) <= I_ZERO_A else (1 if i > 0 else -1)


class EchemFeatureState:
    """Streaming computation of :data:`ECHEM_FEATURES`, one frame at a time.

    ``update`` returns the same row as :func:`echem_features` gives for that frame when
    called on all frames so far. The state is JSON-safe (:meth:`to_dict` / :meth:`from_dict`).

    Examples
    --------
    >>> st = EchemFeatureState()
    >>> f, m = st.update(0.0, 0.5, 1e-4, 0.0)
    >>> round(float(f[1]), 4), int(m[2])   # asinh(1); no dV/dt on the first frame
    (0.8814, 0)
    >>> g, _ = EchemFeatureState(sign_free=True).update(0.0, -0.5, -1e-4, 0.0)
    >>> bool(g[0] == f[0] and g[1] == f[1])   # a symmetric cell wired the other way
    True

    Parameters
    ----------
    sign_free : bool
        Feed potential, current and charge as magnitudes (symmetric Li | Li cells; see the
        module docstring).
    """

    def __init__(self, sign_free: bool = False) -> None:
        self.sign_free = bool(sign_free)
        self.reset()

    def reset(self) -> None:
        """Forget everything (start of a new run)."""
        self._last_v: tuple[float, float] | None = None  # (t_s, V) of last known potential
        self._last_i: float | None = None  # last known current, A
        self._t_step: float | None = None  # t_s of the last step change of the current
        self._window: deque[tuple[float, float]] = deque(maxlen=NOISE_WINDOW)  # (t, V or nan)
        self._last_t: float | None = None
        # (t_s, I) of the last CURRENT_LAGS frames with a known current, oldest first
        self._currents: deque[tuple[float, float]] = deque(maxlen=CURRENT_LAGS)

    @staticmethod
    def _dlnI(t: float, cur: float, prev: tuple[float, float] | None) -> float | None:
        """asinh-scaled d ln|I|/dt between ``prev`` and (t, cur); None where undefined."""
        if prev is None or t <= prev[0]:
            return None
        s0, s1 = _sign(prev[1]), _sign(cur)
        if s0 == 0 or s0 != s1:
            return None
        rate = (math.log(abs(cur)) - math.log(abs(prev[1]))) / ((t - prev[0]) / 3600.0)
        return math.asinh(rate / DLNI_REF_PER_H)

    def update(self, t_s: float, potential_V: float, current_A: float,
               charge_C: float) -> tuple[np.ndarray, np.ndarray]:
        """Features of the next frame.

        Parameters
        ----------
        t_s : float
            Frame time, s (non-decreasing along the run).
        potential_V : float
            Potential, V; NaN when unknown.
        current_A : float
            Current, A, positive = lithiating; NaN when unknown.
        charge_C : float
            Charge passed, C; NaN when unknown.

        Returns
        -------
        features, mask : np.ndarray
            float32 ``(n_echem,)`` each; features are 0 where the mask is 0.

        Raises
        ------
        ValueError
            If ``t_s`` is not finite or goes backwards.
        """
        t = float(t_s)
        if not math.isfinite(t):
            raise ValueError(f"t_s must be finite. Got {t_s!r}.")
        if self._last_t is not None and t < self._last_t:
            raise ValueError(f"t_s must not decrease. Got {t} after {self._last_t}.")
        self._last_t = t
        f = np.zeros(N_ECHEM, dtype=np.float32)
        m = np.zeros(N_ECHEM, dtype=np.float32)
        v_ok, i_ok, q_ok = _finite(potential_V), _finite(current_A), _finite(charge_C)
        v = float(potential_V) if v_ok else float("nan")
        if self.sign_free:
            v = abs(v)

        if v_ok:
            f[0], m[0] = v, 1
            if self._last_v is not None and t > self._last_v[0]:
                dvdt = (v - self._last_v[1]) / ((t - self._last_v[0]) / 3600.0)
                f[2], m[2] = math.asinh(dvdt / DVDT_REF_V_PER_H), 1
        if i_ok:
            cur = float(current_A)
            f[1], m[1] = math.asinh((abs(cur) if self.sign_free else cur) / I_REF_A), 1
            if self._last_i is None:
                self._t_step = t
            else:
                prev = self._last_i
                jump = abs(cur - prev) > REL_JUMP * max(abs(cur), abs(prev))
                if _sign(cur) != _sign(prev) or (jump and max(abs(cur), abs(prev)) > I_ZERO_A):
                    self._t_step = t
            self._last_i = cur
            for j, prev in ((_COL_DLNI_1, self._currents[-1] if self._currents else None),
                            (_COL_DLNI_3, self._currents[0] if len(self._currents) == CURRENT_LAGS
                             else None)):
                r = self._dlnI(t, cur, prev)
                if r is not None:
                    f[j], m[j] = r, 1
            self._currents.append((t, cur))
        if self._t_step is not None:
            f[4], m[4] = math.log1p((t - self._t_step) / 3600.0), 1
        if q_ok:
            q = abs(float(charge_C)) if self.sign_free else float(charge_C)
            f[3], m[3] = math.asinh(q / Q_REF_C), 1

        self._window.append((t, v))
        if v_ok:
            self._last_v = (t, v)
            pts = np.array([p for p in self._window if math.isfinite(p[1])], dtype=float)
            if len(pts) >= 3:
                tt = (pts[:, 0] - pts[:, 0].mean()) / 3600.0
                vv = pts[:, 1] - pts[:, 1].mean()
                denom = float(tt @ tt)
                slope = float(tt @ vv) / denom if denom > 0 else 0.0
                rms = math.sqrt(float(np.mean((vv - slope * tt) ** 2)))
                f[5], m[5] = math.asinh(rms / NOISE_REF_V), 1
        return f, m

    def to_dict(self) -> dict:
        """JSON-safe snapshot of the state (NaN written as ``None``)."""
        def nn(x):
            return None if x is None or not math.isfinite(x) else float(x)
        return {"version": ECHEM_FEATURES_VERSION, "sign_free": self.sign_free,
                "last_v": None if self._last_v is None else list(self._last_v),
                "last_i": self._last_i, "t_step": self._t_step, "last_t": self._last_t,
                "window": [[t, nn(v)] for t, v in self._window],
                "currents": [[t, i] for t, i in self._currents]}

    @classmethod
    def from_dict(cls, d: dict) -> "EchemFeatureState":
        """Rebuild a state saved with :meth:`to_dict`."""
        st = cls(sign_free=bool(d.get("sign_free", False)))
        if d.get("version") != ECHEM_FEATURES_VERSION:
            raise ValueError(f"echem feature state version {d.get('version')!r} "
                             f"!= {ECHEM_FEATURES_VERSION}")
        st._last_v = None if d["last_v"] is None else (float(d["last_v"][0]), float(d["last_v"][1]))
        st._last_i, st._t_step, st._last_t = d["last_i"], d["t_step"], d["last_t"]
        for t, v in d["window"]:
            st._window.append((float(t), float("nan") if v is None else float(v)))
        for t, i in d.get("currents", []):
            st._currents.append((float(t), float(i)))
        return st


def echem_features(t_s: Sequence[float], potential_V: Sequence[float],
                   current_A: Sequence[float], charge_C: Sequence[float], *,
                   sign_free: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Causal electrochemistry features of a whole run (see the module docstring).

    Parameters
    ----------
    t_s : array_like
        ``(T,)`` frame times, s, non-decreasing.
    potential_V, current_A, charge_C : array_like
        ``(T,)`` potential (V), current (A, positive = lithiating) and charge passed (C);
        NaN where unknown.
    sign_free : bool
        Magnitudes of potential, current and charge (symmetric cells; module docstring).

    Returns
    -------
    features : np.ndarray
        float32 ``(T, n_echem)``, 0 where masked.
    mask : np.ndarray
        float32 ``(T, n_echem)``, 1 = valid.

    Examples
    --------
    >>> f, m = echem_features([0, 3600], [1.0, 0.9], [np.nan, np.nan], [np.nan, np.nan])
    >>> round(float(f[1, 2]), 4)   # dV/dt = -0.1 V/h -> asinh(-1)
    -0.8814
    >>> m[:, 1].tolist()           # current unknown: masked, not zero-filled
    [0.0, 0.0]
    """
    arrs = [np.asarray(a, dtype=float).reshape(-1) for a in (t_s, potential_V, current_A, charge_C)]
    n = len(arrs[0])
    if any(len(a) != n for a in arrs):
        raise ValueError("t_s, potential_V, current_A and charge_C must have the same length. "
                         f"Got {[len(a) for a in arrs]}.")
    feats = np.zeros((n, N_ECHEM), dtype=np.float32)
    mask = np.zeros((n, N_ECHEM), dtype=np.float32)
    st = EchemFeatureState(sign_free=sign_free)
    for k in range(n):
        feats[k], mask[k] = st.update(arrs[0][k], arrs[1][k], arrs[2][k], arrs[3][k])
    return feats, mask


def frame_arrays(frames, *, sign_free: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Model inputs of a sequence of :class:`~lisentry.datasets.frame.Frame` objects.

    Parameters
    ----------
    frames : sequence of Frame
        Frames of one run, in time order.
    sign_free : bool
        Echem features as magnitudes (a symmetric cell fed to a model trained so).

    Returns
    -------
    spectra : np.ndarray
        float32 ``(T, n_ppm)`` intensities, NaN kept (the model masks them).
    echem : np.ndarray
        float32 ``(T, n_echem)`` from :func:`echem_features`.
    echem_mask : np.ndarray
        float32 ``(T, n_echem)``.
    """
    frames = list(frames)
    if not frames:
        raise ValueError("frame_arrays needs at least one frame.")
    spectra = np.stack([np.asarray(f.intensity, dtype=np.float32) for f in frames])
    e, m = echem_features([f.t_s for f in frames], [f.potential_V for f in frames],
                          [f.current_A for f in frames], [f.charge_C for f in frames],
                          sign_free=sign_free)
    return spectra, e, m
