"""``medgen demo`` end to end on the shipped sample: the in-plane table and the through-plane example."""

from __future__ import annotations

import json

import numpy as np

from medgen_core.cli.main import main
from medgen_core.io import read_volume
from medgen_core.provenance import verify_provenance


def test_demo_inplane_and_through_plane(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--degradations", "gaussian", "--adapt-seconds", "0"])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "gaussian" in stdout and "through-plane: 39 sagittal slices of 5 mm -> 1 mm" in stdout
    results = json.loads((out / "demo_results.json").read_text(encoding="utf-8"))
    inplane = results["results"]["gaussian"]
    assert inplane["model"]["psnr"] > inplane["bicubic"]["psnr"] + 3 and inplane["provenance"] == "intact"
    through = results["through_plane"]
    assert through["slices"] == 39 and through["factor"] == 5.0 and through["provenance"] == "intact"
    assert through["model"]["psnr"] > through["bspline"]["psnr"]  # the gate never loses to the B-spline
    thick = read_volume(out / "mni_slab_sagittal_5mm_thick.nii.gz")
    sr = read_volume(out / "mni_slab_sagittal_5mm_medgen_through.nii.gz")
    assert thick.shape[0] == 39 and sr.shape == (195, *thick.shape[1:])
    np.testing.assert_allclose(sr.spacing, (1.0, 1.0, 1.0), atol=1e-6)
    # same physical box: the first thick slice centre lies 2 mm (in x) inside the first 1 mm voxel centre's box
    np.testing.assert_allclose(thick.affine[:3, 3] - sr.affine[:3, 3], thick.affine[:3, 0] / 5 * 2, atol=1e-6)
    assert verify_provenance(out / "mni_slab_sagittal_5mm_medgen_through.nii.gz").status == "intact"
    assert (out / "montage.png").stat().st_size > 10_000 and (out / "montage_through_plane.png").stat().st_size > 10_000
