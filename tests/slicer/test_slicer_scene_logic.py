"""The module's logic on a real MRML scene (slicer-core): export -> real ``medgen upscale`` -> import.

Runs the shipped super-resolution bundle through the real CLI in a child process on a small oblique
volume, then checks geometry, provenance attributes, naming, NRRD save/reload and that failed or
cancelled runs leave nothing behind.
"""

from __future__ import annotations

import json
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
from MedGenLib import provenance_attributes as pa
from MedGenLib import scene_io
from MedGenLib.jobs import GenerationJob, JobOptions
from MedGenLib.process import MedGenProcess, State
from MedGenLib.progress import ProgressEvent, StateEvent
from MedGenLib.testing import OBLIQUE_IJK_TO_RAS, oblique_volume

STANDIN_MEDGEN = [sys.executable, "-c", (
    "import time\n"
    "for i in range(100):\n"
    "    print('MEDGEN_PROGRESS {\"stage\": \"stand-in\", \"done\": %d, \"total\": 100, \"fraction\": %f}' % (i + 1, (i + 1) / 100), flush=True)\n"
    "    time.sleep(0.2)\n"
)]


def standin_medgen_process(command, on_event):
    """Stand-in for the ``medgen`` CLI (not for Slicer): a child that prints progress for 20 s and writes nothing."""
    return MedGenProcess(STANDIN_MEDGEN, command.env, on_event=on_event)


@pytest.fixture(scope="module")
def upscaled(slicer_core, tmp_path_factory):
    """One real x2 run on an oblique 24x20x4 volume (float32, spacing 1.5 x 1.2 x 3 mm)."""
    scene = slicer_core.vtkMRMLScene()
    source = oblique_volume(scene, "src")
    temp_root = tmp_path_factory.mktemp("medgen-runs")
    events: list = []
    job = GenerationJob(scene, source, JobOptions(action="upscale", scale=2, device="cpu"), temp_root=temp_root, on_event=events.append)
    job.run(timeout_s=300)
    return SimpleNamespace(scene=scene, source=source, job=job, node=job.result_node, events=events, temp_root=temp_root)


def test_upscale_run_finishes_reports_progress_and_cleans_up(upscaled):
    job = upscaled.job
    assert job.state is State.DONE, (job.error, job.process.lines if job.process else None)
    assert job.problems == []
    states = [e.state for e in upscaled.events if isinstance(e, StateEvent)]
    assert states == ["Initializing", "Running", "Importing", "Done"]
    fractions = [e.fraction for e in upscaled.events if isinstance(e, ProgressEvent)]
    assert fractions and fractions[-1] == 1.0
    assert "--progress" in job.command.argv and job.command.env["CUDA_VISIBLE_DEVICES"] == "-1"
    assert list(upscaled.temp_root.iterdir()) == []  # exported input and generated file removed


def test_output_geometry_is_the_upscaled_input_geometry(upscaled):
    from medgen_core.inference.geometry import upscaled_affine

    node, source = upscaled.node, upscaled.source
    assert scene_io.dimensions(node) == (48, 40, 4)  # in-plane x2; K (3 mm) is the slice axis
    src = scene_io.get_ijk_to_ras(source)
    np.testing.assert_allclose(src, OBLIQUE_IJK_TO_RAS, atol=1e-9)
    # Slicer's IJK-to-RAS and MedGen's voxel-to-RAS affine use the same axes (I, J, K) = (x, y, z)
    np.testing.assert_allclose(scene_io.get_ijk_to_ras(node), upscaled_affine(src, (2, 2, 1)), atol=1e-5)
    centres = scene_io.box_corners(scene_io.get_ijk_to_ras(node), scene_io.dimensions(node), centres=True)
    in_source_index = (np.linalg.inv(src) @ np.c_[centres, np.ones(8)].T).T[:, :3]
    upper = np.asarray(scene_io.dimensions(source)) - 0.5
    assert np.all(in_source_index > -0.5) and np.all(in_source_index < upper)
    assert scene_io.validate_output(node, source) == []


