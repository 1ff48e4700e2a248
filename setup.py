"""Build glue that pyproject.toml cannot express: the package list, so that the repository's top-level
``monai_bundles/`` ships as the package ``medgen_bundles`` (mapped in ``[tool.setuptools.package-dir]``)
next to ``medgen_core``. Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

setup(packages=find_packages(include=["medgen_core", "medgen_core.*"]) + ["medgen_bundles"])
