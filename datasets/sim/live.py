"""Replay a simulated run onto disk the way an acquisition writes it, frame by frame.

For each frame: TopSpin's start (``acqus`` + a full-size zero-filled ``fid``), a pause, then the
data and the end-of-acquisition files; meanwhile the EC-Lab ``.mpt`` grows row by row up to
the frame's end. Used by ``lisentry demo``, the ``watch`` tests and the latency benchmark.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from lisentry.datasets.io import bruker_writer
from lisentry.datasets.io.biologic import append_mpt_rows, write_mpt
from lisentry.datasets.sim.run import SimulatedRun, _procs


def replay(sim: SimulatedRun, out_dir: str | Path, *, frame_interval_s: float = 0.2,
           acquire_fraction: float = 0.5, stop: threading.Event | None = None,
           on_frame=None, tz: str = "UTC") -> tuple[Path, Path]:
    """Write ``sim`` into ``out_dir/nmr`` and ``out_dir/echem/<run>.mpt`` in real time (scaled).

    Parameters
    ----------
    frame_interval_s : float
        Wall-clock seconds per frame (the acquisition itself is compressed into this).
    acquire_fraction : float
        Part of the interval during which the frame's fid exists but is still zero-filled.
    stop : threading.Event, optional
        Set it to end the replay early.
    on_frame : callable, optional
        Called with (expno, wall time when the frame was completed).
    """
    out = Path(out_dir)
    nmr = out / "nmr"
    echem_dir = out / "echem"
    nmr.mkdir(parents=True, exist_ok=True)
    echem_dir.mkdir(parents=True, exist_ok=True)
    mpt = echem_dir / f"{sim.run_id}.mpt"
    peak = max(float(np.max(np.abs(np.concatenate([r.fid.real, r.fid.imag])))) for r in sim.raws)
    int_scale = 2.0**29 / peak
    t_log = sim.echem.t_utc_s
    t0 = t_log[0]
    written = 0
    for raw in sim.raws:
        if stop is not None and stop.is_set():
            break
        expdir = nmr / str(raw.expno)
        bruker_writer.begin_experiment(expdir, raw.acq, raw.acq_start)
        time.sleep(frame_interval_s * acquire_fraction)
        # the potentiostat log covers the acquisition before the spectrometer finishes
        upto = int(np.searchsorted(t_log, raw.acq_end.timestamp() + 60.0))
        if upto > written:
            sl = slice(written, upto)
            if written == 0:
                write_mpt(mpt, t_log[sl] - t0, sim.echem.potential_V[sl], sim.echem.current_A[sl],
                          start_local=datetime.fromtimestamp(t0, timezone.utc), tz=tz)
            else:
                append_mpt_rows(mpt, t_log[sl] - t0, sim.echem.potential_V[sl], sim.echem.current_A[sl])
            written = upto
        bruker_writer.finish_experiment(expdir, raw.fid, raw.acq, raw.acq_start, raw.acq_end,
                                        procs=_procs(raw), int_scale=int_scale)
        if on_frame is not None:
            on_frame(raw.expno, time.monotonic())
        time.sleep(frame_interval_s * (1 - acquire_fraction))
    return nmr, mpt
