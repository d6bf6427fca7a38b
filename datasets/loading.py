"""Reading a whole run: NMR reader (Bruker, JCAMP-DX or Varian, :mod:`lisentry.datasets.io.nmr`)
+ potentiostat log + processing pipeline -> :class:`Run`.

This is the one path from instrument files to frames, used by ``inspect``, ``plot``, the
dataset store (``add-measured``) and ``label``; ``watch`` uses the same pieces frame by frame
through :class:`RunAssembler`.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from lisentry.datasets.cells import check_cell_kind
from lisentry.datasets.errors import (ConfigError, IncompleteAcquisition, InputError,
                                      NmrFolderError)
from lisentry.datasets.frame import Frame, RawFrame, Run
from lisentry.datasets.io import nmr
from lisentry.datasets.io.potentiostat import EchemLog, read_echem
from lisentry.datasets.pipeline import Pipeline, ProcessingConfig


def _print_note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def report_skip(err: InputError, stream=None) -> None:
    """Print the one-line report of a frame that could not be read (stderr)."""
    print(f"skipped: {err}", file=stream or sys.stderr, flush=True)


@dataclass
class RunAssembler:
    """Turns :class:`RawFrame` s into :class:`Frame` s one at a time (batch == streaming).

    Holds the run-level state: the run's time origin (acquisition start of the first readable
    frame), the pipeline's frozen phase and normalisation, and the potentiostat log.

    Parameters
    ----------
    run_id : str
        Name of the run.
    pipeline : Pipeline
        Processing pipeline (its run-level state lives in it).
    echem : EchemLog | None
        Potentiostat log on the spectrometer's clock, or ``None`` (spectra only).
    on_note : callable or None
        Receives one line per run-level warning (default: printed on stderr), e.g. a frame
        whose ppm axis has no referencing. Each kind of warning is given once per run.
    """

    run_id: str
    pipeline: Pipeline
    echem: EchemLog | None = None
    t0: datetime | None = None
    n_frames: int = 0
    last_start: datetime | None = None
    on_note: Callable[[str], None] | None = field(default=_print_note, repr=False)
    notes: list = field(default_factory=list)
    messages: list = field(default_factory=list)

    def add(self, raw: RawFrame, window=None) -> Frame:
        """Process one raw frame; raises :class:`InputError` for an unusable one.

        ``window`` may carry the frame's precomputed potentiostat statistics (from
        :meth:`EchemLog.window_stats_many`, which gives the same values in one pass)."""
        if self.last_start is not None and raw.acq_start <= self.last_start:
            raise InputError(raw.source, f"acquisition start {raw.acq_start.isoformat()} is not after "
                                         f"the previous frame's ({self.last_start.isoformat()})")
        for note in raw.notes:
            self._note(note, note)
        spectrum = self.pipeline.process(raw)
        self._note_reference(raw)
        if not np.isfinite(spectrum).any():
            raise InputError(raw.source, "processed spectrum has no finite point on the ppm grid")
        spectrum = self.pipeline.normalise(spectrum, self.n_frames)
        if self.t0 is None:
            self.t0 = raw.acq_start
        stats = {}
        status = "ok"
        if self.echem is not None:
            w = window if window is not None else self.echem.window_stats(raw.acq_start, raw.acq_end)
            stats = dict(potential_V=w.potential_V, potential_min_V=w.potential_min_V,
                         potential_max_V=w.potential_max_V, current_A=w.current_A,
                         current_min_A=w.current_min_A, current_max_A=w.current_max_A,
                         charge_C=w.charge_C)
            status = w.status
        else:
            status = "no_potential"
        frame = Frame(
            run_id=self.run_id, index=self.n_frames, expno=raw.expno,
            acq_start=raw.acq_start, acq_end=raw.acq_end,
            t_s=(raw.acq_mid - self.t0).total_seconds(),
            nucleus=raw.acq.nucleus, sfo1_MHz=raw.acq.sfo1_MHz,
            ppm_grid=self.pipeline.ppm_grid, intensity=np.asarray(spectrum, dtype=np.float32),
            acq=raw.acq, source=raw.source, status=status, **stats,
        )
        self.n_frames += 1
        self.last_start = raw.acq_start
        return frame

    def _note_reference(self, raw: RawFrame) -> None:
        """Say (once per run) when a frame's ppm axis is not referenced by its own files."""
        src = self.pipeline.reference_source_
        if src == "run":
            kind = "reference_from_run"
            phases = " and latest phases" if raw.phase_deg is None else ""
            msg = (f"warning: {raw.source}: no SR in pdata/1/procs (missing, or without SF); "
                   f"using the run's SR ({self.pipeline.run_sr_Hz_:.2f} Hz){phases} from an "
                   "earlier frame for this and any later such frame")
        elif src == "none":
            kind = "no_reference"
            msg = (f"warning: {raw.source}: no referencing (no pdata/1/procs with SF, no --sr-hz "
                   "or --reference-ppm): the ppm axis assumes SF = BF1 and may be hundreds of ppm "
                   "off; expect high OOD scores")
        else:
            return
        self._note(kind, msg)

    def _note(self, kind: str, msg: str) -> None:
        """Give ``msg`` once per run (per ``kind``) to ``on_note`` and keep it in ``messages``."""
        if kind in self.notes:
            return
        self.notes.append(kind)
        self.messages.append(msg)
        if self.on_note is not None:
            self.on_note(msg)


