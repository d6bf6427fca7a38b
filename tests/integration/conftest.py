"""Fixtures for the end-to-end tests of ``watch``, ``label``, ``inspect`` and ``plot``.

* ``tiny_bundle``: a randomly initialised LisentryNet saved as a real bundle (safetensors +
  card), built once per session. A low temperature spreads its probabilities so that labels
  change over a short run and comparisons between paths are not trivially equal.
* ``sim_run``: a short simulated CC-overlithiation run (10 frames), in memory.
* :class:`LiveRun`: writes that run to disk the way a live experiment does: TopSpin's
  ``begin_experiment`` (acqus + zero-filled full-size fid) first, ``finish_experiment`` (data,
  final acqus, completed audita) later, and the EC-Lab ``.mpt`` growing row by row.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

N_FRAMES = 10
FAMILY = "hc_sulfide_overlithiation"
SEED = 3


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A small random-weight model bundle on the default grid (1001 points)."""
    import torch

    from lisentry.datasets.pipeline import ProcessingConfig
    from lisentry.models.bundle import save_bundle
    from lisentry.models.net import LisentryNet

    torch.manual_seed(5)
    net = LisentryNet(n_ppm=1001, hidden=16, channels=(8, 8))
    return save_bundle(tmp_path_factory.mktemp("bundle") / "tiny", net, {
        "processing": ProcessingConfig().to_dict(), "temperature": 0.02, "ood_threshold": 50.0,
        "horizon_s": 5400.0,
        "detector": {"enter": 0.6, "exit": 0.4, "min_consecutive": 2}})


@pytest.fixture(scope="session")
def sim_run():
    from lisentry.datasets.sim.run import simulate_run
    return simulate_run(FAMILY, SEED, max_frames=N_FRAMES)


class LiveRun:
    """Write a simulated run frame by frame as TopSpin and EC-Lab would during acquisition.

    Parameters
    ----------
    sim : SimulatedRun
        The run to write.
    root : Path
        Run folder; gets ``nmr/<expno>/`` and ``echem/<run_id>.mpt``.
    topspin : str
        TopSpin dialect (``"2.1"``: no audita until the end; ``"4.3"``: an in-progress audita
        entry first).
    """

    def __init__(self, sim, root: Path, topspin: str = "2.1"):
        from lisentry.datasets.sim.run import _procs
        self.sim = sim
        self.root = Path(root)
        self.nmr = self.root / "nmr"
        self.nmr.mkdir(parents=True, exist_ok=True)
        (self.root / "echem").mkdir(exist_ok=True)
        self.mpt = self.root / "echem" / f"{sim.run_id}.mpt"
        self.topspin = topspin
        peak = max(float(np.max(np.abs(np.concatenate([r.fid.real, r.fid.imag])))) for r in sim.raws)
        self.int_scale = 2.0**29 / peak
        self._procs = _procs
        self.t_echem0 = float(sim.echem.t_utc_s[0])
        self.echem_written_to = -np.inf   # POSIX s of the last row written
        self.echem_holes: list[tuple[float, float]] = []

    # -- spectrometer ------------------------------------------------------------------
    def expdir(self, k: int) -> Path:
        return self.nmr / str(self.sim.raws[k].expno)

    def begin(self, k: int) -> Path:
        """Frame ``k`` (0-based) starts: acqus + zero-filled fid (+ in-progress audita)."""
        from lisentry.datasets.io import bruker_writer
        raw = self.sim.raws[k]
        return bruker_writer.begin_experiment(self.expdir(k), raw.acq, raw.acq_start,
                                              topspin=self.topspin)

    def finish(self, k: int) -> Path:
        """Frame ``k`` ends: data, final acqus, completed audita (written last)."""
        from lisentry.datasets.io import bruker_writer
        raw = self.sim.raws[k]
        return bruker_writer.finish_experiment(self.expdir(k), raw.fid, raw.acq, raw.acq_start,
                                               raw.acq_end, topspin=self.topspin,
                                               procs=self._procs(raw), int_scale=self.int_scale)

    # -- potentiostat ------------------------------------------------------------------
    def echem_until(self, t_utc_s: float) -> None:
        """Write the potentiostat rows up to ``t_utc_s`` (POSIX s), minus any holes."""
        from lisentry.datasets.io.biologic import append_mpt_rows, write_mpt
        e = self.sim.echem
        sel = (e.t_utc_s > self.echem_written_to) & (e.t_utc_s <= t_utc_s)
        for a, b in self.echem_holes:
            sel &= ~((e.t_utc_s > a) & (e.t_utc_s < b))
        if not sel.any():
            return
        t = e.t_utc_s[sel] - self.t_echem0
        if not self.mpt.exists():
            write_mpt(self.mpt, t, e.potential_V[sel], e.current_A[sel],
                      start_local=datetime.fromtimestamp(self.t_echem0, timezone.utc), tz="UTC")
        else:
            append_mpt_rows(self.mpt, t, e.potential_V[sel], e.current_A[sel])
        self.echem_written_to = float(e.t_utc_s[sel][-1])

    def echem_through_frame(self, k: int) -> None:
        """Rows up to one log interval past the end of frame ``k``."""
        self.echem_until(self.sim.raws[k].acq_end.timestamp() + 60.0)

    def frame(self, k: int) -> None:
        """Acquire frame ``k`` completely, log rows included."""
        self.begin(k)
        self.echem_through_frame(k)
        self.finish(k)


@pytest.fixture
def live_run(sim_run, tmp_path) -> LiveRun:
    return LiveRun(sim_run, tmp_path / "run")


def read_events(path: Path) -> list[dict]:
    """All events of a JSON-lines events file."""
    text = Path(path).read_text(encoding="utf-8") if Path(path).exists() else ""
    # only complete lines: read while the watcher appends, the last line may be half there
    # (a write is not atomic against a concurrent read, e.g. across a page boundary)
    text = text[: text.rfind("\n") + 1]
    return [json.loads(ln) for ln in text.splitlines() if ln.strip()]


def frame_events(path: Path) -> list[dict]:
    return [e for e in read_events(path) if e.get("event", "frame") == "frame"]


def lisentry_cmd(*args: str) -> list[str]:
    """Command line of the installed ``lisentry`` entry point (same interpreter as the tests)."""
    return [sys.executable, "-c", "from lisentry.detector.cli import app; app()", *map(str, args)]


def popen(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(lisentry_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, **kw)


@pytest.fixture(scope="session")
def helpers():
    """The module-level helpers, for test files (conftest modules cannot be imported)."""
    class H:
        LiveRun = LiveRun
        read_events = staticmethod(read_events)
        frame_events = staticmethod(frame_events)
        lisentry_cmd = staticmethod(lisentry_cmd)
        popen = staticmethod(popen)
    return H
