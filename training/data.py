"""Dataset runs as model tensors: spectra, causal echem features, labels, latent targets."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

import numpy as np
import torch

from lisentry.datasets.cells import SYMMETRIC_CELL_MODES, run_cell_kind
from lisentry.datasets.frame import CLASSES
from lisentry.datasets.store import Dataset, RunView
from lisentry.models.features import ECHEM_FEATURES, N_ECHEM, echem_features
from lisentry.models.window_features import WindowInputs, current_columns, potentiostat_columns
from lisentry.models.net import AUX_DEFAULT

CLASS_INDEX = {c: i for i, c in enumerate(CLASSES)}


@dataclass
class RunTensors:
    """One run ready for the model (numpy; ``collate`` makes padded torch batches).

    ``y`` is -1 on unlabelled frames; ``aux`` is NaN where a latent target is undefined.
    ``t_onset_s``/``t_short_s`` are the true event times (None when the run has none).
    """

    run_id: str
    family: str
    t_s: np.ndarray
    spectra: np.ndarray
    echem: np.ndarray
    echem_mask: np.ndarray
    y: np.ndarray
    aux: np.ndarray
    t_onset_s: float | None
    t_short_s: float | None
    has_short_precursors: bool | None = None
    #: the acquisition's signal-to-noise ratio when the run's info records it (simulated runs)
    snr: float | None = None

    def __len__(self) -> int:
        return len(self.t_s)


def run_tensors(view: RunView, aux_names=AUX_DEFAULT, window: WindowInputs | None = None,
                symmetric_cells: str = "signed") -> RunTensors:
    """One stored run as model inputs and targets; ``window`` appends the scaled window
    features (:class:`~lisentry.models.window_features.WindowInputs`) to the echem input;
    ``symmetric_cells="sign_free"`` feeds a symmetric Li | Li run's potential, current and
    charge as magnitudes (:mod:`lisentry.datasets.cells`)."""
    fr = view.frames
    e, m = echem_features(fr["t_s"], fr["potential_V"], fr["current_A"], fr["charge_C"],
                          sign_free=sign_free_run(view, symmetric_cells))
    if window is not None:
        e, m = window.widen(np.asarray(view.spectra, dtype=np.float32), fr["t_s"].to_numpy(float),
                            e, m)
    y = np.array([CLASS_INDEX.get(lab, -1) if isinstance(lab, str) else -1 for lab in fr["label"]],
                 dtype=np.int64)
    aux = np.full((len(fr), len(aux_names)), np.nan, dtype=np.float32)
    for j, name in enumerate(aux_names):
        col = f"latent_{name}"
        if col in fr.columns:
            aux[:, j] = fr[col].to_numpy(dtype=np.float32)
    info = view.info or {}
    return RunTensors(view.run_id, view.family, fr["t_s"].to_numpy(float),
                      np.asarray(view.spectra, dtype=np.float32), e, m, y, aux,
                      _opt(info.get("t_onset_s")), _opt(info.get("t_short_s")),
                      info.get("has_short_precursors"), _opt(info.get("snr")))


def _opt(x):
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def sign_free_run(view: RunView, symmetric_cells: str) -> bool:
    """Whether the run's echem enters sign-free: a symmetric cell under ``sign_free``."""
    if symmetric_cells not in SYMMETRIC_CELL_MODES:
        raise ValueError(f"symmetric_cells must be one of {', '.join(SYMMETRIC_CELL_MODES)}. "
                         f"Got {symmetric_cells!r}.")
    return symmetric_cells == "sign_free" and run_cell_kind(view.family, view.info) == "symmetric"


def load_runs(ds: Dataset, run_ids, window: WindowInputs | None = None,
              symmetric_cells: str = "signed") -> list[RunTensors]:
    """The runs ``run_ids`` of ``ds``; pass a model's ``window_inputs`` (bundles trained with
    ``inputs.window_features``) so that their echem input has the columns it was trained on,
    and its ``symmetric_cells`` (card ``inputs.symmetric_cells``)."""
    return [run_tensors(ds.run(r), window=window, symmetric_cells=symmetric_cells)
            for r in run_ids]


