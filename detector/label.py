"""Archive labelling: one run (``NMR_DIR --echem LOG``) or many (run folders / a manifest CSV),
through the same pipeline and :class:`OnlineDetector` as ``watch``.

Per run the outputs are ``<out>`` (CSV or Parquet by extension, written atomically),
``<stem>.skipped.csv`` (frames that could not be read) and ``<stem>.json`` (provenance), plus
``<stem>.png`` with ``--plot`` and ``<stem>.html`` with ``--report``.
"""
from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from importlib.metadata import version
from pathlib import Path

import pandas as pd

from lisentry.datasets.cells import check_cell_kind
from lisentry.datasets.errors import ConfigError, InputError, LisentryError
from lisentry.datasets.loading import LoadOptions, check_nmr_path, load_run, pipeline_for
from lisentry.datasets.pipeline import ProcessingConfig
from lisentry.detector.online import OnlineDetector
from lisentry.detector.outputs import (output_stem, write_labels_atomic, write_provenance,
                                       write_skipped)

ECHEM_SUFFIXES = (".mpt", ".mpr", ".csv", ".txt")


def default_bundle_path() -> Path:
    """The shipped default model (``lisentry.models/default``)."""
    import lisentry.models as m
    return Path(list(m.__path__)[0]) / "default"


def load_model(model: str | Path | None):
    from lisentry.models.bundle import load_bundle
    return load_bundle(model or default_bundle_path())


def find_run_inputs(run_dir: Path) -> tuple[Path, Path | None]:
    """NMR folder and the single potentiostat log of a run folder (``RUN/nmr`` + ``RUN/echem``).

    Raises InputError when several candidate logs make the choice ambiguous.
    """
    run_dir = Path(run_dir)
    nmr = run_dir / "nmr" if (run_dir / "nmr").is_dir() else run_dir
    places = [run_dir / "echem", run_dir]
    cands = []
    for p in places:
        if p.is_dir():
            cands += sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in ECHEM_SUFFIXES
                            and not q.name.startswith(".") and not q.name.endswith(".skipped.csv"))
    if len(cands) > 1:
        mpt = [c for c in cands if c.suffix.lower() == ".mpt"]
        if len(mpt) == 1:
            return nmr, mpt[0]
        raise InputError(run_dir, f"{len(cands)} potentiostat logs found ({', '.join(c.name for c in cands[:4])}"
                                  f"{', ...' if len(cands) > 4 else ''}); pass --echem or use a manifest")
    return nmr, (cands[0] if cands else None)


@dataclass
class RunJob:
    run_id: str
    nmr_dir: Path
    out: Path
    opts: LoadOptions = field(default_factory=LoadOptions)


@dataclass
class RunOutcome:
    run_id: str
    ok: bool
    n_frames: int = 0
    n_skipped: int = 0
    out: Path | None = None
    error: str | None = None
    alarms: list = field(default_factory=list)
    seconds: float = 0.0


def label_one(job: RunJob, bundle, *, plot: bool = False, report: bool = False,
              command_line: str = "", progress: bool = False) -> RunOutcome:
    """Label one run and write its outputs. Raises LisentryError when nothing usable is left."""
    t0 = time.perf_counter()
    config = ProcessingConfig.from_dict(bundle.processing) if bundle.processing else None
    pipeline = pipeline_for(job.opts, config)
    check_nmr_path(job.nmr_dir)           # missing, or a file no reader takes: one line
    run = load_run(job.nmr_dir, job.opts, pipeline=pipeline, run_id=job.run_id)
    for note in run.meta.get("echem_notes", []):  # e.g. unreadable rows dropped from the log
        print(f"note: {job.opts.echem}: {note}", file=sys.stderr, flush=True)
    if not len(run):
        raise InputError(job.nmr_dir, f"no readable frame ({len(run.skipped)} skipped)")
    det = OnlineDetector(bundle, cell=job.opts.cell)
    rows = det.label_frames(run.frames)
    Path(job.out).parent.mkdir(parents=True, exist_ok=True)
    write_labels_atomic(job.out, rows)
    write_skipped(job.out, [(e, p, r) for e, p, r in run.skipped])
    write_provenance(job.out, {
        "model": {"path": str(bundle.path), "sha256": bundle.sha256, "card": bundle.card},
        "pipeline": pipeline.to_dict(), "horizon_s": _horizon_s(bundle.card),
        "package_version": _version(), "command_line": command_line,
        "inputs": {"nmr_dir": str(job.nmr_dir), "cell": job.opts.cell, "echem": str(job.opts.echem) if job.opts.echem else None,
                   "echem_start": job.opts.echem_start, "echem_tz": job.opts.echem_tz,
                   "clock_offset_s": job.opts.clock_offset_s,
                   "echem_notes": list(run.meta.get("echem_notes", []))},
        "run": {"run_id": run.run_id, "n_frames": len(run), "n_skipped": len(run.skipped),
                "t0": run.meta.get("t0")},
        "alarm_episodes": _episodes(rows),
    })
    labels = [r["label"] for r in rows]
    stem = output_stem(job.out)
    if plot or report:
        from lisentry.detector.plots import plot_run
        latents = {k: [float("nan") if r.get(k) is None else r[k] for r in rows] for k in
                   ("cluster_amount", "metal_amount", "ce_amount", "cluster_shift_ppm")}
        plot_run(run, Path(f"{stem}.png"), labels=labels, latents=latents,
                 title=f"{run.run_id}: predicted labels and latent estimates")
    if report:
        from lisentry.detector.report import write_report
        write_report(Path(f"{stem}.html"), run, rows, Path(f"{stem}.png"), bundle)
    return RunOutcome(run.run_id, True, len(rows), len(run.skipped), job.out,
                      alarms=_episodes(rows), seconds=time.perf_counter() - t0)


