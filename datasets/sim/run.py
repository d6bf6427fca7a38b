"""A whole simulated operando run: cell model -> frame times -> NMR FIDs -> potentiostat log ->
ground truth; in memory (:func:`to_run`) or written to disk in the real instrument formats
(:func:`write_run`: Bruker experiment folders or a pseudo-2D ``ser`` plus an EC-Lab ``.mpt``).

Both paths end in the same foundation code (readers, :class:`~lisentry.datasets.loading.RunAssembler`,
pipeline), so a run written to disk and read back gives the in-memory spectra.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from lisentry.datasets.frame import Frame, RawFrame, Run
from lisentry.datasets.io.potentiostat import EchemLog
from lisentry.datasets.sim.acquisition import (AcquisitionConfig, ArtefactConfig, draw_run_artefacts,
                                               make_raw_frame, synthesize_fid)
from lisentry.datasets.sim.cell import CellTrajectory
from lisentry.datasets.sim.nmr_params import NMRParams
from lisentry.datasets.sim.scenarios import Family, get_family, sample_params
from lisentry.datasets.sim.spectra import lines_from_latent
from lisentry.datasets.sim.truth import label_frames

#: Layouts of :func:`write_run`: experiment folders 1..N, or one pseudo-2D ``ser``.
LAYOUTS = ("series", "ser")

#: Interval of the simulated potentiostat log, s (EC-Lab records every few seconds to minutes).
ECHEM_DT_S = 30.0


@dataclass
class SimulatedRun:
    """A simulated run before processing.

    ``t_onset_s``/``t_short_s`` are on the run clock (s from the first frame's acquisition
    start), the clock of :attr:`Frame.t_s`.
    """

    run_id: str
    family: Family
    seed: int
    traj: CellTrajectory
    raws: list[RawFrame]
    echem: EchemLog
    labels: list[str]
    latents: list[dict]
    start: datetime
    t_onset_s: float | None
    t_short_s: float | None
    info: dict = field(default_factory=dict)


def _acq_config(fam: Family, rng: np.random.Generator, randomize: bool) -> AcquisitionConfig:
    a = fam.acquisition
    fixed = {"field_MHz": float(a.get("field_MHz", 500.0)), "ns": int(a.get("ns", 128)),
             "d1_s": float(a.get("d1_s", 2.0)), "snr": float(a.get("snr", 300.0))}
    if randomize:
        cfg = AcquisitionConfig.random(rng, field_MHz=fixed["field_MHz"])
        # keep the family's scan count and SNR ranges drawn by sample_params
        cfg = cfg.replace(ns=fixed["ns"], snr=fixed["snr"], snr_ns=fixed["ns"])
    else:
        cfg = AcquisitionConfig(td=8192, sw_Hz=max(200_000.0, 1.2 * 500e-6 * fixed["field_MHz"] * 0.38863 * 1e6),
                                **fixed, snr_ns=fixed["ns"])
    # The acquisition must fit in the frame period: shorten D1 if needed (TopSpin users do).
    period = float(a.get("frame_period_s", 600.0))
    aq = (cfg.td // 2) / cfg.sw_Hz
    if (cfg.ns + cfg.ds) * (cfg.d1_s + aq) > 0.98 * period:
        cfg = cfg.replace(d1_s=max(0.05, 0.98 * period / (cfg.ns + cfg.ds) - aq))
    return cfg


#: Family ``nmr`` keys that lines_from_latent takes per frame (the rest are line shapes).
_FRAME_NMR_KEYS = ("electrolyte_shift_ppm", "metal_shift_ppm", "ce_orientation_deg", "host_kind")


def nmr_for_family(fam: Family) -> tuple[NMRParams, dict]:
    """Line-shape parameters and the per-frame NMR settings (shifts, orientation, host) of a
    family, so that its (randomized) ``nmr`` section reaches the spectra."""
    d = dict(fam.nmr)
    fields = NMRParams.__dataclass_fields__
    shapes = {k: v for k, v in d.items() if k in fields}
    host_shift = d.get("host_shift_ppm")
    if host_shift is not None:
        key = {"hard_carbon": "hc_shift_ppm", "graphite": "graphite_shift_ppm"}.get(d.get("host_kind", "hard_carbon"))
        if key in fields:
            shapes[key] = float(host_shift)
    nmr = NMRParams.from_dict(shapes) if shapes else NMRParams()
    return nmr, {k: d[k] for k in _FRAME_NMR_KEYS if k in d}


def simulate_run(family: str | Family, seed: int, *, randomize: bool = True,
                 horizon_s: float = 3600.0, start: datetime | None = None,
                 run_id: str | None = None, max_frames: int | None = None,
                 artefacts: ArtefactConfig | None = None) -> SimulatedRun:
    """Simulate one run of a scenario family.

    Parameters
    ----------
    family : str or Family
        Family name (see :data:`~lisentry.datasets.sim.scenarios.FAMILIES`) or object.
    seed : int
        Seed of everything random in the run (parameters, noise, artefacts).
    randomize : bool
        Draw the family's domain-randomized parameters and per-run line shapes
        (:meth:`NMRParams.randomized`; default) or use its paper defaults.
    horizon_s : float
        H of the ``imminent_short`` class, s.
    """
    rng = np.random.default_rng(seed)
    fam = get_family(family)
    if randomize:
        fam = sample_params(fam, rng)
    traj = fam.simulate(rng)
    acq_cfg = _acq_config(fam, rng, randomize)
    period = float(fam.acquisition.get("frame_period_s", 600.0))
    aq = (acq_cfg.td // 2) / acq_cfg.sw_Hz
    duration = (acq_cfg.ns + acq_cfg.ds) * (acq_cfg.d1_s + aq)
    first = float(rng.uniform(0.0, min(period, 120.0))) if randomize else 0.0
    n = int((traj.duration_s - first - duration) // period) + 1
    if max_frames:
        n = min(n, max_frames)
    if n < 1:
        raise ValueError(f"{fam.name}: protocol shorter than one frame")
    starts_s = first + period * np.arange(n)
    mids_s = starts_s + duration / 2
    latent = traj.latent_at(mids_s)
    nmr, frame_nmr = nmr_for_family(fam)
    if randomize:
        # per-run line shapes from their own stream, so the cell trajectory (and the truth)
        # of a seed does not depend on them
        nmr = nmr.randomized(np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5EED]))
    start = start or (datetime(2024, 1, 1, tzinfo=timezone.utc)
                      + timedelta(seconds=int(rng.integers(0, 365 * 86400))))
    arts = draw_run_artefacts(n, rng, artefacts)
    raws, latents = [], []
    for k in range(n):
        lat = {key: float(v[k]) for key, v in latent.items()}
        lines = lines_from_latent({**lat, **frame_nmr}, nmr)
        fid, params = synthesize_fid(lines, acq_cfg, rng, frame_artefacts=arts[k])
        t_a = start + timedelta(seconds=float(starts_s[k]))
        raws.append(make_raw_frame(fid, params, t_a, t_a + timedelta(seconds=duration),
                                   Path(f"sim://{fam.name}/{seed}/{k + 1}"), k + 1))
        latents.append(lat)
    # Ground truth at the frame midpoints (protocol clock), then shifted to the run clock.
    labels = list(label_frames(mids_s, traj, horizon_s=horizon_s))
    t_log = np.arange(0.0, traj.duration_s, ECHEM_DT_S)
    ech = traj.echem_at(t_log)
    echem = EchemLog(start.timestamp() + t_log, np.asarray(ech["potential_V"], float),
                     np.asarray(ech["current_A"], float), source=Path(f"sim://{fam.name}/{seed}/echem"),
                     start=start)
    to_run_clock = lambda t: None if t is None else float(t) - first  # noqa: E731
    info = {"family": fam.name, "seed": seed, "randomized": randomize,
            "cell": "symmetric" if fam.cell.host_kind == "li_metal" else "half",
            "has_short_precursors": bool(fam.has_short_precursors), "precursors": fam.precursors,
            "t_onset_s": to_run_clock(traj.t_metal_onset_s), "t_short_s": to_run_clock(traj.t_short_s),
            "short_kind": traj.short_kind, "frame_period_s": period, "field_MHz": acq_cfg.field_MHz,
            "ns": acq_cfg.ns, "snr": acq_cfg.snr, "td": acq_cfg.td, "sw_Hz": acq_cfg.sw_Hz,
            "horizon_s": horizon_s, "params": fam.to_dict()}
    return SimulatedRun(run_id or f"{fam.name}-{seed}", fam, seed, traj, raws, echem, labels,
                        latents, start, info["t_onset_s"], info["t_short_s"], info)


def to_run(sim: SimulatedRun, pipeline) -> Run:
    """Process a simulated run in memory through the same assembler as real data."""
    from lisentry.datasets.loading import RunAssembler
    asm = RunAssembler(sim.run_id, pipeline, sim.echem, on_note=None)
    windows = sim.echem.window_stats_many([r.acq_start for r in sim.raws],
                                          [r.acq_end for r in sim.raws])
    frames: list[Frame] = []
    for k, (raw, lab, lat) in enumerate(zip(sim.raws, sim.labels, sim.latents)):
        f = asm.add(raw, windows[k])
        frames.append(f.replace(label=lab, latent=lat))
    return Run(sim.run_id, frames, meta={"family": sim.family.name, **sim.info})


def write_run(sim: SimulatedRun, out_dir: str | Path, *, layout: str = "series", dtypa: int = 0,
              bytorda: int = 0, topspin: str = "2.1", tz: str = "UTC",
              acqus_template: str | None = None) -> tuple[Path, Path]:
    """Write the run as a spectrometer and a potentiostat would: ``out_dir/nmr`` (experiment
    folders 1..N, or one pseudo-2D ``ser`` in ``nmr/1``) and ``out_dir/echem/<run>.mpt``.

    Returns ``(nmr_dir, mpt_path)``.
    """
    from lisentry.datasets.io import bruker_writer
    from lisentry.datasets.io.biologic import write_mpt
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be 'series' or 'ser'. Got {layout!r}.")
    out = Path(out_dir)
    nmr_dir = out / "nmr"
    nmr_dir.mkdir(parents=True, exist_ok=True)
    # One int32 scale for the whole run (constant receiver gain), so frames keep their
    # relative intensities on disk as they do in memory.
    peak = max(float(np.max(np.abs(np.concatenate([r.fid.real, r.fid.imag])))) for r in sim.raws)
    int_scale = 2.0**29 / peak if peak > 0 else 1.0
    if layout == "series":
        for raw in sim.raws:
            bruker_writer.write_experiment(nmr_dir / str(raw.expno), raw.fid, raw.acq, raw.acq_start,
                                           raw.acq_end, dtypa=dtypa, bytorda=bytorda,
                                           topspin=topspin, acqus_template=acqus_template,
                                           procs=_procs(raw), int_scale=int_scale)
    elif layout == "ser":
        fids = np.stack([r.fid for r in sim.raws])
        period = (sim.raws[1].acq_start - sim.raws[0].acq_start).total_seconds() if len(sim.raws) > 1 else 0
        # A pseudo-2D ser has no per-row times: audita gives the start of row 1 and the end
        # of the last row's period (start + rows x period, the pulse program's inter-row wait
        # included). Row i's acquisition is [start + i*period, + (NS+DS)(D1+AQ)]; a reader that
        # takes the nominal row acquisition time (not the full spacing) gets the simulated
        # windows back exactly (see tests/integration/test_sim_disk_roundtrip.py).
        # One pdata/1/procs for all rows: the reference (SF from SR) and the first frame's phases.
        bruker_writer.write_ser(nmr_dir / "1", fids, sim.raws[0].acq, sim.raws[0].acq_start,
                                period, dtypa=dtypa, bytorda=bytorda, topspin=topspin,
                                int_scale=int_scale, procs=_procs(sim.raws[0]) or {})
    else:
        raise ValueError(f"layout must be 'series' or 'ser'. Got {layout!r}.")
    echem_dir = out / "echem"
    echem_dir.mkdir(exist_ok=True)
    mpt = echem_dir / f"{sim.run_id}.mpt"
    t0 = sim.echem.t_utc_s[0]
    write_mpt(mpt, sim.echem.t_utc_s - t0, sim.echem.potential_V, sim.echem.current_A,
              start_local=datetime.fromtimestamp(t0, timezone.utc), tz=tz)
    return nmr_dir, mpt



def _procs(raw: RawFrame) -> dict | None:
    """``pdata/1/procs`` values of a simulated frame: the reference (SF from SR, written by the
    writer) and the phases TopSpin would have stored, so the disk path equals the memory path."""
    if raw.acq.sr_Hz is None and raw.phase_deg is None:
        return None
    procs = {}
    if raw.phase_deg is not None:
        procs["PHC0"], procs["PHC1"] = float(raw.phase_deg[0]), float(raw.phase_deg[1])
    return procs
