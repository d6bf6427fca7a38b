"""Physics descriptors of one frame against the run's first frame, in torch (inside the model).

Why: the 1D-CNN learns whatever separates the classes in the training families, and a family's
host signature (graphite, hard carbon, only Li electrodes) predicts its outcomes there — left-out
families then fail (docs/results/lofo-v3.json: median macro-F1 0.15), while the hand-made window
features of the gradient-boosting baseline transfer much better (median 0.43, same data). The
same quantities an analyst reads — new intensity in the dendrite window, the Knight-shifted
cluster window and where its growth peaks, the counter-electrode signal kept — are computed here
from the frame and the run's first frame and fed to the model next to the CNN embedding. They
are a pure function of (frame, first frame), so batch and streaming give the same values.

Windows (ppm) are those of :mod:`lisentry.training.baselines`: cluster 10-130, new metal
255-285, counter electrode 235-275, empty baseline 150-215 (offset and noise).

Descriptors (:data:`DESCRIPTOR_NAMES`; amounts are integrals in units of the run's initial
total signal, scaled as ``asinh(amount / 0.01)``):

=====================  =========================================================================
``cluster_rel``        cluster-window integral of (frame - first frame)
``cluster_pos``        positive part of the smoothed difference there, minus its noise bias
``cluster_peak``       ppm of the largest smoothed increase in the cluster window,
                       ``(ppm - 70) / 60``; 0 unless that increase exceeds 3 noise sigma
``metal_extra``        positive part of the smoothed difference over 255-285 ppm, minus its
                       noise bias (new metal beyond the initial electrode lines)
``metal_diff``         signed difference integral over 255-285 ppm
``metal_peak``         ppm of the largest smoothed increase over 235-285 ppm, ``(ppm - 260) / 25``;
                       0 unless it exceeds 3 noise sigma
``ce_change``          counter-electrode window integral relative to the first frame's, minus 1
                       (clipped to -2..2)
``metal_snr``          ``asinh(metal_extra / (sigma sqrt(n)) / 3)``, sigma the smoothed noise
``cluster_snr``        the same for ``cluster_rel``
=====================  =========================================================================
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

CLUSTER_WINDOW = (10.0, 130.0)
METAL_WINDOW = (255.0, 285.0)
METAL_PEAK_WINDOW = (235.0, 285.0)
CE_WINDOW = (235.0, 275.0)
BASELINE_WINDOW = (150.0, 215.0)  #: a region with no 7Li species: offset and noise estimate
AMOUNT_SCALE = 0.01  #: amounts enter as asinh(amount / AMOUNT_SCALE)
#: Spectral ranges seen by the factored model's cluster and metal branches
#: (:class:`~lisentry.models.net.LisentryNet` with ``heads="factored"``): Knight-shifted Li
#: clusters (above the diamagnetic and solid-electrolyte lines, up to the >100 ppm of liquid
#: cells) and Li metal (counter electrode at 242-272 ppm by orientation, dendrites at 260-278).
CLUSTER_BRANCH_WINDOW = (8.0, 160.0)
METAL_BRANCH_WINDOW = (200.0, 300.0)
#: Descriptors that each branch sees (by name, from DESCRIPTOR_NAMES).
CLUSTER_BRANCH_DESCRIPTORS = ("cluster_rel", "cluster_pos", "cluster_peak", "cluster_snr")
METAL_BRANCH_DESCRIPTORS = ("metal_extra", "metal_diff", "metal_peak", "ce_change", "metal_snr")

DESCRIPTOR_NAMES: tuple[str, ...] = (
    "cluster_rel", "cluster_pos", "cluster_peak", "metal_extra", "metal_diff", "metal_peak",
    "ce_change", "metal_snr", "cluster_snr")
N_DESCRIPTORS = len(DESCRIPTOR_NAMES)
_BIAS = 1.0 / math.sqrt(2.0 * math.pi)  # E[max(0, X)] / sigma for X ~ N(0, sigma^2)



def lower_median(X: torch.Tensor) -> torch.Tensor:
    """``X.median(dim=1).values`` (the lower of the two middle values for an even count), by
    sorting: the ONNX exporter has no translation for ``aten.median``, and inputs here are
    finite (zero-filled), where the two agree exactly."""
    return torch.sort(X, dim=1).values[:, (X.shape[1] - 1) // 2]

class SpectralDescriptors(nn.Module):
    """Per-frame physics descriptors (no trainable parameters).

    Parameters
    ----------
    n_ppm : int
        Points of the ppm grid.
    ppm_min, ppm_step : float
        The grid is ``ppm_min + ppm_step * arange(n_ppm)`` (ascending).
    smooth_points : int
        Boxcar width (grid points) before positive parts and peak picking.
    """

    def __init__(self, n_ppm: int, ppm_min: float = -100.0, ppm_step: float = 0.5,
                 smooth_points: int = 5):
        super().__init__()
        if ppm_step <= 0:
            raise ValueError(f"ppm_step must be > 0. Got {ppm_step!r}.")
        self.step = float(ppm_step)
        self.smooth = int(smooth_points) | 1  # odd, so the smoothing keeps the length
        g = ppm_min + ppm_step * torch.arange(n_ppm, dtype=torch.float32)
        self.register_buffer("grid", g, persistent=False)

        def win(lo_hi):
            return ((g >= lo_hi[0]) & (g <= lo_hi[1])).to(torch.float32)

        for name, w in (("w_cluster", CLUSTER_WINDOW), ("w_metal", METAL_WINDOW),
                        ("w_metal_peak", METAL_PEAK_WINDOW), ("w_ce", CE_WINDOW)):
            self.register_buffer(name, win(w), persistent=False)
        idx = torch.nonzero((g >= BASELINE_WINDOW[0]) & (g <= BASELINE_WINDOW[1])).flatten()
        # an empty baseline window (grid not covering 150-215 ppm): no offset, unit-free noise
        self.base_slice = (int(idx[0]), int(idx[-1]) + 1) if len(idx) else None

    def _median_window(self, X: torch.Tensor) -> torch.Tensor:
        if self.base_slice is None:
            return torch.zeros(X.shape[0], device=X.device)
        a, b = self.base_slice
        return lower_median(X[:, a:b])

    def _amount(self, v: torch.Tensor) -> torch.Tensor:
        return torch.asinh(v / AMOUNT_SCALE)

    def forward(self, x: torch.Tensor, m: torch.Tensor, ref: torch.Tensor,
                ref_m: torch.Tensor) -> torch.Tensor:
        """Descriptors ``(N, N_DESCRIPTORS)``.

        ``x``/``ref`` are ``(N, P)`` per-run-normalised intensities, zero where not covered;
        ``m``/``ref_m`` their coverage (1/0).
        """
        both = m * ref_m
        Bx = (x - self._median_window(x)[:, None]) * m
        Br = (ref - self._median_window(ref)[:, None]) * ref_m
        D = (Bx - Br) * both
        Ds = F.avg_pool1d(D[:, None], self.smooth, stride=1, padding=self.smooth // 2,
                          count_include_pad=False)[:, 0]
        if self.base_slice is not None:
            a, b = self.base_slice
            w = Ds[:, a:b]
            sd = 1.4826 * lower_median((w - lower_median(w)[:, None]).abs())
        else:
            sd = torch.zeros(x.shape[0], device=x.device)
        sd = sd.clamp_min(1e-6)
        step = self.step

        def integ(X, w):
            return (X * w).sum(-1) * step

        def n_pts(w):
            return (w[None, :] * both).sum(-1).clamp_min(1.0)

        pos = Ds.clamp_min(0.0)
        wc, wm, wmp, wce = self.w_cluster, self.w_metal, self.w_metal_peak, self.w_ce
        cluster_rel = integ(D, wc)
        cluster_pos = integ(pos, wc) - n_pts(wc) * step * sd * _BIAS
        metal_extra = integ(pos, wm) - n_pts(wm) * step * sd * _BIAS
        metal_diff = integ(D, wm)

        def peak(w, centre, half):
            masked = torch.where(w[None, :] > 0, Ds, torch.full_like(Ds, -torch.inf))
            top, k = masked.max(dim=-1)
            at = (self.grid[k] - centre) / half
            return torch.where(top > 3 * sd, at, torch.zeros_like(at))

        ce_ref = integ(Br, wce)
        ce_change = torch.where(ce_ref.abs() > 1e-6, integ(Bx, wce) / ce_ref.where(
            ce_ref.abs() > 1e-6, torch.ones_like(ce_ref)) - 1.0, torch.zeros_like(ce_ref))
        noise_int = lambda w: sd * step * n_pts(w).sqrt()  # noqa: E731
        return torch.stack([
            self._amount(cluster_rel), self._amount(cluster_pos), peak(wc, 70.0, 60.0),
            self._amount(metal_extra), self._amount(metal_diff), peak(wmp, 260.0, 25.0),
            ce_change.clamp(-2.0, 2.0),
            torch.asinh(metal_extra / noise_int(wm) / 3.0),
            torch.asinh(cluster_rel / noise_int(wc) / 3.0)], dim=-1)
