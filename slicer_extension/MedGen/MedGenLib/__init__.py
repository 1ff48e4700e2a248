"""Testable core of the MedGen Slicer module.

Pure Python plus MRML classes from ``slicer`` (the scene is passed in), so it runs under plain pytest
with ``slicer-core``. Nothing here imports ``qt``, ``ctk``, ``slicer.ScriptedLoadableModule``, ``torch``
or ``monai`` at import time; MedGen itself is only reached through its CLI, files and (lazily) its
bundle catalog.
"""
