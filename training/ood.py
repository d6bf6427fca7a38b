"""A reproducible out-of-distribution (OOD) test set, and the metrics to score an OOD detector on it.

The set starts from **in-distribution** (ID) runs: simulated runs of the training families, with
the training data's randomisation ranges (``configs/dataset-train.yaml``) but seeds of their own,
so no ID run is a training run. Each OOD *kind* corrupts a copy of one ID run at the level where
the fault really happens (acquisition parameters, the FID, ``procs``, the lines in the sample), and
every variant then goes through the same :class:`~lisentry.datasets.loading.RunAssembler` and
processing pipeline as real data, so processing artefacts look as they would on a real run.

Kinds (:data:`OOD_KINDS`), in four groups:

``nucleus``
    ``na23``: 23Na-like spectra (electrolyte near -8 ppm, broad quadrupolar Na in hard carbon,
    quasi-metallic Na at 900-1100 ppm and Na metal at 1130 ppm, which fold into the window),
    acquired with another carrier and spectral width. ``f19``: 19F-like spectra (LiPF6 doublet at
    -72 ppm, PVDF at -91 ppm, PTFE at -122 ppm, LiF at -204 ppm). Both keep the header's nucleus
    ``7Li``, i.e. they are what reaches the model when the nucleus field is wrong (a frame whose
    header says 23Na is refused by the pipeline before any model sees it).
``processing``
    ``no_phase`` (``procs`` PHC0 = PHC1 = 0: never phased), ``wrong_phase`` (PHC0 off by
    90-180 deg, PHC1 by up to 120 deg), ``no_digital_filter`` (group delay not removed: DSPFVS/
    GRPDLY lost), ``wrong_reference`` (SR off by 20-60 ppm), ``time_domain`` (the FID's real
    part read as a processed ``1r`` spectrum), ``reversed`` (quadrature sign error: the
    conjugate FID, i.e. the spectrum mirrored about the carrier).
``chemistry``
    ``peak_150`` (a strong line at 140-200 ppm), ``peak_neg`` (a strong line at -95...-60 ppm),
    ``broad_hump`` (a 80-200 ppm wide component), all present from the first frame;
    ``appearing_peak`` (a line at 130-220 ppm that appears mid-run and grows).
``garbage``
    ``pure_noise`` (no signal at all), ``signal_loss`` (from mid-run on, only noise: probe or
    cable fault), ``truncated_fid`` (from mid-run on, the acquisition stops after 1-4 % of the
    points; the pipeline refuses such frames, whose FID ends in exact zeros), ``clipped``
    (receiver overflow: FID clipped at 2-20 % of its maximum).

A kind's ``scope`` is ``"run"`` (every frame of the variant is OOD) or ``"onset"`` (frames from
a random onset in the first half on are OOD; the clean prefix equals the ID run's and is left
out of the set). Every random choice of a variant comes from ``(seed, kind, run_id)``, so each
kind is reproducible on its own and does not change when other kinds are added.

Metrics: positives are OOD frames, higher score = more OOD. :func:`fpr_at_tpr` is the fraction
of ID frames flagged at the threshold that catches ``tpr`` of the OOD frames (the issue's
"false-positive rate at 95 % recall"); :func:`auroc` the area under the ROC curve (ties count
one half).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from lisentry.datasets.errors import ConfigError, InputError
from lisentry.datasets.frame import Frame, RawFrame
from lisentry.datasets.pipeline import Pipeline, ProcessingConfig
from lisentry.datasets.sim.acquisition import AcquisitionConfig, FrameArtefacts, synthesize_fid
from lisentry.datasets.sim.nmr_params import XI_7LI
from lisentry.datasets.sim.spectra import Line

__all__ = ["OODKind", "OOD_KINDS", "OOD_GROUPS", "OODRun", "OODSetConfig", "generate_ood_set",
           "make_variant", "id_runs", "fpr_at_tpr", "auroc", "threshold_at_tpr"]


# ---------------------------------------------------------------------- metrics
def _scores(x, name: str) -> np.ndarray:
    """Scores as a flat float array; NaN is an error (+-inf are valid scores)."""
    a = np.asarray(x, dtype=float).reshape(-1)
    if a.size == 0:
        raise ValueError(f"{name} needs at least one score.")
    if np.isnan(a).any():
        raise ValueError(f"{name}: {int(np.isnan(a).sum())} of {a.size} scores are NaN.")
    return a


def threshold_at_tpr(scores_ood, tpr: float = 0.95) -> float:
    """Largest threshold ``t`` such that ``score >= t`` catches at least ``tpr`` of the OOD scores.

    Examples
    --------
    >>> threshold_at_tpr([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20])
    2.0
    """
    if not 0 < tpr <= 1:
        raise ValueError(f"The 'tpr' parameter must be in (0, 1]. Got {tpr}.")
    s = np.sort(_scores(scores_ood, "threshold_at_tpr"))[::-1]
    k = max(int(math.ceil(tpr * s.size - 1e-9)), 1)
    return float(s[k - 1])


def fpr_at_tpr(scores_id, scores_ood, tpr: float = 0.95) -> float:
    """False-positive rate at ``tpr`` recall of OOD frames.

    Positives are OOD frames and a frame is flagged when ``score >= t``; ``t`` is the largest
    threshold that still flags ``tpr`` of the OOD frames (:func:`threshold_at_tpr`). Returns
    the fraction of ID frames flagged at ``t``.

    Examples
    --------
    >>> fpr_at_tpr([0, 1, 2, 3], [2.5, 3, 4, 5])      # t = 2.5 catches all 4; ID 3 is flagged
    0.25
    >>> fpr_at_tpr([0, 1, 2, 3], [10, 11, 12, 13])
    0.0
    """
    t = threshold_at_tpr(scores_ood, tpr)
    s_in = _scores(scores_id, "fpr_at_tpr")
    return float(np.mean(s_in >= t))


def auroc(scores_id, scores_ood) -> float:
    """Area under the ROC curve (OOD = positive): P(score_ood > score_id) + P(tie) / 2.

    Examples
    --------
    >>> auroc([0, 1], [2, 3])
    1.0
    >>> auroc([0, 1, 2], [1])           # beats 0, ties 1, loses to 2
    0.5
    """
    a = _scores(scores_id, "auroc")
    b = _scores(scores_ood, "auroc")
    allv = np.concatenate([a, b])
    # Mann-Whitney U with average ranks for ties
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(allv.size, float)
    sv = allv[order]
    i = 0
    while i < sv.size:
        j = i
        while j + 1 < sv.size and sv[j + 1] == sv[i]:
            j += 1
        ranks[order[i:j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    u = ranks[a.size:].sum() - b.size * (b.size + 1) / 2.0
    return float(u / (a.size * b.size))


# ---------------------------------------------------------------------- kinds
@dataclass(frozen=True)
class OODKind:
    """One way a frame can be out of distribution.

    Parameters
    ----------
    name, group : str
        Kind and group (``nucleus``, ``processing``, ``chemistry``, ``garbage``).
    scope : str
        ``"run"``: the whole variant run is OOD; ``"onset"``: frames from a random onset on.
    corrupt : callable
        ``(raws, ctx, rng) -> list[RawFrame]``: the corrupted frames (same length).
    description : str
    """

    name: str
    group: str
    scope: str
    corrupt: Callable
    description: str


@dataclass
class _Ctx:
    """What a corruption needs besides the raw frames."""

    sim: object                 # SimulatedRun
    onset: int                  # first corrupted frame (0 for run-scope kinds)

    @property
    def latents(self) -> list[dict]:
        return self.sim.latents


def acq_config_of(raw: RawFrame) -> AcquisitionConfig:
    """The simulator's :class:`AcquisitionConfig` of a simulated frame, rebuilt from its
    acquisition parameters (noise-free: noise is added from ``SIM_NOISE_SIGMA``)."""
    a = raw.acq
    sr = float(a.sr_Hz or 0.0)
    sf = a.bf1_MHz + sr * 1e-6
    ex = a.extra
    return AcquisitionConfig(field_MHz=a.bf1_MHz / XI_7LI, sw_Hz=a.sw_Hz, td=a.td, ns=a.ns, ds=a.ds,
                             d1_s=a.d1_s, carrier_ppm=(a.sfo1_MHz / sf - 1.0) * 1e6, sr_Hz=sr,
                             decim=int(ex.get("DECIM", 2)), dspfvs=int(ex.get("DSPFVS", 10)),
                             grpdly=float(ex.get("GRPDLY", -1.0)), snr=math.inf)


def _artefacts(raw: RawFrame, noise: bool = False) -> FrameArtefacts:
    ex = raw.acq.extra
    return FrameArtefacts(phc0_deg=float(ex.get("SIM_PHC0", 0.0)), phc1_deg=float(ex.get("SIM_PHC1", 0.0)),
                          ref_drift_ppm=float(ex.get("SIM_REF_DRIFT_PPM", 0.0)), noise=noise)


def _noise(raw: RawFrame, rng: np.random.Generator, n: int | None = None) -> np.ndarray:
    sigma = float(raw.acq.extra.get("SIM_NOISE_SIGMA", 0.0)) or 1e-4
    n = n or raw.fid.size
    return sigma * (rng.standard_normal(n) + 1j * rng.standard_normal(n))


def _lines_fid(lines: Sequence[Line], raw: RawFrame, acq: AcquisitionConfig | None = None,
               rng: np.random.Generator | None = None) -> np.ndarray:
    """Noise-free FID of ``lines`` with the frame's own phase errors, drift and filter delay."""
    acq = acq or acq_config_of(raw)
    fid, _ = synthesize_fid(list(lines), acq, rng or np.random.default_rng(0),
                            frame_artefacts=_artefacts(raw))
    return fid


