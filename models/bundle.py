"""Model bundles: a folder with ``weights.safetensors`` and ``card.json``. No pickle anywhere.

``card.json`` holds everything needed to use the weights safely on new data::

    format, format_version, name, classes, nucleus,
    ppm_grid {min, max, step, n}            the grid the model was trained on (ppm)
    processing {...}                        ProcessingConfig.to_dict() of the pipeline (opaque here)
    inputs {normalisation, masking, frame_difference, echem_features, echem_features_version,
            window_features {names, version, ref_frames, scale}   (only with window features)}
    model {name, class, kwargs}             registry name (lisentry.models.registry.MODELS)
    temperature, ood_threshold, horizon_s   calibration, energy-OOD threshold, short horizon (s)
    detector {...}                          the online detector's settings (opaque here)
    training_config, training_data_hash, training_split, metrics, description
    training_data_sketch, training_environment   the data up to float rounding, and the libraries
                                            and CPU features of the training machine (fingerprint.py)
    package_version, created (UTC ISO 8601), weights_sha256
    ood {score, threshold, quantile, files_sha256}   optional: the feature-space OOD scorer
    presence {latents, threshold, files_sha256}      optional: the latent amounts' presence gate

A bundle may also hold the feature-space OOD scorer (:mod:`lisentry.models.ood_scorer`):
``ood.safetensors`` + ``ood.json``, written by :func:`attach_ood_scorer`. The card's ``ood``
section then names it (``score: "feature"``) with the threshold above which the detector
flags a frame ``ood``; without it the detector uses the energy score and ``ood_threshold``.
Likewise the presence gate of the latent amounts (:mod:`lisentry.models.presence`):
``presence.safetensors`` + ``presence.json``, written by :func:`attach_presence_gate` and named
by the card's ``presence`` section.

:func:`load_bundle` checks the weights' SHA-256, the registry name, the echem feature set and,
when asked, that the data's ppm grid, nucleus and processing config match the card; any
mismatch raises :class:`BundleError` with one line naming ``<dir>/card.json``.
"""
from __future__ import annotations

import difflib
import hashlib
import importlib.metadata
import json
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from lisentry.datasets.cells import SYMMETRIC_CELL_MODES
from lisentry.datasets.errors import ConfigError, InputError
from lisentry.models.features import ECHEM_FEATURES, ECHEM_FEATURES_VERSION
from lisentry.models.registry import build_model, model_name
from lisentry.models.window_features import WindowInputs

FORMAT = "lisentry-bundle"
FORMAT_VERSION = 1
CARD = "card.json"
WEIGHTS = "weights.safetensors"
#: The optional feature OOD scorer's files (names from lisentry.models.ood_scorer).
OOD_FILES = ("ood.safetensors", "ood.json")
#: The optional presence gate's files (names from lisentry.models.presence).
PRESENCE_FILES = ("presence.safetensors", "presence.json")
#: The project's default grid, ppm: used when ``card_extra`` gives none and n_ppm fits.
DEFAULT_GRID = {"min": -100.0, "max": 400.0, "step": 0.5}

#: Keys ``save_bundle`` accepts in ``card_extra``.
CARD_EXTRA_KEYS = ("name", "description", "nucleus", "ppm_grid", "processing", "temperature",
                   "ood_threshold", "horizon_s", "detector", "training_config",
                   "training_data_hash", "training_split", "metrics", "normalisation",
                   "echem_features", "training_data_sketch", "training_environment",
                   "window_features", "symmetric_cells")


class BundleError(InputError):
    """A model bundle is missing, corrupt, or does not fit the data it is used on."""


