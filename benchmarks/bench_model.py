"""Informal CPU timing of LisentryNet: streaming ms/frame (target <= 5 ms) and batch ms/frame.

Usage: ``python benchmarks/bench_model.py [--threads 1] [--frames 300] [--n-ppm 1001] [--onnx]``

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
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    net = LisentryNet(n_ppm=a.n_ppm).eval()
    x = torch.randn(1, a.frames, a.n_ppm) * 0.1
    e = torch.randn(1, a.frames, N_ECHEM)
    with torch.inference_mode():
        st = net.init_state(1)
        for t in range(20):  # warm-up
            _, st = net.step(x[:, t], e[:, t], st)
        st = net.init_state(1)
        t0 = time.perf_counter()
        for t in range(a.frames):
            _, st = net.step(x[:, t], e[:, t], st)
        step_ms = (time.perf_counter() - t0) / a.frames * 1e3
        net(x[:, :20], e[:, :20])
        t0 = time.perf_counter()
        net(x, e)
        batch_ms = (time.perf_counter() - t0) / a.frames * 1e3
    print(f"LisentryNet: {net.n_parameters()} parameters, n_ppm={a.n_ppm}, threads={a.threads}")
    print(f"streaming step: {step_ms:.2f} ms/frame")
    print(f"batch forward:  {batch_ms:.2f} ms/frame ({a.frames} frames)")
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


if __name__ == "__main__":
    main()
