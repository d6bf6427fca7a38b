"""The ``lisentry`` command line (one Typer app; sub-commands live in their packages).

Bad input never produces a traceback: :class:`~lisentry.datasets.errors.LisentryError` s are
printed as one line on stderr and the command exits non-zero only when nothing usable is left.
Logs and progress go to stderr, data to stdout and files.
"""
from __future__ import annotations

import functools
import math
import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from lisentry.datasets.errors import LisentryError

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Watch and label operando 7Li NMR runs of lithium batteries.")


def _err(msg: str) -> None:
    typer.echo(msg, err=True)


def friendly_errors(fn):
    """Turn LisentryError (and file-system errors on user paths) into a one-line message."""
    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except LisentryError as exc:
            _err(f"error: {exc}")
            raise typer.Exit(2)
        except (FileNotFoundError, NotADirectoryError, PermissionError, IsADirectoryError) as exc:
            _err(f"error: {exc.filename or ''}: {exc.strerror}")
            raise typer.Exit(2)
        except KeyboardInterrupt:
            _err("interrupted")
            raise typer.Exit(130)
    return wrapper


# ---- options shared by every command that reads a run (interfaces.md "Command line") ----
NmrDir = Annotated[Path, typer.Argument(help="Folder of numbered Bruker experiments (or a pseudo-2D ser), "
                                             "or a run folder containing nmr/.")]
EchemOpt = Annotated[Optional[Path], typer.Option("--echem", help="Potentiostat log (.mpt, .mpr, EC-Lab text export, CSV).")]
EchemStartOpt = Annotated[Optional[str], typer.Option("--echem-start", help="Absolute start of a log that has none (ISO 8601).")]
EchemTzOpt = Annotated[Optional[str], typer.Option("--echem-tz", help="Time zone of the log's local times (IANA name); default: this machine's.")]
ClockOffsetOpt = Annotated[float, typer.Option("--clock-offset-s", help="Potentiostat clock minus spectrometer clock, seconds.")]
ReferencePpmOpt = Annotated[Optional[float], typer.Option("--reference-ppm", help="Shift the axis so the tallest peak near this value sits on it (runs without procs).")]
SrHzOpt = Annotated[Optional[float], typer.Option("--sr-hz", help="Spectrum reference SR in Hz (runs without processed data).")]
CellOpt = Annotated[str, typer.Option("--cell", help="half (a working electrode against a counter) or symmetric (Li | Li: the potential's sign says which foil plates, not whether Li plates; needs a model trained sign-free).")]
ProcessedOpt = Annotated[bool, typer.Option("--processed/--raw", help="Use TopSpin's processed pdata/1/1r instead of the raw fid.")]


def load_options(echem, echem_start, echem_tz, clock_offset_s, reference_ppm, sr_hz, processed=False,
                 cell="half"):
    from lisentry.datasets.loading import LoadOptions
    return LoadOptions(echem=echem, echem_start=echem_start, echem_tz=echem_tz,
                       clock_offset_s=clock_offset_s, reference_ppm=reference_ppm, sr_hz=sr_hz,
                       use_processed=processed, cell=cell)


