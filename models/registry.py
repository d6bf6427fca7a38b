"""Explicit registry of model classes that bundles may name (no ``pkgutil`` scanning, which
finds nothing under editable installs).

Examples
--------
>>> build_model("lisentry_net", {"n_ppm": 64, "hidden": 8}).n_ppm
64
"""
from __future__ import annotations

import difflib

from torch import nn

from lisentry.datasets.errors import ConfigError
from lisentry.models.ensemble import LisentryEnsemble
from lisentry.models.net import LisentryNet

#: Registered model classes by the name stored in model cards.
MODELS: dict[str, type[nn.Module]] = {"lisentry_net": LisentryNet,
                                       "lisentry_ensemble": LisentryEnsemble}


def model_name(model: nn.Module) -> str:
    """Registry name of ``model``'s class.

    Raises
    ------
    ConfigError
        If the class is not registered.
    """
    for name, cls in MODELS.items():
        if type(model) is cls:
            return name
    raise ConfigError(f"model class {type(model).__name__} is not in MODELS "
                      f"({', '.join(sorted(MODELS))})")


def get_model_class(name: str) -> type[nn.Module]:
    """Class registered as ``name``; unknown names get a "did you mean" suggestion."""
    try:
        return MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), MODELS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown model '{name}' (known: {', '.join(sorted(MODELS))}).{hint}") \
            from None


def build_model(name: str, kwargs: dict | None = None) -> nn.Module:
    """Instantiate the registered model ``name`` with constructor ``kwargs``."""
    return get_model_class(name)(**(kwargs or {}))
