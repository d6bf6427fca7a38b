"""The records that flow through lisentry: :class:`RawFrame` (what a reader returns),
:class:`Frame` (one processed frame: spectrum on the ppm grid plus electrochemistry) and
:class:`Run` (an ordered sequence of frames plus metadata).

Conventions (binding, see ``shared/interfaces.md``):

* times are timezone-aware UTC ``datetime``; ``t_s`` is seconds from the acquisition start
  of the run's first readable frame to this frame's acquisition midpoint;
* ``frame`` / ``expno`` is the Bruker experiment number for experiment series and the
  1-based row for a pseudo-2D ``ser``;
* current is positive when it lithiates the working electrode;
* spectrum intensities are normalised per run, never per frame.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np

#: The four classes, in order of severity (the most severe that holds wins).
CLASSES: tuple[str, ...] = ("normal_lithiation", "cluster_growth", "plating_onset", "imminent_short")


@dataclass(frozen=True)
class AcquisitionParams:
    """The acquisition parameters that processing and timing need.

    Parameters
    ----------
    nucleus : str
        Observed nucleus as TopSpin writes it, e.g. ``"7Li"``.
    sfo1_MHz : float
        Transmitter (observe) frequency in MHz.
    bf1_MHz : float
        Basic spectrometer frequency in MHz (the 0-ppm reference of the nucleus table).
    o1_Hz : float
        Transmitter offset from BF1 in Hz.
    sw_Hz : float
        Spectral width in Hz (``SW_h``).
    td : int
        Number of acquired points as TopSpin counts them (real + imaginary, i.e. 2x complex).
    ns : int
        Number of scans.
    ds : int
        Number of dummy scans.
    d1_s : float
        Recycle delay in seconds.
    group_delay_pts : float
        Bruker digital-filter group delay in complex points (0 for analogue data).
    sr_Hz : float | None
        Spectrum reference offset SR from ``procs`` in Hz (``SF = BF1 + SR``) or ``None``
        when the data carry none.
    extra : Mapping
        Other scalar parameters worth keeping (``DECIM``, ``DSPFVS``, ``GRPDLY``, ``PULPROG``...).
    """

    nucleus: str
    sfo1_MHz: float
    bf1_MHz: float
    o1_Hz: float
    sw_Hz: float
    td: int
    ns: int = 1
    ds: int = 0
    d1_s: float = 0.0
    group_delay_pts: float = 0.0
    sr_Hz: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def aq_s(self) -> float:
        """Acquisition time of one scan in seconds: complex points / spectral width."""
        return (self.td // 2) / self.sw_Hz

    @property
    def duration_s(self) -> float:
        """Nominal duration of the whole acquisition, (NS + DS) x (D1 + AQ), in seconds."""
        return (self.ns + self.ds) * (self.d1_s + self.aq_s)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["extra"] = dict(self.extra)
        return d


@dataclass(frozen=True, eq=False)
class RawFrame:
    """One acquisition as read from disk, before processing.

    Exactly one of ``fid`` (complex time-domain data, digital-filter delay still in it)
    and ``spectrum`` (processed real spectrum, e.g. TopSpin ``pdata/1/1r``, with its own
    ``spectrum_ppm`` axis) is set.

    Parameters
    ----------
    source : Path
        The experiment folder (or ``ser`` file) the frame was read from.
    expno : int
        Bruker experiment number, or the 1-based row of a pseudo-2D ``ser``.
    acq : AcquisitionParams
        Acquisition parameters.
    acq_start, acq_end : datetime
        Acquisition window, timezone-aware UTC.
    time_source : str
        Where the window came from: ``"audita"``, ``"acqus_DATE"``, ``"ser_rows"`` or ``"simulated"``.
    phase_deg : tuple[float, float] | None
        TopSpin's (PHC0, PHC1) in degrees when ``procs`` gives them.
    notes : tuple of str
        One-line warnings of the reader about this frame (e.g. how a ``ser`` row's time was
        decided when ``audita.txt`` and the nominal duration disagree); given once per run.
    """

    source: Path
    expno: int
    acq: AcquisitionParams
    acq_start: datetime
    acq_end: datetime
    fid: np.ndarray | None = None
    spectrum: np.ndarray | None = None
    spectrum_ppm: np.ndarray | None = None
    time_source: str = "acqus_DATE"
    phase_deg: tuple[float, float] | None = None
    notes: tuple[str, ...] = ()

    @property
    def acq_mid(self) -> datetime:
        return self.acq_start + (self.acq_end - self.acq_start) / 2


@dataclass(frozen=True, eq=False)
class Frame:
    """One processed frame: spectrum on the run's ppm grid plus the cell's electrochemistry.

    Parameters
    ----------
    run_id : str
        Identifier of the run the frame belongs to.
    index : int
        0-based position of the frame in its run (readable frames only).
    expno : int
        Bruker experiment number (or 1-based ``ser`` row): the ``frame`` column of outputs.
    acq_start, acq_end : datetime
        Acquisition window, UTC.
    t_s : float
        Seconds from the acquisition start of the run's first readable frame to this
        frame's acquisition midpoint.
    nucleus : str
        e.g. ``"7Li"``.
    sfo1_MHz : float
        Observe frequency in MHz.
    ppm_grid : np.ndarray
        Chemical-shift axis in ppm (shared by all frames of a run, ascending).
    intensity : np.ndarray
        float32 spectrum on ``ppm_grid``, normalised per run; NaN where the acquisition does
        not cover the grid.
    acq : AcquisitionParams
        The acquisition parameters that matter.
    potential_V, potential_min_V, potential_max_V : float
        Working-electrode potential averaged over the acquisition window (and its extremes);
        NaN when the log does not cover the window.
    current_A, current_min_A, current_max_A : float
        Current, positive when lithiating the working electrode; NaN when unknown.
    charge_C : float
        Charge passed since the start of the log up to the acquisition midpoint, coulombs
        (lithiating positive); NaN when unknown.
    label : str | None
        Ground-truth class (synthetic or user-labelled data) or ``None``.
    latent : Mapping[str, float] | None
        Latent truth for synthetic frames (``cluster_amount``, ``cluster_shift_ppm``,
        ``metal_amount``, ``ce_amount``, ``hazard``, ...).
    source : Path
        File or folder the frame came from.
    status : str
        ``"ok"`` or a short reason for a degraded frame (``"no_potential"``...).
    """

    run_id: str
    index: int
    expno: int
    acq_start: datetime
    acq_end: datetime
    t_s: float
    nucleus: str
    sfo1_MHz: float
    ppm_grid: np.ndarray
    intensity: np.ndarray
    acq: AcquisitionParams
    potential_V: float = float("nan")
    potential_min_V: float = float("nan")
    potential_max_V: float = float("nan")
    current_A: float = float("nan")
    current_min_A: float = float("nan")
    current_max_A: float = float("nan")
    charge_C: float = float("nan")
    label: str | None = None
    latent: Mapping[str, float] | None = None
    source: Path = Path(".")
    status: str = "ok"

    @property
    def acq_mid(self) -> datetime:
        return self.acq_start + (self.acq_end - self.acq_start) / 2

    @property
    def timestamp(self) -> str:
        """Acquisition midpoint, UTC, ISO 8601."""
        return self.acq_mid.astimezone(timezone.utc).isoformat()

    def replace(self, **changes) -> "Frame":
        return dataclasses.replace(self, **changes)


@dataclass
class Run:
    """An ordered sequence of frames plus the run's metadata.

    ``skipped`` lists ``(expno, path, reason)`` for every frame that could not be read.
    """

    run_id: str
    frames: list[Frame]
    meta: dict = field(default_factory=dict)
    skipped: list[tuple[int, str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self):
        return iter(self.frames)

    def __getitem__(self, i):
        return self.frames[i]

    @property
    def ppm_grid(self) -> np.ndarray:
        return self.frames[0].ppm_grid

    def spectra(self) -> np.ndarray:
        """(n_frames, n_ppm) float32 array of the processed spectra."""
        return np.stack([f.intensity for f in self.frames]).astype(np.float32)

    def t_s(self) -> np.ndarray:
        return np.array([f.t_s for f in self.frames], dtype=float)


def utc(dt: datetime) -> datetime:
    """Return ``dt`` as an aware UTC datetime (naive input is taken to be UTC)."""
    if dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)
