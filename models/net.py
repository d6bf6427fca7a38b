"""LisentryNet: a 1D-CNN spectrum encoder + echem MLP + causal GRU over the frame sequence.

Per frame ``t`` the spectrum encoder sees three channels on the ppm grid:

1. the intensity (NaN replaced by 0, times ``input_scale``),
2. the coverage mask (1 where the grid point is covered),
3. the difference to the run's **first** frame (0 where either is not covered), which makes
   growth of a metal or cluster line and loss of the counter-electrode signal explicit.

The echem encoder sees the :mod:`~lisentry.models.features` values with their masks
(a missing potential is a 0 value *and* a 0 mask, never a silent 0 V). Both embeddings
are fused and fed to a unidirectional GRU, so the output at frame ``t`` depends on frames
``0..t`` only. Heads give 4-class logits and auxiliary regressions (amounts relative to the
run's initial total 7Li signal, dimensionless; ``cluster_shift_ppm`` in ppm), read from the
GRU output concatenated with the frame embedding.

With ``heads="factored"`` the class definitions are built in: the cluster-growth and plating
decisions come from branches that see only their own ppm window (8-160 and 200-300 ppm) and the
imminent-short decision from everything, combined by the class precedence (see the class
docstring). Left-out scenario families are where this matters: a branch cannot learn that a
family's host lines elsewhere predict its outcomes.

:meth:`LisentryNet.forward` runs whole (padded) sequences; :meth:`LisentryNet.init_state` and
:meth:`LisentryNet.step` run one frame at a time and give the same outputs. The streaming
state is a ``dict[str, torch.Tensor]`` and can be written with ``safetensors.torch.save_file``.
"""
from __future__ import annotations

import math
import numpy as np
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lisentry.datasets.errors import ConfigError
from lisentry.datasets.frame import CLASSES
from lisentry.models.descriptors import (CLUSTER_BRANCH_DESCRIPTORS, CLUSTER_BRANCH_WINDOW,
                                         DESCRIPTOR_NAMES, METAL_BRANCH_DESCRIPTORS,
                                         METAL_BRANCH_WINDOW, N_DESCRIPTORS, SpectralDescriptors)
from lisentry.models.features import N_ECHEM

#: Default auxiliary regression targets.
AUX_DEFAULT: tuple[str, ...] = ("cluster_amount", "cluster_shift_ppm", "metal_amount", "ce_amount")
#: Output scale of each auxiliary target (raw head output x scale = physical units).
AUX_SCALES: Mapping[str, float] = {"cluster_shift_ppm": 100.0}

_KERNELS = (9, 7, 5, 5, 5, 5)


#: Edge of an echem column left out of the piecewise-linear encoding: above any input, so
#: its bins read 0 (finite, so that the encoding stays finite in float32).
_UNBINNED_EDGE = 1e30


def _check(name: str, ok: bool, cond: str, got) -> None:
    if not ok:
        raise ConfigError(f"The '{name}' parameter of LisentryNet must be {cond}. Got {got!r}.")


HEADS = ("softmax", "factored")


def _window_slice(n_ppm: int, ppm_min: float, ppm_step: float, lo_hi) -> tuple[int, int]:
    a = max(0, int(math.ceil((lo_hi[0] - ppm_min) / ppm_step - 1e-9)))
    b = min(n_ppm, int(math.floor((lo_hi[1] - ppm_min) / ppm_step + 1e-9)) + 1)
    return a, b


