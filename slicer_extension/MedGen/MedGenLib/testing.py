"""Small synthetic inputs for the module's tests (in Slicer and under pytest with ``slicer-core``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from MedGenLib.scene_io import set_ijk_to_ras

__all__ = ["OBLIQUE_IJK_TO_RAS", "oblique_volume"]


def _oblique_ijk_to_ras() -> np.ndarray:
    """Rotation about z (25 deg) and x (15 deg), spacing 1.5 x 1.2 x 3 mm, origin (10, -20, 5)."""
    a, b = np.deg2rad(25.0), np.deg2rad(15.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    matrix = np.eye(4)
    matrix[:3, :3] = rz @ rx @ np.diag([1.5, 1.2, 3.0])
    matrix[:3, 3] = [10.0, -20.0, 5.0]
    return matrix


OBLIQUE_IJK_TO_RAS = _oblique_ijk_to_ras()


def oblique_volume(scene: Any, name: str = "MedGenTestInput", dims: tuple[int, int, int] = (24, 20, 4)) -> Any:
    """A scalar volume node in ``scene``: smooth float32 pattern of ``dims`` (I, J, K) on an oblique grid."""
    import slicer.util

    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    k, j, i = np.meshgrid(*(np.arange(n) for n in dims[::-1]), indexing="ij")
    array = (100.0 + 50.0 * np.sin(i / 4.0) * np.cos(j / 5.0) + 2.0 * k).astype(np.float32)
    slicer.util.updateVolumeFromArray(node, array)  # array is (K, J, I)
    set_ijk_to_ras(node, OBLIQUE_IJK_TO_RAS)
    return node
