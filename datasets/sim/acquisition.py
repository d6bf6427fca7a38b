"""Acquisition of simulated 7Li FIDs: spectrometer settings, per-frame artefacts, the
analytic FID, the Bruker digital-filter delay and the :class:`RawFrame` wrapper.

Conventions (checked against the real TopSpin run, see ``docs/sim_vs_real.md``):

* FID sign: a line ``f`` Hz above the carrier rotates as ``exp(+2 pi i f t)``, as the real
  Bruker data read by nmrglue do: after ``np.fft.fftshift(np.fft.fft(fid))`` frequency
  ascends with the index. TopSpin's display order (index 0 = highest ppm) is
  ``fft(conj(fid))``.
* Phases: a frame's true ``(PHC0, PHC1)`` (``RawFrame.phase_deg``) are the TopSpin phases
  that make every non-metal line absorptive after ``S = fftshift(fft(conj(fid)))``,
  ``nmrglue.bruker.remove_digital_filter(dic, S, truncate=False, post_proc=True)`` and
  ``nmrglue.proc_base.ps(S, PHC0, PHC1)``, i.e. TopSpin's own processing (its ``1r`` of
  real frames matches this to a correlation of 0.997).
* Amplitudes: the FID is in units of the run's initial total 7Li signal (a line of
  amplitude ``a`` has FID value ``a`` at t = 0, before the filter delay).

SNR definition (``AcquisitionConfig.snr``): the height of the initial total 7Li signal,
taken as one Lorentzian of area 1 and FWHM ``snr_ref_fwhm_ppm``, in the plain FFT
spectrum (no apodisation, no zero filling, ``td // 2`` points), divided by the standard
deviation of that spectrum's real part, at ``NS = snr_ns``. Noise then scales as
``1 / sqrt(NS)`` relative to the signal.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Sequence

import numpy as np

from lisentry.datasets.errors import ConfigError
from lisentry.datasets.frame import AcquisitionParams, RawFrame, utc
from lisentry.datasets.sim.nmr_params import XI_7LI
from lisentry.datasets.sim.spectra import Line

#: Bruker DSPFVS 10..13 group-delay table (complex points) by DECIM (same values as
#: nmrglue's ``bruker_dsp_table``; DSPFVS >= 20 write GRPDLY explicitly).
BRUKER_DSP_TABLE = {
    10: {2: 44.75, 3: 33.5, 4: 66.625, 6: 59.083333333333333, 8: 68.5625, 12: 60.375,
         16: 69.53125, 24: 61.020833333333333, 32: 70.015625, 48: 61.34375, 64: 70.2578125,
         96: 61.505208333333333, 128: 70.37890625},
}

_LN2 = math.log(2.0)


def _geom(z: complex, n: int, scale: complex = 1.0) -> np.ndarray:
    """``scale * exp(z * arange(n))`` as ``(scale exp(z q B)) * exp(z r)`` (two short complex
    exps and one broadcast product; several times faster than one long complex exp)."""
    if n <= 0:
        return np.zeros(0, np.complex128)
    b = max(math.isqrt(n), 1)
    q = -(-n // b)
    small = np.exp(z * np.arange(b))
    big = np.exp((z * b) * np.arange(q))
    if scale != 1.0:
        big *= scale
    out = np.empty((q, b), np.complex128)
    np.multiply(big[:, None], small[None, :], out=out)
    return out.reshape(-1)[:n]


def _fft():
    """The FFT module: ``scipy.fft`` (faster, in-place capable) when present, else numpy."""
    try:
        import scipy.fft as sfft
        return sfft.fft, sfft.ifft, True
    except ImportError:                                   # pragma: no cover - scipy is a dependency
        return np.fft.fft, np.fft.ifft, False


_FFT, _IFFT, _SCIPY_FFT = _fft()


def _delay_ramp(n: int, delay_pts: float, scale: complex = 1.0) -> np.ndarray:
    """``scale * exp(-2 pi i nu delay / n)`` over the signed FFT frequency index ``nu``
    (fftfreq order: 0..npos-1, then -n//2..-1)."""
    z = -2j * np.pi * delay_pts / n
    npos = n - n // 2
    ramp = _geom(z, n, scale)
    ramp[npos:] *= np.exp(-z * n)                        # e^{z (j - n)} = e^{z j} e^{-z n}
    return ramp


def group_delay_pts(decim: int, dspfvs: int, grpdly: float) -> float:
    """Digital-filter group delay in complex points, as TopSpin/nmrglue interpret it.

    Parameters
    ----------
    decim, dspfvs : int
        Bruker ``DECIM`` and ``DSPFVS``.
    grpdly : float
        Bruker ``GRPDLY``; a value > 0 is the delay itself, -1 or 0 means "use the
        DECIM/DSPFVS table" (DSPFVS 10-13) or no delay (DSPFVS >= 14 without GRPDLY).

    Examples
    --------
    >>> group_delay_pts(2, 10, -1)
    44.75
    >>> group_delay_pts(16, 20, 67.98)
    67.98
    """
    if grpdly > 0:
        return float(grpdly)
    if dspfvs >= 14:
        return 0.0
    table = BRUKER_DSP_TABLE[10]
    if decim not in table:
        raise ConfigError(f"The 'decim' value {decim} is not in the DSPFVS {dspfvs} table "
                          f"(valid: {sorted(table)[:6]}...).")
    return table[decim]


def add_digital_filter_delay(fid: np.ndarray, delay_pts: float) -> np.ndarray:
    """Delay a FID by ``delay_pts`` complex points as Bruker's digital filter does.

    Implemented as a linear phase on the spectrum (an exact, circular, band-limited time
    shift): ``ifft(fft(fid) * exp(-2 pi i nu delay / N))`` with ``nu`` the signed FFT
    frequency index. ``nmrglue.bruker.rm_dig_filter(fftshift(fft(out)), ..., post_proc=True,
    truncate_grpdly=False)`` returns the undelayed spectrum times ``exp(i pi delay)``.
    (Kept here, not imported from ``lisentry.datasets.io.bruker_writer``, to avoid a hard
    dependency of the simulator on the writer.)

    Parameters
    ----------
    fid : np.ndarray
        Complex FID, last axis is time.
    delay_pts : float
        Delay in complex points (may be fractional).

    Returns
    -------
    np.ndarray
        complex128 FID of the same shape.
    """
    fid = np.asarray(fid, dtype=np.complex128)
    n = fid.shape[-1]
    spec = _FFT(fid, axis=-1)
    spec *= _delay_ramp(n, delay_pts)
    return _IFFT(spec, axis=-1, overwrite_x=True) if _SCIPY_FFT else _IFFT(spec, axis=-1)


@dataclass(frozen=True)
class AcquisitionConfig:
    """Spectrometer settings of one simulated run (fixed within the run).

    Parameters
    ----------
    field_MHz : float
        1H frequency of the magnet, MHz (300...850); 7Li observes at 0.38864 x this.
    sw_Hz : float
        Spectral width ``SW_h`` in Hz; with ``carrier_ppm`` it must cover -100...400 ppm.
    td : int
        TopSpin ``TD``: real + imaginary points (2 x complex points).
    ns, ds : int
        Scans and dummy scans.
    d1_s : float
        Recycle delay, seconds.
    carrier_ppm : float
        Position of the transmitter (SFO1 = BF1 + O1) on the ppm scale.
    sr_Hz : float
        TopSpin ``SR``: the 0-ppm frequency is ``SF = BF1 + SR * 1e-6`` MHz (the real run
        has 42672 Hz, an unlocked magnet far from the nucleus table).
    decim, dspfvs : int
        Bruker ``DECIM``/``DSPFVS``; ``grpdly`` is ``GRPDLY`` (-1: table lookup).
    snr : float
        Signal-to-noise ratio at ``snr_ns`` scans (module docstring); ``inf`` for no noise.
    snr_ns : int or None
        The NS at which ``snr`` holds (``None``: this config's ``ns``).
    snr_ref_fwhm_ppm : float
        FWHM of the reference line of the SNR definition, ppm.
    """

    field_MHz: float = 500.0
    sw_Hz: float = 200_000.0
    td: int = 16384
    ns: int = 128
    ds: int = 0
    d1_s: float = 2.0
    carrier_ppm: float = 130.0
    sr_Hz: float = 0.0
    decim: int = 2
    dspfvs: int = 10
    grpdly: float = -1.0
    snr: float = 1000.0
    snr_ns: int | None = None
    snr_ref_fwhm_ppm: float = 10.0
    nucleus: str = "7Li"

    def __post_init__(self):
        def bad(name, cond, val):
            raise ConfigError(f"The '{name}' parameter of AcquisitionConfig must be {cond}. Got {val}.")
        if not 100.0 <= self.field_MHz <= 1300.0:
            bad("field_MHz", "within [100, 1300]", self.field_MHz)
        if self.sw_Hz <= 0:
            bad("sw_Hz", "> 0", self.sw_Hz)
        if self.td < 64 or self.td % 2:
            bad("td", "an even integer >= 64", self.td)
        if self.ns < 1:
            bad("ns", ">= 1", self.ns)
        if not self.snr > 0:
            bad("snr", "> 0", self.snr)
        lo, hi = self.ppm_range
        if lo > -100.0 or hi < 400.0:
            bad("sw_Hz", f"wide enough to cover -100...400 ppm around carrier {self.carrier_ppm} ppm "
                f"(covers {lo:.0f}...{hi:.0f})", self.sw_Hz)
        group_delay_pts(self.decim, self.dspfvs, self.grpdly)

    # derived quantities -----------------------------------------------------------------
    @property
    def bf1_MHz(self) -> float:
        """Basic 7Li frequency BF1, MHz."""
        return self.field_MHz * XI_7LI

    @property
    def sf_MHz(self) -> float:
        """Frequency of 0 ppm, MHz (``SF = BF1 + SR``)."""
        return self.bf1_MHz + self.sr_Hz * 1e-6

    @property
    def sfo1_MHz(self) -> float:
        """Transmitter frequency, MHz."""
        return self.sf_MHz * (1.0 + self.carrier_ppm * 1e-6)

    @property
    def o1_Hz(self) -> float:
        return (self.sfo1_MHz - self.bf1_MHz) * 1e6

    @property
    def n_complex(self) -> int:
        return self.td // 2

    @property
    def ppm_range(self) -> tuple[float, float]:
        half = self.sw_Hz / 2.0 / (self.field_MHz * XI_7LI)
        return self.carrier_ppm - half, self.carrier_ppm + half

    @property
    def group_delay_pts(self) -> float:
        return group_delay_pts(self.decim, self.dspfvs, self.grpdly)

    def noise_sigma(self) -> float:
        """Std of the real (and of the imaginary) part of the noise per complex FID point."""
        if not np.isfinite(self.snr):
            return 0.0
        n = self.n_complex
        q = math.exp(-math.pi * self.snr_ref_fwhm_ppm * self.sf_MHz / self.sw_Hz)
        h_ref = (1.0 - q ** n) / (1.0 - q)
        snr_eff = self.snr * math.sqrt(self.ns / (self.snr_ns or self.ns))
        return h_ref / (snr_eff * math.sqrt(n))

    def replace(self, **changes) -> "AcquisitionConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def li_li_tegdme(cls) -> "AcquisitionConfig":
        """The real calibration run's settings (AV 300 WB, 116.7 MHz, NS 256, TD 12288)."""
        return cls(field_MHz=300.13, sw_Hz=93457.9439252336, td=12288, ns=256, d1_s=1.0,
                   carrier_ppm=137.32, sr_Hz=42672.27, decim=2, dspfvs=10, grpdly=-1.0,
                   snr=REAL_RUN_SNR)

    @classmethod
    def random(cls, rng: np.random.Generator, **fixed) -> "AcquisitionConfig":
        """Draw a plausible configuration; keyword arguments fix fields.

        Field 300-850 MHz (1H), carrier 100-150 ppm, SW 100-400 kHz (at least the
        width covering -100...400 ppm plus 10 %), 4k-16k complex points, NS 32-512,
        D1 0.5-5 s, DSPFVS 10 table or DSPFVS 20 with GRPDLY 67.98/76, SNR log-uniform
        100-5000 at NS 256, SR within +-50 kHz.
        """
        field_MHz = fixed.get("field_MHz", float(rng.uniform(300.0, 850.0)))
        carrier = fixed.get("carrier_ppm", float(rng.uniform(100.0, 150.0)))
        sf = field_MHz * XI_7LI
        need = 2.0 * max(carrier + 100.0, 400.0 - carrier) * sf * 1.1
        sw = fixed.get("sw_Hz", float(rng.uniform(max(100_000.0, need), max(400_000.0, need * 1.05))))
        n = int(rng.choice([4096, 6144, 8192, 12288, 16384]))
        if rng.random() < 0.5:
            filt = dict(decim=int(rng.choice([2, 4, 8, 16])), dspfvs=10, grpdly=-1.0)
        else:
            filt = dict(decim=int(rng.choice([2, 4, 8, 16])), dspfvs=20,
                        grpdly=float(rng.choice([67.9870, 76.0])))
        kw = dict(field_MHz=field_MHz, carrier_ppm=carrier, sw_Hz=sw, td=2 * n,
                  ns=int(rng.choice([32, 64, 128, 256, 512])), d1_s=float(rng.uniform(0.5, 5.0)),
                  sr_Hz=float(rng.uniform(-50_000.0, 50_000.0)),
                  snr=float(np.exp(rng.uniform(np.log(100.0), np.log(5000.0)))), snr_ns=256, **filt)
        kw.update(fixed)
        return cls(**kw)


#: SNR (definition above, at NS 256) that reproduces the real Li|Li run's noise relative to
#: its metal peak in TopSpin-style processing; set by benchmarks/sim_vs_real.py.
REAL_RUN_SNR = 310.0


@dataclass(frozen=True)
class FrameArtefacts:
    """Instrument artefacts of one frame.

    Parameters
    ----------
    phc0_deg, phc1_deg : float
        The frame's true TopSpin phases (module docstring): the FID carries the inverse.
    ref_drift_ppm : float
        Reference error: every line sits ``ref_drift_ppm`` higher than its true shift
        while the acquisition parameters keep the exact reference.
    roll : tuple of complex
        Corruption added to the first complex points of the (undelayed) FID, relative to
        the tallest line's height in the plain FFT spectrum; gives a baseline roll of about
        ``sum(abs(roll))`` of that height.
    dc_rel : complex
        DC offset as the height of the spike at the carrier relative to that same height.
    noise : bool
        Add noise (``AcquisitionConfig.snr``).
    procs_error_deg : tuple of float
        ``(dPHC0, dPHC1)``: how far the phases written to ``procs`` (what TopSpin or its
        user chose, and what the ``procs`` phase mode applies) are from the true phases.
    """

    phc0_deg: float = 0.0
    phc1_deg: float = 0.0
    ref_drift_ppm: float = 0.0
    roll: tuple = ()
    dc_rel: complex = 0.0
    noise: bool = True
    procs_error_deg: tuple = (0.0, 0.0)


@dataclass(frozen=True)
class ArtefactConfig:
    """How artefacts vary within and between runs (defaults measured on the real run).

    Phases start uniformly in ``phc0_range_deg``/``phc1_range_deg`` and follow a
    mean-reverting random walk with per-frame steps ``*_step_deg`` and reversion
    ``*_revert`` (stationary std ~ step / sqrt(2 revert): 28 deg and 54 deg, as the
    real run's TopSpin PHC0/PHC1 std of 28/47 deg). The reference drifts linearly to a
    total in ``ref_drift_total_ppm`` plus a random walk of ``ref_drift_step_ppm``. The
    baseline roll (``roll_rel_range``, log-uniform, spread over ``roll_points`` first
    points; real run 0.17-0.8 % of the tallest peak, 5-95 %) jitters by ``roll_jitter`` per frame.
    The phases written to ``procs`` are an estimate, not the truth: they differ from it by a
    per-run offset (normal, std ``procs_phc0_error_deg`` / ``procs_phc1_error_deg``) plus a
    per-frame jitter (``procs_phc*_jitter_deg``), as phasing by eye or by TopSpin's automatic
    phasing leaves a few degrees to tens of degrees (on the real run, the metal lines show a
    dispersive part that no single phase removes).
    """

    phc0_range_deg: tuple[float, float] = (0.0, 360.0)
    phc1_range_deg: tuple[float, float] = (-120.0, 120.0)
    phc0_step_deg: float = 5.7
    phc1_step_deg: float = 17.0
    phc0_revert: float = 0.02
    phc1_revert: float = 0.05
    ref_drift_total_ppm: tuple[float, float] = (-2.0, 2.0)
    ref_drift_step_ppm: float = 0.03
    roll_rel_range: tuple[float, float] = (0.0015, 0.008)
    roll_points: int = 3
    roll_jitter: float = 0.1
    dc_rel_range: tuple[float, float] = (0.0, 0.01)
    procs_phc0_error_deg: float = 8.0
    procs_phc1_error_deg: float = 15.0
    procs_phc0_jitter_deg: float = 2.0
    procs_phc1_jitter_deg: float = 5.0


def draw_run_artefacts(n_frames: int, rng: np.random.Generator,
                       cfg: ArtefactConfig | None = None) -> list[FrameArtefacts]:
    """Per-frame artefacts of one run: run-level draws plus small frame-to-frame drift.

    Parameters
    ----------
    n_frames : int
        Number of frames.
    rng : np.random.Generator
        Source of randomness (same seed -> same artefacts).
    cfg : ArtefactConfig, optional

    Returns
    -------
    list[FrameArtefacts]
    """
    cfg = cfg or ArtefactConfig()
    p0_base = rng.uniform(*cfg.phc0_range_deg)
    p1_base = rng.uniform(*cfg.phc1_range_deg)
    drift_total = rng.uniform(*cfg.ref_drift_total_ppm)
    roll_amp = float(np.exp(rng.uniform(*np.log(cfg.roll_rel_range))))
    w = rng.dirichlet(np.ones(cfg.roll_points)) if cfg.roll_points > 0 else np.zeros(0)
    roll_base = roll_amp * w * np.exp(2j * np.pi * rng.random(cfg.roll_points))
    dc = rng.uniform(*cfg.dc_rel_range) * np.exp(2j * np.pi * rng.random())
    out = []
    p0, p1, walk = p0_base, p1_base, 0.0
    for i in range(n_frames):
        if i:
            p0 += cfg.phc0_revert * (p0_base - p0) + cfg.phc0_step_deg * rng.standard_normal()
            p1 += cfg.phc1_revert * (p1_base - p1) + cfg.phc1_step_deg * rng.standard_normal()
            walk += cfg.ref_drift_step_ppm * rng.standard_normal()
        frac = i / max(n_frames - 1, 1)
        jit = 1.0 + cfg.roll_jitter * rng.standard_normal(cfg.roll_points)
        out.append(FrameArtefacts(
            phc0_deg=float(p0 % 360.0), phc1_deg=float(p1), ref_drift_ppm=float(drift_total * frac + walk),
            roll=tuple(complex(c) for c in roll_base * jit), dc_rel=complex(dc)))
    # from a child stream: spawning does not advance ``rng``, so the noise drawn after this
    # is the same with or without phasing errors
    prng = rng.spawn(1)[0]
    e0 = cfg.procs_phc0_error_deg * prng.standard_normal()
    e1 = cfg.procs_phc1_error_deg * prng.standard_normal()
    j = prng.standard_normal((n_frames, 2)) * (cfg.procs_phc0_jitter_deg, cfg.procs_phc1_jitter_deg)
    return [dataclasses.replace(a, procs_error_deg=(float(e0 + j[i, 0]), float(e1 + j[i, 1])))
            for i, a in enumerate(out)]


def _line_arrays(lines: Sequence[Line]):
    a = np.array([l.amplitude for l in lines], float)
    shift = np.array([l.shift_ppm for l in lines], float)
    wppm = np.array([l.width_ppm for l in lines], float)
    eta = np.array([l.lorentz_fraction for l in lines], float)
    disp = np.array([l.dispersive_fraction for l in lines], float)
    whz = np.array([l.width_Hz for l in lines], float)
    return a, shift, wppm, eta, disp, whz


def clean_fid(lines: Sequence[Line], acq: AcquisitionConfig, ref_drift_ppm: float = 0.0) -> np.ndarray:
    """Noise-free, artefact-free, undelayed FID (complex128, ``td // 2`` points).

    ``sum_l a_l exp(i asin(d_l)) exp(2 pi i f_l t) exp(-pi wL_l t) exp(-(pi wG_l t)^2 / (4 ln 2))``
    with ``f_l = SF * (shift_l + drift - carrier)`` Hz, ``wL = eta * w_ppm * SF + width_Hz`` and
    ``wG = (1 - eta) * w_ppm * SF`` in Hz, ``t = n / SW``; the first point is halved
    (band-limited onset), so the real spectrum's integral is exactly the amplitude.
    """
    n = acq.n_complex
    if not lines:
        return np.zeros(n, np.complex128)
    a, shift, wppm, eta, disp, whz = _line_arrays(lines)
    sf = acq.sf_MHz
    f = (sf * (1.0 + (shift + ref_drift_ppm) * 1e-6) - acq.sfo1_MHz) * 1e6       # Hz from carrier
    wl = eta * wppm * sf + whz
    wg = (1.0 - eta) * wppm * sf
    # Each line is computed only while its envelope exceeds 1e-13 (broad lines die within
    # a few hundred points), with the geometric-sequence trick of _geom.
    out = np.zeros(n, np.complex128)
    amp = a * np.exp(-1j * np.arcsin(np.clip(disp, -1.0, 1.0)))
    z = (2j * np.pi * f - np.pi * wl) / acq.sw_Hz
    cg = (np.pi * wg / acq.sw_Hz) ** 2 / (4.0 * _LN2)     # Gaussian: exp(-cg n^2)
    tol = 30.0                                            # -ln(1e-13)
    ms = np.full(len(lines), n)
    pos = wl > 0
    ms[pos] = np.minimum(n, (tol * acq.sw_Hz / (np.pi * wl[pos])).astype(np.int64) + 1)
    gauss = cg > 0
    ms[gauss] = np.minimum(ms[gauss], np.sqrt(tol / cg[gauss]).astype(np.int64) + 1)
    mg = int(ms[gauss].max()) if gauss.any() else 0
    k2 = np.arange(mg, dtype=float) ** 2                  # shared n^2 axis of the Gaussians
    env = np.empty(mg)
    for i in range(len(lines)):
        m = int(ms[i])
        seg = _geom(z[i], m, amp[i])
        if gauss[i]:
            e = env[:m]
            np.multiply(k2[:m], -cg[i], out=e)
            np.exp(e, out=e)
            seg *= e
        out[:m] += seg
    # The digital filter band-limits the step at t = 0, so the sampled onset is at half
    # height: halving the first point keeps the spectrum free of a DC offset (areas exact).
    out[0] *= 0.5
    # skin-effect phase sign: positive fractions put the dispersive tail on the low-ppm side
    # in TopSpin display, as the real run's Li electrode line (docs/sim_vs_real.md)
    return out


def _tallest_height(lines: Sequence[Line], acq: AcquisitionConfig) -> float:
    """Approximate height of the tallest line in the plain FFT spectrum (FID units)."""
    if not lines:
        return 1.0
    a, shift, wppm, eta, disp, whz = _line_arrays(lines)
    fwhm_hz = np.array([l.fwhm_ppm(acq.sf_MHz) for l in lines]) * acq.sf_MHz
    q = np.exp(-np.pi * np.maximum(fwhm_hz, 1e-9) / acq.sw_Hz)
    return float(np.max(a / (1.0 - q)))


def synthesize_fid(lines: Sequence[Line], acq: AcquisitionConfig, rng: np.random.Generator, *,
                   frame_artefacts: FrameArtefacts | None = None) -> tuple[np.ndarray, AcquisitionParams]:
    """Analytic FID of ``lines`` as the spectrometer records it.

    Order: lines (with the reference drift) -> corruption of the first points (baseline
    roll) -> digital-filter group delay plus the first-order phase error (one linear phase
    on the spectrum) -> zero-order phase error -> noise (``acq.noise_sigma()`` per real and
    imaginary part) -> DC offset.

    Parameters
    ----------
    lines : sequence of Line
    acq : AcquisitionConfig
    rng : np.random.Generator
        Noise source (same state -> identical FID).
    frame_artefacts : FrameArtefacts or None
        ``None``: no phase errors, roll, DC or drift; noise still follows ``acq.snr``.

    Returns
    -------
    fid : np.ndarray
        complex128, shape ``(acq.td // 2,)``.
    params : AcquisitionParams
        With ``group_delay_pts``, ``sr_Hz`` (exact reference) and ``extra`` holding
        ``DECIM``, ``DSPFVS``, ``GRPDLY``, ``O1`` and the truth ``SIM_PHC0``, ``SIM_PHC1``,
        ``SIM_REF_DRIFT_PPM``, ``SIM_NOISE_SIGMA``.
    """
    art = frame_artefacts if frame_artefacts is not None else FrameArtefacts()
    fid = clean_fid(lines, acq, art.ref_drift_ppm)
    n = fid.size
    height = _tallest_height(lines, acq)
    if art.roll:
        k = min(len(art.roll), n)
        fid[:k] += height * np.asarray(art.roll[:k], np.complex128)
    g = acq.group_delay_pts
    delta1 = art.phc1_deg / 360.0                         # first-order phase as a time shift
    alpha = math.radians(art.phc0_deg) + math.pi * (g + delta1)
    # One FFT pair: the delay (linear phase), the zero-order phase (a constant folded into
    # the ramp) and the DC offset (a constant in time = bin 0) are applied on the spectrum.
    spec = _FFT(fid, overwrite_x=True) if _SCIPY_FFT else _FFT(fid)
    spec *= _delay_ramp(n, g + delta1, complex(math.cos(alpha), math.sin(alpha)))
    if art.dc_rel:
        spec[0] += height * complex(art.dc_rel)          # ifft divides by n: height * dc / n
    fid = _IFFT(spec, overwrite_x=True) if _SCIPY_FFT else _IFFT(spec)
    sigma = acq.noise_sigma() if art.noise else 0.0
    if sigma > 0:
        # one draw of 2n normals is the same stream as n real then n imaginary draws
        r = rng.standard_normal(2 * n)
        r *= sigma
        fid.real += r[:n]
        fid.imag += r[n:]
    params = AcquisitionParams(
        nucleus=acq.nucleus, sfo1_MHz=acq.sfo1_MHz, bf1_MHz=acq.bf1_MHz, o1_Hz=acq.o1_Hz,
        sw_Hz=acq.sw_Hz, td=acq.td, ns=acq.ns, ds=acq.ds, d1_s=acq.d1_s, group_delay_pts=g,
        sr_Hz=acq.sr_Hz,
        extra={"DECIM": acq.decim, "DSPFVS": acq.dspfvs, "GRPDLY": acq.grpdly, "O1": acq.o1_Hz,
               "SIM_PHC0": art.phc0_deg, "SIM_PHC1": art.phc1_deg,
               "SIM_PROCS_PHC0": (art.phc0_deg + art.procs_error_deg[0]) % 360.0,
               "SIM_PROCS_PHC1": art.phc1_deg + art.procs_error_deg[1],
               "SIM_REF_DRIFT_PPM": art.ref_drift_ppm, "SIM_NOISE_SIGMA": sigma})
    return fid, params


def make_raw_frame(fid: np.ndarray, acq_params: AcquisitionParams, acq_start: datetime,
                   acq_end: datetime, source: str | Path, expno: int, *,
                   with_phase: bool = True) -> RawFrame:
    """Wrap a simulated FID as the :class:`RawFrame` a reader would return.

    ``time_source`` is ``"simulated"``; ``acq.sr_Hz`` is the exact reference (the frame's
    reference drift is the truth error, in ``acq.extra["SIM_REF_DRIFT_PPM"]``);
    ``phase_deg`` carries the ``procs`` phases (``SIM_PROCS_PHC0/1``: the true phases plus
    the frame's ``procs_error_deg``, as a real run's ``procs`` would; the true ones where
    those are absent) unless ``with_phase`` is False.
    """
    if fid.ndim != 1 or fid.size != acq_params.td // 2:
        raise ConfigError(f"The FID must be 1-D with td // 2 = {acq_params.td // 2} points. Got {fid.shape}.")
    ex = acq_params.extra
    phase = ((float(ex.get("SIM_PROCS_PHC0", ex.get("SIM_PHC0", 0.0))),
              float(ex.get("SIM_PROCS_PHC1", ex.get("SIM_PHC1", 0.0)))) if with_phase else None)
    return RawFrame(source=Path(source), expno=int(expno), acq=acq_params, acq_start=utc(acq_start),
                    acq_end=utc(acq_end), fid=np.asarray(fid, np.complex128), time_source="simulated",
                    phase_deg=phase)


def topspin_spectrum(fid: np.ndarray, params: AcquisitionParams, *, phase_deg=None, lb_Hz: float = 0.0,
                     td_eff: int | None = None, si: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Process a FID as TopSpin does (reference processing for checks and benchmarks).

    ``conj`` -> keep ``td_eff`` complex points -> exponential line broadening ``lb_Hz`` ->
    zero fill to ``si`` -> FFT (index 0 = highest ppm) -> exact group-delay removal
    (nmrglue ``post_proc``, no truncation) -> phases ``phase_deg`` (PHC0, PHC1).

    Returns
    -------
    ppm, spectrum : np.ndarray
        Descending ppm axis (``SF = BF1 + SR``) and the complex spectrum.
    """
    import nmrglue as ng
    x = np.conj(np.asarray(fid, np.complex128))
    if td_eff:
        x = x[:td_eff]
    if lb_Hz:
        x = x * np.exp(-np.pi * lb_Hz * np.arange(x.size) / params.sw_Hz)
    si = si or x.size
    x = np.concatenate([x, np.zeros(si - x.size, x.dtype)]) if si > x.size else x[:si]
    s = np.fft.fftshift(np.fft.fft(x))
    s = ng.bruker.rm_dig_filter(s, int(params.extra.get("DECIM", 1)), int(params.extra.get("DSPFVS", 20)),
                                params.group_delay_pts, truncate_grpdly=False, post_proc=True)
    if phase_deg is not None:
        s = ng.proc_base.ps(s, phase_deg[0], phase_deg[1])
    sf = params.bf1_MHz + (params.sr_Hz or 0.0) * 1e-6
    car = (params.sfo1_MHz - sf) / sf * 1e6
    sw_ppm = params.sw_Hz / sf
    ppm = car + sw_ppm / 2.0 - np.arange(si) * sw_ppm / si
    return ppm, s