@dataclass
class Bundle:
    """A loaded model bundle.

    Attributes
    ----------
    path : Path
        The bundle folder.
    model : nn.Module
        The model, in eval mode, on CPU.
    card : dict
        The parsed ``card.json``.
    temperature : float
        Calibration temperature (``p = softmax(logits / T)``).
    ood_threshold : float | None
        Energy-score threshold above which a frame is out of distribution.
    sha256 : str
        :func:`bundle_hash` of the folder.
    ood_scorer : FeatureOODScorer | None
        The feature-space OOD scorer when the bundle has one (card ``ood.score == "feature"``).
    window_inputs : WindowInputs | None
        The hand-made window features appended to the model's echem input, when it was trained
        with them (card ``inputs.window_features``); whoever feeds the model must append them.
    presence_gate : PresenceGate | None
        The latent amounts' presence gate when the bundle has one (card ``presence``): where
        it is closed the detector reports the amount as 0.
    """

    path: Path
    model: nn.Module
    card: dict
    temperature: float
    ood_threshold: float | None
    sha256: str
    ood_scorer: Any = None
    window_inputs: WindowInputs | None = None
    presence_gate: Any = None

    @property
    def ood_score_threshold(self) -> float | None:
        """Threshold of the shipped OOD score: the feature scorer's when present, else the
        energy score's ``ood_threshold``."""
        if self.ood_scorer is not None:
            return float(self.card["ood"]["threshold"])
        return self.ood_threshold

    @property
    def symmetric_cells(self) -> str:
        """How the model reads symmetric Li | Li cells (card ``inputs.symmetric_cells``):
        ``sign_free`` (potential, current and charge as magnitudes; give such runs ``--cell
        symmetric``) or ``signed`` (as half cells; bundles from before the option)."""
        return str((self.card.get("inputs") or {}).get("symmetric_cells", "signed"))

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.card["classes"])

    @property
    def nucleus(self) -> str:
        return self.card["nucleus"]

    @property
    def processing(self) -> dict | None:
        return self.card.get("processing")

    @property
    def ppm_grid(self) -> np.ndarray:
        """The model's ppm axis (ascending), ppm."""
        g = self.card["ppm_grid"]
        return np.round(g["min"] + g["step"] * np.arange(g["n"]), 9)


# ---------------------------------------------------------------------- helpers
def _json_safe(x: Any) -> Any:
    """Convert numpy/torch scalars, tuples, Paths to JSON types; NaN/inf become None."""
    if isinstance(x, Mapping):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return _json_safe(x.tolist())
    if torch.is_tensor(x):
        return _json_safe(x.detach().cpu().tolist())
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer, int)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, (str, type(None))):
        return x
    if isinstance(x, (Path, datetime)):
        return str(x)
    raise ConfigError(f"card value of type {type(x).__name__} is not JSON-serialisable: {x!r}")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _package_version() -> str:
    try:
        return importlib.metadata.version("lisentry")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _grid_tuple(grid) -> tuple[float, float, float]:
    """(min, max, step) of a grid given as a mapping, a (min, max, step) tuple/list, or the
    ppm axis as a numpy array."""
    if isinstance(grid, Mapping):
        return float(grid["min"]), float(grid["max"]), float(grid["step"])
    if isinstance(grid, (tuple, list)) and len(grid) == 3:
        return float(grid[0]), float(grid[1]), float(grid[2])
    a = np.asarray(grid, dtype=float).reshape(-1)
    if len(a) < 2:
        raise ValueError(f"a ppm grid needs at least 2 points. Got {a.tolist()}.")
    return float(a.min()), float(a.max()), float(np.median(np.abs(np.diff(a))))


def _fmt_grid(g: tuple[float, float, float]) -> str:
    return f"{g[0]:g}..{g[1]:g}/{g[2]:g}"


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)


def _diffs(card: Any, data: Any, prefix: str = "") -> list[str]:
    """Differences between two JSON-like values, as 'key (card X, data Y)' strings."""
    if isinstance(card, Mapping) and isinstance(data, Mapping):
        out = []
        for k in sorted(set(card) | set(data), key=str):
            key = f"{prefix}.{k}" if prefix else str(k)
            if k not in data:
                out.append(f"{key} (card {card[k]!r}, data missing)")
            elif k not in card:
                out.append(f"{key} (card missing, data {data[k]!r})")
            else:
                out += _diffs(card[k], data[k], key)
        return out
    seqs = (list, tuple)
    if isinstance(card, seqs) and isinstance(data, seqs) and len(card) == len(data):
        out = []
        for i, (a, b) in enumerate(zip(card, data)):
            out += _diffs(a, b, f"{prefix}[{i}]")
        return out
    if (isinstance(card, (int, float)) and isinstance(data, (int, float))
            and not isinstance(card, bool) and not isinstance(data, bool)):
        if _close(float(card), float(data)):
            return []
        return [f"{prefix} (card {card!r}, data {data!r})"]
    return [] if card == data else [f"{prefix} (card {card!r}, data {data!r})"]


