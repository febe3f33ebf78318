"""2-D images without patient geometry (CR, DX, MG, US, SC) are items of their own, never a failed series."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from medflow.engine.build import build
from medflow.recipe.loader import load_recipe
from tests.dicom_factory import uid, write_ct_series

DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"


def _dx(path: Path, n: int, rows: int) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_STORAGE
    meta.MediaStorageSOPInstanceUID = uid("dx", n)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = DX_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid("study"), uid("dx-series")  # one series, two views
    ds.Modality, ds.PatientID = "DX", "P1"
    ds.Rows, ds.Columns = rows, 12
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = bytes(range(rows * 12))
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def test_a_two_view_radiograph_series_gives_two_items(tmp_path):
    source = tmp_path / "src"
    _dx(source / "dx" / "pa.dcm", 1, rows=10)
    _dx(source / "dx" / "lat.dcm", 2, rows=14)
    write_ct_series(source, 1, n_slices=3)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"medflow: 1\nname: flat\nsource: {{dicom: '{source}'}}\nsteps: []\n"
                      "outputs: {dir: out, writers: [{kind: npy}]}\nengine: {workers: 1}\n")
    report = build(load_recipe(recipe), show_progress=False)
    assert report.failed == [] and report.ok == report.total == 3
    items = {item["files"][0][0]: item for item in report.manifest["items"]}
    assert items["dx/pa.dcm"]["outputs"] and items["dx/lat.dcm"]["outputs"]
    assert len(items["s1/slice000.dcm"]["files"]) == 3  # a CT series with geometry stays one item
    assert report.accounting == {"inputs": 5, "written": 5, "withheld": []}