def _horizon_s(card) -> float:
    """H of the bundle, s: the card's ``horizon_s`` (or its detector section's), default 3600."""
    h = card.get("horizon_s")
    if h is None:
        h = (card.get("detector") or {}).get("horizon_s")
    return float(h) if h is not None else 3600.0


def _episodes(rows) -> list[dict]:
    """Alarm episodes of the smoothed labels: class, first frame, first timestamp, frames."""
    out, cur = [], None
    for r in rows:
        lab = r["label"] if r["label"] in ("plating_onset", "imminent_short") else None
        if lab != (cur["label"] if cur else None):
            if cur:
                out.append(cur)
            cur = ({"label": lab, "start_frame": r["frame"], "start": r["timestamp"],
                    "start_t_s": r["t_s"], "n_frames": 0} if lab else None)
        if cur:
            cur["n_frames"] += 1
    if cur:
        out.append(cur)
    return out


def _version() -> str:
    try:
        return version("lisentry")
    except Exception:  # noqa: BLE001
        return "unknown"


def read_manifest(path: Path, out_dir: Path, suffix: str, base_opts: LoadOptions) -> list[RunJob]:
    """Jobs from a manifest CSV with columns run_id, nmr_dir, echem_log, clock_offset_s and
    optionally echem_start and cell (``half``/``symmetric``; empty: the command line's)
    (relative paths are taken relative to the manifest's folder)."""
    try:
        df = pd.read_csv(path, dtype=str).fillna("")
    except Exception as exc:  # noqa: BLE001
        raise InputError(path, f"cannot read manifest CSV: {exc}") from None
    missing = {"run_id", "nmr_dir"} - set(df.columns)
    if missing:
        raise InputError(path, f"manifest lacks column(s) {sorted(missing)}; expected run_id, nmr_dir, "
                               "echem_log, clock_offset_s")
    jobs = []
    for _, row in df.iterrows():
        nmr = _rel(path, row["nmr_dir"])
        echem = _rel(path, row.get("echem_log", "")) if row.get("echem_log", "") else None
        off = float(row["clock_offset_s"]) if row.get("clock_offset_s", "") else base_opts.clock_offset_s
        try:
            cell = check_cell_kind(row.get("cell") or base_opts.cell,
                                   where=f"column 'cell' of run {row['run_id']!r}")
        except ConfigError as exc:
            raise InputError(path, str(exc)) from None
        opts = replace(base_opts, echem=echem, clock_offset_s=off,
                       echem_start=row.get("echem_start") or base_opts.echem_start, cell=cell)
        jobs.append(RunJob(row["run_id"], nmr, out_dir / f"{row['run_id']}{suffix}", opts))
    return jobs


def _rel(manifest: Path, p: str) -> Path:
    q = Path(p)
    return q if q.is_absolute() else (manifest.parent / q)


# ---- parallel over runs (spawn-safe: no fork-only code; the model loads once per worker) ----
_WORKER_BUNDLE = None
_WORKER_MODEL_PATH: str | None = None


def _init_worker(model_path: str, threads: int) -> None:
    global _WORKER_BUNDLE, _WORKER_MODEL_PATH
    import torch
    torch.set_num_threads(threads)
    _WORKER_BUNDLE = load_model(model_path)
    _WORKER_MODEL_PATH = str(model_path)


