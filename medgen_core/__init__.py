"""MedGen: generative models for medical volumes.

Layers (arrows point one way): ``io``/``provenance``/``networks``/``losses``/``transforms`` ->
``training``/``inference``/``evaluation`` -> ``bundles``/``cli``. Nothing here knows about Slicer.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
