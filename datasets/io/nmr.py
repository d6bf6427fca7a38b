"""One entry point for every spectrometer format: detect it, then delegate to its reader.

Formats (checked in this order on ``NMR_DIR``, or on ``NMR_DIR/nmr`` when ``NMR_DIR`` is a run
folder holding only that):

* ``"varian"``: ``NMR_DIR`` is a Varian/Agilent experiment (``*.fid`` or ``fid`` + ``procpar``)
  -> :mod:`lisentry.datasets.io.varian`;
* ``"bruker"``: numbered TopSpin experiment folders or a pseudo-2D ``ser``
  -> :mod:`lisentry.datasets.io.bruker`;
* ``"varian"``: a folder of ``*.fid`` experiment folders;
* ``"jcamp"``: a folder of JCAMP-DX files (``*.jdx``, ``*.dx``), or one such file
  -> :mod:`lisentry.datasets.io.jcamp`;
* anything else is handed to the Bruker reader, which reports what is missing.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from lisentry.datasets.errors import InputError
from lisentry.datasets.frame import RawFrame
from lisentry.datasets.io import bruker, jcamp, varian

__all__ = ["FORMATS", "NmrSource", "detect_format", "iter_raw_frames"]

FORMATS = ("bruker", "jcamp", "varian")


@dataclass(frozen=True)
class NmrSource:
    """What :func:`detect_format` found.

    Attributes
    ----------
    format : str
        One of :data:`FORMATS`.
    root : Path
        The folder (or file) the format reader gets.
    n_sources : int
        Experiment folders (Bruker, Varian) or files (JCAMP-DX) found, the ``N folders`` of
        ``lisentry inspect``.
    """

    format: str
    root: Path
    n_sources: int


def _entries(p: Path) -> list[Path]:
    try:
        return list(p.iterdir())
    except OSError:
        return []


def _own_data(p: Path) -> bool:
    return any((e.is_dir() and (e.name.isdigit() or e.suffix.lower() == ".fid"))
               or (e.is_file() and (e.suffix.lower() in jcamp.JCAMP_SUFFIXES or e.name == "ser"))
               for e in _entries(p))


def detect_format(nmr_dir: str | Path, *, count: bool = True) -> NmrSource:
    """Detect the format of an NMR folder (see the module docstring for the rules).

    Parameters
    ----------
    nmr_dir : str or Path
        Run folder, NMR folder, one experiment folder or one JCAMP-DX file.
    count : bool
        Count the Bruker experiment folders (``n_sources``); without it a Bruker series
        reports 0 and is not scanned twice (the reader scans it anyway).

    Returns
    -------
    NmrSource
    """
    p = Path(nmr_dir)
    if p.is_file():
        if p.suffix.lower() in jcamp.JCAMP_SUFFIXES:
            return NmrSource("jcamp", p, 1)
        if p.name == "fid" and (p.parent / "procpar").is_file():
            return NmrSource("varian", p.parent, 1)
        return NmrSource("bruker", p, 0)
    if not p.is_dir():
        return NmrSource("bruker", p, 0)
    if varian.is_varian_dir(p) or p.suffix.lower() == ".fid":
        return NmrSource("varian", p, 1)
    root = p
    if (p / "nmr").is_dir() and not _own_data(p):
        root = p / "nmr"
    entries = _entries(root)
    if (root / "ser").is_file() or any(e.is_dir() and e.name.isdigit() for e in entries):
        return NmrSource("bruker", p, bruker.scan_series(p).n_folders if count else 0)
    dirs = varian.list_varian_dirs(root)
    if dirs:
        return NmrSource("varian", root, len(dirs))
    files = jcamp.list_jcamp_files(root)
    if files:
        return NmrSource("jcamp", root, len(files))
    return NmrSource("bruker", p, 0)


def iter_raw_frames(nmr_dir: str | Path, *, use_processed: bool = False,
                    expected_nucleus: str | None = "7Li", skip_incomplete: bool = True,
                    tz=None) -> Iterator[RawFrame | InputError]:
    """Yield a :class:`RawFrame` or an :class:`InputError` for every frame, in frame order.

    Parameters
    ----------
    nmr_dir : str or Path
        See :func:`detect_format`.
    use_processed : bool
        Bruker only: read ``pdata/1/1r`` (JCAMP-DX spectra are processed anyway).
    expected_nucleus : str or None
        Required nucleus.
    skip_incomplete : bool
        Bruker only: drop the trailing in-progress experiments.
    tz : str, tzinfo or None
        JCAMP-DX ``##LONGDATE`` / Varian ``time_run`` zone (default: the machine's zone).

    Yields
    ------
    RawFrame or InputError
    """
    src = detect_format(nmr_dir, count=False)
    if src.format == "jcamp":
        yield from jcamp.iter_jcamp_frames(src.root, expected_nucleus=expected_nucleus, tz=tz)
    elif src.format == "varian":
        yield from varian.iter_varian_frames(src.root, expected_nucleus=expected_nucleus, tz=tz)
    else:
        yield from bruker.iter_raw_frames(nmr_dir, use_processed=use_processed,
                                          expected_nucleus=expected_nucleus,
                                          skip_incomplete=skip_incomplete)