def test_output_carries_provenance_attributes_and_ai_name(upscaled):
    from medgen_core.bundles import get_bundle
    from medgen_core.provenance import DISCLOSURE

    meta = get_bundle("brain_mri_super_resolution").metadata  # the bundle the CLI ran
    node, source = upscaled.node, upscaled.source
    attrs = pa.node_attributes(node)
    assert attrs[pa.AI_GENERATED] == "true"
    assert attrs[pa.GENERATOR] == meta["name"] and attrs[pa.GENERATOR_VERSION] == meta["version"]
    assert attrs[pa.BUNDLE] == f"{meta['name']}@{meta['version']}"
    assert attrs[pa.WEIGHTS_SHA256] == meta["medgen"]["variants"][meta["medgen"]["default_variant"]["2"]]["sha256"]
    assert attrs[pa.SOURCE_NODE_NAME] == "src" and attrs[pa.SOURCE_NODE_ID] == source.GetID()
    assert attrs[pa.DISCLOSURE] == DISCLOSURE
    assert json.loads(attrs[pa.PARAMETERS])["scale"] == 2
    assert attrs[pa.GENERATED_AT].endswith("Z")
    assert node.GetName() == "src upscale x2 (AI)"
    assert DISCLOSURE in node.GetDescription()
    assert not [n for n in node.GetAttributeNames() if n.startswith("medgen_")]  # header fields became MedGen.*


def test_nrrd_save_and_reload_keep_provenance(upscaled, slicer_core, tmp_path):
    import nrrd

    from medgen_core.io import read_volume
    from medgen_core.provenance import verify_provenance

    node = upscaled.node
    path = scene_io.save_output_nrrd(node, tmp_path / "sr.nrrd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sr.nrrd"]  # atomic: no temporary file left
    header = nrrd.read_header(str(path))
    assert header["medgen_ai_generated"] == "true"
    assert header["medgen_generator"] == f"{node.GetAttribute(pa.GENERATOR)}:{node.GetAttribute(pa.GENERATOR_VERSION)}"
    record = json.loads(header["medgen_provenance"])
    assert record["weights_sha256"] == node.GetAttribute(pa.WEIGHTS_SHA256)
    assert header["MedGen.SourceNodeName"] == "src"
    assert not [n for n in node.GetAttributeNames() if n.startswith("medgen_")]  # only set while writing
    # MedGen's own reader (LPS/RAS conversion) sees the same grid, and the record still matches the pixels
    np.testing.assert_allclose(read_volume(path).affine, scene_io.get_ijk_to_ras(node), atol=1e-5)
    assert verify_provenance(path).status == "intact"

    fresh = slicer_core.vtkMRMLScene()
    loaded = scene_io.load_output_nrrd(fresh, path)
    assert pa.node_attributes(loaded) == pa.node_attributes(node)
    np.testing.assert_allclose(scene_io.get_ijk_to_ras(loaded), scene_io.get_ijk_to_ras(node), atol=1e-6)
    assert loaded.GetName() == "sr (AI)" and scene_io.dimensions(loaded) == scene_io.dimensions(node)
    again = scene_io.load_output_nrrd(fresh, path)  # a second copy gets a unique name that keeps the suffix
    assert again.GetName() == "sr 2 (AI)" and scene_io.validate_output(again, None) == []


def test_saving_the_scene_keeps_attributes(upscaled, slicer_core, tmp_path):
    """As Slicer's Save dialog does: each node's storage node writes its data, then the .mrml is committed."""
    scene, node = upscaled.scene, upscaled.node
    storage = node.GetStorageNode()
    assert storage.IsA("vtkMRMLNRRDStorageNode")  # attached by import_output, so headers keep MedGen.*
    storage.SetFileName(str(tmp_path / "sr.nrrd"))
    assert storage.WriteData(node)
    scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.Commit()
    reloaded = slicer_core.vtkMRMLScene()
    reloaded.SetURL(str(tmp_path / "scene.mrml"))
    assert reloaded.Connect()
    again = reloaded.GetFirstNodeByName("src upscale x2 (AI)")
    assert pa.node_attributes(again) == pa.node_attributes(node)
    assert scene_io.dimensions(again) == scene_io.dimensions(node)