@app.command()
@friendly_errors
def inspect(nmr_dir: NmrDir, echem: EchemOpt = None, echem_start: EchemStartOpt = None,
            echem_tz: EchemTzOpt = None, clock_offset_s: ClockOffsetOpt = 0.0,
            reference_ppm: ReferencePpmOpt = None, sr_hz: SrHzOpt = None,
            processed: ProcessedOpt = False):
    """Summarise a run: frames, time span, nucleus, field, potential range, problems."""
    from lisentry.datasets.io import bruker, nmr
    from lisentry.datasets.loading import load_run
    opts = load_options(echem, echem_start, echem_tz, clock_offset_s, reference_ppm, sr_hz, processed)
    _require_dir(nmr_dir)
    source = nmr.detect_format(nmr_dir)
    listing = bruker.scan_series(nmr_dir) if source.format.startswith("bruker") else None
    run = load_run(nmr_dir, opts)
    n_folders = source.n_sources
    typer.echo(f"run: {run.run_id}  ({nmr_dir})")
    typer.echo(f"{n_folders} folders, {len(run)} frames read, {len(run.skipped)} skipped")
    if len(run):
        f0, f1 = run.frames[0], run.frames[-1]
        span_h = (f1.acq_end - f0.acq_start).total_seconds() / 3600
        typer.echo(f"time span: {f0.acq_start.isoformat()} .. {f1.acq_end.isoformat()} ({span_h:.2f} h)")
        typer.echo(f"nucleus: {f0.nucleus}  SFO1 {f0.sfo1_MHz:.4f} MHz  "
                   f"(1H {_proton_MHz(f0.nucleus, f0.sfo1_MHz):.0f} MHz magnet)")
        typer.echo(f"acquisition: NS {f0.acq.ns}, TD {f0.acq.td}, SW {f0.acq.sw_Hz/1e3:.1f} kHz, "
                   f"frame period {_median_period_min(run):.1f} min")
        pots = [f.potential_V for f in run.frames if math.isfinite(f.potential_V)]
        if pots:
            typer.echo(f"potential: {min(pots):.4f} .. {max(pots):.4f} V over {len(pots)} frames")
        else:
            typer.echo("potential: none (spectra only)" if echem is None else
                       "potential: the log does not cover any frame (check --echem-start / --clock-offset-s)")
        statuses = {}
        for f in run.frames:
            if f.status != "ok":
                statuses[f.status] = statuses.get(f.status, 0) + 1
        for s, n in sorted(statuses.items()):
            typer.echo(f"degraded frames: {n} with status {s}")
    for note in list(getattr(listing, "notes", [])) + run.meta.get("echem_notes", []):
        typer.echo(f"problem: {note}")
    for expno, path, reason in run.skipped:
        typer.echo(f"skipped frame {expno if expno >= 0 else '(no number)'}: {path}: {reason}")
    if not len(run):
        raise typer.Exit(1)


def _require_dir(path: Path) -> None:
    """A missing NMR_DIR (or a file no reader takes): one line. A JCAMP-DX file is accepted."""
    from lisentry.datasets.loading import check_nmr_path
    check_nmr_path(path)


def _median_period_min(run) -> float:
    import numpy as np
    t = run.t_s()
    return float(np.median(np.diff(t)) / 60) if len(t) > 1 else float("nan")


_GAMMA_RATIO = {"7Li": 0.388638, "6Li": 0.147161, "1H": 1.0, "23Na": 0.264518, "19F": 0.940940}


def _proton_MHz(nucleus: str, sfo1_MHz: float) -> float:
    return sfo1_MHz / _GAMMA_RATIO.get(nucleus, float("nan"))


@app.command()
@friendly_errors
def plot(nmr_dir: NmrDir,
         out: Annotated[Path, typer.Option("-o", "--out", help="Figure file (.png, .pdf, .svg).")],
         echem: EchemOpt = None, echem_start: EchemStartOpt = None, echem_tz: EchemTzOpt = None,
         clock_offset_s: ClockOffsetOpt = 0.0, reference_ppm: ReferencePpmOpt = None,
         sr_hz: SrHzOpt = None, processed: ProcessedOpt = False,
         ppm_min: Annotated[float, typer.Option(help="Lower end of the heat map, ppm.")] = 0.0,
         ppm_max: Annotated[float, typer.Option(help="Upper end of the heat map, ppm.")] = 300.0):
    """Draw the operando figure: spectra as a ppm-vs-time heat map beside the potential."""
    from lisentry.datasets.loading import load_run
    from lisentry.detector.plots import plot_run
    from lisentry.datasets.io import nmr
    from lisentry.datasets.errors import ConfigError
    from lisentry.datasets.loading import pipeline_for
    from lisentry.detector.plots import FIGURE_FORMATS
    opts = load_options(echem, echem_start, echem_tz, clock_offset_s, reference_ppm, sr_hz, processed)
    if out.suffix.lower().lstrip(".") not in FIGURE_FORMATS:
        raise ConfigError(f"{out}: unknown figure format {out.suffix or '(no extension)'!r}; "
                          "use .png, .pdf or .svg")
    if not (math.isfinite(ppm_min) and math.isfinite(ppm_max) and ppm_min < ppm_max):
        raise ConfigError(f"--ppm-min must be below --ppm-max (finite). Got {ppm_min:g} and {ppm_max:g}.")
    grid = pipeline_for(opts).ppm_grid
    if ppm_max <= grid[0] or ppm_min >= grid[-1]:
        raise ConfigError(f"--ppm-min/--ppm-max {ppm_min:g}..{ppm_max:g} ppm lie outside the "
                          f"spectra's ppm grid ({grid[0]:g}..{grid[-1]:g} ppm)")
    _require_dir(nmr_dir)  # a missing folder: one line, not two
    run = load_run(nmr_dir, opts)
    if not len(run):
        _err(f"error: {nmr_dir}: no readable frame")
        raise typer.Exit(1)
    plot_run(run, out, ppm_range=(ppm_min, ppm_max))
    _err(f"wrote {out} ({len(run)} frames, {len(run.skipped)} skipped)")


