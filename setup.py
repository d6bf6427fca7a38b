"""Maps the four top-level code folders onto the ``lisentry`` import namespace.

``datasets/`` installs as ``lisentry.datasets`` (never as a top-level ``datasets``),
and so on; sub-packages are found with ``find_packages`` so none is dropped from the wheel.
"""
from setuptools import find_packages, setup

TOPS = ("datasets", "models", "training", "detector")
packages, package_dir = [], {}
for top in TOPS:
    packages += [f"lisentry.{top}"] + [f"lisentry.{top}.{s}" for s in find_packages(top)]
    package_dir[f"lisentry.{top}"] = top

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={"lisentry.models": ["default/*.json", "default/*.safetensors"],
                  "lisentry.datasets": ["sim/params/*.yaml", "io/templates/*"]},
    include_package_data=True,
)
