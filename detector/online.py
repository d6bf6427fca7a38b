"""The online detector: a stateful, causal, river-style estimator over processed frames.

``update(frame)`` consumes one :class:`~lisentry.datasets.frame.Frame` (already processed by
the bundle's pipeline); afterwards ``predict_proba_one()``, ``label``, ``alarm`` and
``last_row`` describe that frame. Nothing in it can see the future: the model's GRU state, the
run's first frame (for the frame-difference channel), the causal echem features and the
hysteresis labeller are its whole state, which :meth:`state_dict` saves (JSON + tensors, never
pickle). :meth:`label_frames` runs a whole run in one batch and gives exactly the streaming
output (a test checks it).
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

from lisentry.datasets.cells import check_cell_kind
from lisentry.datasets.errors import ConfigError, InputError
from lisentry.datasets.frame import CLASSES, Frame
from lisentry.detector.hysteresis import (AlarmPolicy, HysteresisLabeller, cumulative_scores,
                                          smooth_labels)
from lisentry.models.bundle import Bundle
from lisentry.models.calibration import energy_score, softmax_t
from lisentry.models.features import EchemFeatureState, echem_features
from lisentry.models.window_features import WindowFeatureState

#: Below this estimated cluster amount (fraction of the initial 7Li signal) no cluster shift is
#: reported (NaN), since a shift of an undetectable peak means nothing.
CLUSTER_SHIFT_MIN_AMOUNT = 0.005


def policy_from_card(card: Mapping) -> AlarmPolicy:
    det = card.get("detector") or {}
    return AlarmPolicy(enter=det.get("enter", 0.6), exit=det.get("exit", 0.4),
                       min_consecutive=det.get("min_consecutive", 2))


class OnlineDetector:
    """Causal frame-by-frame detector wrapping a model bundle.

    Parameters
    ----------
    bundle : Bundle
        Loaded model bundle (weights, card with temperature, OOD threshold, grid).
    policy : AlarmPolicy, optional
        Hysteresis thresholds; default: the card's ``detector`` section.
    cell : {"half", "symmetric"}
        The cell the frames come from (:mod:`lisentry.datasets.cells`). ``symmetric`` (Li | Li)
        feeds potential, current and charge as magnitudes, as the model was trained to read
        such cells; it needs a bundle trained with ``inputs.symmetric_cells: sign_free``.

    Examples
    --------
    >>> det = OnlineDetector(load_bundle(DEFAULT_BUNDLE))      # doctest: +SKIP
    >>> for frame in run: det.update(frame); print(det.label)  # doctest: +SKIP
    """

    def __init__(self, bundle: Bundle, policy: AlarmPolicy | None = None, cell: str = "half"):
        self.bundle = bundle
        self.cell = check_cell_kind(cell)
        if self.cell == "symmetric" and bundle.symmetric_cells != "sign_free":
            # such a model learned "positive potential = no plating" from half cells, which a
            # symmetric cell wired either way contradicts: refuse rather than mislabel
            raise ConfigError(f"--cell symmetric needs a model trained with inputs.symmetric_cells: "
                              f"sign_free; {bundle.path} reads symmetric cells signed (omit --cell "
                              f"to label with it as a half cell)")
        self.sign_free = self.cell == "symmetric"
        self.model = bundle.model.eval()
        self.temperature = float(bundle.temperature)
        # The shipped OOD score: the bundle's feature scorer when it has one, else the energy
        # of the calibrated logits (older bundles).
        self.ood_scorer = bundle.ood_scorer
        self.ood_threshold = bundle.ood_score_threshold
        # Latent amounts the gate calls absent are reported as 0 (bundles with a gate).
        self.presence_gate = bundle.presence_gate
        self.policy = policy or policy_from_card(bundle.card)
        self.grid = bundle.ppm_grid
        # hand-made window features appended to the echem input (bundles trained with them)
        self.window = bundle.window_inputs
        self._grid_checked = None
        self.reset()

    # ---------------------------------------------------------------- river API
    def reset(self) -> "OnlineDetector":
        self._state = self.model.init_state(1)
        self._echem = EchemFeatureState(sign_free=self.sign_free)
        self._window = self.window.stream() if self.window is not None else None
        self._hyst = HysteresisLabeller(self.policy)
        self._proba: dict[str, float] | None = None
        self.last_row: dict | None = None
        self.n_seen = 0
        return self

    def clone(self) -> "OnlineDetector":
        """A fresh detector with the same bundle and policy (no state)."""
        return OnlineDetector(self.bundle, self.policy, cell=self.cell)

    def _check(self, frame: Frame) -> None:
        """Refuse a frame on another ppm grid or of another nucleus (one-line InputError)."""
        if frame.intensity.shape != self.grid.shape:
            raise InputError(frame.source, f"spectrum has {frame.intensity.shape[0]} grid points; "
                                           f"the model takes {self.grid.shape[0]}")
        if frame.ppm_grid is self._grid_checked:      # the pipeline's one read-only grid
            pass
        elif not self._grid_matches(frame.ppm_grid):
            grid = np.asarray(frame.ppm_grid, dtype=float)
            raise InputError(frame.source, f"ppm grid {grid[0]:g}..{grid[-1]:g} ppm differs from "
                                           f"the model's {self.grid[0]:g}..{self.grid[-1]:g} ppm")
        if frame.nucleus != self.bundle.nucleus:
            raise InputError(frame.source, f"nucleus {frame.nucleus} but the model is for "
                                           f"{self.bundle.nucleus}")

    def _grid_matches(self, ppm_grid) -> bool:
        """The frame's grid equals the model's (to 1e-6 ppm); a read-only grid that matched
        is remembered, so the frames of a run (which share their pipeline's grid) are
        compared once."""
        grid = np.asarray(ppm_grid, dtype=float)
        ok = grid.shape == self.grid.shape and bool(np.allclose(grid, self.grid, rtol=0, atol=1e-6))
        if ok and isinstance(ppm_grid, np.ndarray) and not ppm_grid.flags.writeable:
            self._grid_checked = ppm_grid
        return ok

    @torch.no_grad()
    def update(self, frame: Frame) -> None:
        """Consume the next frame of the run (in acquisition order)."""
        self._check(frame)
        feats, mask = self._echem.update(frame.t_s, frame.potential_V, frame.current_A,
                                         frame.charge_C)
        if self._window is not None:
            # from the float32 spectrum the model sees, as in training and label_frames
            feats, mask = self.window.widen_one(self._window, frame.intensity.astype(np.float32),
                                                frame.t_s, feats, mask)
        want = self._wants_features
        out, self._state = self.model.step(torch.from_numpy(frame.intensity[None].astype(np.float32)),
                                           torch.from_numpy(feats[None]), self._state,
                                           echem_mask=torch.from_numpy(mask[None]),
                                           return_features=want)
        logits = out["logits"][0].double().numpy()
        feats_np = out["features"].double().numpy() if want else None
        aux = self._gate(out["aux"].double().numpy(), feats_np)[0]
        proba = softmax_t(logits, self.temperature)
        self._proba = dict(zip(CLASSES, map(float, proba)))
        label = self._hyst.update(self._proba)
        ood = self._ood_scores(logits[None], frame.intensity[None], feats_np)[0]
        self.last_row = self._row(frame, proba, label, float(ood), aux)
        self.n_seen += 1

    def predict_proba_one(self) -> dict[str, float]:
        """Calibrated class probabilities of the last frame."""
        if self._proba is None:
            raise RuntimeError("predict_proba_one() before any update()")
        return dict(self._proba)

    @property
    def label(self) -> str | None:
        """Hysteresis-smoothed label of the last frame."""
        return self._hyst.label

    @property
    def alarm(self) -> str | None:
        """Current alarm class (``plating_onset``/``imminent_short``) or None."""
        return self._hyst.alarm

    # ---------------------------------------------------------------- state
    def state_dict(self) -> tuple[dict, dict[str, np.ndarray]]:
        """JSON-safe state plus named arrays (write the arrays with safetensors)."""
        js = {"n_seen": self.n_seen, "echem": self._echem.to_dict(),
              **({"window": self._window.to_dict()} if self._window is not None else {}),
              "hysteresis": self._hyst.state_dict(), "proba": self._proba,
              "last_row": self.last_row, "bundle_sha256": self.bundle.sha256, "cell": self.cell}
        tensors = {f"model.{k}": v.detach().cpu().numpy() for k, v in self._state.items()}
        return js, tensors

    def load_state_dict(self, js: Mapping, tensors: Mapping[str, np.ndarray]) -> "OnlineDetector":
        if js.get("bundle_sha256") not in (None, self.bundle.sha256):
            raise ValueError("saved detector state belongs to another model bundle")
        if js.get("cell", "half") != self.cell:
            raise ValueError(f"saved detector state is of a {js.get('cell', 'half')} cell, "
                             f"not --cell {self.cell}")
        self.n_seen = int(js["n_seen"])
        self._echem = EchemFeatureState.from_dict(js["echem"])
        if self.window is not None:
            if "window" not in js:
                raise ValueError("saved detector state has no window-feature state")
            self._window = WindowFeatureState.from_dict(js["window"], self.window.ppm_grid)
        self._hyst = HysteresisLabeller(self.policy).load_state_dict(js["hysteresis"])
        self._proba = js.get("proba")
        self.last_row = js.get("last_row")
        self._state = {k[len("model."):]: torch.from_numpy(np.array(v))
                       for k, v in tensors.items() if k.startswith("model.")}
        return self

    # ---------------------------------------------------------------- rows
    @property
    def _wants_features(self) -> bool:
        return ((self.ood_scorer is not None and self.ood_scorer.uses_features)
                or self.presence_gate is not None)

    def _gate(self, aux: np.ndarray, features) -> np.ndarray:
        """``aux`` with the latent amounts the presence gate calls absent set to 0."""
        if self.presence_gate is None:
            return aux
        return self.presence_gate.apply(aux, self.model.aux_names, features)

    def _ood_scores(self, logits: np.ndarray, spectra: np.ndarray, features) -> np.ndarray:
        """``(T,)`` shipped OOD score of frames (higher = more unusual)."""
        if self.ood_scorer is None:
            return np.atleast_1d(energy_score(logits, self.temperature))
        return self.ood_scorer.score(spectra, features)

    def _row(self, frame: Frame, proba, label, ood, aux) -> dict:
        names = list(self.model.aux_names)
        a = dict(zip(names, map(float, aux)))
        cluster = max(a.get("cluster_amount", math.nan), 0.0)
        shift = a.get("cluster_shift_ppm", math.nan) if cluster >= CLUSTER_SHIFT_MIN_AMOUNT else math.nan
        reasons = [] if frame.status == "ok" else [frame.status]
        if self.ood_threshold is not None and ood > self.ood_threshold:
            reasons.append("ood")
        return {
            "frame": frame.expno, "timestamp": frame.timestamp, "t_s": frame.t_s, "label": label,
            **{f"p_{c}": float(p) for c, p in zip(CLASSES, proba)},
            "potential_V": frame.potential_V, "current_A": frame.current_A,
            "ood_score": ood, "cluster_amount": cluster, "cluster_shift_ppm": shift,
            "metal_amount": max(a.get("metal_amount", math.nan), 0.0),
            "ce_amount": max(a.get("ce_amount", math.nan), 0.0),
            "status": ";".join(reasons) or "ok",
        }

    # ---------------------------------------------------------------- batch
    @torch.no_grad()
    def label_frames(self, frames: Sequence[Frame]) -> list[dict]:
        """Label a whole run in one batch (from a fresh state); equals frame-by-frame updates.

        The detector is left in the state it would have after updating on every frame.
        """
        frames = list(frames)
        self.reset()
        if not frames:
            return []
        for f in frames:
            self._check(f)
        spectra = torch.from_numpy(np.stack([f.intensity for f in frames]).astype(np.float32))[None]
        feats, mask = echem_features([f.t_s for f in frames], [f.potential_V for f in frames],
                                     [f.current_A for f in frames], [f.charge_C for f in frames],
                                     sign_free=self.sign_free)
        window_state = None
        if self.window is not None:
            feats, mask, window_state = self.window.widen(
                spectra[0].numpy(), [f.t_s for f in frames], feats, mask, state=True)
        want = self._wants_features
        out = self.model(spectra, torch.from_numpy(feats)[None],
                         echem_mask=torch.from_numpy(mask)[None], return_state=True,
                         return_features=want)
        logits = out["logits"][0].double().numpy()
        feats_np = out["features"][0].double().numpy() if want else None
        aux = self._gate(out["aux"][0].double().numpy(), feats_np)
        proba = softmax_t(logits, self.temperature)
        labels = smooth_labels(proba, self.policy)
        energy = self._ood_scores(logits, spectra[0].numpy(), feats_np)
        rows = [self._row(f, proba[i], str(labels[i]), float(energy[i]), aux[i])
                for i, f in enumerate(frames)]
        # Leave the streaming state where update() would have left it.
        self._state = out["state"]
        for f in frames:
            self._echem.update(f.t_s, f.potential_V, f.current_A, f.charge_C)
        self._window = window_state
        if tuple(self.policy.classes) == tuple(CLASSES):
            for s, p in zip(cumulative_scores(proba), proba):   # = update() on each row
                self._hyst._step(s, p)
        else:
            for p in proba:
                self._hyst.update(dict(zip(CLASSES, map(float, p))))
        self._proba = dict(zip(CLASSES, map(float, proba[-1])))
        self.last_row = rows[-1]
        self.n_seen = len(frames)
        return rows