@app.command()
@friendly_errors
def label(runs: Annotated[Optional[List[Path]], typer.Argument(help="NMR_DIR of one run, or several run folders (RUN/nmr + RUN/echem).")] = None,
          out: Annotated[Path, typer.Option("--out", help="Labels file (.csv or .parquet) for one run; a folder for several.")] = Path("labels.csv"),
          echem: EchemOpt = None, echem_start: EchemStartOpt = None, echem_tz: EchemTzOpt = None,
          clock_offset_s: ClockOffsetOpt = 0.0, reference_ppm: ReferencePpmOpt = None,
          sr_hz: SrHzOpt = None, processed: ProcessedOpt = False, cell: CellOpt = "half",
          model: Annotated[Optional[str], typer.Option("--model", help="Bundle folder or models:/NAME@ALIAS (default: the shipped model).")] = None,
          manifest: Annotated[Optional[Path], typer.Option("--manifest", help="CSV with run_id, nmr_dir, echem_log, clock_offset_s (optional: echem_start, cell).")] = None,
          format_: Annotated[str, typer.Option("--format", help="Output format for several runs: csv or parquet.")] = "csv",
          workers: Annotated[int, typer.Option("--workers", help="Parallel processes over runs.")] = 1,
          plot: Annotated[bool, typer.Option("--plot", help="Also write <stem>.png: the operando figure with the label band.")] = False,
          report: Annotated[bool, typer.Option("--report", help="Also write <stem>.html with the figure and the alarm timeline.")] = False,
          halt_on_error: Annotated[bool, typer.Option("--halt-on-error", help="Stop at the first failed run.")] = False,
          dask_scheduler: Annotated[Optional[str], typer.Option("--dask-scheduler", help="Address of an existing Dask scheduler: one task per run.")] = None):
    """Label every frame of one run or of an archive of runs."""
    from lisentry.detector.label import (RunJob, find_run_inputs, label_many, load_model,
                                         read_manifest, default_bundle_path)
    opts = load_options(echem, echem_start, echem_tz, clock_offset_s, reference_ppm, sr_hz, processed,
                        cell)
    command_line = " ".join(sys.argv)
    runs = list(runs or [])
    if manifest is None and not runs:
        _err("error: give NMR_DIR, run folders, or --manifest runs.csv")
        raise typer.Exit(2)
    suffix = "." + format_.lower().lstrip(".")
    if suffix not in (".csv", ".parquet"):
        _err(f"error: --format must be csv or parquet, got {format_!r}")
        raise typer.Exit(2)
    single = manifest is None and len(runs) == 1
    if single:
        if out.suffix.lower() not in (".csv", ".parquet", ".pq"):
            _err(f"error: {out}: --out must end in .csv or .parquet for one run")
            raise typer.Exit(2)
        nmr_dir = runs[0]
        if echem is None and (nmr_dir / "nmr").is_dir():
            nmr_dir, found = find_run_inputs(nmr_dir)
            opts.echem = found
        from lisentry.datasets.loading import _run_id
        jobs = [RunJob(_run_id(Path(nmr_dir)), Path(nmr_dir), out, opts)]
    else:
        out.mkdir(parents=True, exist_ok=True)
        jobs = read_manifest(manifest, out, suffix, opts) if manifest else []
        from dataclasses import replace
        from lisentry.datasets.loading import _run_id
        for r in runs:
            nmr_dir, found = find_run_inputs(r)
            rid = _run_id(Path(r))        # RUN/nmr is run RUN, not "nmr"
            jobs.append(RunJob(rid, nmr_dir, out / f"{rid}{suffix}", replace(opts, echem=found)))
        seen: dict = {}
        for j in jobs:  # two runs with one name would overwrite each other's labels
            if j.run_id in seen:
                _err(f"error: runs {seen[j.run_id]} and {j.nmr_dir} would both write "
                     f"{j.out}: give run folders with distinct names")
                raise typer.Exit(2)
            seen[j.run_id] = j.nmr_dir
    model_path = str(model or default_bundle_path())
    bundle = load_model(model_path)  # fail early, with one line, on a bad bundle
    from lisentry.detector.online import OnlineDetector
    for c in sorted({j.opts.cell for j in jobs}):
        OnlineDetector(bundle, cell=c)  # --cell symmetric with a model that reads it signed: one line
    outcomes = label_many(jobs, model_path, workers=workers, plot=plot, report=report,
                          command_line=command_line, halt_on_error=halt_on_error,
                          dask_scheduler=dask_scheduler, progress=not single)
    ok = [o for o in outcomes if o.ok]
    for o in outcomes:
        if o.ok:
            alarms = ", ".join(f"{a['label']} from frame {a['start_frame']} ({a['start']})"
                               for a in o.alarms) or "no alarm"
            _err(f"{o.run_id}: {o.n_frames} frames labelled, {o.n_skipped} skipped -> {o.out}; {alarms}")
        else:
            _err(f"{o.run_id}: FAILED: {o.error}")
    if not single:
        _err(f"{len(ok)} of {len(outcomes)} runs labelled")
    if not ok:
        raise typer.Exit(1)


