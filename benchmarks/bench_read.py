"""Reading benchmark: lisentry's full path vs the bare nmrglue loop on a Bruker series.

Writes an N-frame TopSpin experiment series (default 1,000 frames, TD = 16384, i.e. 8k complex
points, int32, digitally filtered: DECIM 2 / DSPFVS 10, GRPDLY -1, with ``pdata/1/procs``
holding PHC0/PHC1 as TopSpin leaves them) with :mod:`lisentry.datasets.io.bruker_writer`, then
times, in the same run:

(a) the floor (interfaces.md): one process running ``nmrglue.bruker.read`` +
    ``nmrglue.proc_base.fft`` + ``nmrglue.bruker.remove_digital_filter(dic, data,
    post_proc=True)`` per frame;
(b) lisentry: ``lisentry.datasets.loading.load_run(nmr_dir)`` in one process (strict reading
    with every check, DC correction, apodisation, zero fill, FFT, digital filter, phase,
    referencing, resampling to the ppm grid, baseline, per-run normalisation);
(c) both with ``--workers`` processes (the series split in contiguous chunks; for lisentry the
    run-level state -- frozen phase and normalisation -- is fixed from the first frame in the
    parent and handed to the workers, as ``watch``/``label`` would carry it).

Each measurement is repeated ``--repeats`` times, interleaved, and the median is reported
(the machine is shared and noisy). Target: lisentry (b) >= 0.5x the floor (a).

Usage::

    python benchmarks/bench_read.py [--frames 1000] [--td 16384] [--repeats 3] [--workers 2]
                                    [--dir DIR] [--profile]
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

TARGET_RATIO = 0.5


# ----------------------------------------------------------------------------- data
def synthetic_fid(n: int, sw_Hz: float, sf_MHz: float, o1_ppm: float, rng: np.random.Generator,
                  k: int = 0) -> np.ndarray:
    """A static-cell 7Li FID: electrolyte (0 ppm), SEI (3 ppm), Li metal (245 ppm), a growing
    dendrite line (270 ppm) and noise; undelayed, spectrometer convention (module bruker)."""
    t = np.arange(n) / sw_Hz
    lines = [(1.0, 0.0, 300.0), (0.3, 3.0, 1500.0), (0.8, 245.0, 2500.0),
             (0.002 * k, 270.0, 3000.0)]
    fid = np.zeros(n, complex)
    for amp, ppm, fwhm_Hz in lines:
        nu = (ppm - o1_ppm) * sf_MHz
        fid += amp * np.exp(2j * np.pi * nu * t - np.pi * fwhm_Hz * t)
    fid += 0.002 * (rng.standard_normal(n) + 1j * rng.standard_normal(n))
    return fid


def write_series(root: Path, n_frames: int, td: int = 16384, *, seed: int = 0,
                 period_s: float = 300.0, acqus_template: str | None = None,
                 start_expno: int = 1) -> Path:
    """Write ``n_frames`` finished TopSpin experiments ``root/1..N`` (int32, digital filter).

    Returns ``root``. ``acqus_template`` (a genuine TopSpin acqus text) is used when given.
    """
    from lisentry.datasets.frame import AcquisitionParams
    from lisentry.datasets.io import bruker_writer
    from lisentry.datasets.io.bruker import group_delay_from_acqus

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    bf1, o1_ppm, sw = 194.3702, 150.0, 200_000.0
    extra = {"DECIM": 2, "DSPFVS": 10, "GRPDLY": -1, "PULPROG": "zg"}
    gd = group_delay_from_acqus(extra)
    acq = AcquisitionParams(nucleus="7Li", sfo1_MHz=bf1 + o1_ppm * bf1 * 1e-6, bf1_MHz=bf1,
                            o1_Hz=o1_ppm * bf1, sw_Hz=sw, td=td, ns=64, ds=0, d1_s=2.0,
                            group_delay_pts=gd, sr_Hz=0.0, extra=extra)
    t0 = datetime(2025, 3, 1, 8, 0, tzinfo=timezone.utc)
    n = td // 2
    base = synthetic_fid(n, sw, acq.sfo1_MHz, o1_ppm, rng)
    peak = float(np.abs(base).max())
    for k in range(n_frames):
        fid = synthetic_fid(n, sw, acq.sfo1_MHz, o1_ppm, rng, k)
        fid = bruker_writer.add_digital_filter_delay(fid, gd)
        start = t0 + timedelta(seconds=period_s * k)
        bruker_writer.write_experiment(
            root / str(start_expno + k), fid, acq, start,
            start + timedelta(seconds=acq.duration_s), procs={"PHC0": 12.5, "PHC1": -3.0},
            acqus_template=acqus_template, int_scale=2.0**29 / (1.5 * peak))
    return root


def expdirs(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


# ----------------------------------------------------------------------------- timed paths
def bare_frames(dirs: list[Path]) -> int:
    """The floor: nmrglue read + FFT + digital-filter removal after the FFT, per frame."""
    import nmrglue as ng
    n = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for d in dirs:
            dic, data = ng.bruker.read(str(d))
            spec = ng.proc_base.fft(data)
            spec = ng.bruker.remove_digital_filter(dic, spec, post_proc=True)
            n += spec.shape[-1] > 0
    return n


def lisentry_run(nmr_dir: Path) -> int:
    from lisentry.datasets.loading import load_run
    run = load_run(nmr_dir, on_skip=None)
    return len(run)


def _lisentry_chunk(args) -> int:
    """Worker of (c): read + process a chunk with the run state fixed by the parent."""
    dirs, pipe_dict = args
    from lisentry.datasets.io.bruker import read_experiment
    from lisentry.datasets.pipeline import Pipeline
    pipe = Pipeline.from_dict(pipe_dict)
    n = 0
    for d in dirs:
        s = pipe.normalise(pipe.process(read_experiment(d)), pipe.config.norm_frames)
        n += s.size > 0
    return n


def _bare_chunk(dirs) -> int:
    return bare_frames(dirs)


def _chunks(items: list, k: int) -> list[list]:
    size = -(-len(items) // k)
    return [items[i:i + size] for i in range(0, len(items), size)]


def lisentry_parallel(pool: ProcessPoolExecutor, dirs: list[Path], workers: int) -> int:
    from lisentry.datasets.io.bruker import read_experiment
    from lisentry.datasets.pipeline import Pipeline
    pipe = Pipeline()
    for i in range(pipe.config.norm_frames):       # run state from the first frame(s)
        pipe.normalise(pipe.process(read_experiment(dirs[i])), i)
    state = pipe.to_dict()
    return sum(pool.map(_lisentry_chunk, [(c, state) for c in _chunks(dirs, workers)]))


def bare_parallel(pool: ProcessPoolExecutor, dirs: list[Path], workers: int) -> int:
    return sum(pool.map(_bare_chunk, _chunks(dirs, workers)))


def timed(fn, *args) -> tuple[float, int]:
    t = time.perf_counter()
    n = fn(*args)
    return time.perf_counter() - t, n


# ----------------------------------------------------------------------------- report
def table(rows: list[tuple], headers: tuple) -> str:
    cells = [tuple(str(c) for c in r) for r in [headers, *rows]]
    w = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r))
             for r in cells]
    lines.insert(1, "  ".join("-" * x for x in w))
    return "\n".join(lines)


def machine() -> str:
    import platform
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores "
            f"(load {load:.1f}), python {platform.python_version()}, numpy {np.__version__}")


def profile_lisentry(nmr_dir: Path, top: int = 25) -> str:
    pr = cProfile.Profile()
    pr.enable()
    lisentry_run(nmr_dir)
    pr.disable()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(top)
    return s.getvalue()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1000, help="frames in the series (default 1000)")
    ap.add_argument("--td", type=int, default=16384, help="TD (real+imag values, default 16384)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats per measurement (median)")
    ap.add_argument("--workers", type=int, default=2, help="processes for (c); 0 skips (c)")
    ap.add_argument("--dir", type=Path, default=None,
                    help="write/reuse the series here (default: a temp dir, removed after)")
    ap.add_argument("--existing", type=Path, default=None,
                    help="time an existing series instead (read only, nothing written), "
                         "e.g. ../shared/real/li_li_tegdme_operando/nmr")
    ap.add_argument("--acqus-template", type=Path, default=None,
                    help="a genuine TopSpin acqus to start the written ones from")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of one lisentry pass")
    a = ap.parse_args(argv)

    tmp = None
    if a.existing is not None:
        root = a.existing
        a.frames = len(expdirs(root))
    elif a.dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="lisentry-bench-read-"))
        root = tmp / "nmr"
    else:
        root = a.dir
    try:
        if a.existing is None and (not root.is_dir() or len(expdirs(root)) != a.frames):
            if root.is_dir():
                shutil.rmtree(root)
            t = time.perf_counter()
            tpl = a.acqus_template.read_text(encoding="latin-1") if a.acqus_template else None
            write_series(root, a.frames, a.td, acqus_template=tpl)
            print(f"wrote {a.frames} frames (TD={a.td}, int32, DECIM 2/DSPFVS 10) to {root} "
                  f"in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        dirs = expdirs(root)
        bare_frames(dirs[:20])                         # warm imports and page cache
        lisentry_run(root)
        res: dict[str, list[float]] = {"bare": [], "lisentry": [], "bare_par": [], "lis_par": []}
        pool = None
        if a.workers > 1:
            import multiprocessing as mp
            pool = ProcessPoolExecutor(max_workers=a.workers, mp_context=mp.get_context("spawn"))
            bare_parallel(pool, dirs[:4 * a.workers], a.workers)   # start the workers
            lisentry_parallel(pool, dirs[:4 * a.workers], a.workers)
        for r in range(a.repeats):
            dt, n = timed(bare_frames, dirs)
            res["bare"].append(n / dt)
            dt, n = timed(lisentry_run, root)
            res["lisentry"].append(n / dt)
            if pool is not None:
                dt, n = timed(bare_parallel, pool, dirs, a.workers)
                res["bare_par"].append(n / dt)
                dt, n = timed(lisentry_parallel, pool, dirs, a.workers)
                res["lis_par"].append(n / dt)
            print(f"repeat {r + 1}/{a.repeats}: " + ", ".join(
                f"{k} {v[-1]:.0f} fr/s" for k, v in res.items() if v), file=sys.stderr)
        if pool is not None:
            pool.shutdown()
        if a.profile:
            print(profile_lisentry(root))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in res.items() if v}
    ratio = med["lisentry"] / med["bare"]
    rows = [("(a) bare nmrglue read+FFT+dig.filter, 1 proc", f"{med['bare']:.0f}",
             f"{1e3 / med['bare']:.2f}", "1.00", ""),
            ("(b) lisentry load_run, 1 proc", f"{med['lisentry']:.0f}", f"{1e3 / med['lisentry']:.2f}",
             f"{ratio:.2f}", f">= {TARGET_RATIO} " + ("PASS" if ratio >= TARGET_RATIO else "FAIL"))]
    if "lis_par" in med:
        rows += [(f"(c) bare nmrglue, {a.workers} procs", f"{med['bare_par']:.0f}",
                  f"{1e3 / med['bare_par']:.2f}", f"{med['bare_par'] / med['bare']:.2f}", ""),
                 (f"(c) lisentry read+process, {a.workers} procs", f"{med['lis_par']:.0f}",
                  f"{1e3 / med['lis_par']:.2f}", f"{med['lis_par'] / med['bare']:.2f}",
                  f"{med['lis_par'] / med['bare_par']:.2f}x bare {a.workers} procs")]
    what = f"{root} ({a.frames} frames)" if a.existing else f"{a.frames} frames, TD={a.td}"
    print(f"\nbench_read: {what}, median of {a.repeats}; {machine()}")
    print(table(rows, ("path", "frames/s", "ms/frame", "x bare (a)", "target")))
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
