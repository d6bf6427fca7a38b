"""The built wheel must contain every sub-package under the lisentry namespace and must not
install a top-level ``datasets``/``models``/``training``/``detector`` module."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOPS = ("datasets", "models", "training", "detector")


def _package_folders() -> set[str]:
    found = set()
    for top in TOPS:
        for init in (REPO / top).rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            rel = init.parent.relative_to(REPO)
            found.add("lisentry/" + "/".join(rel.parts))
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(REPO)],
        capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail("wheel build failed:\n" + proc.stdout[-3000:] + proc.stderr[-3000:])
    wheels = list(out.glob("lisentry-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_contains_every_subpackage(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    packages_in_wheel = {n.rsplit("/", 1)[0] for n in names if n.endswith("/__init__.py")}
    expected = _package_folders()
    assert expected, "no packages found in the source tree"
    missing = expected - packages_in_wheel
    assert not missing, f"sub-packages missing from the wheel: {sorted(missing)}"


def test_wheel_installs_nothing_top_level_but_lisentry(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    tops = {t for t in tops if not t.endswith((".dist-info", ".data"))}
    assert tops == {"lisentry"}, tops
    assert not any(n.startswith("lisentry/__init__") for n in names), \
        "lisentry must stay a namespace package (no lisentry/__init__.py)"


def test_no_source_imports_top_level_folders():
    import re
    bad = re.compile(r"^\s*(from|import)\s+(datasets|models|training|detector)(\.|\s|$)", re.M)
    offenders = []
    for top in (*TOPS, "tests", "benchmarks"):
        for py in (REPO / top).rglob("*.py"):
            if bad.search(py.read_text(encoding="utf-8")):
                offenders.append(str(py.relative_to(REPO)))
    assert not offenders, f"import lisentry.<pkg>, not the bare folder: {offenders}"
