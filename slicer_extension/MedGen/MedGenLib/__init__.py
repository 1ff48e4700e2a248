"""Testable core of the MedGen Slicer module.

Pure Python plus MRML classes from ``slicer`` (the scene is passed in), so it runs under plain pytest
with ``slicer-core``. Nothing here imports ``qt``, ``ctk``, ``slicer.ScriptedLoadableModule``, ``torch``,
``monai`` or ``medgen_core``: MedGen is reached only through its CLI in a child process (``medgen bundle
list --json``, ``medgen upscale|translate|augment``) and the files it writes (NRRD, provenance sidecars).
"""
