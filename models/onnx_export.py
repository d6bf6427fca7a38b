"""ONNX export of a model's streaming step, and a parity check in ONNX Runtime.

The exported graph is one call of :meth:`LisentryNet.step` for one run (batch 1): the detector's
per-frame work, so a lab can run the detector's model outside Python or PyTorch. Inputs (all
float32 unless said):

``spectrum`` (1, n_ppm)
    the processed, run-normalised spectrum on the card's grid, NaN where not covered;
``echem`` (1, n_echem), ``echem_mask`` (1, n_echem)
    the causal electrochemistry features (``lisentry.models.features.ECHEM_FEATURES``, NaN
    when missing) and their validity (1/0); for a model trained with window features (card and
    metadata ``inputs.window_features``: names, scales) followed by those features (20 or 31), scaled,
    as :class:`lisentry.models.window_features.WindowInputs` computes them frame by frame;
``h``, ``ref``, ``ref_mask``, ``n_seen`` (int64)
    the state: zeros before the first frame (shapes in the file), then the ``*_out``
    outputs of the previous call.

Outputs: ``logits`` (1, 4) in the card's class order (divide by the card's temperature before
the softmax), ``aux`` (1, n_aux) the latent amounts as the detector reports them before clipping
at 0 (with the bundle's presence gate, when it has one and it is passed: a gated amount is 0 and
the cluster shift NaN where the gate is closed), and the new state. The file is
self-contained (weights inside, not in a side file) and carries the card's classes, grid,
temperature, echem feature names and weights hash as metadata (``lisentry.*`` properties).
Needs the optional ``onnx`` extra (onnxscript; onnxruntime for :func:`check_onnx`).
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

STEP_INPUTS = ("spectrum", "echem", "echem_mask", "h", "ref", "ref_mask", "n_seen")
STEP_OUTPUTS = ("logits", "aux", "h_out", "ref_out", "ref_mask_out", "n_seen_out")
#: Card keys copied into the ONNX file's metadata (as JSON strings, prefixed ``lisentry.``).
CARD_METADATA = ("classes", "nucleus", "ppm_grid", "temperature", "horizon_s", "inputs",
                 "weights_sha256", "package_version", "name")


class _StepModule(nn.Module):
    def __init__(self, model: nn.Module, presence_gate=None):
        super().__init__()
        self.model = model
        self.gated = presence_gate is not None
        if self.gated:
            # the gate (lisentry.models.presence) as tensor ops: open where the logistic score
            # reaches the logit of its threshold; float64 like the detector's numpy version
            g = presence_gate
            names = list(model.aux_names)
            self.register_buffer("g_mean", torch.from_numpy(np.asarray(g.mean_, np.float64)))
            self.register_buffer("g_scale", torch.from_numpy(np.asarray(g.scale_, np.float64)))
            self.register_buffer("g_coef", torch.from_numpy(np.asarray(g.coef_, np.float64)))
            self.register_buffer("g_icpt", torch.from_numpy(np.asarray(g.intercept_, np.float64)))
            self.g_logit = float(np.log(g.threshold / (1.0 - g.threshold)))
            self.g_cols = [names.index(a) for a in g.latents]
            self.g_shift = [names.index("cluster_shift_ppm") if a == "cluster_amount"
                            and "cluster_shift_ppm" in names else -1 for a in g.latents]

    def forward(self, spectrum, echem, echem_mask, h, ref, ref_mask, n_seen):
        out, st = self.model.step(spectrum, echem,
                                  {"h": h, "ref": ref, "ref_mask": ref_mask, "n_seen": n_seen},
                                  echem_mask=echem_mask, return_features=self.gated)
        aux = out["aux"]
        if self.gated:
            z = ((out["features"].double() - self.g_mean) / self.g_scale) @ self.g_coef.T + self.g_icpt
            closed = z < self.g_logit                           # (1, n_gated)
            cols = list(aux.unbind(-1))
            for i, (j, k) in enumerate(zip(self.g_cols, self.g_shift)):
                cols[j] = torch.where(closed[:, i], torch.zeros_like(cols[j]), cols[j])
                if k >= 0:
                    cols[k] = torch.where(closed[:, i], torch.full_like(cols[k], float("nan")), cols[k])
            aux = torch.stack(cols, -1)
        return out["logits"], aux, st["h"], st["ref"], st["ref_mask"], st["n_seen"]


def _require(module: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ImportError(f"{what} needs {module} (pip install 'lisentry[onnx]')")


def export_onnx(model: nn.Module, path: str | Path, *, card: Mapping[str, Any] | None = None,
                presence_gate=None) -> Path:
    """Export the streaming step (one frame, batch 1) to a self-contained ONNX file.

    Parameters
    ----------
    model : LisentryNet
        The network (put in eval mode; not modified otherwise).
    path : path
        The ``.onnx`` file to write (atomically: written beside it, then renamed).
    card : mapping, optional
        The bundle card; its classes, grid, temperature, ... go into the file's metadata.
    presence_gate : PresenceGate, optional
        The bundle's presence gate, built into the file so ``aux`` is what the detector
        reports (``lisentry export`` passes the bundle's).

    Raises
    ------
    ImportError
        If ``onnxscript`` (and so ``onnx``) is not installed.
    """
    _require("onnxscript", "ONNX export")
    import onnx

    model = model.eval()
    path = Path(path)
    n = model.n_echem
    st = model.init_state(1)
    args = (torch.zeros(1, model.n_ppm), torch.zeros(1, n), torch.ones(1, n),
            st["h"], st["ref"], st["ref_mask"], st["n_seen"])
    tmp = path.with_name(f".{path.name}.exporting")
    # the exporter logs a warning per torchvision operator when torchvision is absent
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        # the exporter's notes on the GRU's flat weights and pytree internals: not actionable here
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        prog = torch.onnx.export(_StepModule(model, presence_gate).eval(), args, dynamo=True,
                                 input_names=list(STEP_INPUTS), output_names=list(STEP_OUTPUTS),
                                 verbose=False)
    proto = prog.model_proto
    props = {"lisentry.format": "streaming step, batch 1 (lisentry.models.onnx_export)",
             "lisentry.presence_gate": json.dumps(None if presence_gate is None
                                                  else list(presence_gate.latents))}
    for key in CARD_METADATA:
        if card is not None and card.get(key) is not None:
            props[f"lisentry.{key}"] = json.dumps(card[key])
    onnx.helper.set_model_props(proto, props)
    try:
        onnx.save_model(proto, str(tmp), save_as_external_data=False)
        os.replace(tmp, path)
    finally:  # a failed save (disk full, unwritable folder) leaves no half-written temp file
        tmp.unlink(missing_ok=True)
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``lisentry.*`` metadata of an exported file, decoded (``{"classes": [...], ...}``)."""
    _require("onnx", "Reading ONNX metadata")
    import onnx
    proto = onnx.load(str(path), load_external_data=False)
    out = {}
    for p in proto.metadata_props:
        if p.key.startswith("lisentry."):
            k = p.key[len("lisentry."):]
            try:
                out[k] = json.loads(p.value)
            except ValueError:
                out[k] = p.value
    return out


def check_onnx(model: nn.Module, path: str | Path, *, n_frames: int = 60, seed: int = 0,
               presence_gate=None) -> dict:
    """Stream the same frames through the model and the exported file; compare.

    The frames are synthetic Lorentzian lines on the model's grid with an uncovered edge
    (NaN) and a stretch of missing echem features, so the masking paths run too.

    Returns
    -------
    dict
        ``frames``, ``max_abs_logit_diff``, ``max_abs_aux_diff``, ``argmax_agree`` (fraction of
        frames whose most probable class agrees), ``torch_ms_per_frame``, ``onnx_ms_per_frame``
        (one thread each).
    """
    _require("onnxruntime", "The ONNX parity check")
    import onnxruntime as ort

    model = model.eval()
    rng = np.random.default_rng(seed)
    p, n = model.n_ppm, model.n_echem
    x = np.arange(p, dtype=np.float64)
    centers = rng.uniform(0.1 * p, 0.9 * p, size=4)
    spectra = np.zeros((n_frames, p), np.float32)
    for t in range(n_frames):
        amp = rng.uniform(0.2, 1.0, size=4) * (1 + 0.02 * t)
        y = sum(a / (1 + ((x - c) / 3.0) ** 2) for a, c in zip(amp, centers))
        spectra[t] = (y / y.sum() + rng.normal(0, 1e-4, p)).astype(np.float32)
    spectra[:, : max(1, p // 20)] = np.nan                      # a grid edge the run does not cover
    echem = rng.normal(size=(n_frames, n)).astype(np.float32)
    mask = np.ones((n_frames, n), np.float32)
    echem[10:20] = np.nan                                       # the potential file lagging behind
    mask[10:20] = 0.0

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    st = {k: v.numpy() for k, v in model.init_state(1).items()}
    tst = model.init_state(1)
    d_logit = d_aux = 0.0
    agree = 0
    t_ort = t_torch = 0.0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for t in range(n_frames):
            feed = {"spectrum": spectra[t:t + 1], "echem": echem[t:t + 1],
                    "echem_mask": mask[t:t + 1], **st}
            t0 = time.perf_counter()
            res = sess.run(list(STEP_OUTPUTS), feed)
            t_ort += time.perf_counter() - t0
            st = dict(zip(("h", "ref", "ref_mask", "n_seen"), res[2:]))
            t0 = time.perf_counter()
            with torch.inference_mode():
                out, tst = model.step(torch.from_numpy(spectra[t:t + 1]),
                                      torch.from_numpy(echem[t:t + 1]), tst,
                                      echem_mask=torch.from_numpy(mask[t:t + 1]),
                                      return_features=presence_gate is not None)
            t_torch += time.perf_counter() - t0
            lt, at = out["logits"].numpy(), out["aux"].numpy()
            if presence_gate is not None:      # as the detector applies it
                at = presence_gate.apply(at, model.aux_names, out["features"].double().numpy())
            d_logit = max(d_logit, float(np.max(np.abs(res[0] - lt))))
            both_nan = np.isnan(res[1]) & np.isnan(at)
            diff = np.where(both_nan, 0.0, np.abs(res[1] - at))   # a NaN on one side only: inf
            d_aux = max(d_aux, float(np.max(np.nan_to_num(diff, nan=np.inf))))
            agree += int(np.argmax(res[0]) == np.argmax(lt))
    finally:
        torch.set_num_threads(threads)
    return {"frames": n_frames, "max_abs_logit_diff": d_logit, "max_abs_aux_diff": d_aux,
            "argmax_agree": agree / n_frames, "torch_ms_per_frame": t_torch / n_frames * 1e3,
            "onnx_ms_per_frame": t_ort / n_frames * 1e3}
