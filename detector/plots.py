"""The operando figure: spectra as a ppm-vs-time heat map beside the potential curve, with an
optional band of labels under the potential and an optional panel of the model's latent
estimates (cluster, metal and counter-electrode amounts), whose cluster shift is also marked
on the heat map so that it can be checked against the spectra."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from lisentry.datasets.frame import CLASSES, Run

CLASS_COLOURS = {"normal_lithiation": "#4caf50", "cluster_growth": "#2196f3",
                 "plating_onset": "#ff9800", "imminent_short": "#d32f2f"}


def _mpl():
    import matplotlib
    if os.environ.get("MPLBACKEND") is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


#: Latent estimates drawn in the amounts panel: column -> (legend text, colour).
LATENT_AMOUNTS = {"cluster_amount": ("cluster", "#2196f3"), "metal_amount": ("metal", "#ff9800"),
                  "ce_amount": ("counter electrode", "0.45")}

#: File extensions matplotlib's Agg backend writes.
FIGURE_FORMATS = ("png", "pdf", "svg", "svgz", "jpg", "jpeg", "tif", "tiff", "webp", "eps", "ps")


def plot_run(run: Run, out: str | Path, *, ppm_range: tuple[float, float] = (0.0, 300.0),
             labels: Sequence[str] | None = None, title: str | None = None,
             latents: Mapping[str, Sequence[float]] | None = None) -> Path:
    """Draw the operando figure (:func:`figure_run`) and write it atomically to ``out``
    (PNG/PDF/SVG by extension); the parameters are those of :func:`figure_run`."""
    out = Path(out)
    if out.suffix.lower().lstrip(".") not in FIGURE_FORMATS:
        from lisentry.datasets.errors import ConfigError
        raise ConfigError(f"{out}: unknown figure format {out.suffix!r}; use .png, .pdf or .svg")
    plt = _mpl()
    fig = figure_run(run, ppm_range=ppm_range, labels=labels, title=title, latents=latents)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}{out.suffix}")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    os.replace(tmp, out)
    return out


def figure_run(run: Run, *, ppm_range: tuple[float, float] = (0.0, 300.0),
               labels: Sequence[str] | None = None, title: str | None = None,
               latents: Mapping[str, Sequence[float]] | None = None):
    """The operando figure as a matplotlib ``Figure`` (the caller closes it).

    Parameters
    ----------
    run : Run
        Processed frames (at least one).
    ppm_range : (float, float)
        Chemical-shift window of the heat map in ppm (default 0-300).
    labels : sequence of str, optional
        One class per frame; drawn as a colour band under the potential curve.
    latents : mapping of str to sequence of float, optional
        The model's per-frame estimates, keyed by output column: ``cluster_amount``,
        ``metal_amount`` and ``ce_amount`` (fractions of the run's initial 7Li signal) are drawn
        against time in a third panel; ``cluster_shift_ppm`` (NaN where no cluster is
        estimated) is marked on the heat map. Each must have one value per frame.
    """
    plt = _mpl()
    if not len(run):
        raise ValueError("plot_run needs at least one frame")
    ppm = run.ppm_grid
    sel = (ppm >= min(ppm_range)) & (ppm <= max(ppm_range))
    if sel.sum() < 2:
        from lisentry.datasets.errors import ConfigError
        raise ConfigError(f"ppm range {min(ppm_range):g}..{max(ppm_range):g} holds fewer than two "
                          f"points of the spectra's grid ({ppm[0]:g}..{ppm[-1]:g} ppm)")
    latents = {k: np.asarray(v, dtype=float) for k, v in (latents or {}).items()}
    for k, v in latents.items():
        if v.shape != (len(run),):
            raise ValueError(f"latent {k!r} has {v.size} values for {len(run)} frames")
    amounts = [k for k in LATENT_AMOUNTS if k in latents and np.isfinite(latents[k]).any()]
    spectra = run.spectra()[:, sel]
    t_h = run.t_s() / 3600.0
    pot = np.array([f.potential_V for f in run.frames])

    fig = plt.figure(figsize=(11.5 if amounts else 9, 6.5))
    gs = fig.add_gridspec(1, 3 if amounts else 2,
                          width_ratios=[3, 1.2, 1.2] if amounts else [3, 1.2], wspace=0.05)
    ax_map = fig.add_subplot(gs[0, 0])
    ax_pot = fig.add_subplot(gs[0, 1], sharey=ax_map)
    finite = spectra[np.isfinite(spectra)]
    vmax = np.percentile(finite, 99.5) if finite.size else 1.0
    vmin = np.percentile(finite, 5) if finite.size else 0.0
    t_edges = _edges(t_h)
    # pcolormesh with true edges: frame periods need not be uniform.
    ax_map.pcolormesh(_edges(ppm[sel]), t_edges, spectra, shading="flat", cmap="viridis",
                      vmin=vmin, vmax=vmax, rasterized=True)
    shift = latents.get("cluster_shift_ppm")
    if shift is not None:
        lo, hi = min(ppm_range), max(ppm_range)
        on = np.isfinite(shift) & (shift >= lo) & (shift <= hi)
        if on.any():
            ax_map.plot(shift[on], t_h[on], "o", ms=2.5, mfc="none", mec="w", mew=0.6,
                        label="estimated cluster shift")
            ax_map.legend(loc="lower left", fontsize=7, frameon=False, labelcolor="w")
    ax_map.invert_xaxis()  # NMR convention: ppm decreases to the right
    ax_map.set_xlabel("7Li shift (ppm)")
    ax_map.set_ylabel("time (h)")
    if np.isfinite(pot).any():
        ax_pot.plot(pot, t_h, color="k", lw=1)
        ax_pot.set_xlabel("potential (V)")
    else:
        ax_pot.text(0.5, 0.5, "no potential log", transform=ax_pot.transAxes, ha="center")
    ax_pot.tick_params(labelleft=False)
    if amounts:
        ax_lat = fig.add_subplot(gs[0, 2], sharey=ax_map)
        for k in amounts:
            name, colour = LATENT_AMOUNTS[k]
            ax_lat.plot(latents[k], t_h, color=colour, lw=1, label=name)
        ax_lat.set_xlabel("estimated amount\n(of initial 7Li signal)")
        ax_lat.tick_params(labelleft=False)
        ax_lat.legend(loc="best", fontsize=7, frameon=False)
    if labels is not None:
        for i, lab in enumerate(labels):
            ax_pot.axhspan(t_edges[i], t_edges[i + 1], xmin=0.0, xmax=0.06,
                           color=CLASS_COLOURS.get(lab, "0.7"), lw=0)
        handles = [plt.Rectangle((0, 0), 1, 1, color=CLASS_COLOURS[c]) for c in CLASSES]
        fig.legend(handles, CLASSES, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(title or f"{run.run_id}: {len(run)} frames")
    return fig


def _edges(t: np.ndarray) -> np.ndarray:
    if len(t) == 1:
        return np.array([t[0] - 0.05, t[0] + 0.05])
    mid = (t[1:] + t[:-1]) / 2
    return np.concatenate([[t[0] - (mid[0] - t[0])], mid, [t[-1] + (t[-1] - mid[-1])]])