@dataclass
class LoadOptions:
    """Command-line options shared by every command that reads a run (see interfaces.md)."""

    echem: Path | None = None
    echem_start: str | None = None
    echem_tz: str | None = None
    clock_offset_s: float = 0.0
    reference_ppm: float | None = None
    sr_hz: float | None = None
    use_processed: bool = False
    expected_nucleus: str | None = "7Li"
    extra: dict = field(default_factory=dict)
    #: ``half`` or ``symmetric`` (Li | Li; lisentry.datasets.cells): how the detector reads
    #: the sign of the potential
    cell: str = "half"

    def __post_init__(self):
        self.cell = check_cell_kind(self.cell)
        for name, flag in (("clock_offset_s", "--clock-offset-s"), ("reference_ppm", "--reference-ppm"),
                           ("sr_hz", "--sr-hz")):
            v = getattr(self, name)
            if v is not None and not math.isfinite(float(v)):
                raise ConfigError(f"{flag} must be a finite number. Got {v}.")


def open_echem(opts: LoadOptions) -> EchemLog | None:
    if opts.echem is None:
        return None
    return read_echem(opts.echem, start=opts.echem_start, tz=opts.echem_tz,
                      clock_offset_s=opts.clock_offset_s)


def pipeline_for(opts: LoadOptions, config: ProcessingConfig | None = None) -> Pipeline:
    """A fresh pipeline with the user's referencing options applied."""
    config = config or ProcessingConfig()
    changes = {}
    if opts.sr_hz is not None:
        changes["sr_Hz"] = opts.sr_hz
    if opts.reference_ppm is not None:
        changes["reference_peak_ppm"] = opts.reference_ppm
    if changes:
        config = ProcessingConfig.from_dict({**config.to_dict(), **changes})
    return Pipeline(config)


