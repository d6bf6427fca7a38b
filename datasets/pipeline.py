"""The processing pipeline: :class:`RawFrame` (FID or processed ``1r``) -> real spectrum on a
fixed, ascending ppm grid, plus per-run normalisation.

The same object runs at training and inference, in batch and streaming. Everything that
depends on the run (the frozen phase, the frozen reference shift, the normalisation
reference) is explicit state: :meth:`Pipeline.state_dict`, :meth:`Pipeline.load_state_dict`,
:meth:`Pipeline.reset`. ``process_many`` equals ``process`` called frame by frame.

FID processing, in order (Bruker conventions, verified against TopSpin's own ``1r`` on the
real run, see :mod:`lisentry.datasets.processing.fourier`):

1. optional truncation to ``max_points`` complex points (TopSpin's ``TDeff``);
2. DC correction: the mean of the last quarter of the FID, real and imaginary parts
   separately (TopSpin's ``BC_mod = quad``);
3. exponential apodisation ``exp(-pi lb_Hz t)``, ``t = k / SW_h`` (nmrglue's
   ``proc_base.em`` with ``lb = lb_Hz / SW_h`` points);
4. zero filling, FFT in TopSpin order, digital-filter removal after the FFT
   (nmrglue's ``remove_digital_filter(..., post_proc=True)`` with the untruncated
   ``acq.group_delay_pts``);
5. phase ``(PHC0, PHC1)`` in TopSpin's convention (nmrglue ``ps`` on the TopSpin-ordered
   spectrum), from the mode in :class:`ProcessingConfig`;
5b. optionally (``phase_align="reference"``; off by default) the residual zero- and
   first-order phase of the frame relative to the run's first frame, measured on the strong
   lines and removed (:mod:`lisentry.datasets.processing.align`: per-frame phase jitter leaves
   dispersive tails of the electrolyte and electrode lines larger than the amounts the classes
   turn on); applied on the grid, after step 7. Off by default because it assumes the strong
   lines stay: in a Li | Li cell, where the metal lines themselves change, it corrupts the metal
   window late in the run (measured on the real run, ``benchmarks/phase_align.py``);
6. ppm axis ``(F - SF) / SF`` with ``SF = BF1 + SR`` (``acq.sr_Hz``, else ``config.sr_Hz``,
   else 0), optionally shifted so that the tallest peak near ``reference_peak_ppm`` lands
   on it (shift frozen from the first frame);
7. resampling onto the grid (bin averaging when the native spacing is finer than the grid
   step, which conserves areas; linear interpolation otherwise), NaN outside the window;
8. baseline correction on the covered part of the grid.

Normalisation (:meth:`Pipeline.normalise`) is per run, never per frame: the scale is the
mean over the run's first ``norm_frames`` frames of ``nansum(|spectrum|) * ppm_step``.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable, Mapping

import numpy as np

from lisentry.datasets.errors import ConfigError, InputError
from lisentry.datasets.frame import RawFrame
from lisentry.datasets.processing.baseline import als_baseline, poly_baseline
from lisentry.datasets.processing.align import residual_phase
from lisentry.datasets.processing.fourier import (bruker_complex_spectrum, bruker_real_spectrum,
                                                  bruker_spectrum, cached_ppm_axis)
from lisentry.datasets.processing.phase import estimate_phase
from lisentry.datasets.processing.resample import (grid_support, resample_support,
                                                  resample_to_grid)

__all__ = ["ProcessingConfig", "Pipeline", "PHASE_MODES", "PHASE_ALIGN_MODES", "BASELINE_MODES"]

PHASE_MODES = ("reference", "procs", "auto", "fixed", "none")
PHASE_ALIGN_MODES = ("reference", "none")
BASELINE_MODES = ("none", "poly", "als")
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ProcessingConfig:
    """Settings of the processing pipeline (validated on construction).

    Parameters
    ----------
    lb_Hz : float
        Exponential line broadening in Hz (>= 0).
    zero_fill : int
        Up to 16: zero-fill factor, the transform size being the next power of two
        >= factor x points. Above 16: target size in complex points (never below the FID's).
    max_points : int | None
        Use only the first ``max_points`` complex FID points (TopSpin's ``TDeff / 2``);
        ``None`` uses all.
    dc_correct : bool
        Subtract the DC offset estimated from the last quarter of the FID.
    phase : str
        ``"reference"``: estimate (PHC0, PHC1) once from the first frame and freeze it for
        the run; ``"procs"``: TopSpin's PHC0/PHC1 of each frame (``raw.phase_deg``), falling
        back to the frozen reference estimate when absent; ``"auto"``: estimate on every
        frame (not recommended: phase then varies with the spectrum); ``"fixed"``:
        ``phase0_deg``/``phase1_deg``; ``"none"``: no phasing.
    phase0_deg, phase1_deg : float
        Fixed PHC0/PHC1 in degrees (``phase="fixed"``), TopSpin convention.
    phase1_max_deg : float
        Bound on ``|PHC1|`` for estimated phases, degrees.
    phase_align : str
        ``"reference"``: after phasing, rotate each frame by the residual zero- and first-order
        phase that best maps its strong lines onto the run's first frame (frame-to-frame
        phase jitter removed; the first frame's own phase error stays, constant over the run);
        ``"none"`` (default): use the phases as they are. FIDs only (a processed ``1r`` has no
        imaginary part). Use ``"reference"`` for cells whose intense lines stay put (an
        electrolyte or solid-electrolyte line); not for symmetric Li | Li cells, whose metal
        lines change (see the module docstring).
    baseline : str
        ``"none"``, ``"poly"`` (robust polynomial) or ``"als"`` (asymmetric least squares),
        applied on the grid.
    baseline_order : int
        Polynomial order for ``"poly"``.
    baseline_smoothness : float
        ALS smoothness (second-difference penalty on the grid's sampling).
    baseline_asymmetry : float
        ALS weight of points above the baseline, in (0, 0.5].
    ppm_min, ppm_max, ppm_step : float
        Grid: ``ppm_min`` to ``ppm_max`` inclusive, step ``ppm_step`` (ppm).
    sr_Hz : float | None
        SR in Hz to use when the data carry none (no ``procs``).
    reference_peak_ppm : float | None
        When set, the axis of the run is shifted so that the tallest peak within
        ``reference_window_ppm`` of this shift in the first frame lands on it.
    reference_window_ppm : float
        Half-width (ppm) of the search window for ``reference_peak_ppm``.
    norm_frames : int
        Number of first frames whose mean total intensity is the run's normalisation scale.
    nucleus : str
        Expected nucleus (``"7Li"``); frames of another nucleus are refused.
    """

    lb_Hz: float = 50.0
    zero_fill: int = 2
    max_points: int | None = None
    dc_correct: bool = True
    phase: str = "procs"
    phase0_deg: float = 0.0
    phase1_deg: float = 0.0
    phase1_max_deg: float = 180.0
    phase_align: str = "none"
    baseline: str = "poly"
    baseline_order: int = 3
    baseline_smoothness: float = 1e5
    baseline_asymmetry: float = 0.01
    ppm_min: float = -100.0
    ppm_max: float = 400.0
    ppm_step: float = 0.5
    sr_Hz: float | None = None
    reference_peak_ppm: float | None = None
    reference_window_ppm: float = 10.0
    norm_frames: int = 1
    nucleus: str = "7Li"

    def __post_init__(self):
        self._validate()

    # -- validation -----------------------------------------------------------------------
    def _err(self, name: str, rule: str, value: Any) -> ConfigError:
        return ConfigError(f"The {name!r} parameter of ProcessingConfig must be {rule}. "
                           f"Got {value!r}.")

    def _validate(self) -> None:
        def real(name, lo=None, strict=False, optional=False):
            v = getattr(self, name)
            if v is None and optional:
                return
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise self._err(name, "a finite number" + (" or None" if optional else ""), v)
            if lo is not None and (v <= lo if strict else v < lo):
                raise self._err(name, f"{'>' if strict else '>='} {lo:g}", v)

        def integer(name, lo, optional=False):
            v = getattr(self, name)
            if v is None and optional:
                return
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise self._err(name, "an int" + (" or None" if optional else ""), v)
            if v < lo:
                raise self._err(name, f">= {lo}", v)

        def choice(name, options):
            v = getattr(self, name)
            if v not in options:
                raise self._err(name, "a str among " + ", ".join(repr(o) for o in options), v)

        real("lb_Hz", 0)
        integer("zero_fill", 1)
        integer("max_points", 8, optional=True)
        if not isinstance(self.dc_correct, bool):
            raise self._err("dc_correct", "a bool", self.dc_correct)
        choice("phase", PHASE_MODES)
        real("phase0_deg")
        real("phase1_deg")
        real("phase1_max_deg", 0, strict=True)
        choice("phase_align", PHASE_ALIGN_MODES)
        choice("baseline", BASELINE_MODES)
        integer("baseline_order", 0)
        real("baseline_smoothness", 0, strict=True)
        real("baseline_asymmetry", 0, strict=True)
        if self.baseline_asymmetry > 0.5:
            raise self._err("baseline_asymmetry", "<= 0.5", self.baseline_asymmetry)
        real("ppm_min")
        real("ppm_max")
        real("ppm_step", 0, strict=True)
        if self.ppm_max <= self.ppm_min:
            raise self._err("ppm_max", f"> ppm_min ({self.ppm_min:g})", self.ppm_max)
        n = (self.ppm_max - self.ppm_min) / self.ppm_step
        if abs(n - round(n)) > 1e-6 * max(1.0, n):
            raise self._err("ppm_step", "a divisor of ppm_max - ppm_min", self.ppm_step)
        real("sr_Hz", optional=True)
        real("reference_peak_ppm", optional=True)
        real("reference_window_ppm", 0, strict=True)
        integer("norm_frames", 1)
        if not isinstance(self.nucleus, str) or not self.nucleus:
            raise self._err("nucleus", "a non-empty str", self.nucleus)

    # -- serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-safe dict of all fields (``phase_align`` only when it is not ``"none"``, so
        configs, dataset manifests and model cards from before the option are unchanged)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if d["phase_align"] == "none":
            del d["phase_align"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ProcessingConfig":
        """Build from a dict; unknown keys raise :class:`ConfigError` with a suggestion.

        Examples
        --------
        >>> ProcessingConfig.from_dict({"lb_Hz": 20}).lb_Hz
        20
        >>> ProcessingConfig.from_dict({"lb_hz": 20})
        Traceback (most recent call last):
        ...
        lisentry.datasets.errors.ConfigError: Unknown key 'lb_hz' for ProcessingConfig. Did you mean 'lb_Hz'?
        """
        if not isinstance(d, Mapping):
            raise ConfigError(f"ProcessingConfig.from_dict needs a mapping. Got {type(d).__name__}.")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in d:
            if key not in names:
                lower = {n.lower(): n for n in names}
                close = ([lower[str(key).lower()]] if str(key).lower() in lower
                         else difflib.get_close_matches(str(key), names, n=1))
                hint = f" Did you mean {close[0]!r}?" if close else \
                    f" Valid keys: {', '.join(names)}."
                raise ConfigError(f"Unknown key {key!r} for ProcessingConfig.{hint}")
        return cls(**dict(d))

    @property
    def ppm_grid(self) -> np.ndarray:
        """The grid: ascending float64 from ``ppm_min`` to ``ppm_max`` inclusive."""
        n = int(round((self.ppm_max - self.ppm_min) / self.ppm_step)) + 1
        return self.ppm_min + self.ppm_step * np.arange(n, dtype=np.float64)


@lru_cache(maxsize=16)
def _em_window(n: int, lb_Hz: float, sw_Hz: float) -> np.ndarray:
    """``exp(-pi lb_Hz k / SW_h)``, ``k = 0 .. n-1`` (read-only, cached per run setting)."""
    w = np.exp(-np.pi * lb_Hz * np.arange(n) / sw_Hz)
    w.setflags(write=False)
    return w


class Pipeline:
    """FID (or processed spectrum) -> float32 spectrum on the ppm grid, with run-level state.

    Parameters
    ----------
    config : ProcessingConfig | None
        Settings (defaults when ``None``).

    Attributes
    ----------
    phase_ : tuple of float | None
        Frozen (PHC0, PHC1) in degrees once the first frame fixed them.
    ref_shift_ppm_ : float | None
        Frozen axis shift (ppm) from ``reference_peak_ppm``.
    norm_sums_ : list of float
        ``nansum(|spectrum|) * ppm_step`` of the run's first ``norm_frames`` frames.

    Examples
    --------
    >>> pipe = Pipeline()
    >>> pipe.ppm_grid.shape
    (1001,)
    """

    def __init__(self, config: ProcessingConfig | None = None):
        if config is not None and not isinstance(config, ProcessingConfig):
            raise ConfigError(f"Pipeline needs a ProcessingConfig. Got {type(config).__name__}.")
        self.config = config or ProcessingConfig()
        self._grid = self.config.ppm_grid
        self._grid.setflags(write=False)
        self._shift_cache: tuple | None = None
        self.reset()

    # -- state ----------------------------------------------------------------------------
    def reset(self) -> "Pipeline":
        """Forget the run: frozen phase, reference shift and normalisation."""
        self.phase_: tuple[float, float] | None = None
        self.ref_shift_ppm_: float | None = None
        self.norm_sums_: list[float] = []
        self.align_ref_: np.ndarray | None = None
        self.run_sr_Hz_: float | None = None
        self.run_procs_phase_: tuple[float, float] | None = None
        self.reference_source_: str | None = None
        return self

    def state_dict(self) -> dict:
        """JSON-safe run-level state."""
        return {"phase_deg": None if self.phase_ is None else [float(v) for v in self.phase_],
                "ref_shift_ppm": self.ref_shift_ppm_,
                "norm_sums": [float(v) for v in self.norm_sums_],
                "align_ref": None if self.align_ref_ is None else
                [[float(v) for v in self.align_ref_.real], [float(v) for v in self.align_ref_.imag]],
                "run_sr_Hz": self.run_sr_Hz_,
                "run_procs_phase_deg": None if self.run_procs_phase_ is None else
                [float(v) for v in self.run_procs_phase_]}

    def load_state_dict(self, state: Mapping[str, Any]) -> "Pipeline":
        """Restore :meth:`state_dict` output (e.g. to resume ``watch``)."""
        known = {"phase_deg", "ref_shift_ppm", "norm_sums", "align_ref", "run_sr_Hz",
                 "run_procs_phase_deg"}
        unknown = set(state) - known
        if unknown:
            raise ConfigError(f"Unknown key(s) {sorted(unknown)} in Pipeline state; "
                              f"expected {sorted(known)}.")
        ph = state.get("phase_deg")
        self.phase_ = None if ph is None else (float(ph[0]), float(ph[1]))
        rs = state.get("ref_shift_ppm")
        self.ref_shift_ppm_ = None if rs is None else float(rs)
        self.norm_sums_ = [float(v) for v in state.get("norm_sums", [])]
        sr = state.get("run_sr_Hz")   # absent in states saved before it existed
        self.run_sr_Hz_ = None if sr is None else float(sr)
        pp = state.get("run_procs_phase_deg")
        self.run_procs_phase_ = None if pp is None else (float(pp[0]), float(pp[1]))
        ar = state.get("align_ref")
        if ar is not None:
            re_, im_ = (np.asarray(v, dtype=float) for v in ar)
            if re_.shape != self._grid.shape or im_.shape != self._grid.shape:
                raise ConfigError(f"Pipeline state 'align_ref' has {re_.size} points; the grid "
                                  f"has {self._grid.size}.")
            self.align_ref_ = re_ + 1j * im_
        else:
            self.align_ref_ = None
        return self

    def to_dict(self) -> dict:
        """Config plus state, JSON-safe (stored with datasets and models)."""
        return {"format_version": _FORMAT_VERSION, "config": self.config.to_dict(),
                "state": self.state_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Pipeline":
        """Inverse of :meth:`to_dict` (``state`` optional)."""
        if "config" not in d:
            raise ConfigError("Pipeline.from_dict needs a 'config' key.")
        pipe = cls(ProcessingConfig.from_dict(d["config"]))
        if d.get("state"):
            pipe.load_state_dict(d["state"])
        return pipe

    @property
    def ppm_grid(self) -> np.ndarray:
        """Ascending float64 ppm grid (read-only)."""
        return self._grid

    # -- processing -----------------------------------------------------------------------
    def process(self, raw: RawFrame) -> np.ndarray:
        """Process one frame onto the grid (not normalised).

        Parameters
        ----------
        raw : RawFrame
            With ``fid`` (complex, digital-filter delay in it) or ``spectrum`` +
            ``spectrum_ppm`` (processed real spectrum, only resampled).

        Returns
        -------
        np.ndarray
            float32, ``len(ppm_grid)``; NaN where the spectral window does not cover the grid.

        Raises
        ------
        InputError
            Wrong nucleus, missing/empty/non-finite data, a FID ending in exact zeros (stopped
            early), unusable acquisition parameters.
        """
        cfg = self.config
        nuc = raw.acq.nucleus
        if nuc and cfg.nucleus and nuc.lower() != cfg.nucleus.lower():
            raise InputError(raw.source, f"nucleus {nuc} does not match the pipeline's {cfg.nucleus}")
        if raw.fid is None and raw.spectrum is None:
            raise InputError(raw.source, "frame has neither a FID nor a processed spectrum")
        if raw.fid is not None:
            return self._process_fid(raw).astype(np.float32)
        self.reference_source_ = "processed"      # 1r comes with its own (SF-referenced) axis
        return self._process_spectrum(raw).astype(np.float32)

    def process_many(self, raws: Iterable[RawFrame]) -> np.ndarray:
        """Process frames in order; identical to calling :meth:`process` on each.

        Returns
        -------
        np.ndarray
            float32 ``(n_frames, len(ppm_grid))``.
        """
        out = [self.process(r) for r in raws]
        if not out:
            return np.empty((0, self._grid.size), dtype=np.float32)
        return np.stack(out)

    def _process_spectrum(self, raw: RawFrame) -> np.ndarray:
        spec = np.asarray(raw.spectrum)
        ppm = None if raw.spectrum_ppm is None else np.asarray(raw.spectrum_ppm, dtype=float)
        if ppm is None or spec.ndim != 1 or ppm.shape != spec.shape or spec.size < 2:
            raise InputError(raw.source, "processed spectrum and its ppm axis must be 1-D of "
                                         "equal length >= 2")
        if np.iscomplexobj(spec):
            spec = spec.real
        if not np.all(np.isfinite(spec)) or not np.all(np.isfinite(ppm)):
            raise InputError(raw.source, "processed spectrum has non-finite values")
        return resample_to_grid(ppm, spec.astype(float), self._grid)

    def _process_fid(self, raw: RawFrame) -> np.ndarray:
        cfg, acq = self.config, raw.acq
        fid = np.asarray(raw.fid)
        if fid.ndim != 1 or fid.size < 8:
            raise InputError(raw.source, f"FID must be 1-D with >= 8 points, got shape {fid.shape}")
        if not np.isfinite(fid.sum()) and not np.all(np.isfinite(fid)):   # sum: cheap test
            raise InputError(raw.source, "FID has non-finite values")
        # Measured points always carry noise: a FID that is exact zeros after its first tenth
        # stopped early (an aborted acquisition, or a file TopSpin has only zero-filled so
        # far). Noise-free synthetic FIDs rounded to a few digits can end in zeros too, but
        # not over 90 % of an acquisition time chosen to hold the signal.
        nz = np.flatnonzero(fid)
        zeros = fid.size - (int(nz[-1]) + 1 if nz.size else 0)
        if zeros >= max(64, 0.9 * fid.size):
            raise InputError(raw.source, f"FID ends in {zeros} of {fid.size} points that are exactly "
                                         "zero (acquisition incomplete or stopped early)")
        for name in ("sw_Hz", "sfo1_MHz", "bf1_MHz"):
            v = getattr(acq, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise InputError(raw.source, f"{name} = {v!r} is not a positive number "
                                             "(needed for the ppm axis)")
        if cfg.max_points is not None:
            fid = fid[: cfg.max_points]
        n = fid.size
        if cfg.dc_correct:                             # a new array: the input is never modified
            tail = fid[n - max(1, n // 4):]
            if tail.dtype != np.complex128:
                tail = tail.astype(np.complex128)
            fid = np.subtract(fid, tail.mean(), dtype=np.complex128)
        else:
            fid = fid.astype(np.complex128)
        if cfg.lb_Hz > 0:
            fid *= _em_window(n, float(cfg.lb_Hz), float(acq.sw_Hz))
        if cfg.zero_fill <= 16:
            size = 1 << int(math.ceil(math.log2(n * cfg.zero_fill)))
        else:
            size = max(int(cfg.zero_fill), n)
        gd = float(acq.group_delay_pts or 0.0)
        p0, p1 = self._phase_for(raw, fid, size, gd)
        sr = self._sr_for(acq.sr_Hz)
        ppm = cached_ppm_axis(size, acq.sw_Hz, acq.sfo1_MHz, acq.bf1_MHz, sr)
        if cfg.reference_peak_ppm is not None:
            if self.ref_shift_ppm_ is None:
                full = bruker_real_spectrum(fid, size, gd, p0, p1)
                self.ref_shift_ppm_ = self._reference_shift(ppm, full)
            ppm = self._shifted_axis(ppm, self.ref_shift_ppm_)
        # only the points the grid needs are phased (the rest of the window is not used)
        start, stop = grid_support(ppm, self._grid)
        if cfg.phase_align == "none":
            part = bruker_real_spectrum(fid, size, gd, p0, p1, start=start, stop=stop)
            return self._baseline(resample_support(ppm, part, self._grid))
        part = bruker_complex_spectrum(fid, size, gd, p0, p1, start=start, stop=stop)
        # resampling is linear: real and imaginary parts go onto the grid separately
        c = (resample_support(ppm, part.real, self._grid)
             + 1j * resample_support(ppm, part.imag, self._grid))
        if self.align_ref_ is None:
            self.align_ref_ = c
            return self._baseline(c.real)
        theta = residual_phase(c, self.align_ref_)
        return self._baseline(c.real * np.cos(theta) - c.imag * np.sin(theta))

    def _sr_for(self, frame_sr_Hz: float | None) -> float:
        """The frame's SR (Hz): its own (``pdata/1/procs``), else the user's ``sr_Hz``, else the
        SR an earlier frame of the run carried (the spectrometer's referencing does not change
        within a run; a frame whose ``procs`` is missing or has no SF would otherwise get an
        axis hundreds of ppm off), else 0. ``reference_source_`` records which."""
        if frame_sr_Hz is not None:
            self.run_sr_Hz_ = float(frame_sr_Hz)
            self.reference_source_ = "frame"
            return float(frame_sr_Hz)
        if self.config.sr_Hz is not None:
            self.reference_source_ = "config"
            return float(self.config.sr_Hz)
        if self.run_sr_Hz_ is not None:
            self.reference_source_ = "run"
            return self.run_sr_Hz_
        self.reference_source_ = "peak" if self.config.reference_peak_ppm is not None else "none"
        return 0.0

    def _shifted_axis(self, ppm: np.ndarray, shift: float) -> np.ndarray:
        """``ppm + shift``, kept while the axis and the shift stay the same (one per run)."""
        key = (id(ppm), ppm.size, float(ppm[0]), shift)
        if self._shift_cache is None or self._shift_cache[0] != key:
            shifted = ppm + shift
            shifted.setflags(write=False)
            self._shift_cache = (key, shifted)
        return self._shift_cache[1]

    def _phase_for(self, raw: RawFrame, fid: np.ndarray, size: int, gd: float
                   ) -> tuple[float, float]:
        """(PHC0, PHC1) for this frame; the complex spectrum is formed only to estimate."""
        cfg = self.config
        mode = cfg.phase
        if mode == "none":
            return 0.0, 0.0
        if mode == "fixed":
            return cfg.phase0_deg, cfg.phase1_deg
        if mode == "procs" and raw.phase_deg is not None:
            self.run_procs_phase_ = (float(raw.phase_deg[0]), float(raw.phase_deg[1]))
            return self.run_procs_phase_
        if mode == "procs" and self.run_procs_phase_ is not None:
            # a frame whose procs is missing: the latest phases TopSpin stored for this run
            # (automatic phasing of one frame is unstable on real operando data)
            return self.run_procs_phase_
        if mode == "auto":
            return estimate_phase(bruker_spectrum(fid, size, gd), cfg.phase1_max_deg)
        if self.phase_ is None:                      # "reference", or "procs" without procs
            self.phase_ = estimate_phase(bruker_spectrum(fid, size, gd), cfg.phase1_max_deg)
        return self.phase_

    def _reference_shift(self, ppm: np.ndarray, real: np.ndarray) -> float:
        cfg = self.config
        target, w = cfg.reference_peak_ppm, cfg.reference_window_ppm
        sel = np.flatnonzero(np.abs(ppm - target) <= w)
        if sel.size == 0:
            return 0.0
        i = int(sel[np.argmax(real[sel])])
        peak = ppm[i]
        if 0 < i < ppm.size - 1:                     # parabolic refinement
            a, b, c = real[i - 1], real[i], real[i + 1]
            den = a - 2 * b + c
            if den < 0:
                peak = ppm[i] + 0.5 * (a - c) / den * (ppm[i + 1] - ppm[i])
        return float(target - peak)

    def _baseline(self, y: np.ndarray) -> np.ndarray:
        cfg = self.config
        if cfg.baseline == "none":
            return y
        ok = np.flatnonzero(np.isfinite(y))
        if ok.size < cfg.baseline_order + 2:
            return y
        seg = slice(ok[0], ok[-1] + 1)               # covered part is contiguous
        part = y[seg]
        if cfg.baseline == "poly":
            base = poly_baseline(part, cfg.baseline_order)
        else:
            base = als_baseline(part, cfg.baseline_smoothness, cfg.baseline_asymmetry)
        y = y.copy()
        y[seg] = part - base
        return y

    # -- normalisation --------------------------------------------------------------------
    def normalise(self, spectrum: np.ndarray, index: int) -> np.ndarray:
        """Divide by the run's scale (per run, never per frame).

        The scale is the mean of ``nansum(|s|) * ppm_step`` over the run's first
        ``norm_frames`` frames; frame ``index < norm_frames`` uses the mean of the frames
        seen so far (frames 0..index), so streaming equals batch. Frames must be passed in
        order the first time (calling again with an index already seen reuses its value).

        Parameters
        ----------
        spectrum : np.ndarray
            Output of :meth:`process`.
        index : int
            0-based position of the frame in its run (readable frames only).

        Returns
        -------
        np.ndarray
            float32 normalised spectrum (NaN kept).
        """
        k = self.config.norm_frames
        if index < 0:
            raise ConfigError(f"The 'index' parameter of Pipeline.normalise must be >= 0. Got {index!r}.")
        if index < k:
            if index == len(self.norm_sums_):
                self.norm_sums_.append(float(np.nansum(np.abs(spectrum))) * self.config.ppm_step)
            elif index > len(self.norm_sums_):
                raise ConfigError(f"Pipeline.normalise got frame {index} before frame "
                                  f"{len(self.norm_sums_)}; the first {k} frames must come in order.")
            sums = self.norm_sums_[: index + 1]
        else:
            if not self.norm_sums_:
                raise ConfigError("Pipeline.normalise has no reference: frames 0.. "
                                  f"{k - 1} of the run were never normalised.")
            sums = self.norm_sums_[:k]
        scale = float(np.mean(sums))
        if not math.isfinite(scale) or scale <= 0:
            raise ConfigError(f"Run normalisation scale is {scale!r} (first frames have no signal).")
        return (np.asarray(spectrum, dtype=np.float64) / scale).astype(np.float32)

    @property
    def scale_(self) -> float | None:
        """Current normalisation scale (mean of the stored first-frame sums) or ``None``."""
        return float(np.mean(self.norm_sums_)) if self.norm_sums_ else None

    def __repr__(self) -> str:
        return f"Pipeline({self.config!r})"