@app.command()
@friendly_errors
def watch(nmr_dir: NmrDir,
          events: Annotated[Path, typer.Option("--events", help="Append-only JSON-lines events file.")],
          echem: EchemOpt = None, echem_start: EchemStartOpt = None, echem_tz: EchemTzOpt = None,
          clock_offset_s: ClockOffsetOpt = 0.0, reference_ppm: ReferencePpmOpt = None,
          sr_hz: SrHzOpt = None, cell: CellOpt = "half",
          model: Annotated[Optional[str], typer.Option("--model", help="Bundle folder or models:/NAME@ALIAS (default: the shipped model).")] = None,
          state: Annotated[Optional[Path], typer.Option("--state", help="State file for restarts (default: <events>.state.json).")] = None,
          on_alarm: Annotated[Optional[str], typer.Option("--on-alarm", help="Command run on entering plating_onset or imminent_short (event JSON in $LISENTRY_EVENT and on stdin).")] = None,
          post: Annotated[Optional[str], typer.Option("--post", help="URL that receives the alarm event as an HTTP POST (JSON).")] = None,
          poll_s: Annotated[float, typer.Option("--poll-s", help="Polling interval, s.")] = 1.0,
          until_idle: Annotated[Optional[float], typer.Option("--until-idle", help="Exit after this many seconds without a new frame.")] = None,
          fs_events: Annotated[str, typer.Option("--fs-events", help="File-system events (watchdog) wake the polling early: auto (when installed), on, off. Polling always runs.")] = "auto"):
    """Follow a live run: one JSON line per completed frame, alarms, restart-safe."""
    from lisentry.detector.actions import AlarmAction
    from lisentry.detector.label import load_model
    from lisentry.detector.watch import WatchConfig, Watcher
    from lisentry.detector.fswake import FS_EVENT_MODES
    if fs_events.lower() not in FS_EVENT_MODES:
        _err(f"error: --fs-events must be one of {', '.join(FS_EVENT_MODES)}, got {fs_events!r}")
        raise typer.Exit(2)
    opts = load_options(echem, echem_start, echem_tz, clock_offset_s, reference_ppm, sr_hz, False,
                        cell)
    bundle = load_model(model)
    action = AlarmAction(command=on_alarm, post_url=post) if (on_alarm or post) else None
    w = Watcher(nmr_dir, opts, bundle, events, state, action,
                WatchConfig(poll_s=poll_s, until_idle_s=until_idle, fs_events=fs_events.lower()))
    n = w.run()
    _err(f"watch stopped: {n} frames handled this session; events in {events}")


@app.command()
@friendly_errors
def demo(workdir: Annotated[Optional[Path], typer.Option("--workdir", help="Folder for the run and outputs (default: a new temporary folder).")] = None,
         seed: Annotated[int, typer.Option(help="Random seed of the simulated run.")] = 0,
         frame_interval_s: Annotated[float, typer.Option("--frame-interval-s", help="Wall-clock seconds per replayed frame.")] = 0.15,
         model: Annotated[Optional[str], typer.Option("--model", help="Bundle (default: the shipped model).")] = None):
    """Simulate an overlithiation run, watch it live, label it, write a figure and a report."""
    from lisentry.detector.demo import run_demo
    run_demo(workdir, seed=seed, frame_interval_s=frame_interval_s, model=model)


def _register_subcommands() -> None:
    from lisentry.training.cli import register as register_training
    register_training(app, friendly_errors)
    from lisentry.datasets.cli import register as register_datasets
    register_datasets(app, friendly_errors, load_options,
                      (EchemOpt, EchemStartOpt, EchemTzOpt, ClockOffsetOpt, ReferencePpmOpt, SrHzOpt),
                      CellOpt)


_register_subcommands()


def main():  # pragma: no cover - console entry for `python -m lisentry.detector.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