def _conv_encoder(channels: Sequence[int], pooled_bins: int) -> tuple[nn.Sequential, int]:
    """Stride-2 convolutions over the (intensity, coverage, difference) channels, then an
    adaptive pool that keeps coarse ppm position; returns the module and its output width."""
    layers: list[nn.Module] = []
    c_in = 3
    for c, k in zip(channels, _KERNELS):
        layers += [nn.Conv1d(c_in, c, k, stride=2, padding=k // 2), nn.GELU()]
        c_in = c
    return nn.Sequential(*layers, nn.AdaptiveAvgPool1d(pooled_bins), nn.Flatten()), c_in * pooled_bins


class _Branch(nn.Module):
    """A causal encoder of one ppm window: small 1D-CNN (+ that window's descriptors) -> GRU.

    It sees nothing outside its window (no host lines elsewhere, no electrochemistry), so what
    it learns about "a cluster line is growing" or "new metal is growing" cannot lean on a
    scenario family's other signatures.
    """

    def __init__(self, sl: tuple[int, int], channels: Sequence[int], pooled_bins: int,
                 hidden: int, n_desc: int, n_aux: int):
        super().__init__()
        self.sl = sl
        self.conv, n_out = _conv_encoder(channels, pooled_bins)
        self.proj = nn.Sequential(nn.Linear(n_out + n_desc, hidden), nn.GELU())
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.logit = nn.Linear(2 * hidden, 1)
        self.aux = nn.Linear(2 * hidden, n_aux)

    def embed(self, chans: torch.Tensor, desc: torch.Tensor | None) -> torch.Tensor:
        a, b = self.sl
        f = self.conv(chans[:, :, a:b])
        if desc is not None:
            f = torch.cat([f, desc], dim=-1)
        return self.proj(f)


class LisentryNet(nn.Module):
    """1D-CNN + causal GRU frame classifier with auxiliary regression heads.

    Parameters
    ----------
    n_ppm : int
        Points of the ppm grid (1001 for -100..400 ppm at 0.5 ppm).
    n_echem : int
        Number of echem features (``len(ECHEM_FEATURES)``).
    hidden : int
        Width of the fused frame embedding and of the GRU state.
    classes : sequence of str
        Class names, in the order of the logits.
    aux : sequence of str
        Names of the auxiliary regression outputs.
    channels : sequence of int
        Output channels of the stride-2 convolutions (at most 6 layers).
    pooled_bins : int
        Bins of the adaptive average pool after the convolutions; keeps coarse ppm position.
    echem_hidden : int
        Width of the echem MLP.
    num_layers : int
        GRU layers.
    dropout : float
        Dropout on the fused embedding (training only).
    input_scale : float
        Factor applied to the (per-run normalised) intensities before the encoder.
    descriptors : bool
        Also feed the physics descriptors of :mod:`~lisentry.models.descriptors` (new metal,
        cluster growth and its peak position, counter-electrode change, against the first
        frame) through a small MLP into the fused embedding. They transfer across scenario
        families far better than what the CNN learns alone.
    ppm_min, ppm_step : float
        The ppm grid (``ppm_min + ppm_step * arange(n_ppm)``), needed for the descriptor windows.
    cnn : bool
        Use the 1D-CNN spectrum encoder. ``False`` (needs ``descriptors``) leaves the spectrum
        to the descriptors alone: a model of physical summaries that cannot learn a
        family's host line shapes.
    cnn_dropout : float
        Training only, with ``descriptors``: probability that a whole run's CNN embedding is
        zeroed, so that the model must also classify from the descriptors and echem alone
        (modality dropout against family shortcuts the CNN can learn).
    heads : {"softmax", "factored"}
        ``"softmax"``: one 4-class head over the fused GRU state. ``"factored"``: the classes'
        own definitions and precedence, built into the model. Three "condition holds" logits —
        imminent short ``s`` (from everything: the fused GRU state, the echem, and the two
        branches), plating ``p`` (a branch that sees only the metal window, 200-300 ppm) and
        cluster growth ``c`` (a branch that sees only 8-160 ppm) — give
        ``P(short) = σ(s)``, ``P(plating) = σ(-s) σ(p)``, ``P(cluster) = σ(-s) σ(-p) σ(c)``,
        ``P(normal) = σ(-s) σ(-p) σ(-c)``; the returned logits are these log-probabilities,
        so the 4-class cross-entropy is their exact likelihood. The cluster and metal/counter-
        electrode auxiliary amounts come from their branches.
    branch_channels, branch_hidden, branch_pooled_bins :
        Size of each factored branch (CNN channels, GRU width, pooled bins).
    branch_echem : bool
        Also give each branch the echem embedding (potential, current...), so that it can time
        its decision by the electrochemistry; the spectrum it sees stays its own window.
    echem_bins : int
        0 (off) or the number of bins of a piecewise-linear encoding of each echem column,
        appended to the echem MLP's input. The bin edges are the column's training quantiles
        (:meth:`fit_echem_edges`, called by the trainer) and travel with the weights.

    Examples
    --------
    >>> net = LisentryNet(n_ppm=64, n_echem=6, hidden=16).eval()
    >>> out = net(torch.zeros(2, 5, 64), torch.zeros(2, 5, 6))
    >>> tuple(out["logits"].shape), tuple(out["aux"].shape)
    ((2, 5, 4), (2, 5, 4))
    """

    def __init__(self, n_ppm: int = 1001, n_echem: int = N_ECHEM, hidden: int = 128,
                 classes: Sequence[str] = CLASSES, aux: Sequence[str] = AUX_DEFAULT,
                 channels: Sequence[int] = (16, 32, 48, 32), pooled_bins: int = 16,
                 echem_hidden: int = 32, num_layers: int = 1, dropout: float = 0.1,
                 input_scale: float = 1.0, descriptors: bool = False, ppm_min: float = -100.0,
                 ppm_step: float = 0.5, cnn_dropout: float = 0.0, cnn: bool = True,
                 heads: str = "softmax", branch_channels: Sequence[int] = (8, 16, 16),
                 branch_hidden: int = 24, branch_pooled_bins: int = 8,
                 branch_echem: bool = False, echem_bins: int = 0):
        super().__init__()
        _check("n_ppm", isinstance(n_ppm, int) and n_ppm >= 8, "an int >= 8", n_ppm)
        _check("n_echem", isinstance(n_echem, int) and n_echem >= 1, "an int >= 1", n_echem)
        _check("hidden", isinstance(hidden, int) and hidden > 0, "an int > 0", hidden)
        _check("classes", len(classes) >= 2 and len(set(classes)) == len(classes),
               "at least 2 distinct names", classes)
        _check("aux", len(set(aux)) == len(aux), "distinct names", aux)
        _check("channels", 1 <= len(channels) <= len(_KERNELS) and all(c > 0 for c in channels),
               f"1 to {len(_KERNELS)} positive ints", channels)
        _check("pooled_bins", pooled_bins > 0, "> 0", pooled_bins)
        _check("echem_hidden", echem_hidden > 0, "> 0", echem_hidden)
        _check("num_layers", num_layers >= 1, ">= 1", num_layers)
        _check("dropout", 0.0 <= dropout < 1.0, "in [0, 1)", dropout)
        _check("cnn", bool(cnn) or bool(descriptors), "True unless descriptors is True", cnn)
        _check("cnn_dropout", 0.0 <= cnn_dropout < 1.0, "in [0, 1)", cnn_dropout)
        _check("input_scale", math.isfinite(input_scale) and input_scale > 0, "> 0", input_scale)
        _check("heads", heads in HEADS, f"one of {HEADS}", heads)
        _check("echem_bins", isinstance(echem_bins, int) and (echem_bins == 0 or echem_bins >= 2),
               "0 (off) or an int >= 2", echem_bins)
        if heads == "factored":
            _check("classes", tuple(classes) == tuple(CLASSES),
                   f"{list(CLASSES)} (in that order) with heads='factored'", classes)
            _check("branch_channels", 1 <= len(branch_channels) <= len(_KERNELS)
                   and all(c > 0 for c in branch_channels),
                   f"1 to {len(_KERNELS)} positive ints", branch_channels)
            _check("branch_hidden", branch_hidden > 0, "> 0", branch_hidden)
            _check("branch_pooled_bins", branch_pooled_bins > 0, "> 0", branch_pooled_bins)
        #: Constructor arguments, JSON-safe (stored in the model card).
        self.config = dict(n_ppm=n_ppm, n_echem=n_echem, hidden=hidden, classes=list(classes),
                           aux=list(aux), channels=list(channels), pooled_bins=pooled_bins,
                           echem_hidden=echem_hidden, num_layers=num_layers,
                           dropout=float(dropout), input_scale=float(input_scale),
                           descriptors=bool(descriptors), ppm_min=float(ppm_min),
                           ppm_step=float(ppm_step), cnn_dropout=float(cnn_dropout),
                           cnn=bool(cnn), heads=heads)
        if echem_bins:
            self.config.update(echem_bins=int(echem_bins))
        if heads == "factored":
            self.config.update(branch_channels=list(branch_channels),
                               branch_hidden=int(branch_hidden),
                               branch_pooled_bins=int(branch_pooled_bins),
                               branch_echem=bool(branch_echem))
        self.heads = heads
        self.cnn_dropout = float(cnn_dropout)
        self.n_ppm, self.n_echem, self.hidden = n_ppm, n_echem, hidden
        self.classes, self.aux_names = tuple(classes), tuple(aux)
        self.num_layers, self.input_scale = num_layers, float(input_scale)

        self.conv, n_out = _conv_encoder(channels, pooled_bins)
        self.spec_proj = nn.Sequential(nn.Linear(n_out, hidden), nn.GELU())
        self.echem_bins = int(echem_bins)
        if self.echem_bins:
            # Piecewise-linear encoding of each echem column over bins between its training
            # quantiles (Gorishniy et al. 2022): a sharp threshold on one input (the CV-hold
            # current at which cluster growth ends) is then one weight, not a fold of the MLP.
            # The edges are fitted on the training runs (fit_echem_edges) and saved with the
            # weights; these defaults only make an unfitted net usable.
            self.register_buffer("echem_edges", torch.linspace(-3.0, 3.0, self.echem_bins + 1)
                                 .repeat(n_echem, 1))
        n_echem_in = 2 * n_echem + n_echem * self.echem_bins
        self.echem_mlp = nn.Sequential(nn.Linear(n_echem_in, echem_hidden), nn.GELU(),
                                       nn.Linear(echem_hidden, echem_hidden), nn.GELU())
        self.descriptors = None
        if not cnn:
            self.conv = self.spec_proj = None
        n_fuse = (hidden if cnn else 0) + echem_hidden
        if descriptors:
            self.descriptors = SpectralDescriptors(n_ppm, ppm_min, ppm_step)
            self.desc_mlp = nn.Sequential(nn.Linear(N_DESCRIPTORS, echem_hidden), nn.GELU())
            n_fuse += echem_hidden
        self.fuse = nn.Sequential(nn.Linear(n_fuse, hidden), nn.GELU(), nn.Dropout(dropout))
        self.gru = nn.GRU(hidden, hidden, num_layers=num_layers, batch_first=True)
        self.branches = None
        self.branch_hidden = 0
        if heads == "factored":
            self.branch_hidden = bh = int(branch_hidden)
            sel = []
            for win, names in ((CLUSTER_BRANCH_WINDOW, CLUSTER_BRANCH_DESCRIPTORS),
                               (METAL_BRANCH_WINDOW, METAL_BRANCH_DESCRIPTORS)):
                sl = _window_slice(n_ppm, ppm_min, ppm_step, win)
                _check("n_ppm", sl[1] - sl[0] >= 8,
                       f"a grid covering {win[0]}-{win[1]} ppm with >= 8 points", (n_ppm, ppm_min, ppm_step))
                sel.append([DESCRIPTOR_NAMES.index(n) for n in names] if descriptors else [])
            self.branches = nn.ModuleList([
                _Branch(_window_slice(n_ppm, ppm_min, ppm_step, w), branch_channels,
                        branch_pooled_bins, bh, len(ix) + (echem_hidden if branch_echem else 0),
                        len(aux))
                for w, ix in zip((CLUSTER_BRANCH_WINDOW, METAL_BRANCH_WINDOW), sel)])
            self._branch_desc = [torch.tensor(ix, dtype=torch.int64) for ix in sel]
            self.branch_echem = bool(branch_echem)
            # which head gives each auxiliary amount: 0 the fused state, 1 cluster, 2 metal
            owner = [1 if a.startswith("cluster") else 2 if a.startswith(("metal", "ce_"))
                     else 0 for a in aux]
            self.register_buffer("aux_owner", torch.tensor(owner, dtype=torch.int64),
                                 persistent=False)
            self.head = nn.Linear(2 * hidden + 4 * bh, 1)  # the imminent-short logit
        else:
            self.head = nn.Linear(2 * hidden, len(classes))
        self.aux_head = nn.Linear(2 * hidden, len(aux))
        self.register_buffer(
            "aux_scale", torch.tensor([AUX_SCALES.get(a, 1.0) for a in aux], dtype=torch.float32),
            persistent=False)

    # ------------------------------------------------------------------ helpers
    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def init_state(self, batch: int = 1) -> dict[str, torch.Tensor]:
        """Streaming state before the first frame of ``batch`` runs.

        Returns
        -------
        dict
            ``h`` (num_layers, batch, hidden [+ 2 branch_hidden]) GRU state; ``ref`` and ``ref_mask``
            (batch, n_ppm) the first frame (scaled, zero-filled) and its coverage;
            ``n_seen`` (batch,) int64 frames seen so far.
        """
        dev = next(self.parameters()).device
        # factored heads: the two branch GRU states ride in layer 0 of ``h``, after the fused
        # GRU's (the state keeps one layout for the detector, its state file and ONNX)
        width = self.hidden + 2 * self.branch_hidden
        return {"h": torch.zeros(self.num_layers, batch, width, device=dev),
                "ref": torch.zeros(batch, self.n_ppm, device=dev),
                "ref_mask": torch.zeros(batch, self.n_ppm, device=dev),
                "n_seen": torch.zeros(batch, dtype=torch.int64, device=dev)}

    def _as_input(self, x, last: int, name: str) -> torch.Tensor:
        dev = next(self.parameters()).device
        x = torch.as_tensor(x, dtype=torch.float32, device=dev)
        if x.shape[-1] != last:
            raise ValueError(f"{name} must have {last} values in its last axis. "
                             f"Got shape {tuple(x.shape)}.")
        return x

    def _embed(self, x: torch.Tensor, e: torch.Tensor, e_mask: torch.Tensor | None,
               ref: torch.Tensor, ref_mask: torch.Tensor,
               keep_cnn: torch.Tensor | None = None):
        """Frame embeddings. x (N, P), e (N, F), ref/ref_mask (N, P) -> (N, hidden), plus the
        branch embeddings ``[(N, branch_hidden)] * 2`` (empty without factored heads).

        ``keep_cnn`` (N, 1), training only: 0 where the CNN embedding is dropped."""
        m = torch.isfinite(x)
        v = torch.where(m, x, torch.zeros((), device=x.device)) * self.input_scale
        both = m & (ref_mask > 0.5)
        diff = torch.where(both, v - ref, torch.zeros((), device=x.device))
        chans = torch.stack([v, m.to(v.dtype), diff], dim=1)
        parts = []
        if self.conv is not None:
            s = self.spec_proj(self.conv(chans))
            parts.append(s if keep_cnn is None else s * keep_cnn)
        em = torch.isfinite(e)
        if e_mask is not None:
            em = em & (e_mask > 0.5)
        ev = torch.where(em, e, torch.zeros((), device=e.device))
        emf = em.to(ev.dtype)
        if self.echem_bins:
            z = self.echem_mlp(torch.cat([ev, emf, self._piecewise_linear(ev, emf)], dim=-1))
        else:
            z = self.echem_mlp(torch.cat([ev, emf], dim=-1))
        parts.append(z)
        desc = None
        if self.descriptors is not None:
            k = 1.0 / self.input_scale  # descriptors work on the per-run-normalised scale
            mf = m.to(v.dtype)
            desc = self.descriptors(v * k, mf, ref * k, ref_mask)
            parts.append(self.desc_mlp(desc))
        zb = []
        if self.branches is not None:
            for br, ix in zip(self.branches, self._branch_desc):
                extra = [] if desc is None else [desc[:, ix.to(x.device)]]
                if self.branch_echem:
                    extra.append(z)
                zb.append(br.embed(chans, torch.cat(extra, -1) if extra else None))
        return self.fuse(torch.cat(parts, dim=-1)), zb

    def _piecewise_linear(self, ev: torch.Tensor, emf: torch.Tensor) -> torch.Tensor:
        """(N, F) echem values -> (N, F * bins): per column and bin, the position of the value
        inside the bin (0 below it, 1 above it); zero where the value is missing."""
        lo, hi = self.echem_edges[:, :-1], self.echem_edges[:, 1:]
        width = (hi - lo).clamp_min(1e-6)
        u = ((ev.unsqueeze(-1) - lo) / width).clamp(0.0, 1.0) * emf.unsqueeze(-1)
        return u.flatten(-2)

    @torch.no_grad()
    def fit_echem_edges(self, values: np.ndarray, observed: np.ndarray,
                        columns: np.ndarray | None = None) -> None:
        """Set the piecewise-linear bin edges of each echem column to quantiles of its observed
        training values (``values``, ``observed``: (frames, n_echem)). A column with fewer
        distinct values than bins (a flag, a mostly-zero rate) gets repeated edges, whose
        bins then act as steps at those values. ``columns`` (n_echem bools, default all): the
        columns to bin; the others get edges above any value, so their encoding is always 0.
        No-op without ``echem_bins``."""
        if not self.echem_bins:
            return
        values, observed = np.asarray(values, float), np.asarray(observed, bool)
        if values.ndim != 2 or values.shape[1] != self.n_echem or values.shape != observed.shape:
            raise ValueError(f"fit_echem_edges needs (frames, {self.n_echem}) values and mask; "
                             f"got {values.shape} and {observed.shape}")
        columns = (np.ones(self.n_echem, bool) if columns is None
                   else np.asarray(columns, bool).reshape(-1))
        if columns.shape != (self.n_echem,):
            raise ValueError(f"fit_echem_edges columns must be {self.n_echem} bools; "
                             f"got {columns.shape[0]}")
        q = np.linspace(0.0, 1.0, self.echem_bins + 1)
        edges = self.echem_edges.detach().cpu().numpy().copy()
        for j in range(self.n_echem):
            col = values[observed[:, j] & np.isfinite(values[:, j]), j]
            if not columns[j]:
                edges[j] = _UNBINNED_EDGE
            elif col.size >= 2:
                edges[j] = np.quantile(col, q)
        self.echem_edges.copy_(torch.as_tensor(edges, dtype=self.echem_edges.dtype))

    def _split_state(self, h: torch.Tensor):
        if self.branches is None:
            return h, []
        H, bh = self.hidden, self.branch_hidden
        return (h[..., :H].contiguous(),
                [h[:1, :, H + k * bh:H + (k + 1) * bh].contiguous() for k in range(2)])

    def _join_state(self, h: torch.Tensor, hb: list[torch.Tensor]) -> torch.Tensor:
        if not hb:
            return h
        rest = [torch.cat([b, torch.zeros(h.shape[0] - 1, *b.shape[1:], device=b.device,
                                          dtype=b.dtype)], 0) for b in hb]
        return torch.cat([h, *rest], dim=-1)

    @staticmethod
    def _run_gru(gru: nn.GRU, z: torch.Tensor, h0: torch.Tensor, lengths: torch.Tensor,
                 full: bool):
        if full:
            return gru(z, h0)
        packed = nn.utils.rnn.pack_padded_sequence(z, lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        g, h = gru(packed, h0)
        g, _ = nn.utils.rnn.pad_packed_sequence(g, batch_first=True, total_length=z.shape[1])
        return g, h

    def _heads(self, g: torch.Tensor, z: torch.Tensor, features: bool = False,
               branch: Sequence[tuple[torch.Tensor, torch.Tensor]] = ()
               ) -> dict[str, torch.Tensor]:
        gz = torch.cat([g, z], dim=-1)
        aux = self.aux_head(gz)
        if self.branches is None:
            logits = self.head(gz)
        else:
            bz = [torch.cat(b, dim=-1) for b in branch]
            s = self.head(torch.cat([gz, *bz], dim=-1))[..., 0]
            c = self.branches[0].logit(bz[0])[..., 0]
            p = self.branches[1].logit(bz[1])[..., 0]
            ls = F.logsigmoid
            not_sp = ls(-s) + ls(-p)
            # log P of each class under the precedence short > plating > cluster > normal
            logits = torch.stack([not_sp + ls(-c), not_sp + ls(c), ls(-s) + ls(p), ls(s)], -1)
            own = self.aux_owner
            aux = torch.where(own == 1, self.branches[0].aux(bz[0]),
                              torch.where(own == 2, self.branches[1].aux(bz[1]), aux))
        out = {"logits": logits, "aux": aux * self.aux_scale}
        if features:
            out["features"] = gz
        return out

    # ------------------------------------------------------------------ batch
    def forward(self, spectra, echem, lengths=None, mask=None, *, echem_mask=None,
                state: dict[str, torch.Tensor] | None = None, return_state: bool = False,
                return_features: bool = False) -> dict[str, torch.Tensor]:
        """Run whole sequences (left-aligned, padding at the end).

        Parameters
        ----------
        spectra : Tensor
            ``(B, T, n_ppm)`` intensities, NaN where not covered.
        echem : Tensor
            ``(B, T, n_echem)`` echem features, NaN or masked where missing.
        lengths : Tensor, optional
            ``(B,)`` valid frames per sequence (>= 1). Default: all ``T``.
        mask : Tensor, optional
            ``(B, T)`` bool, True on valid frames (a prefix of each row); alternative to
            ``lengths``.
        echem_mask : Tensor, optional
            ``(B, T, n_echem)``, 1 = valid feature (non-finite features are masked anyway).
        state : dict, optional
            Streaming state to continue from (e.g. after :meth:`step`); default: a fresh run.
        return_state : bool
            Also return the state after each sequence's last valid frame under ``"state"``.
        return_features : bool
            Also return the classification head's input (GRU output and frame embedding,
            ``(B, T, 2 * hidden)``) under ``"features"``, e.g. for a feature-space OOD score.

        Returns
        -------
        dict
            ``logits`` (B, T, n_classes) and ``aux`` (B, T, n_aux, physical units); both 0
            at padded positions.
        """
        x = self._as_input(spectra, self.n_ppm, "spectra")
        e = self._as_input(echem, self.n_echem, "echem")
        if x.dim() != 3 or e.shape[:2] != x.shape[:2]:
            raise ValueError(f"spectra (B, T, P) and echem (B, T, F) must agree. "
                             f"Got {tuple(x.shape)} and {tuple(e.shape)}.")
        B, T, P = x.shape
        lengths = self._lengths(lengths, mask, B, T, x.device)
        if state is None:
            state = self.init_state(B)
        em = None if echem_mask is None else torch.as_tensor(
            echem_mask, dtype=torch.float32, device=x.device).reshape(B * T, -1)

        have = (state["n_seen"] > 0)[:, None]
        m0 = torch.isfinite(x[:, 0])
        v0 = torch.where(m0, x[:, 0], torch.zeros((), device=x.device)) * self.input_scale
        ref = torch.where(have, state["ref"], v0)
        ref_mask = torch.where(have, state["ref_mask"], m0.to(v0.dtype))

        keep = None
        if self.training and self.cnn_dropout and self.descriptors is not None:
            keep = (torch.rand(B, 1, 1, device=x.device) >= self.cnn_dropout).to(x.dtype)
            keep = keep.expand(B, T, 1).reshape(B * T, 1)
        z, zb = self._embed(x.reshape(B * T, P), e.reshape(B * T, -1), em,
                            ref[:, None].expand(B, T, P).reshape(B * T, P),
                            ref_mask[:, None].expand(B, T, P).reshape(B * T, P), keep)
        z = z.reshape(B, T, -1)
        full = bool((lengths == T).all())
        h0, hb0 = self._split_state(state["h"])
        g, h = self._run_gru(self.gru, z, h0, lengths, full)
        branch, hb = [], []
        for br, zk, hk in zip(self.branches or (), zb, hb0):
            zk = zk.reshape(B, T, -1)
            gk, hk = self._run_gru(br.gru, zk, hk, lengths, full)
            branch.append((gk, zk))
            hb.append(hk)
        out = self._heads(g, z, return_features, branch)
        if not full:
            valid = (torch.arange(T, device=x.device)[None, :] < lengths[:, None])[..., None]
            out = {k: torch.where(valid, v, torch.zeros((), device=v.device))
                   for k, v in out.items()}
        if return_state:
            out["state"] = {"h": self._join_state(h, hb), "ref": ref, "ref_mask": ref_mask,
                            "n_seen": state["n_seen"] + lengths}
        return out

    @staticmethod
    def _lengths(lengths, mask, B: int, T: int, device) -> torch.Tensor:
        if lengths is not None and mask is not None:
            raise ValueError("Give lengths or mask, not both.")
        if mask is not None:
            mask = torch.as_tensor(mask, dtype=torch.bool, device=device)
            lengths = mask.sum(dim=1)
            prefix = torch.arange(T, device=device)[None, :] < lengths[:, None]
            if mask.shape != (B, T) or not torch.equal(prefix, mask):
                raise ValueError("mask must be (B, T) with the valid frames first in each row.")
        if lengths is None:
            return torch.full((B,), T, dtype=torch.int64, device=device)
        lengths = torch.as_tensor(lengths, dtype=torch.int64, device=device).reshape(-1)
        if lengths.shape[0] != B or bool((lengths < 1).any()) or bool((lengths > T).any()):
            raise ValueError(f"lengths must be {B} values in 1..{T}. Got {lengths.tolist()}.")
        return lengths

    # ------------------------------------------------------------------ streaming
    def step(self, spectrum, echem, state: dict[str, torch.Tensor], *, echem_mask=None,
             return_features: bool = False
             ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Advance every run of the batch by one frame.

        Parameters
        ----------
        spectrum : Tensor
            ``(B, n_ppm)`` intensities, NaN where not covered.
        echem : Tensor
            ``(B, n_echem)`` echem features.
        state : dict
            From :meth:`init_state` or a previous call (not modified).
        echem_mask : Tensor, optional
            ``(B, n_echem)``.
        return_features : bool
            Also return the head input ``(B, 2 * hidden)`` under ``"features"``.

        Returns
        -------
        out : dict
            ``logits`` (B, n_classes) and ``aux`` (B, n_aux).
        state : dict
            The new state.
        """
        x = self._as_input(spectrum, self.n_ppm, "spectrum").reshape(-1, self.n_ppm)
        e = self._as_input(echem, self.n_echem, "echem").reshape(x.shape[0], -1)
        em = None if echem_mask is None else torch.as_tensor(
            echem_mask, dtype=torch.float32, device=x.device).reshape(x.shape[0], -1)
        have = (state["n_seen"] > 0)[:, None]
        m = torch.isfinite(x)
        v = torch.where(m, x, torch.zeros((), device=x.device)) * self.input_scale
        ref = torch.where(have, state["ref"], v)
        ref_mask = torch.where(have, state["ref_mask"], m.to(v.dtype))
        z, zb = self._embed(x, e, em, ref, ref_mask)
        h0, hb0 = self._split_state(state["h"])
        g, h = self.gru(z[:, None, :], h0)
        branch, hb = [], []
        for br, zk, hk in zip(self.branches or (), zb, hb0):
            gk, hk = br.gru(zk[:, None, :], hk)
            branch.append((gk[:, 0], zk))
            hb.append(hk)
        out = self._heads(g[:, 0], z, return_features, branch)
        return out, {"h": self._join_state(h, hb), "ref": ref, "ref_mask": ref_mask,
                     "n_seen": state["n_seen"] + 1}


# ---------------------------------------------------------------------- losses
def run_balanced_weights(labels: torch.Tensor, n_classes: int, power: float,
                         valid: torch.Tensor | None = None) -> torch.Tensor:
    """Per-frame weights ``count(run, class)^-power``, scaled to mean 1 over each run's frames.

    The evaluation's macro-F1 is taken per run, so a class that lasts two frames of a run
    counts as much as one lasting two hundred; ``power = 1`` makes the loss see it that way,
    ``power = 0`` weighs all frames alike.

    Parameters
    ----------
    labels : Tensor
        ``(B, T)`` class indices, -1 = unlabelled.
    n_classes : int
        Number of classes.
    power : float
        Exponent in [0, 1].
    valid : Tensor, optional
        ``(B, T)`` bool, False on padding.

    Returns
    -------
    Tensor
        ``(B, T)`` float weights, 0 on unlabelled or padded frames.

    Examples
    --------
    >>> w = run_balanced_weights(torch.tensor([[0, 0, 0, 1]]), 4, 1.0)
    >>> [round(x, 3) for x in w[0].tolist()]   # 3 frames of class 0 and 1 of class 1
    [0.667, 0.667, 0.667, 2.0]
    """
    lab = labels.to(torch.int64)
    ok = lab >= 0
    if valid is not None:
        ok = ok & valid.to(torch.bool)
    onehot = F.one_hot(torch.where(ok, lab, torch.zeros_like(lab)), n_classes) * ok[..., None]
    counts = onehot.sum(dim=1, keepdim=True).to(torch.float32)  # (B, 1, C)
    per = (onehot * counts).sum(-1).clamp(min=1.0)  # count of each frame's class in its run
    w = per.pow(-float(power)) * ok
    n = ok.sum(dim=1, keepdim=True).clamp(min=1)
    return w * n / w.sum(dim=1, keepdim=True).clamp(min=1e-12)


def classification_loss(logits: torch.Tensor, labels: torch.Tensor,
                        valid: torch.Tensor | None = None,
                        class_weight: torch.Tensor | None = None,
                        frame_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean (weighted) cross-entropy over valid, labelled frames.

    Parameters
    ----------
    logits : Tensor
        ``(B, T, C)``.
    labels : Tensor
        ``(B, T)`` int64 class indices; ``-1`` = unlabelled (ignored).
    valid : Tensor, optional
        ``(B, T)`` bool, False on padding.
    class_weight : Tensor, optional
        ``(C,)`` weights.
    frame_weight : Tensor, optional
        ``(B, T)`` extra per-frame weights (e.g. :func:`run_balanced_weights`).
    """
    labels = labels.to(torch.int64)
    if valid is not None:
        labels = torch.where(valid.to(torch.bool), labels, torch.full_like(labels, -1))
    if not bool((labels >= 0).any()):
        return logits.sum() * 0.0
    if frame_weight is not None:
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                             weight=class_weight, ignore_index=-1, reduction="none")
        fw = frame_weight.reshape(-1).to(ce.dtype) * (labels.reshape(-1) >= 0)
        cw = (class_weight[labels.reshape(-1).clamp(min=0)] if class_weight is not None
              else torch.ones_like(ce))
        return (ce * fw).sum() / (cw * fw).sum().clamp(min=1e-12)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                           weight=class_weight, ignore_index=-1)


def aux_loss(aux_pred: torch.Tensor, aux_target: torch.Tensor, aux_names: Sequence[str],
             valid: torch.Tensor | None = None, present: Mapping[str, torch.Tensor] | None = None,
             delta: float = 1.0) -> torch.Tensor:
    """Mask-aware Huber loss of the auxiliary regressions, each target in its own scale.

    A target entry counts only where it is finite (NaN = not defined: ``cluster_shift_ppm``
    is NaN when no cluster is present), the frame is valid, and ``present[name]`` (if given)
    is True. Differences are divided by :data:`AUX_SCALES` (100 ppm for the shift) so no
    target dominates.

    Parameters
    ----------
    aux_pred, aux_target : Tensor
        ``(B, T, A)``, physical units.
    aux_names : sequence of str
        Names of the ``A`` columns.
    valid : Tensor, optional
        ``(B, T)`` bool.
    present : mapping, optional
        Name -> ``(B, T)`` bool, extra mask for that column (e.g. cluster present).
    delta : float
        Huber threshold in scaled units.

    Returns
    -------
    Tensor
        Scalar: mean over counted entries (0 with a gradient when none count).
    """
    ok = torch.isfinite(aux_target)
    if valid is not None:
        ok = ok & valid.to(torch.bool)[..., None]
    if present:
        for name, p in present.items():
            j = list(aux_names).index(name)
            ok[..., j] = ok[..., j] & p.to(torch.bool)
    scale = torch.tensor([AUX_SCALES.get(a, 1.0) for a in aux_names],
                         dtype=aux_pred.dtype, device=aux_pred.device)
    tgt = torch.where(ok, aux_target, aux_pred.detach())
    per = F.huber_loss(aux_pred / scale, tgt / scale, reduction="none", delta=delta)
    n = ok.sum()
    if int(n) == 0:
        return aux_pred.sum() * 0.0
    return (per * ok).sum() / n
