"""``lisentry datasets build | show | add-measured | simulate``."""

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer, friendly_errors, load_options, opts_types, cell_opt=str) -> None:
    ds_app = typer.Typer(no_args_is_help=True, help="Build, inspect and extend training datasets.")
    app.add_typer(ds_app, name="datasets")
    EchemOpt, EchemStartOpt, EchemTzOpt, ClockOffsetOpt, ReferencePpmOpt, SrHzOpt = opts_types

    @ds_app.command()
    @friendly_errors
    def build(config: Annotated[Path, typer.Argument(help="Dataset config YAML (e.g. configs/dataset-smoke.yaml).")],
              out: Annotated[Path, typer.Option("--out", help="Dataset folder to create.")],
              workers: Annotated[int, typer.Option("--workers", help="Processes (default: all cores).")] = 0,
              overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing folder.")] = False):
        """Simulate the config's scenario families into a dataset folder (parallel over runs)."""
        from lisentry.datasets.build import build_dataset
        ds = build_dataset(config, out, workers=workers or None, overwrite=overwrite)
        typer.echo(f"{out}: {len(ds)} runs, {ds.manifest['n_frames']} frames, "
                   f"hash {ds.manifest['content_hash'][:12]}")

    @ds_app.command()
    @friendly_errors
    def show(dataset: Annotated[Path, typer.Argument(help="Dataset folder.")],
             figures: Annotated[Optional[Path], typer.Option("--figures", help="Write one example figure per family into this folder.")] = None):
        """Class balance per family, sizes, processing; optional example figures."""
        from lisentry.datasets.store import Dataset
        ds = Dataset(dataset)
        m = ds.manifest
        g = m["ppm_grid"]
        typer.echo(f"{dataset}: {len(ds)} runs, {m['n_frames']} frames; grid {g['min']:g}..{g['max']:g} ppm "
                   f"({g['n']} points); package {m.get('package_version')}; hash {m['content_hash'][:12]}")
        typer.echo(f"normalisation: {m.get('normalisation')}")
        env = m.get("environment")
        if env:  # the bytes (and the hash) depend on these; the content sketch does not
            typer.echo(f"built with numpy {env.get('numpy')}, scipy {env.get('scipy')}, nmrglue "
                       f"{env.get('nmrglue')} on {env.get('cpu')} (numpy SIMD: "
                       f"{' '.join(env.get('numpy_simd') or []) or 'unknown'})")
        typer.echo("frames per class and family:")
        tab = ds.class_balance()
        runs = ds.runs.groupby("family").size()
        tab.insert(0, "runs", runs.reindex(tab.index).fillna(0).astype(int))
        typer.echo(tab.to_string())
        if figures:
            _figures(ds, figures)
            typer.echo(f"figures in {figures}")

    @ds_app.command("add-measured")
    @friendly_errors
    def add_measured(dataset: Annotated[Path, typer.Argument(help="Existing dataset folder.")],
                     nmr_dir: Annotated[Path, typer.Argument(help="NMR folder of the measured run.")],
                     labels: Annotated[Path, typer.Option("--labels", help="CSV with start, end, label (ISO timestamps or t_s seconds).")],
                     echem: EchemOpt = None, echem_start: EchemStartOpt = None, echem_tz: EchemTzOpt = None,
                     clock_offset_s: ClockOffsetOpt = 0.0, reference_ppm: ReferencePpmOpt = None,
                     sr_hz: SrHzOpt = None, cell: cell_opt = "half",
                     run_id: Annotated[Optional[str], typer.Option("--run-id", help="Name of the run in the dataset.")] = None,
                     family: Annotated[str, typer.Option("--family", help="Family name to file it under.")] = "measured",
                     split: Annotated[str, typer.Option("--split", help="Fixed split: test, val or train.")] = "test"):
        """Add a real run, labelled by time intervals, to a dataset."""
        from lisentry.datasets.build import add_measured as _add
        opts = load_options(echem, echem_start, echem_tz, clock_offset_s, reference_ppm, sr_hz,
                            cell=cell)
        ds = _add(dataset, nmr_dir, labels, opts, run_id=run_id, family=family, split=split)
        r = ds.runs.iloc[-1]
        fr = ds.run(r["run_id"]).frames
        n_lab = int((fr["label"] != "").sum())
        typer.echo(f"added {r['run_id']}: {r['n_frames']} frames ({n_lab} labelled) to {dataset}")

    @ds_app.command()
    @friendly_errors
    def simulate(family: Annotated[str, typer.Argument(help="Scenario family (see `lisentry datasets families`).")],
                 out: Annotated[Path, typer.Argument(help="Run folder to write (nmr/ + echem/).")],
                 seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
                 defaults: Annotated[bool, typer.Option("--defaults", help="Use the paper defaults (no domain randomization).")] = False,
                 layout: Annotated[str, typer.Option(help="series (experiment folders) or ser (pseudo-2D).")] = "series",
                 max_frames: Annotated[Optional[int], typer.Option(help="Cap the number of frames.")] = None,
                 force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists and is not empty.")] = False):
        """Write a simulated run as a spectrometer and potentiostat would (Bruker + EC-Lab .mpt)."""
        import os
        import shutil
        from lisentry.datasets.errors import ConfigError
        from lisentry.datasets.sim.run import LAYOUTS, simulate_run, write_run
        if layout not in LAYOUTS:
            raise ConfigError(f"--layout must be one of {', '.join(LAYOUTS)}. Got {layout!r}.")
        if max_frames is not None and max_frames < 1:
            raise ConfigError(f"--max-frames must be >= 1. Got {max_frames}.")
        if out.exists() and not out.is_dir():
            raise ConfigError(f"{out}: exists and is not a folder")
        if out.is_dir() and any(out.iterdir()) and not force:
            raise ConfigError(f"{out}: folder exists and is not empty (writing into it would mix "
                              "two runs); choose a new folder or give --force to replace it")
        sim = simulate_run(family, seed, randomize=not defaults, max_frames=max_frames)
        # written beside OUT, then put in its place: an existing folder is replaced whole
        tmp = out.with_name(f".{out.name}.simulating")
        if tmp.exists():
            shutil.rmtree(tmp)
        try:
            nmr, mpt = write_run(sim, tmp, layout=layout)
            if out.exists():
                shutil.rmtree(out)
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        nmr, mpt = out / nmr.relative_to(tmp), out / mpt.relative_to(tmp)
        ev = []
        if sim.t_onset_s is not None:
            ev.append(f"plating onset at {sim.t_onset_s / 3600:.2f} h")
        if sim.t_short_s is not None:
            ev.append(f"short at {sim.t_short_s / 3600:.2f} h")
        typer.echo(f"{out}: {len(sim.raws)} frames in {nmr}, log {mpt}; {', '.join(ev) or 'no event'}")

    @ds_app.command()
    def families():
        """List the scenario families."""
        from lisentry.datasets.sim.scenarios import FAMILIES
        for name in FAMILIES:
            fam = FAMILIES[name]
            typer.echo(f"{name:28s} short precursors: {'yes' if fam.has_short_precursors else 'no '}  "
                       f"{fam.description[:70]}")


def _figures(ds, folder: Path) -> None:
    import numpy as np
    from lisentry.datasets.frame import AcquisitionParams, Frame, Run
    from lisentry.detector.plots import plot_run
    from datetime import datetime, timedelta, timezone
    folder.mkdir(parents=True, exist_ok=True)
    acq = AcquisitionParams("7Li", 0, 0, 0, 1, 2)
    for fam, grp in ds.runs.groupby("family"):
        v = ds.run(grp["run_id"].iloc[0])
        t0 = datetime(2000, 1, 1, tzinfo=timezone.utc)
        frames = [Frame(v.run_id, i, int(r.expno), t0, t0, float(r.t_s), "7Li", 0.0, ds.ppm_grid,
                        np.asarray(v.spectra[i]), acq, potential_V=float(r.potential_V))
                  for i, r in enumerate(v.frames.itertuples())]
        plot_run(Run(v.run_id, frames), folder / f"{fam}.png", labels=list(v.frames["label"]),
                 title=f"{fam}: {v.run_id} (true labels)")