def _work(job: RunJob, plot: bool, report: bool, command_line: str,
          model_path: str | None = None) -> RunOutcome:
    try:
        if model_path is not None and (_WORKER_BUNDLE is None or _WORKER_MODEL_PATH != str(model_path)):
            _init_worker(model_path, 1)      # a worker that missed the setup loads it here
        return label_one(job, _WORKER_BUNDLE, plot=plot, report=report, command_line=command_line)
    except LisentryError as exc:
        return RunOutcome(job.run_id, False, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - one failed run never stops the archive
        return RunOutcome(job.run_id, False, error=f"{job.nmr_dir}: unexpected {type(exc).__name__}: {exc}")


def label_many(jobs: list[RunJob], model_path: str, *, workers: int = 1, plot=False, report=False,
               command_line: str = "", halt_on_error: bool = False, dask_scheduler: str | None = None,
               progress: bool = True) -> list[RunOutcome]:
    """Label several runs, in parallel over runs; failed runs are reported and the others go on."""
    from tqdm import tqdm
    outcomes: list[RunOutcome] = []
    bar = tqdm(total=len(jobs), desc="runs", file=sys.stderr, disable=not progress)
    if dask_scheduler:
        return _label_dask(jobs, model_path, dask_scheduler, plot, report, command_line, bar,
                           halt_on_error=halt_on_error)
    if workers <= 1:
        _init_worker(model_path, 1 if len(jobs) > 1 else os.cpu_count() or 1)
        for job in jobs:
            oc = _work(job, plot, report, command_line)
            outcomes.append(oc)
            bar.update(1)
            if not oc.ok:
                if len(jobs) > 1:  # said as it happens; the summary at the end says it too
                    print(f"failed: {oc.error}", file=sys.stderr)
                if halt_on_error:
                    break
        bar.close()
        return outcomes
    import multiprocessing as mp
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                             initializer=_init_worker, initargs=(model_path, 1)) as pool:
        futs = {pool.submit(_work, j, plot, report, command_line): j for j in jobs}
        for fut in as_completed(futs):
            oc = fut.result()
            outcomes.append(oc)
            bar.update(1)
            if not oc.ok:
                print(f"failed: {oc.error}", file=sys.stderr)
                if halt_on_error:
                    for f in futs:
                        f.cancel()
                    break
    bar.close()
    order = {j.run_id: i for i, j in enumerate(jobs)}
    return sorted(outcomes, key=lambda o: order.get(o.run_id, 0))


_PLUGIN_CLASS = None


def _plugin_class():
    """``_LoadModelPlugin``, a ``distributed`` WorkerPlugin, made on first use (dask is an
    optional extra) and reachable as a module attribute, so it pickles by reference."""
    global _PLUGIN_CLASS
    if _PLUGIN_CLASS is None:
        from distributed.diagnostics.plugin import WorkerPlugin

        class _LoadModelPlugin(WorkerPlugin):
            """Loads the model bundle once per worker, when the worker joins."""

            name = "lisentry-model"

            def __init__(self, model_path: str):
                self.model_path = str(model_path)

            def setup(self, worker=None):
                _init_worker(self.model_path, 1)

        _LoadModelPlugin.__module__ = __name__
        _LoadModelPlugin.__qualname__ = "_LoadModelPlugin"
        _PLUGIN_CLASS = _LoadModelPlugin
    return _PLUGIN_CLASS


def __getattr__(name: str):
    if name == "_LoadModelPlugin":
        return _plugin_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _label_dask(jobs, model_path, address, plot, report, command_line, bar,
                halt_on_error: bool = False, client=None) -> list[RunOutcome]:
    """One task per run on an existing Dask cluster (``address`` of its scheduler, or a
    ``client`` already connected). The model is loaded once per worker (a worker plugin);
    workers write the outputs themselves, so they must see the same paths as this machine."""
    try:
        from dask.distributed import Client, as_completed as dask_as_completed
    except ImportError:
        raise LisentryError("--dask-scheduler needs dask[distributed] "
                            "(pip install 'lisentry[dask]')") from None
    own = client is None
    if own:
        try:
            client = Client(address)    # waits distributed.comm.timeouts.connect (30 s)
        except Exception as exc:  # noqa: BLE001 - OSError/TimeoutError/ValueError: one line
            raise LisentryError(f"cannot connect to the Dask scheduler at {address}: "
                                f"{type(exc).__name__}: {' '.join(str(exc).split()) or 'no reply'}"
                                ) from None
    try:
        try:
            plugin = _plugin_class()(model_path)
            client.register_plugin(plugin, name=plugin.name)
        except Exception as exc:  # noqa: BLE001
            raise LisentryError(f"Dask workers cannot load the model {model_path}: "
                                f"{type(exc).__name__}: {' '.join(str(exc).split())}") from None
        futs = [client.submit(_work, j, plot, report, command_line, model_path, pure=False,
                              key=f"lisentry-label-{i}-{j.run_id}") for i, j in enumerate(jobs)]
        index = {f.key: i for i, f in enumerate(futs)}
        outcomes: list[RunOutcome | None] = [None] * len(jobs)
        for fut in dask_as_completed(futs):
            i = index[fut.key]
            try:
                oc = fut.result()
            except Exception as exc:  # noqa: BLE001 - a lost worker, a killed task...
                oc = RunOutcome(jobs[i].run_id, False,
                                error=f"{jobs[i].nmr_dir}: Dask task failed: {type(exc).__name__}: {exc}")
            outcomes[i] = oc
            bar.update(1)
            if not oc.ok:
                print(f"failed: {oc.error}", file=sys.stderr)
                if halt_on_error:
                    for f in futs:
                        f.cancel()
                    break
        bar.close()
        return [o for o in outcomes if o is not None]
    finally:
        if own:
            client.close()
