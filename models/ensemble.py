"""LisentryEnsemble: several LisentryNets trained from different seeds, run as one model.

Networks of this size land in rather different places from one seed to the next (on the
default's data, test macro-F1 from 0.87 to 0.93 across seeds of one config); the mean of a few
members' logits is steadier than any one of them and usually better than their average score.

The ensemble has the :class:`~lisentry.models.net.LisentryNet` interface that the trainer,
the online detector, the OOD scorer and the ONNX export use (``forward``, ``init_state``,
``step``, ``n_ppm``, ``n_echem``, ``classes``, ``aux_names``, ``config``), so a bundle holding
one runs wherever a single network does:

- ``logits`` are the mean of the members' logits (the normalised geometric mean of their
  probabilities), so temperature scaling and the energy score keep their meaning;
- ``aux`` (latent amounts) is the members' mean;
- ``features`` (for the feature-space OOD score) are the members' features side by side;
- the streaming state keeps one layout: the members' GRU states side by side in ``h``, and the
  first-frame reference, identical for all members (they must share ``input_scale``).

Current-free members (``current_free``): members trained on logs without a current column
(``ensemble.current_free_seeds``). They always see the current's columns masked
(:func:`~lisentry.models.window_features.current_columns`), and the ensemble routes frame by
frame: a frame whose current is known takes the mean of the other members, a frame without
one (a time/Ewe-only export, as the measured Li | Li run's; or no log at all) the mean of the
current-free ones. A model trained with currents learned to lean on them and loses about three
points of macro-F1 when they are missing (docs/results/journal.md, 2026-12-07, seventh part).

Examples
--------
>>> kw = dict(n_ppm=64, n_echem=6, hidden=8)
>>> ens = LisentryEnsemble([kw, kw]).eval()
>>> out = ens(torch.zeros(2, 5, 64), torch.zeros(2, 5, 6))
>>> tuple(out["logits"].shape), tuple(ens.init_state(3)["h"].shape)
((2, 5, 4), (1, 3, 16))
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from lisentry.datasets.errors import ConfigError
from lisentry.models.net import LisentryNet

#: Member constructor arguments that must agree (inputs, outputs and the state layout).
_SHARED = ("n_ppm", "n_echem", "classes", "aux", "input_scale", "num_layers")


class LisentryEnsemble(nn.Module):
    """Mean of K :class:`~lisentry.models.net.LisentryNet` members.

    Parameters
    ----------
    members : sequence of mapping
        Each member's constructor arguments (its ``config``); at least one. ``n_ppm``,
        ``n_echem``, ``classes``, ``aux``, ``input_scale`` and ``num_layers`` must agree; the
        rest (widths, heads, descriptors) may differ.
    current_free : sequence of bool, optional
        Per member: trained without currents (routed to frames without one). Default: none.
        When given, at least one member must be of each kind.
    """

    def __init__(self, members: Sequence[Mapping], current_free: Sequence[bool] | None = None):
        super().__init__()
        if not isinstance(members, (list, tuple)) or not members:
            raise ConfigError(f"The 'members' parameter of LisentryEnsemble must be a non-empty "
                              f"list of LisentryNet arguments. Got {members!r}.")
        self.members = nn.ModuleList([LisentryNet(**dict(kw)) for kw in members])
        first = self.members[0].config
        for k, m in enumerate(self.members[1:], start=1):
            for key in _SHARED:
                if m.config.get(key) != first.get(key):
                    raise ConfigError(f"LisentryEnsemble member {k} has {key}={m.config.get(key)!r}; "
                                      f"member 0 has {first.get(key)!r} (members must agree on "
                                      f"{', '.join(_SHARED)})")
        flags = [False] * len(self.members) if current_free is None else \
            [bool(f) for f in current_free]
        if len(flags) != len(self.members) or (any(flags) and all(flags)):
            raise ConfigError(f"The 'current_free' parameter of LisentryEnsemble must give one "
                              f"flag per member ({len(self.members)}), with members of both kinds. "
                              f"Got {current_free!r}.")
        self.current_free = flags
        #: Constructor arguments, JSON-safe (stored in the model card).
        self.config = {"members": [dict(m.config) for m in self.members]}
        if any(flags):
            self.config["current_free"] = list(flags)
        m0 = self.members[0]
        self.n_ppm, self.n_echem = m0.n_ppm, m0.n_echem
        self.classes, self.aux_names = m0.classes, m0.aux_names
        self.num_layers, self.input_scale = m0.num_layers, m0.input_scale
        self._widths = [m.hidden + 2 * m.branch_hidden for m in self.members]
        if any(flags):
            from lisentry.models.features import ECHEM_FEATURES  # noqa: PLC0415
            from lisentry.models.window_features import current_columns  # noqa: PLC0415
            keep = ~current_columns(self.n_echem)
            # the columns a current-free member never sees, and the column that routes a frame
            self.register_buffer("_keep", torch.as_tensor(keep, dtype=torch.float32),
                                 persistent=False)
            self._route_col = ECHEM_FEATURES.index("current_asinh")

    def __len__(self) -> int:
        return len(self.members)

    def n_parameters(self) -> int:
        """Number of trainable parameters (all members)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ------------------------------------------------------------------ state
    def init_state(self, batch: int = 1) -> dict[str, torch.Tensor]:
        """Streaming state before the first frame: the members' states, ``h`` side by side."""
        states = [m.init_state(batch) for m in self.members]
        return {"h": torch.cat([s["h"] for s in states], dim=-1), "ref": states[0]["ref"],
                "ref_mask": states[0]["ref_mask"], "n_seen": states[0]["n_seen"]}

    def _member_states(self, state: Mapping[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        h = state["h"]
        if h.shape[-1] != sum(self._widths):
            raise ValueError(f"state 'h' has width {h.shape[-1]}; this ensemble's is "
                             f"{sum(self._widths)}")
        parts = torch.split(h, self._widths, dim=-1)
        return [{"h": p.contiguous(), "ref": state["ref"], "ref_mask": state["ref_mask"],
                 "n_seen": state["n_seen"]} for p in parts]

    @staticmethod
    def _join(states: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        s0 = states[0]
        return {"h": torch.cat([s["h"] for s in states], dim=-1), "ref": s0["ref"],
                "ref_mask": s0["ref_mask"], "n_seen": s0["n_seen"]}

    @property
    def routed(self) -> bool:
        """Whether the ensemble has current-free members (and routes frame by frame)."""
        return any(self.current_free)

    def _inputs(self, echem, echem_mask):
        """Per member ``(echem, echem_mask)``, and the per-frame weight of the members that read
        currents (1 where the current is known); ``None`` when the ensemble does not route."""
        if not self.routed:
            return [(echem, echem_mask)] * len(self.members), None
        dev = self._keep.device      # the model's: the members' outputs are combined there
        e = torch.as_tensor(echem, dtype=torch.float32, device=dev)
        em = (torch.isfinite(e).to(torch.float32) if echem_mask is None
              else torch.as_tensor(echem_mask, dtype=torch.float32, device=dev).reshape(e.shape))
        em = em * torch.isfinite(e).to(torch.float32)
        keep = self._keep
        e_free = torch.where(keep > 0, e, torch.zeros((), device=e.device))
        free = (e_free, em * keep)
        w = em[..., self._route_col:self._route_col + 1]
        return [free if f else (echem, echem_mask) for f in self.current_free], w

    def _combine(self, outs: Sequence[Mapping[str, torch.Tensor]], w=None) -> dict[str, torch.Tensor]:
        def mean(key, idx):
            return torch.stack([outs[i][key] for i in idx]).mean(0)

        if w is None:
            res = {"logits": mean("logits", range(len(outs))), "aux": mean("aux", range(len(outs)))}
        else:
            a = [i for i, f in enumerate(self.current_free) if not f]
            b = [i for i, f in enumerate(self.current_free) if f]
            wa = w.reshape(outs[0]["logits"].shape[:-1] + (1,))
            res = {k: wa * mean(k, a) + (1 - wa) * mean(k, b) for k in ("logits", "aux")}
        if "features" in outs[0]:
            res["features"] = torch.cat([o["features"] for o in outs], dim=-1)
        return res

    # ------------------------------------------------------------------ batch / streaming
    def forward(self, spectra, echem, lengths=None, mask=None, *, echem_mask=None,
                state: Mapping[str, torch.Tensor] | None = None, return_state: bool = False,
                return_features: bool = False) -> dict[str, torch.Tensor]:
        """As :meth:`LisentryNet.forward`; ``features`` has the members' features side by side."""
        sub = self._member_states(state) if state is not None else [None] * len(self.members)
        ins, w = self._inputs(echem, echem_mask)
        outs = [m(spectra, e, lengths, mask, echem_mask=em, state=s,
                  return_state=return_state, return_features=return_features)
                for m, s, (e, em) in zip(self.members, sub, ins)]
        res = self._combine(outs, w)
        if return_state:
            res["state"] = self._join([o["state"] for o in outs])
        return res

    def step(self, spectrum, echem, state: Mapping[str, torch.Tensor], *, echem_mask=None,
             return_features: bool = False
             ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """As :meth:`LisentryNet.step`: advance every run of the batch by one frame."""
        outs, states = [], []
        ins, w = self._inputs(echem, echem_mask)
        for m, s, (e, em) in zip(self.members, self._member_states(state), ins):
            o, s2 = m.step(spectrum, e, s, echem_mask=em, return_features=return_features)
            outs.append(o)
            states.append(s2)
        return self._combine(outs, w), self._join(states)

    @classmethod
    def from_members(cls, nets: Sequence[LisentryNet],
                     current_free: Sequence[bool] | None = None) -> "LisentryEnsemble":
        """An ensemble holding copies of trained ``nets``' weights."""
        ens = cls([n.config for n in nets], current_free=current_free)
        for dst, src in zip(ens.members, nets):
            dst.load_state_dict(src.state_dict(), strict=True)
        return ens