def _with(raw: RawFrame, **changes) -> RawFrame:
    return dataclasses.replace(raw, **changes)


def _with_acq(raw: RawFrame, **changes) -> RawFrame:
    return dataclasses.replace(raw, acq=dataclasses.replace(raw.acq, **changes))


# -- nucleus ---------------------------------------------------------------------------------
def _amt(lat: Mapping, key: str) -> float:
    v = float(lat.get(key, 0.0) or 0.0)
    return v if math.isfinite(v) and v > 0 else 0.0


def _other_acq(raw: RawFrame, rng: np.random.Generator) -> AcquisitionConfig:
    """Another carrier and a spectral width that still covers the model's grid."""
    base = acq_config_of(raw)
    carrier = float(rng.uniform(50.0, 500.0))
    sf = base.sf_MHz
    need = 2.0 * max(carrier + 100.0, 400.0 - carrier) * sf
    return base.replace(carrier_ppm=carrier, sw_Hz=need * float(rng.uniform(1.05, 1.5)))


def _na23(raws, ctx, rng):
    acq = _other_acq(raws[0], rng)
    off = float(rng.normal(0.0, 2.0))
    out = []
    for raw, lat in zip(raws, ctx.latents):
        ele, host = _amt(lat, "electrolyte_amount"), _amt(lat, "host_amount")
        clus, metal = _amt(lat, "cluster_amount"), _amt(lat, "ce_amount") + _amt(lat, "metal_amount")
        lines = [Line(-8.0 + off, 6.0, max(ele, 0.05), 1.0, 0.0, "electrolyte"),
                 Line(-15.0 + off, 60.0, max(host, 0.05), 0.0, 0.0, "host"),
                 Line(1130.0, 8.0, max(metal, 0.02), 0.5, 0.3, "metal")]
        if clus > 0:
            lines.append(Line(float(1000.0 + 100.0 * min(clus / 0.2, 1.0)), 150.0, clus, 0.3, 0.0, "cluster"))
        fid = _lines_fid(lines, raw, acq) + _noise(raw, rng)
        out.append(_with(raw, fid=fid,
                         acq=dataclasses.replace(raw.acq, sw_Hz=acq.sw_Hz, sfo1_MHz=acq.sfo1_MHz,
                                                 o1_Hz=acq.o1_Hz)))
    return out