# ---------------------------------------------------------------------- save
def save_bundle(directory: str | Path, model: nn.Module, card_extra: Mapping[str, Any] | None = None
                ) -> Path:
    """Write ``model`` and its card into ``directory`` (created if needed).

    Parameters
    ----------
    directory : str or Path
        Bundle folder; existing ``card.json``/``weights.safetensors`` are replaced and a
        previous bundle's OOD scorer files (:data:`OOD_FILES`) removed.
    model : nn.Module
        A model whose class is registered in :data:`~lisentry.models.registry.MODELS`
        and has a JSON-safe ``config`` dict of constructor arguments.
    card_extra : mapping, optional
        Any of :data:`CARD_EXTRA_KEYS`. ``ppm_grid`` is ``{"min", "max", "step"}`` in ppm
        (default -100..400/0.5 when the model has 1001 points); ``processing`` is the
        pipeline's ``ProcessingConfig.to_dict()``; ``temperature`` defaults to 1.0;
        ``nucleus`` to ``"7Li"``.

    Returns
    -------
    Path
        The bundle folder.

    Raises
    ------
    ConfigError
        For an unknown key (with a suggestion), an unregistered model, or a grid that does
        not have the model's number of points.
    """
    extra = dict(card_extra or {})
    for k in extra:
        if k not in CARD_EXTRA_KEYS:
            close = difflib.get_close_matches(k, CARD_EXTRA_KEYS, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown card key '{k}'.{hint}")
    name = model_name(model)
    config = dict(getattr(model, "config", {}))
    n_ppm = int(config.get("n_ppm", getattr(model, "n_ppm", 0)))
    gmin, gmax, gstep = _grid_tuple(extra.pop("ppm_grid", DEFAULT_GRID))
    n = int(round((gmax - gmin) / gstep)) + 1
    if gstep <= 0 or not _close(gmin + (n - 1) * gstep, gmax) or n != n_ppm:
        raise ConfigError(f"ppm grid {_fmt_grid((gmin, gmax, gstep))} has {n} points; the model "
                          f"takes {n_ppm}")
    ef = extra.pop("echem_features", None)  # optional cross-check; the card always records them
    if ef is not None:
        names = ef.get("names") if isinstance(ef, Mapping) else ef
        version = ef.get("version", ECHEM_FEATURES_VERSION) if isinstance(ef, Mapping) \
            else ECHEM_FEATURES_VERSION
        if list(names) != list(ECHEM_FEATURES) or version != ECHEM_FEATURES_VERSION:
            raise ConfigError(f"echem features {list(names)} v{version} are not this lisentry's "
                              f"{list(ECHEM_FEATURES)} v{ECHEM_FEATURES_VERSION}")
    wf = extra.pop("window_features", None)
    sym = extra.pop("symmetric_cells", "signed")
    if sym not in SYMMETRIC_CELL_MODES:
        raise ConfigError(f"The 'symmetric_cells' card value must be one of {SYMMETRIC_CELL_MODES}. "
                          f"Got {sym!r}.")
    if wf is not None:
        try:
            wf = WindowInputs.from_card(wf, np.zeros(1)).card()
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"window_features card value: {exc}") from None
    _check_echem_width(config, len(wf["names"]) if wf is not None else 0, lambda msg: ConfigError(msg))
    temperature = float(extra.pop("temperature", 1.0))
    if not (math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"The 'temperature' card value must be > 0. Got {temperature}.")

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    tmp_w = d / (WEIGHTS + ".tmp")
    # One metadata key only: safetensors writes its metadata map in a random order, so with two
    # keys the same weights gave different files and weights_sha256 values from run to run.
    save_file(tensors, str(tmp_w), metadata={"format": "pt"})
    os.replace(tmp_w, d / WEIGHTS)

    card = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": extra.pop("name", d.name),
        "description": extra.pop("description", ""),
        "classes": list(config.get("classes", getattr(model, "classes", []))),
        "nucleus": extra.pop("nucleus", "7Li"),
        "ppm_grid": {"min": gmin, "max": gmax, "step": gstep, "n": n},
        "processing": extra.pop("processing", None),
        "inputs": {
            "normalisation": extra.pop("normalisation", "per_run"),
            "masking": "NaN grid points are zero-filled and flagged by a coverage-mask channel",
            "frame_difference": "difference to the run's first frame",
            "echem_features": list(ECHEM_FEATURES),
            "echem_features_version": ECHEM_FEATURES_VERSION,
            **({"window_features": wf} if wf is not None else {}),
            **({"symmetric_cells": sym} if sym != "signed" else {}),
        },
        "model": {"name": name, "class": type(model).__name__, "kwargs": config},
        "temperature": temperature,
        "ood_threshold": extra.pop("ood_threshold", None),
        "horizon_s": extra.pop("horizon_s", None),
        "detector": extra.pop("detector", None),
        "training_config": extra.pop("training_config", {}),
        "training_data_hash": extra.pop("training_data_hash", None),
        "training_data_sketch": extra.pop("training_data_sketch", None),
        "training_environment": extra.pop("training_environment", None),
        "training_split": extra.pop("training_split", None),
        "metrics": extra.pop("metrics", {}),
        "package_version": _package_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "weights_sha256": _sha256_file(d / WEIGHTS),
    }
    text = json.dumps(_json_safe(card), indent=2, sort_keys=False, allow_nan=False) + "\n"
    tmp_c = d / (CARD + ".tmp")
    tmp_c.write_text(text, encoding="utf-8")
    os.replace(tmp_c, d / CARD)
    # A previous bundle's OOD scorer and presence gate belong to other weights; the new card
    # names neither, and bundle_hash would still count their files. attach_ood_scorer and
    # attach_presence_gate write fresh ones.
    for fname in OOD_FILES + PRESENCE_FILES:
        (d / fname).unlink(missing_ok=True)
    return d


