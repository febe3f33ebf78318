"""Radiographs (no patient geometry): the index and the manifest carry the spacing the file states.

Rule (PS3.3 10.7.1.1-10.7.1.3, C.8.11.5): PixelSpacing when present; else ImagerPixelSpacing,
divided by EstimatedRadiographicMagnificationFactor when that is present; a spacing of zeros
or none at all gives empty cells, never a guess. Golden values are read from the files' tags
with pydicom, independently of medflow.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from medflow.engine.build import build
from medflow.geometry import stated_pixel_spacing
from medflow.recipe.loader import load_recipe
from tests.conftest import shared_data_path
from tests.dicom_factory import uid

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
ROWS, COLUMNS = 6, 10

# name -> tags written into a tiny CR (no ImagePositionPatient / ImageOrientationPatient)
CASES = {
    "pixel": {"PixelSpacing": [0.3, 0.25], "ImagerPixelSpacing": [0.36, 0.3],
              "EstimatedRadiographicMagnificationFactor": 1.2},
    "imager-ermf": {"ImagerPixelSpacing": [0.2, 0.15], "EstimatedRadiographicMagnificationFactor": 1.25},
    "imager": {"ImagerPixelSpacing": [0.143, 0.143]},
    "zeros-then-imager": {"PixelSpacing": [0, 0], "ImagerPixelSpacing": [0.1, 0.2]},
    "zero-ermf": {"ImagerPixelSpacing": [0.2, 0.2], "EstimatedRadiographicMagnificationFactor": 0},
    "none": {},
}


def _write_cr(path: Path, n: int, tags: dict) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_STORAGE
    meta.MediaStorageSOPInstanceUID = uid("cr-sop", n)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CR_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid("cr-study", n), uid("cr-series", n)
    ds.PatientID, ds.Modality, ds.InstanceNumber = f"P{n}", "CR", 1
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = ROWS, COLUMNS, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.PixelData = (np.arange(ROWS * COLUMNS, dtype=np.uint16) * (n + 1)).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def _golden(path: Path) -> tuple[list[float] | None, str]:
    """The rule applied to pydicom's own reading of the tags."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    pixel = [float(v) for v in ds.get("PixelSpacing") or []]
    if len(pixel) == 2 and min(pixel) > 0:
        return pixel, "PixelSpacing"
    imager = [float(v) for v in ds.get("ImagerPixelSpacing") or []]
    if len(imager) == 2 and min(imager) > 0:
        factor = ds.get("EstimatedRadiographicMagnificationFactor")
        if factor is not None and float(factor) > 0:
            return [v / float(factor) for v in imager], "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"
        return imager, "ImagerPixelSpacing"
    return None, ""


def _build(tmp_path: Path, steps: str = "[]", stream: bool = True) -> tuple[dict, list[dict], dict[str, Path]]:
    source = tmp_path / "cr"
    files = {name: _write_cr(source / f"{name}.dcm", n, tags) for n, (name, tags) in enumerate(CASES.items())}
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"medflow: 1\nname: cr\nsource: {{dicom: cr}}\nsteps: {steps}\n"
                      "outputs: {dir: out, writers: [{kind: npy}, {kind: index, formats: [csv, parquet]}]}\n"
                      f"engine: {{workers: 1, cache_dir: cache, stream: {str(stream).lower()}}}\n")
    report = build(load_recipe(recipe), show_progress=False)
    assert report.exit_code == 0, report.failed
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    with open(tmp_path / "out" / "index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return manifest, rows, files


def _case_of(entry_or_row: dict, manifest: dict, files: dict[str, Path]) -> str:
    item_id = entry_or_row["id"]
    entry = next(e for e in manifest["items"] if e["id"] == item_id)
    return next(name for name, path in files.items() if path.name == Path(entry["files"][0][0]).name)


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_index_and_manifest_carry_the_stated_spacing_and_its_source(tmp_path, stream):
    manifest, rows, files = _build(tmp_path, stream=stream)
    assert len(rows) == len(CASES)
    import pyarrow.parquet as pq

    parquet = {r["id"]: r for r in pq.read_table(tmp_path / "out" / "index.parquet").to_pylist()}
    for row in rows:
        name = _case_of(row, manifest, files)
        spacing, source = _golden(files[name])
        entry = next(e for e in manifest["items"] if e["id"] == row["id"])
        record = entry["meta"]["pixel_spacing"]
        assert entry["meta"]["geometry"] is None and "no_geometry" in row["flags"].split(";")
        assert row["spacing_source"] == source == (record["spacing_source"] or ""), name
        assert record["file_grid"] == [ROWS, COLUMNS] and record["of_written_array"] == (spacing is not None)
        if spacing is None:
            assert row["spacing_y"] == row["spacing_x"] == "" and record["spacing"] is None, name
            assert parquet[row["id"]]["spacing_y"] is None
            continue
        assert [float(row["spacing_y"]), float(row["spacing_x"])] == pytest.approx(spacing, rel=1e-12), name
        assert record["spacing"] == pytest.approx(spacing, rel=1e-12)
        assert [parquet[row["id"]]["spacing_y"], parquet[row["id"]]["spacing_x"]] == pytest.approx(spacing)
    by_name = {_case_of(r, manifest, files): r for r in rows}
    assert float(by_name["imager-ermf"]["spacing_y"]) == pytest.approx(0.2 / 1.25)  # 0.16 mm at the isocentre
    assert by_name["zero-ermf"]["spacing_source"] == "ImagerPixelSpacing"  # a factor of 0 is not applied


def test_a_resized_radiograph_keeps_the_file_spacing_in_the_manifest_only(tmp_path):
    manifest, rows, files = _build(tmp_path, steps="[{step: resize, size: [12, 20]}]")
    for row in rows:
        name = _case_of(row, manifest, files)
        spacing, _ = _golden(files[name])
        record = next(e for e in manifest["items"] if e["id"] == row["id"])["meta"]["pixel_spacing"]
        assert row["shape"] == "1x12x20" and row["spacing_y"] == row["spacing_x"] == row["spacing_source"] == ""
        assert record["of_written_array"] is False
        if spacing is not None:  # the file's spacing stays recorded, flagged as not the array's
            assert record["spacing"] == pytest.approx(spacing) and "regridded" in row["flags"].split(";")


@pytest.mark.parametrize("path", [
    lambda: shared_data_path("radiographs_cr_dx", "highdicom-dx_image.dcm"),
    lambda: shared_data_path("radiographs_cr_dx", "orthanc-Issue44-Monochrome1-Jpeg.dcm"),
    lambda: Path(pydicom.data.get_testdata_file("RG1_UNCR.dcm") or pytest.skip("pydicom-data RG1_UNCR.dcm absent")),
], ids=["dx-highdicom", "cr-orthanc", "cr-rg1-zero-spacing"])
def test_real_radiograph_headers(path):
    path = path()
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    spacing, source = _golden(path)
    got, got_source, _ = stated_pixel_spacing(ds.to_json_dict(bulk_data_threshold=1 << 20,
                                                              bulk_data_element_handler=lambda e: ""))
    assert (got_source or "") == source
    assert got == (pytest.approx(spacing) if spacing is not None else None)
    if path.name == "RG1_UNCR.dcm":  # PixelSpacing 0.000\0.000: no spacing, never a guess
        assert [float(v) for v in ds.PixelSpacing] == [0.0, 0.0] and got is None
