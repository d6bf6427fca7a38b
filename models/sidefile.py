"""A bundle's side files: fitted arrays (safetensors) beside their JSON description.

The OOD scorer (:mod:`lisentry.models.ood_scorer`) and the presence gate
(:mod:`lisentry.models.presence`) are each two such files. Both are written beside and renamed,
so a reader never sees half a file, and read back with a check of their format and version.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from lisentry.datasets.errors import ConfigError


def write_side_files(directory: str | Path, tensors_name: str, config_name: str,
                     arrays: Mapping[str, np.ndarray], config: Mapping, fmt: str) -> Path:
    """Write ``arrays`` (as float64) to ``tensors_name`` and ``config`` to ``config_name``."""
    from safetensors.numpy import save_file
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in arrays.items()}
    save_file(arrays, str(d / (tensors_name + ".tmp")), metadata={"format": fmt})
    os.replace(d / (tensors_name + ".tmp"), d / tensors_name)
    (d / (config_name + ".tmp")).write_text(json.dumps(config, indent=2, allow_nan=False) + "\n",
                                            encoding="utf-8")
    os.replace(d / (config_name + ".tmp"), d / config_name)
    return d


def read_side_config(directory: str | Path, config_name: str, fmt: str, version: int,
                     article: str, what: str) -> dict:
    """The JSON of ``config_name``, checked to be ``fmt`` of at most ``version`` (ConfigError
    naming the file and ``what`` it should be, e.g. ``"a", "presence gate"``, otherwise)."""
    path = Path(directory) / config_name
    cfg = json.loads(path.read_text(encoding="utf-8"))
    if cfg.get("format") != fmt:
        raise ConfigError(f"{path}: not {article} {what} (format is not '{fmt}')")
    if int(cfg.get("format_version", 0)) > version:
        raise ConfigError(f"{path}: {what} format {cfg['format_version']} is newer than this "
                          f"lisentry reads ({version})")
    return cfg
