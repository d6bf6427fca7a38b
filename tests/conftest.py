"""Shared fixtures. (No tests/__init__.py and no root conftest.py: they would put the repo
root on sys.path and let our `datasets/` folder shadow other packages.)"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def real_data_root() -> Path:
    """``../shared/real`` beside the checkout, or ``$LISENTRY_REAL_DIR``."""
    env = os.environ.get("LISENTRY_REAL_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "real"


def _require(path: Path) -> Path:
    if not path.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{path} is missing; under CI=true the real run must be present")
        pytest.skip(f"{path} not present (tests on the real run skip outside CI)")
    return path


@pytest.fixture(scope="session")
def real_run_dir() -> Path:
    """The real Li|Li TEGDME operando run (600 Bruker folders + BioLogic files)."""
    return _require(real_data_root() / "li_li_tegdme_operando")


@pytest.fixture(scope="session")
def real_acqus_template(real_run_dir) -> str:
    """Text of a genuine TopSpin 2.1 acqus, used as a template for written fixtures."""
    return (real_run_dir / "nmr" / "3" / "acqus").read_text(encoding="latin-1")


@pytest.fixture(scope="session")
def real_audita_template(real_run_dir) -> str:
    return (real_run_dir / "nmr" / "3" / "audita.txt").read_text(encoding="latin-1")


@pytest.fixture(scope="session")
def real_run_echem_opts(real_run_dir):
    """Load options of the real run's potential export, as `make real-run` gives them (the
    export has no absolute start; docs/real_run.md)."""
    from lisentry.datasets.loading import LoadOptions
    export = "jr862_11_08_23_insitu-impedance-LiLi_1MLiTFSI_TEGDME-1mA_03_GCPL_C05.txt"
    return LoadOptions(echem=real_run_dir / "echem" / export,
                       echem_start="2023-08-11T12:40:15+01:00")