def load_run(nmr_dir: str | Path, opts: LoadOptions | None = None, *,
             config: ProcessingConfig | None = None, pipeline: Pipeline | None = None,
             run_id: str | None = None,
             on_skip: Callable[[InputError], None] | None = report_skip,
             on_note: Callable[[str], None] | None = _print_note,
             progress: Iterable | None = None) -> Run:
    """Read, process and align a whole run.

    Parameters
    ----------
    nmr_dir : path
        Folder with numbered experiment folders (or a pseudo-2D ``ser``), or a run folder
        containing ``nmr/``.
    opts : LoadOptions
        Potentiostat log and referencing options.
    config : ProcessingConfig, optional
        Processing configuration (defaults otherwise); ignored when ``pipeline`` is given.
    on_skip : callable
        Called with the :class:`InputError` of every frame that cannot be used (default:
        one line on stderr). The frame gets no row; the others go on.
    on_note : callable
        Called with each run-level warning line (default: printed on stderr), e.g. frames
        whose ppm axis is not referenced by their own files.

    Returns
    -------
    Run
        Frames in acquisition order; ``run.skipped`` lists ``(frame, path, reason)`` (frame:
        Bruker expno, 1-based ``ser`` row, JCAMP-DX/Varian frame number, -1 when none).
        ``run.meta["notes"]`` keeps the run-level warnings given to ``on_note`` (e.g. trailing
        experiments not acquired yet, ``meta["not_acquired"]``, which are not skipped).
    """
    opts = opts or LoadOptions()
    nmr_dir = Path(nmr_dir)
    echem = open_echem(opts)
    pipe = pipeline or pipeline_for(opts, config)
    asm = RunAssembler(run_id or _run_id(nmr_dir), pipe, echem, on_note=on_note)
    frames: list[Frame] = []
    skipped: list[tuple[int, str, str]] = []

    def skip(err: InputError) -> None:
        skipped.append((frame_number(err), str(err.path), err.reason))
        if on_skip:
            on_skip(err)

    pending: list[IncompleteAcquisition] = []   # not acquired yet: skipped only if a frame follows
    for item in nmr.iter_raw_frames(nmr_dir, use_processed=opts.use_processed,
                                    expected_nucleus=opts.expected_nucleus,
                                    skip_incomplete=False):
        if isinstance(item, NmrFolderError):    # not a frame: the folder given is wrong
            raise item
        if isinstance(item, IncompleteAcquisition):
            pending.append(item)
            continue
        for err in pending:                     # aborted: a later acquisition followed
            skip(err)
        pending.clear()
        try:
            if isinstance(item, InputError):
                raise item
            frames.append(asm.add(item))
        except InputError as err:
            if err.frame is None and isinstance(item, RawFrame):
                err.frame = item.expno      # e.g. a zeroed row of a ser: its row, not the folder
            skip(err)
    if pending:     # the trailing experiments still being acquired (or never started): say so
        nums = ", ".join(str(frame_number(e)) for e in pending[:8]) + (", ..." if len(pending) > 8
                                                                       else "")
        asm._note("pending", f"note: {nmr_dir}: {len(pending)} trailing experiment(s) not read, "
                             f"not acquired yet (frame {nums}): {pending[0].reason}")
    meta = {"nmr_dir": str(nmr_dir), "cell": opts.cell, "echem": str(opts.echem) if opts.echem else None,
            "processing": pipe.to_dict(), "t0": asm.t0.isoformat() if asm.t0 else None,
            "echem_notes": list(echem.notes) if echem is not None else [],
            "notes": list(asm.messages),
            "not_acquired": [(frame_number(e), str(e.path), e.reason) for e in pending]}
    return Run(asm.run_id, frames, meta=meta, skipped=skipped)


def _run_id(nmr_dir: Path) -> str:
    if nmr_dir.is_file():
        return nmr_dir.stem
    return nmr_dir.parent.name if nmr_dir.name == "nmr" else nmr_dir.name


def check_nmr_path(path: str | Path) -> None:
    """Refuse, in one line, an NMR_DIR that no reader can take before anything is read.

    A folder is left to the readers (which report what is missing in it); a file is accepted
    when it is a JCAMP-DX file (``*.jdx``, ``*.dx``) or a Varian ``fid`` beside ``procpar``.

    Raises
    ------
    NmrFolderError
        ``path`` does not exist, or is a file of another kind.
    """
    p = Path(path)
    if p.is_dir():
        return
    if not p.exists():
        raise NmrFolderError(p, "NMR folder missing")
    if nmr.detect_format(p, count=False).format == "bruker":
        raise NmrFolderError(p, "is a file, not an NMR folder; give the folder that holds the "
                                "numbered experiments (or a ser), a folder of *.fid "
                                "experiments or JCAMP-DX files, or one JCAMP-DX file "
                                "(*.jdx, *.dx)")


def frame_number(err: InputError) -> int:
    """The number of the frame an error concerns, for skip reports: the reader's
    ``err.frame`` when it set one (ser row, JCAMP-DX/Varian frame number, Bruker expno), else
    the experiment number in the error's path (Bruker), else -1."""
    if err.frame is not None:
        return int(err.frame)
    return _expno_of(err.path)


def _expno_of(path: Path) -> int:
    """The experiment number of a frame's file: ``nmr/11/fid`` -> 11, and for TopSpin's
    processed data ``nmr/11/pdata/1/procs`` -> 11 (not the procno 1)."""
    parts = Path(path).parts
    if "pdata" in parts:
        parts = parts[:parts.index("pdata")]
    for part in reversed(parts):
        if part.isdigit():
            return int(part)
    return -1
