"""Errors raised at the boundary of lisentry.

Every error about bad input carries the file it concerns and says what was wrong in one
line, e.g. ``BrukerFormatError: run12/5/acqus: SW_h missing (needed for ppm axis)``. The
command line prints ``str(err)`` and never a traceback for these.
"""
from __future__ import annotations

from pathlib import Path


class LisentryError(Exception):
    """Base class of all errors lisentry raises on purpose."""


class ConfigError(LisentryError, ValueError):
    """A configuration value or protocol step is invalid."""


class InputError(LisentryError):
    """A file could not be used. ``path`` names it, ``reason`` says why (one line).

    ``frame`` is the number of the frame it concerns when the reader knows it (Bruker expno,
    1-based row of a pseudo-2D ``ser``, JCAMP-DX/Varian frame number; ``-1``: the frame has no
    number), ``None`` when not set; skip reports use it (see ``load_run``).
    """

    frame: int | None = None

    def __init__(self, path: str | Path, reason: str, *, frame: int | None = None):
        self.path = Path(path)
        self.reason = " ".join(str(reason).split())  # always one line
        if frame is not None:
            self.frame = int(frame)
        super().__init__(f"{self.path}: {self.reason}")


class BrukerFormatError(InputError):
    """A Bruker TopSpin file is missing, truncated or inconsistent."""


class NmrFolderError(BrukerFormatError):
    """The path given as the NMR folder is not one: missing, or a single experiment folder."""


class IncompleteAcquisition(BrukerFormatError):
    """The experiment is still being acquired (TopSpin has not written its end yet)."""


class EchemFormatError(InputError):
    """A potentiostat log cannot be parsed. A reason quoting much of the file is cut short."""

    def __init__(self, path: str | Path, reason: str):
        reason = " ".join(str(reason).split())
        if len(reason) > 300:
            reason = reason[:300] + "... (cut)"
        super().__init__(path, reason)
