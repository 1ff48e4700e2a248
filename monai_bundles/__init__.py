"""MedGen's built-in MONAI bundles, one folder per bundle (installed as the package ``medgen_bundles``).

This file only makes the folder importable as package data (``importlib.resources.files("medgen_bundles")``);
the catalogue (``medgen_core/bundles/catalog.py``) finds the bundles here, and nothing imports code from them.
"""
