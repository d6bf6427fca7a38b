"""Presence gates for the latent amounts: is there a cluster (or metal) peak at all?

The auxiliary heads regress each latent amount with a Huber loss, so on frames without a
cluster they are cheap to leave a little above zero: the shipped model estimated a cluster
amount of at least the detection limit (0.005 of the run's initial 7Li signal) on about half
of the cluster-free frames, in simulation and on the measured Li | Li run (see
``benchmarks/cluster_head.py``). A per-latent logistic regression on the classification head's
input features (GRU state + frame embedding, the model's ``return_features``), fitted after
training on the training runs' simulated truth, answers the yes/no question the regression
blurs. Where the gate is closed the detector reports the amount as 0 and no cluster shift.

A gate is plain arrays (feature mean and scale, coefficients, intercept per latent) written as
safetensors + JSON into the model bundle (``presence.safetensors``, ``presence.json``); no
pickle. It changes no class probability or label.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from lisentry.datasets.errors import ConfigError
from lisentry.models.sidefile import read_side_config, write_side_files

FORMAT = "lisentry-presence-gate"
FORMAT_VERSION = 1
TENSORS = "presence.safetensors"
CONFIG = "presence.json"
#: The latents a gate may cover: amounts that are truly zero on many frames. (``ce_amount`` is
#: the whole counter electrode, present from the first frame of a metal-CE cell.)
GATEABLE = ("cluster_amount", "metal_amount")
#: What is gated by default: the cluster amount only. A metal gate hid the measured Li | Li
#: run's plated-metal line for 24 frames (docs/results/journal.md, 2026-12-07, sixth part).
DEFAULT_LATENTS = ("cluster_amount",)


class NoLatentTruth(ValueError):
    """The frames to fit on lack simulated truth with and without the latent (measured runs)."""


class PresenceGate:
    """Per-latent logistic regressions ``P(amount >= detect_limit | head features)``.

    Parameters
    ----------
    latents : sequence of str
        Latent amounts to gate, from :data:`GATEABLE` (default :data:`DEFAULT_LATENTS`).
    detect_limit : float
        A latent counts as present from this amount on (fraction of the run's initial 7Li
        signal; 0.005 is the simulator's detection limit).
    free_below : float
        A latent counts as absent below this amount; frames in between are not used to fit.
    C : float
        Inverse L2 regularisation of the logistic regressions (scikit-learn's ``C``), on
        standardised features.
    threshold : float
        The gate is open where the probability is at least this.
    """

    def __init__(self, latents: Sequence[str] = DEFAULT_LATENTS, detect_limit: float = 0.005,
                 free_below: float = 1e-4, C: float = 1.0, threshold: float = 0.5):
        self.latents = tuple(latents)
        self.detect_limit, self.free_below = float(detect_limit), float(free_below)
        self.C, self.threshold = float(C), float(threshold)
        self._validate()
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.coef_: np.ndarray | None = None        # (n_latents, n_features)
        self.intercept_: np.ndarray | None = None   # (n_latents,)
        self.fit_stats_: dict = {}

    def _validate(self) -> None:
        bad = [a for a in self.latents if a not in GATEABLE]
        if not self.latents or bad or len(set(self.latents)) != len(self.latents):
            raise ConfigError(f"presence.latents must be distinct names from {list(GATEABLE)}. "
                              f"Got {list(self.latents)}.")
        if not (0.0 < self.free_below <= self.detect_limit):
            raise ConfigError(f"presence: need 0 < free_below <= detect_limit. Got free_below "
                              f"{self.free_below}, detect_limit {self.detect_limit}.")
        if not (math.isfinite(self.C) and self.C > 0):
            raise ConfigError(f"presence.C must be a number > 0. Got {self.C}.")
        if not (0.0 < self.threshold < 1.0):
            raise ConfigError(f"presence.threshold must be in (0, 1). Got {self.threshold}.")

    # ------------------------------------------------------------------ fit / predict
    @property
    def n_features(self) -> int | None:
        return None if self.mean_ is None else int(self.mean_.shape[0])

    def fit(self, features: np.ndarray, amounts: Mapping[str, np.ndarray]) -> "PresenceGate":
        """Fit one logistic regression per latent.

        Parameters
        ----------
        features : ndarray
            ``(N, F)`` head features of N frames.
        amounts : mapping
            Latent name -> ``(N,)`` true amounts (NaN = unknown, e.g. measured runs; ignored).
        """
        from sklearn.linear_model import LogisticRegression  # noqa: PLC0415  (training only)
        X = np.asarray(features, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"features must be (N, F) with N >= 1. Got shape {X.shape}.")
        self.mean_ = X.mean(0)
        self.scale_ = np.where(X.std(0) > 1e-8, X.std(0), 1.0)
        Z = (X - self.mean_) / self.scale_
        coef, icpt, stats = [], [], {}
        for name in self.latents:
            if name not in amounts:
                raise ValueError(f"no true amounts given for {name!r}")
            t = np.asarray(amounts[name], dtype=np.float64)
            if t.shape != (X.shape[0],):
                raise ValueError(f"{name}: {t.shape[0]} amounts for {X.shape[0]} frames")
            present, free = t >= self.detect_limit, t < self.free_below
            use = np.isfinite(t) & (present | free)
            if not (present[use].any() and free[use].any()):
                raise NoLatentTruth(f"{name}: fitting a gate needs frames with and without it "
                                 f"(got {int(present[use].sum())} present, "
                                 f"{int(free[use].sum())} absent)")
            lr = LogisticRegression(C=self.C, class_weight="balanced", max_iter=5000)
            lr.fit(Z[use], present[use])
            coef.append(lr.coef_[0])
            icpt.append(float(lr.intercept_[0]))
            stats[name] = {"n_present": int(present[use].sum()), "n_absent": int(free[use].sum())}
        self.coef_, self.intercept_ = np.stack(coef), np.asarray(icpt, dtype=np.float64)
        self.fit_stats_ = stats
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """``(..., n_latents)`` probability that each latent is present."""
        if self.coef_ is None:
            raise RuntimeError("PresenceGate is not fitted")
        X = np.asarray(features, dtype=np.float64)
        if X.shape[-1] != self.n_features:
            raise ValueError(f"features have {X.shape[-1]} columns; the gate was fitted on "
                             f"{self.n_features}")
        z = ((X - self.mean_) / self.scale_) @ self.coef_.T + self.intercept_
        return 0.5 * (1.0 + np.tanh(0.5 * z))       # the logistic function, overflow-free

    def open(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """Latent name -> bool array ``(...)``: is the gate open (the latent present)?"""
        p = self.predict_proba(features)
        return {name: p[..., j] >= self.threshold for j, name in enumerate(self.latents)}

    def apply(self, aux: np.ndarray, aux_names: Sequence[str], features: np.ndarray) -> np.ndarray:
        """A copy of ``aux`` (``(..., n_aux)``) with each gated amount 0 where its gate is
        closed, and ``cluster_shift_ppm`` NaN where the cluster gate is."""
        out = np.array(aux, dtype=np.float64, copy=True)
        names = list(aux_names)
        for name, is_open in self.open(features).items():
            if name in names:
                out[..., names.index(name)] = np.where(is_open, out[..., names.index(name)], 0.0)
            if name == "cluster_amount" and "cluster_shift_ppm" in names:
                j = names.index("cluster_shift_ppm")
                out[..., j] = np.where(is_open, out[..., j], np.nan)
        return out

    # ------------------------------------------------------------------ files
    def config(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION,
                "method": "logistic regression per latent on the standardised head features",
                "params": {"latents": list(self.latents), "detect_limit": self.detect_limit,
                           "free_below": self.free_below, "C": self.C,
                           "threshold": self.threshold},
                "n_features": self.n_features, "fit": self.fit_stats_}

    def save(self, directory: str | Path, meta: Mapping | None = None) -> Path:
        """Write ``presence.safetensors`` and ``presence.json`` (``meta`` under ``"meta"``)."""
        if self.coef_ is None:
            raise RuntimeError("PresenceGate is not fitted")
        arrays = {"mean": self.mean_, "scale": self.scale_, "coef": self.coef_,
                  "intercept": self.intercept_}
        return write_side_files(directory, TENSORS, CONFIG, arrays,
                                {**self.config(), "meta": dict(meta or {})}, FORMAT)

    @classmethod
    def load(cls, directory: str | Path) -> "PresenceGate":
        """Inverse of :meth:`save`; raises ConfigError on a file it does not understand."""
        from safetensors.numpy import load_file
        d = Path(directory)
        cfg = read_side_config(d, CONFIG, FORMAT, FORMAT_VERSION, "a", "presence gate")
        gate = cls(**cfg["params"])
        t = load_file(str(d / TENSORS))
        gate.mean_, gate.scale_ = t["mean"], t["scale"]
        gate.coef_, gate.intercept_ = t["coef"], t["intercept"]
        F, L = gate.mean_.shape[0], len(gate.latents)
        if (gate.scale_.shape != (F,) or gate.coef_.shape != (L, F)
                or gate.intercept_.shape != (L,)):
            raise ConfigError(f"{d / TENSORS}: arrays do not fit {L} latents over {F} features")
        gate.fit_stats_ = dict(cfg.get("fit") or {})
        return gate


def fit_on_runs(model, runs, *, latents: Sequence[str] = DEFAULT_LATENTS, detect_limit: float = 0.005,
                free_below: float = 1e-4, C: float = 1.0, threshold: float = 0.5,
                batch_runs: int = 8) -> PresenceGate:
    """Fit a :class:`PresenceGate` on ``model``'s head features of ``runs``
    (:class:`~lisentry.training.data.RunTensors` with simulated latent truth in ``aux``).
    The runs are taken in the order of their ids, so the gate does not depend on the order
    they come in (the trainer's and the card's split lists differ)."""
    runs = sorted(runs, key=lambda r: r.run_id)
    _, feats, truth = run_outputs(model, runs, batch_runs=batch_runs)
    names = list(model.aux_names)
    missing = [a for a in latents if a not in names]
    if missing:
        raise ConfigError(f"presence.latents {missing} are not among the model's auxiliary "
                          f"outputs {names}")
    gate = PresenceGate(latents, detect_limit, free_below, C, threshold)
    return gate.fit(feats, {a: truth[:, names.index(a)] for a in latents})


def run_outputs(model, runs, *, batch_runs: int = 8
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All frames of ``runs``: estimated latents ``(N, n_aux)``, head features ``(N, F)`` and
    true latents ``(N, n_aux)`` (NaN where unknown)."""
    import torch  # noqa: PLC0415

    from lisentry.training.data import collate  # noqa: PLC0415
    model.eval()
    est, feats, truth = [], [], []
    with torch.no_grad():
        for i in range(0, len(runs), batch_runs):
            chunk = list(runs[i:i + batch_runs])
            b = collate(chunk, "cpu")
            res = model(b["spectra"], b["echem"], lengths=b["lengths"],
                        echem_mask=b["echem_mask"], return_features=True)
            for j, r in enumerate(chunk):
                est.append(res["aux"][j, :len(r)].double().numpy())
                feats.append(res["features"][j, :len(r)].double().numpy())
                truth.append(np.asarray(r.aux, dtype=np.float64))
    if not est:
        raise ValueError("no runs given")
    return np.concatenate(est), np.concatenate(feats), np.concatenate(truth)


def gate_report(gate: PresenceGate, model, runs, *, batch_runs: int = 8) -> dict[str, dict]:
    """Per gated latent, on ``runs`` with simulated truth: the share of frames without it
    (truth below ``free_below``) on which an amount of at least ``detect_limit`` is reported,
    without and with the gate, and the share of frames with it (truth at least
    ``detect_limit``) on which it is reported with the gate (``None`` where no such frames)."""
    names = list(model.aux_names)
    if not runs:
        return {}
    from lisentry.training.evaluate import reported_shares  # noqa: PLC0415
    est, feats, truth = run_outputs(model, runs, batch_runs=batch_runs)
    gated = gate.apply(est, names, feats)
    out = {}
    for a in gate.latents:
        j = names.index(a)
        kw = dict(detect=gate.detect_limit, free_below=gate.free_below)
        raw, new = reported_shares(est[:, j], truth[:, j], **kw), reported_shares(gated[:, j], truth[:, j], **kw)
        out[a] = {"absent_reported_ungated": raw["absent_reported"],
                  "absent_reported": new["absent_reported"],
                  "present_reported_ungated": raw["present_reported"],
                  "present_reported": new["present_reported"],
                  "n_absent": new["n_absent"], "n_present": new["n_present"]}
    return out
