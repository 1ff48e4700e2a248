"""The Slicer module's Upscale options for through-plane SR and the gate: the CLI flags it passes, and one real
``medgen upscale --axes through`` run on an MRML scene (slicer-core), with a non-integer factor along the slice axis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from MedGenLib import provenance_attributes as pa
from MedGenLib import scene_io
from MedGenLib.commands import GenerationRequest, build_command
from MedGenLib.jobs import GenerationJob, JobOptions, task_label
from MedGenLib.process import State
from MedGenLib.testing import OBLIQUE_IJK_TO_RAS, oblique_volume


def test_upscale_options_become_cli_flags():
    through = build_command(GenerationRequest("upscale", Path("a.nrrd"), Path("b.nrrd"), axes="through", target_spacing=0.9,
                                              adapt_seconds=5, gate=False), ["medgen"], {})
    assert through.argv == ["medgen", "upscale", "a.nrrd", "b.nrrd", "--scale", "2", "--axes", "through", "--target-spacing", "0.9",
                            "--adapt-seconds", "5.0", "--no-gate", "--device", "auto", "--progress", "json"]
    plain = build_command(GenerationRequest("upscale", Path("a.nrrd"), Path("b.nrrd")), ["medgen"], {})
    assert not {"--axes", "--target-spacing", "--adapt-seconds", "--no-gate"} & set(plain.argv)  # the CLI's defaults: in-plane, gated
    for bad, match in ((dict(axes="sideways"), "axes must be one of"), (dict(axes="through", target_spacing=0), "target_spacing must be > 0"),
                       (dict(axes="through", adapt_seconds=-1), "adapt_seconds must be >= 0"),
                       (dict(target_spacing=1.0), "axes='through' only")):
        with pytest.raises(ValueError, match=match):
            GenerationRequest("upscale", Path("a.nrrd"), Path("b.nrrd"), **bad)
    assert task_label(JobOptions("upscale", axes="through")) == "upscale through-plane"
    assert task_label(JobOptions("upscale", scale=4)) == "upscale x4"


def test_through_plane_run_on_a_scene_keeps_the_geometry(slicer_core, tmp_path):
    """24 x 20 x 4 voxels of 1.5 x 1.2 x 3 mm on an oblique grid -> 10 slices of 1.2 mm (factor 2.5)."""
    scene = slicer_core.vtkMRMLScene()
    source = oblique_volume(scene, "src")
    job = GenerationJob(scene, source, JobOptions(action="upscale", device="cpu", axes="through", adapt_seconds=1.0), temp_root=tmp_path)
    assert job.run(timeout_s=300) is State.DONE, (job.error, job.process.lines if job.process else None)
    node = job.result_node
    assert job.problems == [] and scene_io.validate_output(node, source) == []
    assert scene_io.dimensions(node) == (24, 20, 10)
    np.testing.assert_allclose(scene_io.get_ijk_to_ras(node), scene_io.upscaled_ijk_to_ras(OBLIQUE_IJK_TO_RAS, (1, 1, 2.5)), atol=1e-4)
    assert node.GetName() == "src upscale through-plane (AI)"
    attributes = pa.node_attributes(node)
    assert attributes[pa.AI_GENERATED] == "true" and '"through"' in attributes.get(pa.PARAMETERS, "")
    assert job.command.argv[job.command.argv.index("--axes") + 1] == "through"
    assert list(tmp_path.iterdir()) == []
