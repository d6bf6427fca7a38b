"""``lisentry datasets build``: simulate scenario families into a dataset folder, in parallel
over runs, reproducibly from one YAML config; and ``add-measured`` for labelled real runs.

Config (``configs/dataset-smoke.yaml``)::

    name: smoke
    seed: 0                 # base seed; run i of family f gets a seed derived from (seed, f, i)
    horizon_s: 3600         # H of imminent_short
    randomize: true         # domain randomization (false: the papers' defaults)
    max_frames: null        # cap per run (tests)
    processing: {}          # ProcessingConfig overrides (grid, line broadening, ...)
    families:               # family -> number of runs, or {runs: N, split: test,
      hc_sulfide_overlithiation: 2    # randomize_override: {...}} (ranges for that family only)
      hc_normal_cycling: 2
    family_files: []        # extra user families (YAML files, relative to the config)
    randomize_override: {}  # parameter ranges that replace every family's own (field, SNR)
"""
from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import yaml

from lisentry.datasets.errors import ConfigError, InputError
from lisentry.datasets.fingerprint import DataSketch
from lisentry.datasets.frame import CLASSES, Run
from lisentry.datasets.pipeline import Pipeline, ProcessingConfig
from lisentry.datasets.store import (FRAMES, MANIFEST, RUNS, SPECTRA, Dataset, DatasetWriter,
                                     _write_json_atomic, frame_rows)

_KEYS = {"name", "seed", "horizon_s", "randomize", "max_frames", "processing", "families",
         "family_files", "description", "randomize_override"}


@dataclass
class BuildConfig:
    name: str
    seed: int
    horizon_s: float
    randomize: bool
    max_frames: int | None
    processing: dict
    families: dict            # name -> {"runs": n, "split": str|None, "randomize_override": dict}
    family_files: list
    raw: dict
    randomize_override: dict | None = None

    def override_for(self, family: str) -> dict:
        """The ranges that replace ``family``'s own: the config's ``randomize_override``, then
        the family entry's own ``randomize_override`` on top."""
        own = self.families.get(family, {}).get("randomize_override") or {}
        return {**(self.randomize_override or {}), **own}