def _f19(raws, ctx, rng):
    acq = _other_acq(raws[0], rng)
    sf = acq.sf_MHz
    j_ppm = 707.0 / sf                                       # 1J(P-F) of PF6-, Hz -> ppm
    a_pf6, a_pvdf, a_ptfe, a_lif = rng.dirichlet([4.0, 2.0, 2.0, 1.0])
    out = []
    n = len(raws)
    for k, raw in enumerate(raws):
        decomp = 0.3 * k / max(n - 1, 1)                     # PF6- slowly turns into LiF
        lines = [Line(-72.0 - j_ppm / 2, 1.0, a_pf6 * (1 - decomp) / 2, 1.0),
                 Line(-72.0 + j_ppm / 2, 1.0, a_pf6 * (1 - decomp) / 2, 1.0),
                 Line(-91.0, 20.0, a_pvdf, 0.3), Line(-122.0, 15.0, a_ptfe, 0.3),
                 Line(-204.0, 12.0, a_lif + a_pf6 * decomp, 0.5)]
        fid = _lines_fid(lines, raw, acq) + _noise(raw, rng)
        out.append(_with(raw, fid=fid,
                         acq=dataclasses.replace(raw.acq, sw_Hz=acq.sw_Hz, sfo1_MHz=acq.sfo1_MHz,
                                                 o1_Hz=acq.o1_Hz)))
    return out


