"""MedGen: generative models for medical volumes.

Layers, bottom first (imports point down; ``tests/test_architecture.py`` checks it): ``utils``, ``io``, ``networks``,
``losses`` | ``provenance`` | ``transforms`` | ``data`` | ``augmentation``, ``inference`` | ``training`` |
``evaluation`` | ``bundles`` | ``experiments`` | ``cli``. Nothing here knows about Slicer.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