def load_build_config(path: str | Path) -> BuildConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: dataset config not found")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: a dataset config is a mapping of keys (name, seed, families, ...)")
    for k in raw:
        if k not in _KEYS:
            hint = difflib.get_close_matches(str(k), sorted(_KEYS), n=1)
            raise ConfigError(f"{p}: unknown key {k!r}" + (f"; did you mean {hint[0]!r}?" if hint else ""))
    if not isinstance(raw.get("family_files", []), list):
        raise ConfigError(f"{p}: family_files must be a list of YAML files.")
    from lisentry.datasets.sim.scenarios import FAMILIES, load_family_yaml
    fam_files = [str((p.parent / f).resolve()) for f in raw.get("family_files", [])]
    user = {load_family_yaml(f).name: f for f in fam_files}
    fams = {}
    families = raw.get("families") or {}
    if not isinstance(families, dict):
        raise ConfigError(f"{p}: families must map family names to run counts. Got {_short_repr(families)}.")
    for name, spec in families.items():
        if name not in FAMILIES and name not in user:
            hint = difflib.get_close_matches(str(name), list(FAMILIES) + list(user), n=1)
            raise ConfigError(f"{p}: unknown family {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else
                                                                  f"; known: {sorted(FAMILIES)}"))
        if isinstance(spec, dict):
            spec = dict(spec)
        elif isinstance(spec, int) and not isinstance(spec, bool):
            spec = {"runs": spec}
        else:
            raise ConfigError(f"{p}: families.{name} must be a run count (int >= 0) or "
                              f"{{runs: N, split: ..., randomize_override: ...}}. Got {_short_repr(spec)}.")
        runs = spec.get("runs")
        if not isinstance(runs, int) or isinstance(runs, bool) or runs < 0:
            raise ConfigError(f"{p}: families.{name}.runs must be an int >= 0. Got {_short_repr(runs)}.")
        split = spec.get("split")
        if split is not None and (not isinstance(split, str) or not split.strip()):
            raise ConfigError(f"{p}: families.{name}.split must be a split name like 'test'. "
                              f"Got {_short_repr(split)}.")
        own = spec.get("randomize_override")
        if own is not None and not isinstance(own, dict):
            raise ConfigError(f"{p}: families.{name}.randomize_override must be a mapping of "
                              f"parameter ranges. Got {_short_repr(own)}.")
        fams[name] = {"runs": runs, "split": split, "randomize_override": dict(own or {})}
    if not fams:
        raise ConfigError(f"{p}: no families to build")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"{p}: seed must be an int >= 0. Got {_short_repr(seed)}.")
    horizon = raw.get("horizon_s", 3600.0)
    if isinstance(horizon, bool) or not isinstance(horizon, (int, float)) \
            or not math.isfinite(horizon) or horizon <= 0:
        raise ConfigError(f"{p}: horizon_s must be a number > 0 (seconds). Got {_short_repr(horizon)}.")
    randomize = raw.get("randomize", True)
    if not isinstance(randomize, bool):
        raise ConfigError(f"{p}: randomize must be true or false. Got {_short_repr(randomize)}.")
    max_frames = raw.get("max_frames")
    if max_frames is not None and (not isinstance(max_frames, int) or isinstance(max_frames, bool)
                                   or max_frames < 1):
        raise ConfigError(f"{p}: max_frames must be an int >= 1 or null (no cap). "
                          f"Got {_short_repr(max_frames)}.")
    for key in ("processing", "randomize_override"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise ConfigError(f"{p}: {key} must be a mapping. Got {_short_repr(raw[key])}.")
    name = raw.get("name", p.stem)
    if not isinstance(name, (str, int)) or isinstance(name, bool):
        raise ConfigError(f"{p}: name must be a string. Got {_short_repr(name)}.")
    ProcessingConfig.from_dict(raw.get("processing") or {})  # validates
    return BuildConfig(str(name), seed, float(horizon), randomize, max_frames,
                       dict(raw.get("processing") or {}), fams, fam_files, raw,
                       dict(raw.get("randomize_override") or {}))


def _short_repr(value, n: int = 40) -> str:
    r = repr(value)
    return r if len(r) <= n else r[:n] + "..."


def run_seed(base: int, family: str, i: int) -> int:
    """Stable seed of run ``i`` of ``family`` (independent of the order families are listed)."""
    h = hashlib.sha256(f"{base}/{family}/{i}".encode()).digest()
    return int.from_bytes(h[:4], "little")


def _family_obj(name: str, family_files: list, override: dict | None = None):
    """The family, with the config's ``randomize_override`` ranges replacing its own (e.g. a
    field or SNR range outside the training range for held-out test sets)."""
    import dataclasses
    from lisentry.datasets.sim.scenarios import FAMILIES, load_family_yaml
    fam = None
    for f in family_files:
        cand = load_family_yaml(f)
        if cand.name == name:
            fam = cand
    fam = fam or FAMILIES[name]
    if override:
        fam = dataclasses.replace(fam, randomize={**dict(fam.randomize), **override})
    return fam


def _simulate_one(args) -> tuple[Run, dict, float]:
    name, seed, cfg_processing, horizon_s, randomize, max_frames, family_files, override = args
    from lisentry.datasets.sim.run import simulate_run, to_run
    t = time.perf_counter()
    sim = simulate_run(_family_obj(name, family_files, override), seed, randomize=randomize,
                       horizon_s=horizon_s, max_frames=max_frames, run_id=f"{name}-{seed:010d}")
    run = to_run(sim, Pipeline(ProcessingConfig.from_dict(cfg_processing)))
    return run, sim.info, time.perf_counter() - t


def build_dataset(config_path: str | Path, out: str | Path, *, workers: int | None = None,
                  overwrite: bool = False, progress: bool = True) -> Dataset:
    """Build the dataset described by ``config_path`` into ``out``; returns it opened."""
    from tqdm import tqdm
    cfg = load_build_config(config_path)
    pipe = Pipeline(ProcessingConfig.from_dict(cfg.processing))
    jobs, splits = [], []
    for name, spec in cfg.families.items():
        for i in range(spec["runs"]):
            jobs.append((name, run_seed(cfg.seed, name, i), cfg.processing, cfg.horizon_s,
                         cfg.randomize, cfg.max_frames, cfg.family_files, cfg.override_for(name)))
            splits.append(spec["split"])
    writer = DatasetWriter(out, ppm_grid=pipe.ppm_grid, processing=pipe.config.to_dict(),
                           overwrite=overwrite,
                           meta={"build_config": cfg.raw, "build_config_path": str(config_path),
                                 "horizon_s": cfg.horizon_s,
                                 "seeds": {f"{j[0]}/{i}": j[1] for i, j in enumerate(jobs)}})
    workers = workers or max(1, (os.cpu_count() or 1))
    t0 = time.perf_counter()
    n_frames = 0
    bar = tqdm(total=len(jobs), desc="runs", unit="run", file=sys.stderr, disable=not progress)
    if workers == 1:
        results = map(_simulate_one, jobs)
        pool = None
    else:
        import multiprocessing as mp
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))
        results = pool.map(_simulate_one, jobs, chunksize=max(1, len(jobs) // (workers * 8)))
    try:
        for (run, info, _), split in zip(results, splits):
            writer.add_run(run, family=info["family"], split=split, info=info)
            n_frames += len(run)
            bar.update(1)
            bar.set_postfix(frames_per_s=f"{n_frames / (time.perf_counter() - t0):.0f}")
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown()
    ds = writer.close()
    dt = time.perf_counter() - t0
    print(f"built {out}: {len(jobs)} runs, {n_frames} frames in {dt:.1f} s "
          f"({n_frames / max(dt, 1e-9):.0f} frames/s, {workers} workers)", file=sys.stderr)
    return ds


# ---------------------------------------------------------------- measured runs
def _quote(text: str, n: int = 40) -> str:
    text = str(text)
    return repr(text if len(text) <= n else text[:n] + "...")


def read_intervals(path: str | Path, t0: datetime, *, tz: str | None = None,
                   t_end_s: float | None = None) -> list[tuple[float, float, str]]:
    """Label intervals ``start, end, label`` (ISO timestamps or t_s seconds) on the run clock.

    Parameters
    ----------
    path : path
        CSV with a ``start, end, label`` header (any case; ``#`` lines are comments).
    t0 : datetime
        The run clock's origin (first frame's acquisition start, aware).
    tz : str or None
        IANA zone of ISO times written without an offset (``--echem-tz``); ``None``: such
        times are refused (they would silently be read in some zone).
    t_end_s : float or None
        End of the run on its clock, s: an interval wholly outside ``[0, t_end_s]`` is refused.

    Raises
    ------
    InputError
        Unreadable file, no rows, a row with too few/many fields, unknown label, bad time,
        end not after start, overlapping intervals (naming both rows), an interval outside
        the run. One line naming the file (and row).
    """
    import csv
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise InputError(p, "intervals CSV not found") from None
    except OSError as exc:
        raise InputError(p, f"cannot read intervals CSV ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise InputError(p, "not a UTF-8 text file (intervals CSV expected)") from None
    rows = [(i + 1, r) for i, r in enumerate(csv.reader(text.splitlines()))
            if r and any(c.strip() for c in r) and not r[0].lstrip().startswith("#")]
    if not rows:
        raise InputError(p, "empty: needs a header start, end, label and at least one row")
    hline, header = rows[0]
    cols = {c.strip().lower(): k for k, c in enumerate(header)}
    if not {"start", "end", "label"} <= set(cols):
        raise InputError(p, f"needs columns start, end, label; got {_quote(','.join(header), 60)}")
    if len(rows) == 1:
        raise InputError(p, "no interval rows (only a header)")
    out, lines = [], []
    for line, row in rows[1:]:
        if len(row) != len(header):
            raise InputError(p, f"row {line}: {len(row)} fields, expected {len(header)} "
                                f"({','.join(c.strip() for c in header)}): {_quote(','.join(row), 60)}")
        lab = row[cols["label"]].strip()
        if lab not in CLASSES:
            hint = difflib.get_close_matches(lab, CLASSES, n=1)
            raise InputError(p, f"row {line}: unknown label {_quote(lab)}"
                                + (f"; did you mean {hint[0]!r}?" if hint else f"; known: {', '.join(CLASSES)}"))
        a, b = (_time_value(row[cols[k]].strip(), t0, p, line, tz) for k in ("start", "end"))
        if not b > a:
            raise InputError(p, f"row {line}: end must be after start")
        if t_end_s is not None and (b <= 0 or a >= t_end_s):
            raise InputError(p, f"row {line}: interval {a:g} .. {b:g} s lies wholly outside the run "
                                f"(0 .. {t_end_s:.0f} s from {t0.isoformat()})")
        for (a2, b2, lab2), line2 in zip(out, lines):
            if a < b2 and a2 < b:
                what = "overlap (a frame would get two classes)" if lab != lab2 else "overlap"
                raise InputError(p, f"rows {line2} and {line} {what}: {a2:g} .. {b2:g} s "
                                    f"({lab2}) and {a:g} .. {b:g} s ({lab})")
        out.append((a, b, lab))
        lines.append(line)
    return out


def _time_value(text: str, t0: datetime, p: Path, line: int, tz: str | None = None) -> float:
    try:
        v = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(v):
            raise InputError(p, f"row {line}: time {_quote(text)} is not finite")
        return v
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise InputError(p, f"row {line}: {_quote(text)} is neither seconds nor an ISO timestamp") from None
    if dt.tzinfo is None:
        if tz is None:
            raise InputError(p, f"row {line}: {_quote(text)} has no UTC offset; write one "
                                "(e.g. 2023-08-11T12:30:00+01:00) or give --echem-tz")
        from lisentry.datasets.io.potentiostat import to_utc_datetime
        dt = to_utc_datetime(dt, tz)
    return (dt - t0).total_seconds()


def add_measured(dataset_dir: str | Path, nmr_dir: str | Path, intervals: str | Path, opts,
                 *, run_id: str | None = None, family: str = "measured", split: str = "test") -> Dataset:
    """Append a real run with interval labels to an existing dataset (same processing config).

    Frames whose acquisition midpoint lies in an interval get its label; the others stay
    unlabelled (usable for evaluation of alarms or self-training only). All or nothing: the
    new tables are written under temporary names, then put in place with the manifest last
    (the manifest is the commit point: :class:`Dataset` ignores rows past its counts).
    """
    from lisentry.datasets.loading import load_run, pipeline_for
    ds = Dataset(dataset_dir)
    splits = {"train", "val", "test"} | {s for s in ds.runs["split"].astype(str) if s}
    if split not in splits:
        hint = difflib.get_close_matches(str(split), sorted(splits), n=1)
        raise ConfigError(f"--split must be one of {', '.join(sorted(splits))}. Got {split!r}."
                          + (f" Did you mean {hint[0]!r}?" if hint else ""))
    pipe = pipeline_for(opts, ProcessingConfig.from_dict(ds.manifest["processing"]))
    if not np.allclose(pipe.ppm_grid, ds.ppm_grid):
        raise ConfigError(f"{dataset_dir}: ppm grid of the dataset differs from the pipeline's")
    run = load_run(nmr_dir, opts, pipeline=pipe, run_id=run_id)
    if not len(run):
        raise InputError(nmr_dir, "no readable frame")
    if run.run_id in set(ds.run_ids):
        raise ConfigError(f"{dataset_dir}: a run {run.run_id!r} is in the dataset already (use --run-id)")
    t0 = run.frames[0].acq_start
    t_end = (run.frames[-1].acq_end - t0).total_seconds()
    ivs = read_intervals(intervals, t0, tz=getattr(opts, "echem_tz", None), t_end_s=t_end)
    frames = []
    for f in run.frames:
        lab = None
        for a, b, l in ivs:
            if a <= f.t_s < b:
                lab = l
        frames.append(f.replace(label=lab))
    run = Run(run.run_id, frames, run.meta, run.skipped)
    onset = next((f.t_s for f in frames if f.label in ("plating_onset", "imminent_short")), None)
    short = next((a + 3600.0 for a, _, l in ivs if l == "imminent_short"), None)
    info = {"family": family, "measured": True, "cell": getattr(opts, "cell", "half"),
            "nmr_dir": str(nmr_dir), "intervals": str(intervals),
            "t_onset_s": onset, "t_short_s": short, "has_short_precursors": None,
            "n_labelled": sum(f.label is not None for f in frames), "skipped": len(run.skipped)}
    _append_run(ds, run, family, split, info)
    return Dataset(dataset_dir)


def _append_run(ds: Dataset, run: Run, family: str, split: str, info: dict) -> None:
    """Append ``run`` to the dataset, all or nothing (see :func:`add_measured`)."""
    path = ds.path
    n0 = int(ds.manifest["n_frames"])
    spectra = np.ascontiguousarray(run.spectra(), dtype=np.float32)
    # ds.frames/ds.runs hold exactly the manifest's rows (left-overs of an interrupted append
    # are dropped when the dataset is opened), so a retry never doubles rows
    frames = pd.concat([ds.frames, pd.DataFrame(frame_rows(run))], ignore_index=True)
    runs = pd.concat([ds.runs, pd.DataFrame([{
        "run_id": run.run_id, "family": family, "split": split, "n_frames": len(run), "offset": n0,
        "info": json.dumps(info, default=str), "skipped": json.dumps(run.skipped)}])], ignore_index=True)
    m = dict(ds.manifest)
    m["n_frames"] = n0 + len(run)
    m["n_runs"] = len(runs)
    h = hashlib.sha256(m["content_hash"].encode())
    h.update(spectra.tobytes())
    m["content_hash"] = h.hexdigest()
    if "content_sketch" in m:  # datasets built before sketches existed stay without one
        m["content_sketch"] = DataSketch(m["content_sketch"]).update(spectra, frame_rows(run)).to_dict()
    m["measured_runs"] = list(m.get("measured_runs", [])) + [{"run_id": run.run_id, **info}]

    tmp = {name: path / f".{name}.tmp" for name in (FRAMES, RUNS, MANIFEST)}
    current = FRAMES
    replaced = []
    try:
        # 1. everything new under temporary names (the dataset is untouched)
        frames.to_parquet(tmp[FRAMES], index=False)
        current = RUNS
        runs.to_parquet(tmp[RUNS], index=False)
        current = MANIFEST
        with open(tmp[MANIFEST], "w") as fh:
            json.dump(m, fh, indent=2, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        # 2. spectra appended past the manifest's count (bytes beyond it are not part of the
        #    dataset until the manifest says so)
        current = SPECTRA
        with open(path / SPECTRA, "r+b") as fh:
            fh.truncate(n0 * spectra.shape[1] * 4)
            fh.seek(0, 2)
            fh.write(spectra.tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        # 3. tables in place, the manifest last (the commit point)
        for name in (FRAMES, RUNS, MANIFEST):
            current = name
            os.replace(tmp[name], path / name)
            replaced.append(name)
    except Exception as exc:
        _restore(ds, replaced)
        msg = getattr(exc, "strerror", None) or " ".join(str(exc).split())[:100] or type(exc).__name__
        raise InputError(path / current, f"cannot write ({msg}); {ds.path} left unchanged") from None
    finally:
        for t in tmp.values():
            try:
                t.unlink()
            except OSError:
                pass


def _restore(ds: Dataset, replaced: list[str]) -> None:
    """Best effort: put back the tables a failed append had already replaced."""
    old = {FRAMES: ds.frames, RUNS: ds.runs}
    for name in replaced:
        try:
            if name == MANIFEST:
                _write_json_atomic(ds.path / MANIFEST, ds.manifest)
            else:
                t = ds.path / f".{name}.restore"
                old[name].to_parquet(t, index=False)
                os.replace(t, ds.path / name)
        except Exception:  # noqa: BLE001 - the manifest still bounds what is read
            pass