def test_validate_output_reports_lost_provenance_and_geometry(upscaled):
    """The checks are not vacuous: a copy passes, and fails once attributes, suffix or geometry are lost."""
    scene, source, node = upscaled.scene, upscaled.source, upscaled.node
    copy = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", node.GetName())
    copy.SetAndObserveImageData(node.GetImageData())
    scene_io.set_ijk_to_ras(copy, scene_io.get_ijk_to_ras(node))
    pa.apply_attributes(copy, pa.node_attributes(node))
    copy.SetDescription(node.GetDescription())
    assert scene_io.validate_output(copy, source) == []

    pa.clear_attributes(copy)
    problems = scene_io.validate_output(copy, source)
    for name in (pa.AI_GENERATED, pa.GENERATOR, pa.WEIGHTS_SHA256, pa.SOURCE_NODE_ID, pa.DISCLOSURE):
        assert any(name in p for p in problems), (name, problems)

    pa.apply_attributes(copy, pa.node_attributes(node))
    copy.SetName("plain")
    scene_io.set_ijk_to_ras(copy, np.eye(4))  # geometry lost (e.g. arrayFromVolume round trip without matrix)
    problems = scene_io.validate_output(copy, source)
    assert any("(AI)" in p for p in problems)
    assert any("geometry lost" in p for p in problems) and any("IJK-to-RAS" in p for p in problems)
    copy.SetName(node.GetName())
    scene_io.set_ijk_to_ras(copy, scene_io.get_ijk_to_ras(source))  # right box corner, wrong (non-upscaled) spacing
    assert scene_io.validate_output(copy, source) != []
    scene.RemoveNode(copy)


def test_failed_run_shows_the_cli_error_and_leaves_nothing(scene, tmp_path):
    source = oblique_volume(scene, "src")
    before = scene.GetNumberOfNodes()
    job = GenerationJob(scene, source, JobOptions(action="upscale", bundle="no_such_bundle", device="cpu"), temp_root=tmp_path)
    assert job.run(timeout_s=300) is State.FAILED
    assert "no bundle named 'no_such_bundle'" in job.error
    assert job.result_node is None and scene.GetNumberOfNodes() == before
    assert list(tmp_path.iterdir()) == []


def test_cancelled_run_leaves_no_output_node_and_no_files(scene, tmp_path):
    source = oblique_volume(scene, "src")
    before = scene.GetNumberOfNodes()
    job = GenerationJob(scene, source, JobOptions(action="upscale"), temp_root=tmp_path, process_factory=standin_medgen_process)
    job.start()
    deadline = time.monotonic() + 20
    events: list = []
    while not any(isinstance(e, ProgressEvent) for e in events) and time.monotonic() < deadline:
        events += job.poll()
        time.sleep(0.05)
    assert job.state is State.RUNNING and any(isinstance(e, ProgressEvent) for e in events)
    job.cancel()
    events = job.poll()
    assert job.state is State.CANCELLED and [e.state for e in events if isinstance(e, StateEvent)] == ["Cancelled"]
    assert job.elapsed_s < 15
    assert job.result_node is None and scene.GetNumberOfNodes() == before
    assert list(tmp_path.iterdir()) == []


