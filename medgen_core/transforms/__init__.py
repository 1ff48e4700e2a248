"""MONAI-style transforms: array functions/classes and dictionary wrappers."""

# Lazy exports (PEP 562): the synthetic-MR chain imports monai.transforms, which the light modules here do not need.
_LAZY = {"SyntheticSRPaird": "medgen_core.transforms.synthetic_mr"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medgen_core.transforms' has no attribute {name!r}")
