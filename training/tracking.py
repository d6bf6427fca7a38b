"""A thin MLflow bridge: runs, params, per-epoch metrics, artifacts, registry aliases.

The default tracking store is a local SQLite database ``./mlflow.db`` (MLflow's ``./mlruns``
file store is deprecated); ``MLFLOW_TRACKING_URI`` or ``--tracking-uri`` point elsewhere. Model
bundles are logged as plain artifacts (safetensors + JSON), never with MLflow's pickling PyTorch
flavour. When mlflow is not installed or tracking is disabled, every call is a no-op.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Mapping


def _flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
    return out


class Tracker:
    """MLflow tracking for one training (or one tuning study with nested trial runs)."""

    def __init__(self, enabled: bool = True, experiment: str = "lisentry",
                 tracking_uri: str | None = None):
        self.mlflow = None
        if not enabled:
            return
        try:
            import mlflow  # noqa: PLC0415
        except ImportError:
            print("mlflow not installed: tracking disabled (pip install 'lisentry[train]')",
                  file=sys.stderr)
            return
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(experiment)
        self.mlflow = mlflow
        self.uri = uri

    @property
    def active(self) -> bool:
        return self.mlflow is not None

    @contextmanager
    def run(self, name: str | None = None, nested: bool = False, tags: Mapping | None = None):
        if not self.active:
            yield None
            return
        with self.mlflow.start_run(run_name=name, nested=nested, tags=dict(tags or {})) as r:
            yield r

    def log_params(self, params: Mapping) -> None:
        if self.active:
            flat = _flatten(params)
            self.mlflow.log_params({k: ("" if v is None else v) for k, v in flat.items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self.active:
            clean = {k: float(v) for k, v in _flatten(metrics).items()
                     if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}
            self.mlflow.log_metrics(clean, step=step)

    def log_artifacts(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.active:
            p = Path(path)
            if p.is_dir():
                self.mlflow.log_artifacts(str(p), artifact_path)
            elif p.exists():
                self.mlflow.log_artifact(str(p), artifact_path)

    def register(self, artifact_path: str, name: str, alias: str | None = None) -> str | None:
        """Register ``runs:/<active run>/<artifact_path>`` as a new version of ``name`` and point
        ``alias`` at it. Returns the version, or None when tracking is off."""
        if not self.active:
            return None
        run = self.mlflow.active_run()
        client = self.mlflow.MlflowClient()
        try:
            client.get_registered_model(name)
        except Exception:  # noqa: BLE001 - not found
            client.create_registered_model(name)
        mv = client.create_model_version(name, f"runs:/{run.info.run_id}/{artifact_path}",
                                         run_id=run.info.run_id)
        if alias:
            client.set_registered_model_alias(name, alias, mv.version)
        return str(mv.version)
