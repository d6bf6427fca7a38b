"""Dataset build benchmark: ``lisentry.datasets.build.build_dataset`` on ~100 simulated runs.

Writes a temporary YAML config (every scenario family, ``--runs-per-family`` runs each,
``--max-frames`` frames per run at most) and builds it with ``--workers`` processes (default 2)
and, as the baseline measured in the same run, with 1 process. Reports frames/s (target:
>= 200 frames/s with 2 workers on 2 cores), the peak resident memory of the parent and of the
worker processes (``resource.getrusage``), a per-stage breakdown of one process
(``simulate_run`` / ``to_run`` = reader-equivalent processing / store write), and checks that
the store reads lazily: ``Dataset(...).spectra`` is an ``np.memmap`` and one run's spectra are
a view of exactly that run's rows of the file.

Usage::

    python benchmarks/bench_build.py [--runs-per-family 11] [--max-frames 40] [--workers 2]
                                     [--repeats 1] [--out DIR]
    # the issue's figure: the whole default dataset (>= 2,000 runs), 2 workers only
    python benchmarks/bench_build.py --config configs/dataset-default.yaml --no-baseline \
                                     --out data/default
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from numpy.lib.array_utils import byte_bounds
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_read import table  # noqa: E402  (one report format for all benchmarks)

TARGET_FPS = 200.0


def write_config(path: Path, runs_per_family: int, max_frames: int | None, seed: int = 0) -> int:
    from lisentry.datasets.sim.scenarios import FAMILIES
    fams = {name: runs_per_family for name in sorted(FAMILIES)}
    path.write_text(yaml.safe_dump({
        "name": "bench", "seed": seed, "horizon_s": 3600, "randomize": True,
        "max_frames": max_frames, "processing": {}, "families": fams}))
    return runs_per_family * len(fams)


def maxrss_mib(who: int) -> float:
    """Peak resident set size in MiB (Linux reports KiB)."""
    return resource.getrusage(who).ru_maxrss / 1024.0


def timed_build(config: Path, out: Path, workers: int) -> tuple[float, int]:
    from lisentry.datasets.build import build_dataset
    if out.exists():
        shutil.rmtree(out)
    t = time.perf_counter()
    ds = build_dataset(config, out, workers=workers, overwrite=True, progress=False)
    dt = time.perf_counter() - t
    return dt, int(ds.manifest["n_frames"])


def stage_breakdown(config: Path, n_runs: int) -> dict[str, float]:
    """Seconds per frame of each stage, in this process, over the first ``n_runs`` jobs."""
    from lisentry.datasets.build import _family_obj, load_build_config, run_seed
    from lisentry.datasets.pipeline import Pipeline, ProcessingConfig
    from lisentry.datasets.sim.run import simulate_run, to_run
    from lisentry.datasets.store import DatasetWriter
    cfg = load_build_config(config)
    names = [n for n in cfg.families for _ in range(1)][:n_runs]
    t_sim = t_proc = t_store = 0.0
    n = 0
    with tempfile.TemporaryDirectory() as tmp:
        pipe0 = Pipeline(ProcessingConfig.from_dict(cfg.processing))
        writer = DatasetWriter(Path(tmp) / "ds", ppm_grid=pipe0.ppm_grid,
                               processing=pipe0.config.to_dict(), overwrite=True)
        for i, name in enumerate(names):
            seed = run_seed(cfg.seed, name, 0)
            t = time.perf_counter()
            sim = simulate_run(_family_obj(name, cfg.family_files), seed, randomize=cfg.randomize,
                               horizon_s=cfg.horizon_s, max_frames=cfg.max_frames)
            t_sim += time.perf_counter() - t
            t = time.perf_counter()
            run = to_run(sim, Pipeline(ProcessingConfig.from_dict(cfg.processing)))
            t_proc += time.perf_counter() - t
            t = time.perf_counter()
            writer.add_run(run, family=name, info=sim.info)
            t_store += time.perf_counter() - t
            n += len(run)
        t = time.perf_counter()
        writer.close()
        t_store += time.perf_counter() - t
    return {"simulate_run": t_sim / n, "to_run (pipeline)": t_proc / n, "store": t_store / n,
            "frames": n}


def lazy_check(out: Path) -> dict:
    """Is the store memory-mapped, and does one run's view cover only its own rows?"""
    from lisentry.datasets.store import Dataset
    ds = Dataset(out)
    rid = ds.run_ids[len(ds.run_ids) // 2]
    row = ds.runs.loc[ds.runs["run_id"] == rid].iloc[0]
    view = ds.run(rid)
    lo_all, hi_all = byte_bounds(ds.spectra)
    lo, hi = byte_bounds(view.spectra)
    row_bytes = ds.spectra.shape[1] * 4
    expect_lo = int(row["offset"]) * row_bytes
    expect_n = int(row["n_frames"]) * row_bytes
    first = float(np.asarray(view.spectra[0, 500]))     # touches one page of the file
    return {"memmap": isinstance(ds.spectra, np.memmap),
            "view_memmap": isinstance(view.spectra, np.memmap),
            "rows_only": (lo - lo_all == expect_lo) and (hi - lo == expect_n),
            "run_bytes": hi - lo, "file_bytes": hi_all - lo_all, "value": first}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-per-family", type=int, default=11,
                    help="runs of each built-in family (default 11)")
    ap.add_argument("--max-frames", type=int, default=40,
                    help="frames per run at most (default 40; 0 = whole protocols)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="builds per setting (median)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the 1-process build")
    ap.add_argument("--out", type=Path, default=None, help="keep the dataset here")
    ap.add_argument("--config", type=Path, default=None,
                    help="build this dataset config (e.g. configs/dataset-default.yaml) instead "
                         "of the generated one; --runs-per-family/--max-frames are then ignored")
    a = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="lisentry-bench-build-"))
    try:
        if a.config:
            config = a.config
            fams = (yaml.safe_load(config.read_text()) or {}).get("families") or {}
            n_runs = int(sum(fams.values())) if isinstance(fams, dict) else len(fams)
        else:
            config = tmp / "bench.yaml"
            n_runs = write_config(config, a.runs_per_family, a.max_frames or None)
        out = a.out or tmp / "ds"
        fps: dict[int, list[float]] = {}
        settings = [a.workers] + ([] if a.no_baseline or a.workers == 1 else [1])
        n_frames = 0
        for r in range(a.repeats):
            for w in settings:
                dt, n_frames = timed_build(config, out if w == a.workers else tmp / "ds1", w)
                fps.setdefault(w, []).append(n_frames / dt)
                print(f"build {r + 1}/{a.repeats}, {w} worker(s): {n_frames} frames in "
                      f"{dt:.1f} s = {n_frames / dt:.0f} frames/s", file=sys.stderr)
        rss_parent = maxrss_mib(resource.RUSAGE_SELF)
        rss_child = maxrss_mib(resource.RUSAGE_CHILDREN)
        lazy = lazy_check(out)
        stages = stage_breakdown(config, 9)
    finally:
        if a.out is None:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(tmp / "ds1", ignore_errors=True)

    med = {w: statistics.median(v) for w, v in fps.items()}
    main_fps = med[a.workers]
    what = (f"{config}" if a.config else
            f"{a.runs_per_family} per family, max_frames={a.max_frames or 'none'}")
    print(f"\nbench_build: {n_runs} runs ({what}), {n_frames} frames; {os.cpu_count()} cores "
          f"(load {os.getloadavg()[0]:.1f})")
    rows = [(f"build_dataset, {a.workers} workers", f"{main_fps:.0f}",
             f"{1e3 / main_fps:.2f}", f">= {TARGET_FPS:.0f} "
             + ("PASS" if main_fps >= TARGET_FPS else "FAIL"))]
    if 1 in med and a.workers != 1:
        rows.append(("build_dataset, 1 worker (baseline)", f"{med[1]:.0f}", f"{1e3 / med[1]:.2f}",
                     f"speed-up {main_fps / med[1]:.2f}x"))
    print(table(rows, ("setting", "frames/s", "ms/frame", "target")))
    print()
    srows = [(k, f"{1e3 * v:.2f}") for k, v in stages.items() if k != "frames"]
    print(table(srows, (f"stage, 1 process ({stages['frames']} frames)", "ms/frame")))
    print()
    print(table([("parent (writer, store)", f"{rss_parent:.0f}"),
                 ("largest worker process", f"{rss_child:.0f}")], ("peak RSS", "MiB")))
    print()
    print(f"lazy store: Dataset.spectra is np.memmap: {lazy['memmap']}; one run's spectra is a "
          f"memmap view of only its rows: {lazy['view_memmap'] and lazy['rows_only']} "
          f"({lazy['run_bytes']} of {lazy['file_bytes']} bytes)")
    return 0 if main_fps >= TARGET_FPS and lazy["memmap"] and lazy["rows_only"] else 1


if __name__ == "__main__":
    sys.exit(main())