# ---------------------------------------------------------------------- load
def bundle_hash(directory: str | Path) -> str:
    """SHA-256 identifying a bundle: over ``b"card.json\\0" + card bytes +
    b"weights.safetensors\\0" + weight bytes`` (hex digest), then the OOD scorer's files
    (``ood.safetensors``, ``ood.json``) and the presence gate's (``presence.safetensors``,
    ``presence.json``) the same way when present.

    Raises
    ------
    BundleError
        If either file is missing.
    """
    d = Path(directory)
    h = hashlib.sha256()
    names = [CARD, WEIGHTS] + [f for f in OOD_FILES + PRESENCE_FILES if (d / f).is_file()]
    for fname in names:
        p = d / fname
        if not p.is_file():
            raise BundleError(p, "missing (not a lisentry model bundle)")
        h.update(fname.encode() + b"\0")
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _resolve_models_uri(uri: str) -> Path:
    """Download an MLflow ``models:/NAME@ALIAS`` (or ``models:/NAME/VERSION``) bundle."""
    try:
        import mlflow  # noqa: PLC0415  (optional dependency)
    except ImportError:
        raise BundleError(uri, "resolving models:/ URIs needs mlflow "
                               "(pip install 'lisentry[train]')") from None
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except Exception as exc:  # noqa: BLE001 - mlflow raises many types
        raise BundleError(uri, f"cannot download from the model registry: {exc}") from None
    if (local / CARD).is_file():
        return local
    found = sorted(p.parent for p in local.rglob(CARD))
    if len(found) != 1:
        raise BundleError(uri, f"expected one {CARD} in the registered model, found {len(found)}")
    return found[0]