# -- processing ------------------------------------------------------------------------------
def _phase_of(raw: RawFrame) -> tuple[float, float]:
    return raw.phase_deg if raw.phase_deg is not None else (0.0, 0.0)


def _no_phase(raws, ctx, rng):
    return [_with(r, phase_deg=(0.0, 0.0)) for r in raws]


def _wrong_phase(raws, ctx, rng):
    d0 = float(rng.uniform(90.0, 180.0) * rng.choice([-1.0, 1.0]))
    d1 = float(rng.uniform(-120.0, 120.0))
    out = []
    for r in raws:
        p0, p1 = _phase_of(r)
        out.append(_with(r, phase_deg=((p0 + d0) % 360.0, p1 + d1)))
    return out


def _no_digital_filter(raws, ctx, rng):
    return [_with_acq(r, group_delay_pts=0.0,
                      extra={**dict(r.acq.extra), "DSPFVS": 20, "GRPDLY": 0.0}) for r in raws]


def _wrong_reference(raws, ctx, rng):
    d_ppm = float(rng.uniform(20.0, 60.0) * rng.choice([-1.0, 1.0]))
    out = []
    for r in raws:
        sf = r.acq.bf1_MHz + (r.acq.sr_Hz or 0.0) * 1e-6
        out.append(_with_acq(r, sr_Hz=float((r.acq.sr_Hz or 0.0) + d_ppm * sf)))
    return out


def _native_ppm(raw: RawFrame, n: int) -> np.ndarray:
    """Descending ppm axis of an ``n``-point spectrum of the frame (TopSpin order)."""
    a = raw.acq
    sf = a.bf1_MHz + (a.sr_Hz or 0.0) * 1e-6
    car = (a.sfo1_MHz - sf) / sf * 1e6
    sw_ppm = a.sw_Hz / sf
    return car + sw_ppm / 2.0 - np.arange(n) * sw_ppm / n


def _time_domain(raws, ctx, rng):
    out = []
    for r in raws:
        y = np.real(r.fid).astype(float)
        out.append(_with(r, fid=None, spectrum=y, spectrum_ppm=_native_ppm(r, y.size), phase_deg=None))
    return out


def _reversed(raws, ctx, rng):
    return [_with(r, fid=np.conj(r.fid)) for r in raws]


# -- chemistry -------------------------------------------------------------------------------
def _add_lines(raws, ctx, rng, make_lines):
    acq = acq_config_of(raws[0])
    out = []
    for k, r in enumerate(raws):
        lines = make_lines(k)
        out.append(r if not lines else _with(r, fid=r.fid + _lines_fid(lines, r, acq)))
    return out