def _without_current(echem: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Copies of one run's echem input and mask as a potential-only log gives them: the columns
    of :func:`~lisentry.models.window_features.current_columns` masked."""
    need = current_columns(echem.shape[1])
    echem, mask = echem.copy(), mask.copy()
    echem[:, need], mask[:, need] = 0, 0
    return echem, mask


def mask_current(runs: list[RunTensors]) -> list[RunTensors]:
    """Copies of ``runs`` as if their logs had no current column (what the ``drop_current``
    augmentation does to one run, here to all; current-free ensemble members train and are
    validated on these)."""
    out = []
    for rt in runs:
        echem, mask = _without_current(rt.echem, rt.echem_mask)
        out.append(dataclasses.replace(rt, echem=echem, echem_mask=mask))
    return out


def plus_current_free(runs: list[RunTensors]) -> list[RunTensors]:
    """``runs`` followed by their :func:`mask_current` copies: what a routed ensemble's
    presence gate is fitted and reported on (it gates both halves' answers)."""
    return runs + mask_current(runs)


def widen_runs(runs: list[RunTensors], window: WindowInputs | None, *,
               copy: bool = False) -> list[RunTensors]:
    """Runs loaded without window features, with them appended (the same objects, or copies
    with ``copy`` so that the originals keep their inputs); ``window`` None: the runs as given."""
    if window is None:
        return runs
    if copy:
        runs = [dataclasses.replace(rt) for rt in runs]
    for rt in runs:
        if rt.echem.shape[1] == N_ECHEM:
            rt.echem, rt.echem_mask = window.widen(rt.spectra, rt.t_s, rt.echem, rt.echem_mask)
    return runs


#: ppm range with no 7Li line in any of the chemistries here (the metal ends near 280 ppm):
#: where a spectrum's noise is measured.
NOISE_WINDOW_PPM = (330.0, 400.0)


def noise_window_mask(ppm_grid) -> np.ndarray | None:
    """Grid points inside :data:`NOISE_WINDOW_PPM` (``None`` if fewer than 16 fall in it)."""
    g = np.asarray(ppm_grid, dtype=float)
    m = (g >= NOISE_WINDOW_PPM[0]) & (g <= NOISE_WINDOW_PPM[1])
    return m if m.sum() >= 16 else None


def spectral_noise(spectra: np.ndarray, window: np.ndarray) -> float:
    """A run's spectral noise (median over frames): the standard deviation of first differences
    over the line-free ``window`` divided by sqrt(2), which ignores a slow baseline."""
    d = np.diff(np.asarray(spectra, dtype=np.float64)[:, window], axis=1)
    with np.errstate(invalid="ignore"):
        per_frame = np.nanstd(d, axis=1) / np.sqrt(2.0)
    per_frame = per_frame[np.isfinite(per_frame)]
    return float(np.median(per_frame)) if per_frame.size else 0.0


def augment_run(rt: RunTensors, rng: np.random.Generator, cfg: dict, step_ppm: float,
                donors: list[RunTensors] | None = None,
                noise_window: np.ndarray | None = None, window: WindowInputs | None = None
                ) -> RunTensors:
    """Run-level augmentation: intensity scale, small reference shift, dropped potential log
    (whole, or ``drop_echem_prefix``: only its first 1..``drop_echem_prefix_max_frames`` frames),
    (``drop_echem_until_current``) a log that starts with the first current step,
    (``drop_current``) a log without current: the current's features masked, the potential's kept,
    (``mix_prob`` > 0 with ``donors``) a normal run of another family mixed into the spectra and
    (``noise_prob`` > 0 with a ``noise_window`` mask, see :func:`noise_window_mask`) white noise
    that multiplies the run's spectral noise by a log-uniform factor in
    ``[1, noise_max_factor]``, as a lower-SNR acquisition would; with ``noise_min_snr`` the
    factor is also capped at the run's SNR over it (a run without a recorded SNR gets no
    noise), so that no augmented run is noisier than that SNR and a held-out SNR range below it
    stays unseen. ``window`` (the run's window inputs, when it has window features): a log cut
    to start late also restarts the window features that summarize the log's past (the running
    potential minimum, 3-frame changes), and spectra that the noise or the mix changed get their
    window features computed anew from them, as the detector computes them at inference (the
    intensity jitter and the reference shift keep the run's own: they replay the default's
    training as it was).

    Why the mix: each scenario family has its own host signature (graphite, hard carbon, a Li
    electrode only) and its own outcomes, so a model can learn "this host at this stage means
    plating" instead of "a new metal line is growing". Adding the spectra of a donor's
    ``normal_lithiation`` frames (another family; its longest stretch of normal frames, scaled by
    ``mix_scale``) puts foreign host dynamics into a run without changing what is abnormal in it,
    so the labels stay those of the run; the latent targets, which are amounts relative to the
    run's own signal, become undefined (NaN) for the mixed run.
    """
    spectra = rt.spectra
    aux = rt.aux
    mix_p = float(cfg.get("mix_prob", 0.0))
    if mix_p and donors and rng.random() < mix_p:
        lo, hi = cfg.get("mix_scale", (0.3, 1.0))
        donor = normal_donor_spectra(donors, rt, len(rt), rng)
        if donor is not None:
            a = np.float32(rng.uniform(float(lo), float(hi)))
            spectra = (spectra + a * np.nan_to_num(donor, nan=0.0)) / (1 + a)
            aux = np.full_like(rt.aux, np.nan)
    noise_p = float(cfg.get("noise_prob", 0.0))
    if noise_p and noise_window is not None and rng.random() < noise_p:
        sigma = spectral_noise(spectra, noise_window)
        max_factor = float(cfg.get("noise_max_factor", 10.0))
        if (min_snr := cfg.get("noise_min_snr")) is not None:
            max_factor = min(max_factor, (rt.snr or 0.0) / float(min_snr))
        # one draw whatever the cap, so that the random stream stays that of older configs
        factor = float(np.exp(rng.uniform(0.0, np.log(max(max_factor, 1.0)))))
        if sigma > 0 and factor > 1:
            add = sigma * np.sqrt(factor**2 - 1.0)
            spectra = (spectra + rng.normal(0.0, add, spectra.shape)).astype(np.float32)
    echem, mask = rt.echem, rt.echem_mask
    if window is not None and spectra is not rt.spectra and echem.shape[1] > N_ECHEM:
        # The window features read the spectra: computed from the clean ones they would tell
        # the network what the noisy (or mixed) spectra no longer show.
        echem, mask = window.widen(spectra, rt.t_s, echem[:, :N_ECHEM], mask[:, :N_ECHEM])
        # columns the run had masked whole (a current-free member's run) stay masked
        gone = ~(rt.echem_mask > 0).any(axis=0)
        echem[:, gone], mask[:, gone] = 0, 0
    jitter = float(cfg.get("intensity_jitter", 0.0))
    if jitter:
        spectra = spectra * np.float32(np.exp(rng.normal(0, jitter)))
    shift = float(cfg.get("shift_ppm", 0.0))
    if shift:
        k = int(round(rng.uniform(-shift, shift) / step_ppm))
        if k:
            spectra = np.roll(spectra, k, axis=1)
            if k > 0:
                spectra[:, :k] = np.nan
            else:
                spectra[:, k:] = np.nan
    prefix_p = float(cfg.get("drop_echem_prefix", 0.0))
    # Columns computed from the potentiostat (all, without window features); the spectral
    # window features stay, as they would at inference without a potential log.
    from_echem = potentiostat_columns(echem.shape[1])
    if rng.random() < float(cfg.get("drop_echem", 0.0)):
        echem, mask = echem.copy(), mask.copy()
        echem[:, from_echem], mask[:, from_echem] = 0, 0
    elif prefix_p and rng.random() < prefix_p:     # no draw when off: older configs replay
        # A potential log that starts after the first spectra (the potentiostat started late,
        # or its file begins later): the first k frames have no echem, the rest do.
        k = int(rng.integers(1, int(cfg.get("drop_echem_prefix_max_frames", 12)) + 1))
        echem, mask = _log_from(k, rt.t_s, echem, mask, from_echem, window)
    elif (until_p := float(cfg.get("drop_echem_until_current", 0.0))) and rng.random() < until_p:
        # A log that starts with the first current step: the open-circuit rest before it was
        # recorded by another technique (EC-Lab OCV, GEIS), whose file is not given.
        j = ECHEM_FEATURES.index("current_asinh")
        on = np.flatnonzero((mask[:, j] > 0) & (echem[:, j] != 0))
        if on.size and on[0] > 0:
            echem, mask = _log_from(int(on[0]), rt.t_s, echem, mask, from_echem, window)
    current_p = float(cfg.get("drop_current", 0.0))
    if current_p and rng.random() < current_p:     # no draw when off: older configs replay
        # A potential-only log (EC-Lab export of time and Ewe, as the measured Li | Li run's):
        # the current's features are undefined, the potential's stay.
        echem, mask = _without_current(echem, mask)
    return RunTensors(rt.run_id, rt.family, rt.t_s, spectra, echem, mask, rt.y, aux,
                      rt.t_onset_s, rt.t_short_s, rt.has_short_precursors, rt.snr)


def _log_from(k: int, t_s, echem: np.ndarray, mask: np.ndarray, from_echem: np.ndarray,
              window: WindowInputs | None) -> tuple[np.ndarray, np.ndarray]:
    """Copies of a run's echem input and mask as if the potentiostat log began at frame ``k``:
    its columns masked before ``k`` and (with ``window``) the log-history window features
    restarted there."""
    if window is not None:
        echem, mask = window.restart_log(t_s, echem, mask, k)    # copies
    else:
        echem, mask = echem.copy(), mask.copy()
    echem[:k, from_echem], mask[:k, from_echem] = 0, 0
    return echem, mask


def longest_normal_stretch(y: np.ndarray) -> tuple[int, int]:
    """``(start, stop)`` of the longest block of consecutive ``normal_lithiation`` frames."""
    best, start = (0, 0), None
    for i, c in enumerate(np.append(y, -2)):
        if c == CLASS_INDEX["normal_lithiation"]:
            start = i if start is None else start
        elif start is not None:
            if i - start > best[1] - best[0]:
                best = (start, i)
            start = None
    return best


def normal_donor_spectra(donors: list[RunTensors], run: RunTensors, n: int,
                         rng: np.random.Generator) -> np.ndarray | None:
    """``(n, n_ppm)`` spectra of consecutive normal frames of a random donor of another family.

    A stretch longer than ``n`` is cut at a random start; a shorter one holds its last frame
    (a donor at rest). None when no donor of another family has normal frames.
    """
    for _ in range(8):
        d = donors[int(rng.integers(len(donors)))]
        if d.family == run.family:
            continue
        a, b = longest_normal_stretch(d.y)
        if b - a < 1:
            continue
        if b - a >= n:
            a = a + int(rng.integers(0, b - a - n + 1))
            return d.spectra[a:a + n]
        idx = np.concatenate([np.arange(a, b), np.full(n - (b - a), b - 1)])
        return d.spectra[idx]
    return None


def collate(batch: list[RunTensors], device="cpu") -> dict[str, torch.Tensor]:
    """Pad runs to the longest (valid frames first) and stack into tensors."""
    B, T = len(batch), max(len(r) for r in batch)
    P, F, A = batch[0].spectra.shape[1], batch[0].echem.shape[1], batch[0].aux.shape[1]
    spectra = np.full((B, T, P), np.nan, np.float32)
    echem = np.zeros((B, T, F), np.float32)
    emask = np.zeros((B, T, F), np.float32)
    y = np.full((B, T), -1, np.int64)
    aux = np.full((B, T, A), np.nan, np.float32)
    lengths = np.zeros(B, np.int64)
    for i, r in enumerate(batch):
        n = len(r)
        spectra[i, :n], echem[i, :n], emask[i, :n] = r.spectra, r.echem, r.echem_mask
        y[i, :n], aux[i, :n], lengths[i] = r.y, r.aux, n
    to = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    valid = torch.arange(T)[None, :] < torch.from_numpy(lengths)[:, None]
    return {"spectra": to(spectra), "echem": to(echem), "echem_mask": to(emask), "y": to(y),
            "aux": to(aux), "lengths": to(lengths), "valid": valid.to(device)}


def class_weights(runs: list[RunTensors], mode: str) -> torch.Tensor | None:
    if mode == "none":
        return None
    counts = np.zeros(len(CLASSES))
    for r in runs:
        for c in r.y[r.y >= 0]:
            counts[c] += 1
    counts = np.maximum(counts, 1)
    w = counts.sum() / (len(CLASSES) * counts)
    if mode == "sqrt_balanced":
        w = np.sqrt(w)
    return torch.tensor(w / w.mean(), dtype=torch.float32)


def run_info_json(info: str) -> dict:
    return json.loads(info) if info else {}