def test_loading_a_file_written_by_medgen_restores_attributes(scene, tmp_path):
    """A NRRD written by MedGen's own writer (no MedGen.* lines) gets its attributes from ``medgen_provenance``."""
    from medgen_core.io import Volume
    from medgen_core.provenance import GenerationMetadata, write_generated_volume

    affine = OBLIQUE_IJK_TO_RAS.copy()
    volume = Volume(array=np.arange(6 * 5 * 3, dtype=np.float32).reshape(6, 5, 3) + 1, affine=affine, path=None, format="nrrd")
    meta = GenerationMetadata(generator_name="demo_gen", generator_version="1.2.3", task="super_resolution", weights_sha256="ab" * 32)
    path = write_generated_volume(volume, tmp_path / "cli_out.nrrd", meta)
    node = scene_io.load_output_nrrd(scene, path)
    attrs = pa.node_attributes(node)
    assert attrs[pa.AI_GENERATED] == "true" and attrs[pa.GENERATOR] == "demo_gen" and attrs[pa.WEIGHTS_SHA256] == "ab" * 32
    assert node.GetName() == "cli_out (AI)" and scene_io.dimensions(node) == (6, 5, 3)
    np.testing.assert_allclose(scene_io.get_ijk_to_ras(node), affine, atol=1e-6)  # medgen's LPS header -> Slicer RAS


def test_slicer_namespace_does_not_absorb_the_test_folder(slicer_core):
    assert not [p for p in slicer_core.__path__ if "tests" in p.replace("\\", "/").split("/")]


@pytest.mark.parametrize("action,bundle,direction", [("translate", "brain_t1_to_t2w_cyclegan", "b2a")])
def test_translate_run_keeps_input_geometry_and_tags_output(slicer_core, tmp_path, action, bundle, direction):
    """Real ``medgen translate`` through the job: same grid as the input, MedGen.* attributes, AI name."""
    from medgen_core.bundles import get_bundle

    scene = slicer_core.vtkMRMLScene()
    source = oblique_volume(scene, "t2w")
    job = GenerationJob(scene, source, JobOptions(action=action, bundle=bundle, direction=direction, device="cpu"), temp_root=tmp_path)
    assert job.run(timeout_s=300) is State.DONE, (job.error, job.process.lines[-5:] if job.process else None)
    node = job.result_node
    assert scene_io.dimensions(node) == scene_io.dimensions(source)
    np.testing.assert_allclose(scene_io.get_ijk_to_ras(node), scene_io.get_ijk_to_ras(source), atol=1e-5)
    attrs = pa.node_attributes(node)
    meta = get_bundle(bundle).metadata
    assert attrs[pa.AI_GENERATED] == "true" and attrs[pa.BUNDLE] == f"{bundle}@{meta['version']}"
    assert attrs[pa.WEIGHTS_SHA256] == meta["medgen"]["variants"][direction]["sha256"]
    assert node.GetName() == "t2w translate b2a (AI)"
    assert scene_io.validate_output(node, source) == []


def test_augment_makes_k_tagged_variants_on_the_input_grid(slicer_core, tmp_path):
    """Real ``medgen augment variants`` (diffusion bundle, image-to-image): K new volumes, each tagged."""
    from medgen_core.bundles import get_bundle

    scene = slicer_core.vtkMRMLScene()
    source = oblique_volume(scene, "t1")
    options = JobOptions(action="augment", bundle="brain_slice_ddpm", seed=5, strength=0.3, count=2, device="cpu")
    job = GenerationJob(scene, source, options, temp_root=tmp_path)
    assert job.run(timeout_s=300) is State.DONE, (job.error, job.process.lines[-5:] if job.process else None)
    assert [n.GetName() for n in job.result_nodes] == ["t1 augment s0.3 #1 (AI)", "t1 augment s0.3 #2 (AI)"]
    meta = get_bundle("brain_slice_ddpm").metadata
    for node in job.result_nodes:
        assert scene_io.dimensions(node) == scene_io.dimensions(source)
        np.testing.assert_allclose(scene_io.get_ijk_to_ras(node), scene_io.get_ijk_to_ras(source), atol=1e-5)
        attrs = pa.node_attributes(node)
        assert attrs[pa.AI_GENERATED] == "true" and attrs[pa.BUNDLE] == f"brain_slice_ddpm@{meta['version']}"
        assert json.loads(attrs[pa.PARAMETERS])["strength"] == 0.3
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="several variants each get a new volume"):
        GenerationJob(scene, source, options, output_node=job.result_nodes[0])