def _peak_150(raws, ctx, rng):
    shift, width = float(rng.uniform(140.0, 200.0)), float(rng.uniform(2.0, 15.0))
    amp = float(rng.uniform(0.3, 1.0))
    return _add_lines(raws, ctx, rng, lambda k: [Line(shift, width, amp, 1.0)])


def _peak_neg(raws, ctx, rng):
    shift, width = float(rng.uniform(-95.0, -60.0)), float(rng.uniform(2.0, 15.0))
    amp = float(rng.uniform(0.3, 1.0))
    return _add_lines(raws, ctx, rng, lambda k: [Line(shift, width, amp, 1.0)])


def _broad_hump(raws, ctx, rng):
    shift, width = float(rng.uniform(50.0, 250.0)), float(rng.uniform(80.0, 200.0))
    amp = float(rng.uniform(0.5, 2.0))
    return _add_lines(raws, ctx, rng, lambda k: [Line(shift, width, amp, 0.0)])


def _appearing_peak(raws, ctx, rng):
    shift, width = float(rng.uniform(130.0, 220.0)), float(rng.uniform(3.0, 20.0))
    final = float(rng.uniform(0.3, 1.0))
    n, k0 = len(raws), ctx.onset

    def lines(k):
        if k < k0:
            return []
        frac = (k - k0 + 1) / max(n - k0, 1)
        return [Line(shift, width, final * min(1.0, 0.3 + frac), 1.0)]
    return _add_lines(raws, ctx, rng, lines)


# -- garbage ---------------------------------------------------------------------------------
def _pure_noise(raws, ctx, rng):
    return [_with(r, fid=_noise(r, rng)) for r in raws]


def _signal_loss(raws, ctx, rng):
    return [r if k < ctx.onset else _with(r, fid=_noise(r, rng)) for k, r in enumerate(raws)]


def _truncated_fid(raws, ctx, rng):
    frac = float(rng.uniform(0.01, 0.04))
    out = []
    for k, r in enumerate(raws):
        if k < ctx.onset:
            out.append(r)
            continue
        m = max(int(frac * r.fid.size), 8)
        fid = np.zeros_like(r.fid)
        fid[:m] = r.fid[:m]
        out.append(_with(r, fid=fid))
    return out


def _clipped(raws, ctx, rng):
    level = float(rng.uniform(0.02, 0.2))
    out = []
    for r in raws:
        lim = level * float(max(np.max(np.abs(r.fid.real)), np.max(np.abs(r.fid.imag))))
        out.append(_with(r, fid=np.clip(r.fid.real, -lim, lim) + 1j * np.clip(r.fid.imag, -lim, lim)))
    return out


#: Every OOD kind, by name.
OOD_KINDS: dict[str, OODKind] = {k.name: k for k in (
    OODKind("na23", "nucleus", "run", _na23, "23Na-like lines (header says 7Li), other carrier/SW"),
    OODKind("f19", "nucleus", "run", _f19, "19F-like lines (header says 7Li), other carrier/SW"),
    OODKind("no_phase", "processing", "run", _no_phase, "procs PHC0 = PHC1 = 0 (never phased)"),
    OODKind("wrong_phase", "processing", "run", _wrong_phase, "PHC0 off by 90-180 deg, PHC1 by <=120 deg"),
    OODKind("no_digital_filter", "processing", "run", _no_digital_filter,
            "digital-filter group delay not removed"),
    OODKind("wrong_reference", "processing", "run", _wrong_reference, "SR off by 20-60 ppm"),
    OODKind("time_domain", "processing", "run", _time_domain, "FID real part read as a 1r spectrum"),
    OODKind("reversed", "processing", "run", _reversed, "quadrature sign error (conjugate FID)"),
    OODKind("peak_150", "chemistry", "run", _peak_150, "strong line at 140-200 ppm"),
    OODKind("peak_neg", "chemistry", "run", _peak_neg, "strong line at -95...-60 ppm"),
    OODKind("broad_hump", "chemistry", "run", _broad_hump, "80-200 ppm wide component"),
    OODKind("appearing_peak", "chemistry", "onset", _appearing_peak,
            "line at 130-220 ppm appearing mid-run and growing"),
    OODKind("pure_noise", "garbage", "run", _pure_noise, "noise only, no signal"),
    OODKind("signal_loss", "garbage", "onset", _signal_loss, "noise only from mid-run on"),
    OODKind("truncated_fid", "garbage", "onset", _truncated_fid,
            "acquisition stops after 1-4 % of the points, from mid-run on"),
    OODKind("clipped", "garbage", "run", _clipped, "receiver overflow: FID clipped at 2-20 %"),
)}
#: Group -> kind names.
OOD_GROUPS: dict[str, list[str]] = {}
for _k in OOD_KINDS.values():
    OOD_GROUPS.setdefault(_k.group, []).append(_k.name)