def load_bundle(source: str | Path, *, expect_grid=None, expect_nucleus: str | None = None,
                expect_processing: Mapping[str, Any] | None = None,
                presence: bool = True) -> Bundle:
    """Load a bundle folder (or ``models:/NAME@ALIAS`` with mlflow) and check it fits the data.

    Parameters
    ----------
    source : str or Path
        Bundle folder, or an MLflow model-registry URI.
    expect_grid : mapping, 3-tuple or np.ndarray, optional
        The data's ppm grid as ``{"min", "max", "step"}``, a ``(min, max, step)`` tuple, or
        the ppm axis itself as a numpy array.
    expect_nucleus : str, optional
        The data's nucleus, e.g. ``"7Li"``.
    expect_processing : mapping, optional
        The data pipeline's ``ProcessingConfig.to_dict()``; must equal the card's.
    presence : bool
        Load and check the presence gate the card names (default). False skips it (the
        bundle's ``presence_gate`` is then None), e.g. to fit a new gate over a broken one.

    Returns
    -------
    Bundle

    Raises
    ------
    BundleError
        One line naming ``<dir>/card.json`` (or the weights file) and the problem, e.g.
        ``<dir>/card.json: ppm grid -100..400/0.5 does not match the data's -50..300/1``.
    """
    s = str(source)
    d = _resolve_models_uri(s) if s.startswith("models:/") else Path(source)
    card_path, weights_path = d / CARD, d / WEIGHTS
    if not card_path.is_file():
        raise BundleError(card_path, "missing (not a lisentry model bundle)")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(card_path, f"not valid JSON ({exc})") from None
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise BundleError(card_path, f"not a lisentry bundle card (format is not '{FORMAT}')")
    _check_card(card, card_path)
    inputs = card.get("inputs") or {}
    if (inputs.get("echem_features") != list(ECHEM_FEATURES)
            or inputs.get("echem_features_version") != ECHEM_FEATURES_VERSION):
        raise BundleError(card_path, f"echem features {inputs.get('echem_features')} "
                                     f"v{inputs.get('echem_features_version')} differ from this "
                                     f"lisentry's v{ECHEM_FEATURES_VERSION}")

    if inputs.get("symmetric_cells", "signed") not in SYMMETRIC_CELL_MODES:
        raise BundleError(card_path, f"inputs.symmetric_cells {inputs.get('symmetric_cells')!r} is "
                                     f"not one of {', '.join(SYMMETRIC_CELL_MODES)}")
    g = card["ppm_grid"]
    card_grid = (float(g["min"]), float(g["max"]), float(g["step"]))
    window = None
    if inputs.get("window_features") is not None:
        try:
            window = WindowInputs.from_card(inputs["window_features"], _grid_points(card_grid))
        except (ValueError, KeyError, TypeError) as exc:
            raise BundleError(card_path, f"window features: {exc}") from None
    if expect_grid is not None:
        data_grid = _grid_tuple(expect_grid)
        if not all(_close(a, b) for a, b in zip(card_grid, data_grid)):
            raise BundleError(card_path, f"ppm grid {_fmt_grid(card_grid)} does not match the "
                                         f"data's {_fmt_grid(data_grid)}")
    if expect_nucleus is not None and str(expect_nucleus) != str(card["nucleus"]):
        raise BundleError(card_path, f"nucleus {card['nucleus']} does not match the data's "
                                     f"{expect_nucleus}")
    if expect_processing is not None:
        diffs = _diffs(card.get("processing") or {}, _json_safe(dict(expect_processing)))
        if diffs:
            more = f"; and {len(diffs) - 3} more" if len(diffs) > 3 else ""
            raise BundleError(card_path, "processing config differs from the data's: "
                                         + "; ".join(diffs[:3]) + more)

    if not weights_path.is_file():
        raise BundleError(weights_path, "missing")
    if _sha256_file(weights_path) != card["weights_sha256"]:
        raise BundleError(weights_path,
                          "SHA-256 does not match card.json (file changed or corrupt)")
    spec = card["model"]
    kw = spec.get("kwargs") or {}
    try:
        model = build_model(spec["name"], kw)
    except (ConfigError, TypeError, ValueError, KeyError, AttributeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BundleError(card_path, f"model {spec.get('name')!r}: {first}") from None
    if list(getattr(model, "classes", card["classes"])) != list(card["classes"]):
        raise BundleError(card_path, "classes differ from the model's constructor arguments")
    n_model = getattr(model, "n_ppm", None)
    if isinstance(n_model, int) and n_model != card["ppm_grid"]["n"]:
        raise BundleError(card_path, f"'ppm_grid' has {card['ppm_grid']['n']} points; the model "
                                     f"takes {n_model}")
    _check_echem_width(kw, window.n_features if window is not None else 0,
                       lambda msg: BundleError(card_path, msg))
    # an ensemble's members are checked one by one
    for mkw in kw["members"] if isinstance(kw.get("members"), list) else [kw]:
        ppm_min, ppm_step = mkw.get("ppm_min", -100.0), mkw.get("ppm_step", 0.5)
        on_grid = (_is_number(ppm_min) and _is_number(ppm_step)
                   and _close(ppm_min, card_grid[0]) and _close(ppm_step, card_grid[2]))
        if (mkw.get("descriptors") or mkw.get("heads") == "factored") and not on_grid:
            # the descriptor and branch windows are placed on the model's own grid
            raise BundleError(card_path, f"the model's descriptor grid (min {mkw.get('ppm_min')}, "
                                         f"step {mkw.get('ppm_step')} ppm) differs from the card's "
                                         f"{_fmt_grid(card_grid)}")
    try:
        tensors = load_file(str(weights_path), device="cpu")
        model.load_state_dict(tensors, strict=True)
    except (SafetensorError, RuntimeError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BundleError(weights_path, f"cannot load weights: {first}") from None
    model.eval()
    thr = card.get("ood_threshold")
    scorer = _load_ood_scorer(d, card, model)
    gate = _load_presence_gate(d, card, model) if presence else None
    return Bundle(path=d, model=model, card=card, temperature=float(card.get("temperature", 1.0)),
                  ood_threshold=None if thr is None else float(thr), sha256=bundle_hash(d),
                  ood_scorer=scorer, window_inputs=window, presence_gate=gate)


def _grid_points(grid: tuple[float, float, float]) -> np.ndarray:
    lo, hi, step = grid
    return lo + step * np.arange(int(round((hi - lo) / step)) + 1)


def _check_echem_width(kwargs: Mapping, n_window: int, error) -> None:
    """The model's echem input width matches the card: the echem features, plus the
    ``n_window`` window features the card has (each ensemble member alike)."""
    window = n_window > 0
    want = len(ECHEM_FEATURES) + n_window
    for mkw in kwargs["members"] if isinstance(kwargs.get("members"), list) else [kwargs]:
        n = mkw.get("n_echem", want)
        if n != want:
            what = "echem and window features" if window else "echem features (no window features)"
            raise error(f"the model takes {n} echem input columns; the card's {what} are {want}")


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _short(x: Any) -> str:
    r = repr(x)
    return r if len(r) <= 60 else r[:57] + "..."


def _check_card(card: dict, card_path: Path) -> None:
    """Check the shape of the card's fields that :func:`load_bundle` uses, so a tampered or
    hand-edited card gives one :class:`BundleError` line naming the field, not a traceback."""
    def bad(field: str, must: str, got: Any) -> BundleError:
        return BundleError(card_path, f"'{field}' must be {must}. Got {_short(got)}.")

    for key in ("format_version", "classes", "nucleus", "ppm_grid", "model", "weights_sha256"):
        if key not in card:
            raise BundleError(card_path, f"'{key}' missing")
    fv = card["format_version"]
    if not (isinstance(fv, int) and not isinstance(fv, bool) and fv >= 1):
        raise bad("format_version", "an int >= 1", fv)
    if fv > FORMAT_VERSION:
        raise BundleError(card_path, f"bundle format {fv} is newer than this "
                                     f"lisentry reads ({FORMAT_VERSION}); upgrade lisentry")
    classes = card["classes"]
    if not (isinstance(classes, list) and len(classes) >= 2
            and all(isinstance(c, str) and c for c in classes)):
        raise bad("classes", "a list of at least 2 class names", classes)
    if not (isinstance(card["nucleus"], str) and card["nucleus"]):
        raise bad("nucleus", "a nucleus name such as '7Li'", card["nucleus"])
    g = card["ppm_grid"]
    if not isinstance(g, Mapping):
        raise bad("ppm_grid", "a mapping {min, max, step, n}", g)
    for k in ("min", "max", "step", "n"):
        if k not in g:
            raise BundleError(card_path, f"'ppm_grid.{k}' missing")
        if not _is_number(g[k]):
            raise bad(f"ppm_grid.{k}", "a finite number", g[k])
    if not g["step"] > 0:
        raise bad("ppm_grid.step", "> 0", g["step"])
    if not (isinstance(g["n"], int) and g["n"] >= 2
            and _close(g["min"] + (g["n"] - 1) * g["step"], g["max"])):
        raise bad("ppm_grid.n", f"an int >= 2 with min + (n - 1) * step = max "
                                f"({g['min']:g} + (n - 1) * {g['step']:g} = {g['max']:g})", g["n"])
    spec = card["model"]
    if not isinstance(spec, Mapping):
        raise bad("model", "a mapping {name, class, kwargs}", spec)
    if not (isinstance(spec.get("name"), str) and spec["name"]):
        raise bad("model.name", "a registered model name", spec.get("name"))
    if not isinstance(spec.get("kwargs") or {}, Mapping):
        raise bad("model.kwargs", "a mapping of constructor arguments", spec.get("kwargs"))
    if not isinstance(card["weights_sha256"], str):
        raise bad("weights_sha256", "a SHA-256 hex digest", card["weights_sha256"])
    if not isinstance(card.get("inputs") or {}, Mapping):
        raise bad("inputs", "a mapping", card.get("inputs"))
    for key in ("processing", "detector", "training_split", "metrics", "training_config"):
        if not isinstance(card.get(key) or {}, Mapping):
            raise bad(key, "a mapping or null", card.get(key))
    t = card.get("temperature", 1.0)
    if not (_is_number(t) and t > 0):
        raise bad("temperature", "a number > 0 (the calibration temperature)", t)
    thr = card.get("ood_threshold")
    if thr is not None and not _is_number(thr):
        raise bad("ood_threshold", "a finite number or null", thr)
    h = card.get("horizon_s")
    if h is not None and not (_is_number(h) and h > 0):
        raise bad("horizon_s", "a number > 0 or null", h)


# ---------------------------------------------------------------------- OOD scorer
def _files_sha256(d: Path, files=OOD_FILES) -> str:
    h = hashlib.sha256()
    for fname in files:
        h.update(fname.encode() + b"\0" + (d / fname).read_bytes())
    return h.hexdigest()


def _load_ood_scorer(d: Path, card: Mapping, model: nn.Module):
    """The bundle's feature OOD scorer, checked against the card and the model; None if the
    card names none."""
    ood = card.get("ood")
    if not ood:
        return None
    card_path = d / CARD
    if not isinstance(ood, Mapping) or ood.get("score") != "feature":
        raise BundleError(card_path, f"'ood' section {ood!r} is not understood (expected score 'feature')")
    for f in OOD_FILES:
        if not (d / f).is_file():
            raise BundleError(d / f, "missing (the card's 'ood' section names the feature scorer)")
    if _files_sha256(d) != ood.get("files_sha256"):
        raise BundleError(d / OOD_FILES[0], "SHA-256 does not match card.json (file changed or corrupt)")
    from lisentry.models.ood_scorer import FeatureOODScorer  # noqa: PLC0415  (keeps imports light)
    try:
        scorer = FeatureOODScorer.load(d)
        hidden = 2 * int(getattr(model, "hidden", 0))
        scorer.check_compatible(int(getattr(model, "n_ppm", 0)), hidden)
    except (ConfigError, ValueError, KeyError, SafetensorError, OSError) as exc:
        raise BundleError(d / OOD_FILES[1], f"cannot use the OOD scorer: {exc}") from None
    thr = ood.get("threshold")
    if not (isinstance(thr, (int, float)) and math.isfinite(thr)):
        raise BundleError(card_path, f"'ood.threshold' must be a finite number. Got {thr!r}.")
    return scorer


def attach_ood_scorer(directory: str | Path, scorer, *, quantile: float = 0.99,
                      meta: Mapping[str, Any] | None = None) -> Path:
    """Store a fitted :class:`~lisentry.models.ood_scorer.FeatureOODScorer` in a bundle.

    Writes ``ood.safetensors`` + ``ood.json`` and the card's ``ood`` section (score
    ``"feature"``, threshold = the scorer's ``q<quantile>`` validation quantile, the files'
    SHA-256). The card is replaced atomically, last, so a crash leaves the old card (which
    then names no scorer, or the old one whose hash no longer matches: a clear error).

    Parameters
    ----------
    directory : str or Path
        An existing bundle folder.
    scorer : FeatureOODScorer
        Fitted on the bundle's model.
    quantile : float
        Which stored validation quantile becomes the threshold (0.95 or 0.99 by default).
    meta : mapping, optional
        Provenance written into ``ood.json`` (training data hash, runs used).
    """
    d = Path(directory)
    card_path = d / CARD
    card = json.loads(card_path.read_text(encoding="utf-8"))
    key = f"q{quantile:g}"
    if key not in scorer.thresholds_:
        raise ConfigError(f"The OOD scorer has no {key} threshold; it has {sorted(scorer.thresholds_)}.")
    scorer.save(d, meta)
    card["ood"] = {"score": "feature", "threshold": float(scorer.thresholds_[key]),
                   "quantile": float(quantile), "files_sha256": _files_sha256(d),
                   "method": scorer.config()["method"]}
    tmp = d / (CARD + ".tmp")
    tmp.write_text(json.dumps(_json_safe(card), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, card_path)
    return d


# ---------------------------------------------------------------------- presence gate
def _feature_width(model: nn.Module) -> int:
    """Width of ``model``'s head features (``return_features``): 2 * hidden per network."""
    members = getattr(model, "members", None)
    nets = list(members) if members is not None else [model]
    return sum(2 * int(getattr(m, "hidden", 0)) for m in nets)


def _load_presence_gate(d: Path, card: Mapping, model: nn.Module):
    """The bundle's presence gate, checked against the card and the model; None if the card
    names none."""
    sec = card.get("presence")
    if not sec:
        return None
    card_path = d / CARD
    if not isinstance(sec, Mapping):
        raise BundleError(card_path, f"'presence' section {sec!r} is not understood")
    for f in PRESENCE_FILES:
        if not (d / f).is_file():
            raise BundleError(d / f, "missing (the card's 'presence' section names the gate)")
    if _files_sha256(d, PRESENCE_FILES) != sec.get("files_sha256"):
        raise BundleError(d, f"{PRESENCE_FILES[0]} or {PRESENCE_FILES[1]}: SHA-256 does not "
                             f"match card.json (file changed or corrupt)")
    from lisentry.models.presence import PresenceGate  # noqa: PLC0415  (keeps imports light)
    try:
        gate = PresenceGate.load(d)
    except (ConfigError, ValueError, KeyError, TypeError, SafetensorError, OSError) as exc:
        raise BundleError(d / PRESENCE_FILES[1], f"cannot use the presence gate: {exc}") from None
    width = _feature_width(model)
    if gate.n_features != width:
        raise BundleError(d / PRESENCE_FILES[1], f"the presence gate takes {gate.n_features} "
                                                 f"features; the model gives {width}")
    missing = [a for a in gate.latents if a not in tuple(getattr(model, "aux_names", ()))]
    if missing:
        raise BundleError(d / PRESENCE_FILES[1], f"the presence gate covers {missing}, which "
                                                 f"the model does not estimate")
    return gate


def attach_presence_gate(directory: str | Path, gate, *,
                         meta: Mapping[str, Any] | None = None) -> Path:
    """Store a fitted :class:`~lisentry.models.presence.PresenceGate` in a bundle.

    Writes ``presence.safetensors`` + ``presence.json`` and the card's ``presence`` section
    (latents, threshold, the files' SHA-256). The card is replaced atomically, last, so a crash
    leaves the old card (naming no gate, or the old one whose hash then fails: a clear error).
    A bundle's class probabilities and labels do not depend on it.

    Parameters
    ----------
    directory : str or Path
        An existing bundle folder.
    gate : PresenceGate
        Fitted on the bundle's model's head features.
    meta : mapping, optional
        Provenance written into ``presence.json`` (training data hash, fit metrics).
    """
    d = Path(directory)
    card_path = d / CARD
    card = json.loads(card_path.read_text(encoding="utf-8"))
    if card.pop("presence", None) is not None:
        # first a card that names no gate: a crash while the new files are written then leaves
        # a loadable bundle without one, not one whose gate fails its hash
        _write_card(d, card)
    gate.save(d, meta)
    card["presence"] = {"latents": list(gate.latents), "threshold": gate.threshold,
                        "detect_limit": gate.detect_limit,
                        "files_sha256": _files_sha256(d, PRESENCE_FILES)}
    _write_card(d, card)
    return d


def _write_card(d: Path, card: Mapping) -> None:
    """Replace ``d/card.json`` atomically."""
    tmp = d / (CARD + ".tmp")
    tmp.write_text(json.dumps(_json_safe(card), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, d / CARD)


# ---------------------------------------------------------------------- ONNX
# kept importable from here (it used to live in this module)
from lisentry.models.onnx_export import export_onnx  # noqa: E402,F401
