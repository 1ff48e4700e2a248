"""DICOM output: the series writer (geometry, values, synthetic marks, identifiers, atomic folder), the
generated series with its provenance, and ``medgen upscale|translate ... --format dicom``.

Source series are written here with plain pydicom (an independent implementation of the slice geometry),
read back with SimpleITK's ImageSeriesReader, pydicom and :func:`medgen_core.io.read_volume`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, SecondaryCaptureImageStorage, generate_uid

from medgen_core.cli.main import main
from medgen_core.errors import ImageWriteError, ProvenanceError
from medgen_core.inference import upscaled_affine
from medgen_core.io import Volume, ras_to_lps, read_volume
from medgen_core.io.dicom_writer import dicom_representation, read_source_datasets, write_dicom_series
from medgen_core.provenance import GenerationMetadata, read_provenance, sidecar_path, verify_provenance
from medgen_core.provenance.dicom_block import read_embedded_dicom_record
from medgen_core.provenance.dicom_output import write_generated_dicom_series

SR_METADATA = json.loads((Path(__file__).resolve().parents[1] / "monai_bundles" / "brain_mri_super_resolution" / "configs" / "metadata.json").read_text())
TOL_MM = 1e-4


def oblique_affine(handed: int = 1) -> np.ndarray:
    """RAS affine: rotations about z (20 deg) and x (10 deg), spacing 0.9 x 0.7 x 3 mm; ``handed=-1`` flips axis 1."""
    a, b = np.deg2rad(20), np.deg2rad(10)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([0.9, 0.7 * handed, 3.0])
    affine[:3, 3] = [-20.0, 10.5, 5.25]
    return affine


def smooth(shape: tuple[int, int, int]) -> np.ndarray:
    x, y, z = np.meshgrid(*(np.linspace(0, 1, n) for n in shape), indexing="ij")
    return np.clip(0.5 + 0.4 * np.sin(6 * x) * np.cos(5 * y) + 0.05 * z, 0, 1).astype(np.float32)


def write_mr_source(folder: Path, array: np.ndarray, affine_ras: np.ndarray, name: str = "Doe^Jane") -> Path:
    """A scanner-like MR series (uint16 slices, right-handed oblique geometry) written with plain pydicom."""
    folder.mkdir(parents=True)
    lps = ras_to_lps(affine_ras)
    sx, sy, sz = np.linalg.norm(lps[:3, :3], axis=0)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for k in range(array.shape[2]):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "MR", name, "PID-12345", "19700101", "F"
        ds.AccessionNumber, ds.StudyID, ds.InstanceNumber = "ACC-987", "S-1", k + 1
        ds.ImageOrientationPatient = [round(float(v), 12) for v in (*(lps[:3, 0] / sx), *(lps[:3, 1] / sy))]
        ds.ImagePositionPatient = [round(float(v), 10) for v in lps[:3, 3] + k * lps[:3, 2]]
        ds.PixelSpacing, ds.SliceThickness = [float(sy), float(sx)], float(sz)
        ds.Rows, ds.Columns = array.shape[1], array.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.ascontiguousarray(array[:, :, k].T).astype("<u2").tobytes()
        ds.save_as(str(folder / f"slice{k:03d}.dcm"), enforce_file_format=True)
    return folder


def sitk_series(folder: Path) -> tuple[list[str], sitk.Image]:
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), ids[0]))
    return list(ids), reader.Execute()


def datasets(folder: Path) -> list[Dataset]:
    return [pydicom.dcmread(str(p)) for p in sorted(folder.glob("*.dcm"))]


@pytest.mark.parametrize("handed", [1, -1], ids=["right-handed", "left-handed"])
def test_series_reads_back_with_geometry_values_and_marks(tmp_path, handed: int) -> None:
    data = smooth((7, 5, 4)) * 3 - 1
    volume = Volume(data, oblique_affine(handed))
    series = write_dicom_series(volume, tmp_path / "out", series_description="x2 SR", generator="rrdb:1.0")
    step = dicom_representation(volume).step
    assert step == pytest.approx(float(data.max() - data.min()) / 65533, rel=1e-9)

    # SimpleITK: one series; origin, spacing and direction of the volume (slice order reversed if left-handed).
    ids, image = sitk_series(tmp_path / "out")
    assert len(ids) == 1 and image.GetSize() == (7, 5, 4)
    lps = ras_to_lps(volume.affine)
    if handed < 0:
        lps[:3, 3] += 3 * lps[:3, 2]
        lps[:3, 2] *= -1
    np.testing.assert_allclose(image.GetOrigin(), lps[:3, 3], atol=TOL_MM)
    np.testing.assert_allclose(image.GetSpacing(), (0.9, 0.7, 3.0), atol=TOL_MM)
    np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)), lps[:3, :3] / [0.9, 0.7, 3.0], atol=1e-6)
    expected = data[:, :, ::-1] if handed < 0 else data
    values = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    assert np.max(np.abs(values - expected)) <= step / 2 + 1e-6

    # read_volume: the same voxels at the same world positions as the input volume.
    back = read_volume(tmp_path / "out")
    assert back.format == "dicom" and np.array_equal(back.array, series.volume.array)
    assert np.max(np.abs(back.array - expected)) <= step / 2 + 1e-6
    corners = np.array([[i, j, k, 1] for i in (0, 6) for j in (0, 4) for k in (0, 3)], dtype=float)
    flipped = corners.copy()
    if handed < 0:
        flipped[:, 2] = 3 - flipped[:, 2]
    np.testing.assert_allclose(flipped @ back.affine.T, corners @ volume.affine.T, atol=TOL_MM)

    # pydicom: the synthetic marks, new UIDs, one series, PixelSpacing in (row, column) order.
    slices = datasets(tmp_path / "out")
    assert len(slices) == 4 and len({ds.SeriesInstanceUID for ds in slices}) == 1
    assert len({ds.SOPInstanceUID for ds in slices}) == 4 and len({ds.StudyInstanceUID for ds in slices}) == 1
    for ds in slices:
        assert ds.SyntheticData == "YES" and list(ds.ImageType) == ["DERIVED", "SECONDARY"]
        assert ds.SOPClassUID == SecondaryCaptureImageStorage and ds.ConversionType == "SYN" and ds.Modality == "OT"
        assert ds.BurnedInAnnotation == "NO" and ds.SeriesDescription == "AI-generated: x2 SR"
        (equipment,) = ds.ContributingEquipmentSequence
        (purpose,) = equipment.PurposeOfReferenceCodeSequence
        assert (purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning) == ("109100", "DCM", "Synthesizing Equipment")
        assert equipment.Manufacturer == "MedGen" and equipment.ManufacturerModelName == "rrdb:1.0" and equipment.SoftwareVersions == "0.1.0"
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx([0.7, 0.9]) and (ds.Rows, ds.Columns) == (5, 7)
        assert float(ds.SpacingBetweenSlices) == pytest.approx(3.0) and float(ds.SliceThickness) == pytest.approx(3.0)
        assert ds.PatientName == "ANONYMOUS" and "SourceImageSequence" not in ds
    np.testing.assert_allclose(slices[0].pixel_array.T * float(slices[0].RescaleSlope) + float(slices[0].RescaleIntercept),
                               expected[:, :, 0], atol=step / 2 + 1e-6)


def test_integer_volume_is_stored_exactly(tmp_path) -> None:
    data = np.random.default_rng(0).integers(-1000, 3000, (6, 5, 3)).astype(np.float32)
    write_dicom_series(Volume(data, np.diag([1.0, 1.0, 2.0, 1.0])), tmp_path / "out", series_description="labels")
    ds = datasets(tmp_path / "out")[0]
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, 0.0)
    assert np.array_equal(read_volume(tmp_path / "out").array, data)


def test_dicom_source_identifiers_and_references(tmp_path) -> None:
    affine = oblique_affine()
    src = write_mr_source(tmp_path / "src", (smooth((8, 6, 3)) * 1000).astype(np.uint16), affine)
    sources = read_source_datasets(src)
    source_uids = {str(ds.SOPInstanceUID) for ds in sources} | {str(sources[0].StudyInstanceUID), str(sources[0].SeriesInstanceUID)}
    volume = Volume(smooth((8, 6, 3)), read_volume(src).affine)

    write_dicom_series(volume, tmp_path / "anon", series_description="t2", source_datasets=sources)
    slices = datasets(tmp_path / "anon")
    by_position = {round(float(ds.ImagePositionPatient[2]), 3): ds for ds in sources}
    for ds in slices:
        assert ds.SOPClassUID == MRImageStorage and ds.Modality == "MR" and ds.ScanningSequence == "RM"
        assert ds.FrameOfReferenceUID == sources[0].FrameOfReferenceUID  # same patient space
        assert not {str(ds.SOPInstanceUID), str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)} & source_uids
        assert ds.PatientName == "ANONYMOUS" and ds.PatientID != "PID-12345" and ds.PatientBirthDate == "" and ds.PatientSex == ""
        assert ds.AccessionNumber == "" and "Doe" not in str(ds)
        (ref,) = ds.SourceImageSequence  # the one source slice in the same plane
        same_plane = by_position[round(float(ds.ImagePositionPatient[2]), 3)]
        assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == (MRImageStorage, same_plane.SOPInstanceUID)
        assert ref.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"

    write_dicom_series(volume, tmp_path / "kept", series_description="t2", source_datasets=sources, keep_patient=True)
    for ds in datasets(tmp_path / "kept"):
        assert (str(ds.PatientName), ds.PatientID, ds.PatientBirthDate, ds.PatientSex) == ("Doe^Jane", "PID-12345", "19700101", "F")
        assert ds.AccessionNumber == "ACC-987" and str(ds.StudyInstanceUID) not in source_uids


def test_refusals_leave_nothing(tmp_path) -> None:
    volume = Volume(smooth((6, 5, 3)), oblique_affine())
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep me")
    with pytest.raises(ImageWriteError, match="not empty"):
        write_dicom_series(volume, busy, series_description="x")
    src = write_mr_source(tmp_path / "src", np.ones((6, 5, 3), np.uint16), oblique_affine())
    with pytest.raises(ImageWriteError, match="input folder"):
        write_dicom_series(volume, src, series_description="x", inputs=[src])
    sheared = oblique_affine()
    sheared[:3, 2] += [0.5, 0.0, 0.0]
    with pytest.raises(ImageWriteError, match="sheared"):
        write_dicom_series(Volume(volume.array, sheared), tmp_path / "sheared", series_description="x")

    def fail(series) -> None:
        assert len(list(series.path.glob("*.dcm"))) == 3  # written into the temporary folder
        raise ImageWriteError("stop here")

    with pytest.raises(ImageWriteError, match="stop here"):
        write_dicom_series(volume, tmp_path / "failed", series_description="x", before_commit=fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "src"]
    assert [p.name for p in busy.iterdir()] == ["notes.txt"] and len(list(src.iterdir())) == 3
    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(write_dicom_series(volume, empty, series_description="x").files) == 3


def test_generated_series_verifies_intact_then_modified(tmp_path) -> None:
    src = write_mr_source(tmp_path / "src", (smooth((8, 6, 3)) * 1000).astype(np.uint16), oblique_affine())
    meta = GenerationMetadata.create(generator_name="rrdb", generator_version="1.0.0", task="sr_x2", input_paths={"source_image": src})
    out = write_generated_dicom_series(Volume(smooth((8, 6, 3)), read_volume(src).affine), tmp_path / "gen", meta, source=src)
    assert sidecar_path(out) == tmp_path / "gen.generated.json" and sidecar_path(out).is_file()
    record = read_provenance(out)["sidecar"]["record"]
    assert record["output"]["format"] == "dicom" and record["output"]["sha256"] == meta.output["sha256"]
    assert read_embedded_dicom_record(out) == record  # the same record in every slice's private block
    assert all("SYNTHETIC AI rrdb:1.0.0" in str(ds.private_block(0x0071, "MEDGEN 1.0")[0x02].value) for ds in datasets(out))
    result = verify_provenance(out)
    assert result.status == "intact" and result.details["sources"] == ["embedded", "sidecar"], result.message
    backup = sidecar_path(out).read_bytes()
    sidecar_path(out).unlink()  # the embedded record alone still verifies
    result = verify_provenance(out)
    assert result.status == "intact" and result.details["sources"] == ["embedded"], result.message
    sidecar_path(out).write_bytes(backup)

    first = sorted(out.glob("*.dcm"))[1]
    ds = pydicom.dcmread(str(first))
    pixels = ds.pixel_array.copy()
    pixels[2, 3] += 1
    ds.PixelData = pixels.tobytes()
    ds.save_as(str(first))
    result = verify_provenance(out)
    assert result.status == "modified" and "pixel sha256" in result.message

    ds = pydicom.dcmread(str(sorted(out.glob("*.dcm"))[0]))  # one slice's record edited: slices disagree
    block = ds.private_block(0x0071, "MEDGEN 1.0")
    block[0x01].value = str(block[0x01].value).replace('"task":"sr_x2"', '"task":"sr_x4"')
    ds.save_as(str(sorted(out.glob("*.dcm"))[0]))
    with pytest.raises(ProvenanceError, match="different provenance records"):
        read_embedded_dicom_record(out)
    assert verify_provenance(out).status == "modified"


def test_generated_series_failure_leaves_nothing_and_stale_sidecar_is_replaced(tmp_path) -> None:
    volume = Volume(smooth((6, 5, 3)), oblique_affine())
    bad = GenerationMetadata.create(generator_name="rrdb", generator_version="1.0.0", task="sr_x2", parameters={"f": object()})
    with pytest.raises(ProvenanceError, match="not"):
        write_generated_dicom_series(volume, tmp_path / "gen", bad)
    assert list(tmp_path.iterdir()) == []

    sidecar_path(tmp_path / "gen").write_text('{"record": "of a series deleted long ago"}')
    meta = GenerationMetadata.create(generator_name="rrdb", generator_version="1.0.0", task="sr_x2")
    write_generated_dicom_series(volume, tmp_path / "gen", meta)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen", "gen.generated.json"]
    assert verify_provenance(tmp_path / "gen").status == "intact"


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_upscale_dicom_series_from_dicom_input(tmp_path, capsys) -> None:
    src = write_mr_source(tmp_path / "src", (smooth((24, 20, 3)) * 1000).astype(np.uint16), oblique_affine())
    out = tmp_path / "sr_series"
    code, stdout, stderr = _cli(capsys, "upscale", src, f"{out}/", "--format", "dicom")
    assert code == 0, stderr
    assert f"wrote {out}" in stdout and "(24, 20, 3) -> (48, 40, 3)" in stdout
    result = read_volume(out)
    assert result.shape == (48, 40, 3)
    np.testing.assert_allclose(result.affine, upscaled_affine(read_volume(src).affine, (2, 2, 1)), atol=TOL_MM)
    record = read_provenance(out)["sidecar"]["record"]
    assert record["generator_name"] == "brain_mri_super_resolution" and record["parameters"]["variant"] == SR_METADATA["medgen"]["default_variant"]["2"]
    assert record["weights_sha256"] == SR_METADATA["medgen"]["variants"][SR_METADATA["medgen"]["default_variant"]["2"]]["sha256"]
    assert [(i["role"], Path(i["path"]).name) for i in record["inputs"]] == [("source_image", "src")]
    slices = datasets(out)
    assert len(slices) == 3 and all(ds.SyntheticData == "YES" and ds.PatientName == "ANONYMOUS" for ds in slices)
    assert slices[0].DerivationCodeSequence[0].CodeValue == "113085" and "brain_mri_super_resolution" in slices[0].DerivationDescription
    assert _cli(capsys, "provenance", "verify", f"{out}/")[0] == 0

    ds = slices[0]
    pixels = ds.pixel_array.copy()
    pixels[10, 10] -= 7
    ds.PixelData = pixels.tobytes()
    ds.save_as(str(sorted(out.glob("*.dcm"))[0]))
    code, stdout, _ = _cli(capsys, "provenance", "verify", out)
    assert code == 1 and stdout.startswith("modified"), stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sr_series", "sr_series.generated.json", "src"]


def test_cli_translate_dicom_keeps_patient_ids_on_request(tmp_path, capsys) -> None:
    src = write_mr_source(tmp_path / "src", (smooth((24, 20, 3)) * 1000).astype(np.uint16), oblique_affine())
    code, _, stderr = _cli(capsys, "translate", src, tmp_path / "t2", "--bundle", "brain_t1_to_t2w_cyclegan",
                           "--format", "dicom", "--keep-patient-ids")
    assert code == 0, stderr
    slices = datasets(tmp_path / "t2")
    assert len(slices) == 3 and {str(ds.PatientName) for ds in slices} == {"Doe^Jane"}
    assert all(ds.SOPClassUID == MRImageStorage and "SourceImageSequence" in ds for ds in slices)
    assert read_provenance(tmp_path / "t2")["sidecar"]["record"]["generator_name"] == "brain_t1_to_t2w_cyclegan"
    assert verify_provenance(tmp_path / "t2").status == "intact"


@pytest.mark.parametrize(
    "output,extra,message",
    [
        ("sr.nii.gz", ["--format", "dicom"], "expected a folder name"),
        ("sr.nrrd", ["--format", "nifti"], "not --format nifti"),
        ("series", [], "or --format dicom with a folder"),
        ("busy", ["--format", "dicom"], "not empty"),
        ("sr.nii.gz", ["--keep-patient-ids"], "--format dicom only"),
    ],
)
def test_cli_format_errors_before_any_compute(tmp_path, capsys, output: str, extra: list[str], message: str) -> None:
    src = tmp_path / "in.nii.gz"
    import nibabel as nib

    nib.save(nib.Nifti1Image(smooth((8, 6, 3)), oblique_affine()), str(src))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.dcm").write_bytes(b"not mine")
    code, _, stderr = _cli(capsys, "upscale", src, tmp_path / output, *extra)
    assert code == 2 and message in stderr and "Traceback" not in stderr, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "in.nii.gz"]
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["x.dcm"]