# ---------------------------------------------------------------------- the set
@dataclass
class OODRun:
    """One run of the OOD set (an ID run or an OOD variant), processed.

    ``is_ood[i]`` says whether frame ``i`` is OOD; ``keep[i]`` whether it belongs to the set
    (False for the clean prefix of an ``onset`` variant, which duplicates the ID run).
    ``skipped`` counts frames the pipeline refused (they get no row, as in ``label``).
    """

    run_id: str
    family: str
    kind: str                   # "id" or an OOD kind
    group: str                  # "id" or the kind's group
    frames: list[Frame]
    is_ood: np.ndarray
    keep: np.ndarray
    skipped: int = 0
    onset: int = 0
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class OODSetConfig:
    """How to build the OOD set.

    Parameters
    ----------
    build_config : str or Path
        Dataset config whose families and ``randomize_override`` define in-distribution
        (default: the default model's training data config).
    seed : int
        Base seed of the ID runs (run ``i`` of family ``f`` gets
        ``run_seed(seed, f, i)``) and of every corruption; keep it different from the
        training configs' seeds.
    runs_per_family : int
        ID runs per family.
    max_frames : int or None
        Cap on frames per run (runs are prefixes of full runs).
    kinds : sequence of str or None
        OOD kinds (default: all of :data:`OOD_KINDS`).
    variants_per_kind : int
        How many ID runs each kind corrupts (taken round-robin over the families).
    """

    build_config: str = "configs/dataset-train.yaml"
    seed: int = 4_242
    runs_per_family: int = 2
    max_frames: int | None = 64
    kinds: tuple[str, ...] | None = None
    variants_per_kind: int = 6

    def __post_init__(self):
        if self.runs_per_family < 1:
            raise ConfigError(f"The 'runs_per_family' parameter of OODSetConfig must be >= 1. "
                              f"Got {self.runs_per_family}.")
        if self.variants_per_kind < 1:
            raise ConfigError(f"The 'variants_per_kind' parameter of OODSetConfig must be >= 1. "
                              f"Got {self.variants_per_kind}.")
        for k in self.kinds or ():
            if k not in OOD_KINDS:
                import difflib
                hint = difflib.get_close_matches(k, list(OOD_KINDS), n=1)
                raise ConfigError(f"Unknown OOD kind {k!r}." + (f" Did you mean {hint[0]!r}?" if hint else
                                  f" Known: {', '.join(OOD_KINDS)}."))

    @property
    def kind_names(self) -> list[str]:
        return list(self.kinds) if self.kinds else list(OOD_KINDS)


def _rng(*parts) -> np.random.Generator:
    h = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


def id_runs(cfg: OODSetConfig) -> list:
    """The simulated (unprocessed) ID runs of the set, family by family, in config order."""
    from lisentry.datasets.build import _family_obj, load_build_config, run_seed
    from lisentry.datasets.sim.run import simulate_run
    bc = load_build_config(cfg.build_config)
    sims = []
    for name in bc.families:
        fam = _family_obj(name, bc.family_files, bc.override_for(name))
        for i in range(cfg.runs_per_family):
            seed = run_seed(cfg.seed, name, i)
            sims.append(simulate_run(fam, seed, randomize=bc.randomize, horizon_s=bc.horizon_s,
                                     max_frames=cfg.max_frames, run_id=f"{name}-{seed:010d}"))
    return sims


