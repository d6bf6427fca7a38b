"""The operando figure: spectra as a ppm-vs-time heat map beside the potential curve, with an
optional band of labels under the potential."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

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


#: File extensions matplotlib's Agg backend writes.
FIGURE_FORMATS = ("png", "pdf", "svg", "svgz", "jpg", "jpeg", "tif", "tiff", "webp", "eps", "ps")


def plot_run(run: Run, out: str | Path, *, ppm_range: tuple[float, float] = (0.0, 300.0),
             labels: Sequence[str] | None = None, title: str | None = None) -> Path:
    """Draw the operando figure and write it atomically to ``out`` (PNG/PDF/SVG by extension).

    Parameters
    ----------
    run : Run
        Processed frames (at least one).
    out : path
        Output file.
    ppm_range : (float, float)
        Chemical-shift window of the heat map in ppm (default 0-300).
    labels : sequence of str, optional
        One class per frame; drawn as a colour band under the potential curve.
    """
    plt = _mpl()
    out = Path(out)
    if not len(run):
        raise ValueError("plot_run needs at least one frame")
    ppm = run.ppm_grid
    sel = (ppm >= min(ppm_range)) & (ppm <= max(ppm_range))
    if sel.sum() < 2:
        from lisentry.datasets.errors import ConfigError
        raise ConfigError(f"ppm range {min(ppm_range):g}..{max(ppm_range):g} holds fewer than two "
                          f"points of the spectra's grid ({ppm[0]:g}..{ppm[-1]:g} ppm)")
    if out.suffix.lower().lstrip(".") not in FIGURE_FORMATS:
        from lisentry.datasets.errors import ConfigError
        raise ConfigError(f"{out}: unknown figure format {out.suffix!r}; use .png, .pdf or .svg")
    spectra = run.spectra()[:, sel]
    t_h = run.t_s() / 3600.0
    pot = np.array([f.potential_V for f in run.frames])

    fig = plt.figure(figsize=(9, 6.5))
    gs = fig.add_gridspec(1, 2, width_ratios=[3, 1.2], wspace=0.05)
    ax_map = fig.add_subplot(gs[0, 0])
    ax_pot = fig.add_subplot(gs[0, 1], sharey=ax_map)
    finite = spectra[np.isfinite(spectra)]
    vmax = np.percentile(finite, 99.5) if finite.size else 1.0
    vmin = np.percentile(finite, 5) if finite.size else 0.0
    t_edges = _edges(t_h)
    # pcolormesh with true edges: frame periods need not be uniform.
    ax_map.pcolormesh(_edges(ppm[sel]), t_edges, spectra, shading="flat", cmap="viridis",
                      vmin=vmin, vmax=vmax, rasterized=True)
    ax_map.invert_xaxis()  # NMR convention: ppm decreases to the right
    ax_map.set_xlabel("7Li shift (ppm)")
    ax_map.set_ylabel("time (h)")
    if np.isfinite(pot).any():
        ax_pot.plot(pot, t_h, color="k", lw=1)
        ax_pot.set_xlabel("potential (V)")
    else:
        ax_pot.text(0.5, 0.5, "no potential log", transform=ax_pot.transAxes, ha="center")
    ax_pot.tick_params(labelleft=False)
    if labels is not None:
        for i, lab in enumerate(labels):
            ax_pot.axhspan(t_edges[i], t_edges[i + 1], xmin=0.0, xmax=0.06,
                           color=CLASS_COLOURS.get(lab, "0.7"), lw=0)
        handles = [plt.Rectangle((0, 0), 1, 1, color=CLASS_COLOURS[c]) for c in CLASSES]
        fig.legend(handles, CLASSES, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(title or f"{run.run_id}: {len(run)} frames")
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}{out.suffix}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, out)
    return out


def _edges(t: np.ndarray) -> np.ndarray:
    if len(t) == 1:
        return np.array([t[0] - 0.05, t[0] + 0.05])
    mid = (t[1:] + t[:-1]) / 2
    return np.concatenate([[t[0] - (mid[0] - t[0])], mid, [t[-1] + (t[-1] - mid[-1])]])
