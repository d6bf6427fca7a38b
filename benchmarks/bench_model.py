"""Informal CPU timing of LisentryNet: streaming ms/frame (target <= 5 ms) and batch ms/frame.

Usage: ``python benchmarks/bench_model.py [--threads 1] [--frames 300] [--n-ppm 1001] [--onnx]
[--bundle models/default]``

``--bundle`` also times that bundle's model (e.g. the shipped default, a seed ensemble) in the
same run, beside the single default-size network.

``--onnx`` also exports the network and streams the same frames through ONNX Runtime and
PyTorch, alternating frame by frame on one thread (needs the ``onnx`` extra).
"""
from __future__ import annotations

import argparse
import time

import torch

from lisentry.models.features import N_ECHEM
from lisentry.models.net import LisentryNet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--n-ppm", type=int, default=1001)
    ap.add_argument("--onnx", action="store_true", help="also time the exported ONNX step")
    ap.add_argument("--bundle", help="also time this bundle's model (folder)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    net = LisentryNet(n_ppm=a.n_ppm).eval()
    x = torch.randn(1, a.frames, a.n_ppm) * 0.1
    e = torch.randn(1, a.frames, N_ECHEM)
    step_ms, batch_ms = time_model(net, x, e, a.frames)
    print(f"LisentryNet: {net.n_parameters()} parameters, n_ppm={a.n_ppm}, threads={a.threads}")
    print(f"streaming step: {step_ms:.2f} ms/frame")
    print(f"batch forward:  {batch_ms:.2f} ms/frame ({a.frames} frames)")
    if a.bundle:
        from lisentry.models.bundle import load_bundle
        bundle = load_bundle(a.bundle)
        model = bundle.model
        xb = torch.randn(1, a.frames, model.n_ppm) * 0.1
        eb = torch.randn(1, a.frames, model.n_echem)
        b_step, b_batch = time_model(model, xb, eb, a.frames)
        print(f"{a.bundle} ({type(model).__name__}, {model.n_parameters()} parameters): "
              f"streaming step {b_step:.2f} ms/frame ({b_step / step_ms:.2f}x the network above), "
              f"batch {b_batch:.2f} ms/frame")
        if bundle.window_inputs is not None:
            w_ms = time_window_features(bundle.window_inputs, xb[0].numpy(), a.frames)
            print(f"  + its window features, computed by the detector before each step: "
                  f"{w_ms:.2f} ms/frame (model and features {b_step + w_ms:.2f} ms/frame)")
    if a.onnx:
        import tempfile
        from pathlib import Path

        from lisentry.models.onnx_export import check_onnx, export_onnx
        with tempfile.TemporaryDirectory() as d:
            path = export_onnx(net, Path(d) / "step.onnx")
            r = check_onnx(net, path, n_frames=a.frames)
        print(f"ONNX Runtime step: {r['onnx_ms_per_frame']:.2f} ms/frame against PyTorch "
              f"{r['torch_ms_per_frame']:.2f} in the same loop (ratio "
              f"{r['torch_ms_per_frame'] / r['onnx_ms_per_frame']:.1f}x); largest logit "
              f"difference {r['max_abs_logit_diff']:.1e}")


def time_window_features(window, spectra, frames: int) -> float:
    """ms/frame of the detector's streaming window features (:mod:`lisentry.models.window_features`)."""
    import numpy as np
    st = window.stream()
    e = np.zeros(N_ECHEM, np.float32)
    m = np.ones(N_ECHEM, np.float32)
    t0 = time.perf_counter()
    for t in range(frames):
        window.widen_one(st, spectra[t], 600.0 * t, e, m)
    return (time.perf_counter() - t0) / frames * 1e3


def time_model(net, x, e, frames: int) -> tuple[float, float]:
    """Streaming (one frame per ``step``) and batch ms/frame of ``net`` on ``x``, ``e``."""
    with torch.inference_mode():
        st = net.init_state(1)
        for t in range(20):  # warm-up
            _, st = net.step(x[:, t], e[:, t], st)
        st = net.init_state(1)
        t0 = time.perf_counter()
        for t in range(frames):
            _, st = net.step(x[:, t], e[:, t], st)
        step_ms = (time.perf_counter() - t0) / frames * 1e3
        net(x[:, :20], e[:, :20])
        t0 = time.perf_counter()
        net(x, e)
        batch_ms = (time.perf_counter() - t0) / frames * 1e3
    return step_ms, batch_ms


if __name__ == "__main__":
    main()