def make_variant(sim, kind: str, seed: int) -> tuple[list[RawFrame], int]:
    """The raw frames of ``kind`` applied to the simulated run ``sim``, and the onset index.

    Deterministic in ``(seed, kind, sim.run_id)``; ``sim`` is not modified.
    """
    k = OOD_KINDS[kind]
    rng = _rng(seed, kind, sim.run_id)
    n = len(sim.raws)
    onset = 0 if k.scope == "run" else int(rng.integers(max(1, n // 4), max(2, n // 2 + 1)))
    raws = k.corrupt(list(sim.raws), _Ctx(sim, onset), rng)
    if len(raws) != n:
        raise RuntimeError(f"OOD kind {kind} returned {len(raws)} frames for {n}")
    return raws, onset


def process_raws(run_id: str, raws: Sequence[RawFrame], sim, pipeline_config: ProcessingConfig
                 ) -> tuple[list[Frame], list[int]]:
    """Process raw frames as ``label`` would (one fresh pipeline per run); frames the pipeline
    refuses are left out. Returns the frames and the indices (into ``raws``) they came from."""
    from lisentry.datasets.loading import RunAssembler
    asm = RunAssembler(run_id, Pipeline(pipeline_config), sim.echem, on_note=None)
    windows = sim.echem.window_stats_many([r.acq_start for r in raws], [r.acq_end for r in raws])
    frames, idx = [], []
    for k, raw in enumerate(raws):
        try:
            f = asm.add(raw, windows[k])
        except InputError:
            continue
        frames.append(f.replace(label=sim.labels[k], latent=sim.latents[k]))
        idx.append(k)
    return frames, idx


def generate_ood_set(cfg: OODSetConfig | None = None, pipeline_config: ProcessingConfig | None = None,
                     *, progress: bool = False) -> list[OODRun]:
    """Build the ID runs and the OOD variants, processed.

    Parameters
    ----------
    cfg : OODSetConfig, optional
    pipeline_config : ProcessingConfig, optional
        The model's processing (``ProcessingConfig.from_dict(bundle.card["processing"])``);
        default settings when omitted.
    progress : bool
        Print one line per run to stderr.

    Returns
    -------
    list[OODRun]
        The ID runs first (``kind == "id"``), then the variants kind by kind.
    """
    cfg = cfg or OODSetConfig()
    pc = pipeline_config or ProcessingConfig()
    sims = id_runs(cfg)
    out: list[OODRun] = []
    for sim in sims:
        frames, idx = process_raws(sim.run_id, sim.raws, sim, pc)
        out.append(OODRun(sim.run_id, sim.family.name, "id", "id", frames, np.zeros(len(frames), bool),
                          np.ones(len(frames), bool), len(sim.raws) - len(frames), 0,
                          {"seed": sim.seed, **{k: sim.info[k] for k in ("field_MHz", "snr", "sw_Hz")}}))
        if progress:
            print(f"id {sim.run_id}: {len(frames)} frames", file=sys.stderr)
    # each kind takes variants_per_kind runs, round-robin over families, starting at a
    # kind-dependent offset so that every family meets every group
    by_family: dict[str, list] = {}
    for s in sims:
        by_family.setdefault(s.family.name, []).append(s)
    order = [s for i in range(cfg.runs_per_family) for fam in by_family.values()
             for s in fam[i:i + 1]]
    for j, kind in enumerate(cfg.kind_names):
        k = OOD_KINDS[kind]
        for v in range(min(cfg.variants_per_kind, len(order))):
            sim = order[(j * 5 + v) % len(order)]
            raws, onset = make_variant(sim, kind, cfg.seed)
            rid = f"{sim.run_id}+{kind}"
            frames, idx = process_raws(rid, raws, sim, pc)
            idx = np.asarray(idx, int)
            is_ood = idx >= onset
            out.append(OODRun(rid, sim.family.name, kind, k.group, frames, is_ood, is_ood.copy(),
                              len(raws) - len(frames), onset, {"seed": sim.seed}))
            if progress:
                print(f"{kind} {rid}: {int(is_ood.sum())} OOD frames, "
                      f"{len(raws) - len(frames)} skipped", file=sys.stderr)
    return out
