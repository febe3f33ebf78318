"""A de-identifying build accounts for every input file and keeps identity out of ids, console and cache.

The export is written here with pydicom: a CT series in a folder named after the patient,
an SR (no pixel data), two DX images without patient geometry, an MR localizer, a US with
BurnedInAnnotation NO and one without the attribute, a truncated DICOM file and a text file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from medflow.cli import main
from medflow.engine.build import build
from medflow.recipe.loader import load_recipe
from medflow.sources.instances import instance_item_id
from tests.dicom_factory import uid, write_ct_series

KEY = "0123456789abcdef0123456789abcdef"
NAME, MRN = "DOE^JOHN", "12345678"
FOLDER = f"{NAME}_{MRN}"  # exports name folders after the patient
SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.33"
DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
US_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def _instance(path: Path, sop_class: str, modality: str, n: int, *, pixels: bool = True, **attrs) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uid("inst", modality, n)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid("study", 0)
    ds.SeriesInstanceUID = uid("series", modality, attrs.pop("series", 0))
    ds.PatientName, ds.PatientID, ds.Modality = NAME, MRN, modality
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    if pixels:
        ds.Rows = ds.Columns = 8
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
        ds.PixelData = bytes(range(64))
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export") / "export"
    patient = root / FOLDER
    write_ct_series(patient / "CT", 1, n_slices=3, patient=NAME)
    _instance(patient / "SR" / f"report_{MRN}.dcm", SR_STORAGE, "SR", 1, pixels=False,
              ValueType="CONTAINER", ContinuityOfContent="SEPARATE")
    for n in (1, 2):
        _instance(patient / "DX" / f"dx{n}.dcm", DX_STORAGE, "DX", n, ImageType=["ORIGINAL", "PRIMARY"])
    _instance(patient / "MR" / "loc.dcm", MR_STORAGE, "MR", 1, ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"],
              ImagePositionPatient=[0, 0, 0], ImageOrientationPatient=[1, 0, 0, 0, 1, 0], PixelSpacing=[1, 1])
    _instance(patient / "US" / "flagged_no.dcm", US_STORAGE, "US", 1, BurnedInAnnotation="NO")
    _instance(patient / "US" / "unflagged.dcm", US_STORAGE, "US", 2)
    good = (patient / "CT" / "s1" / "slice000.dcm").read_bytes()
    (patient / "broken.dcm").write_bytes(good[:300])  # cut inside the header
    (patient / "README.txt").write_text(f"export of {NAME} {MRN}\n")
    return root


def _recipe(folder: Path, source: Path, out: str = "out", steps: str = "[{step: anonymize}]",
            writers: str = "[{kind: dicom}]", source_extra: str = "") -> Path:
    path = folder / f"recipe-{out}.yaml"
    path.write_text(f"medflow: 1\nname: publish\nsource: {{dicom: '{source}'{source_extra}}}\nsteps: {steps}\n"
                    f"outputs: {{dir: {out}, writers: {writers}}}\nengine: {{workers: 1}}\n")
    return path


def _dicom_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix == ".dcm")


def test_every_dicom_file_is_written_or_withheld_with_its_reason(export, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDFLOW_DEID_KEY", KEY)
    assert main(["run", str(_recipe(tmp_path, export)), "-q"]) == 1  # the truncated file fails its own item
    printed = capsys.readouterr()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    accounting = manifest["accounting"]
    inputs = _dicom_files(export)
    assert accounting["inputs"] == len(inputs) == 10
    reasons = sorted(w["reason"].split(":")[0] for w in accounting["withheld"])
    assert reasons == ["failed", "quarantined"]  # the truncated file; the US without BurnedInAnnotation
    assert accounting["written"] == 8 == len(list((tmp_path / "out" / "dicom").rglob("*.dcm")))
    written = [pydicom.dcmread(p) for p in (tmp_path / "out" / "dicom").rglob("*.dcm")]
    assert sorted(ds.Modality for ds in written) == ["CT", "CT", "CT", "DX", "DX", "MR", "SR", "US"]
    assert [ds.BurnedInAnnotation for ds in written if ds.Modality == "US"] == ["NO"]
    assert "inputs: 10 DICOM file(s) = 8 written + 2 withheld" in printed.out
    # the text file is not an input but is listed as skipped
    assert [row["reason"] for row in manifest["inputs_skipped"]] == ["not a DICOM file"]


def test_identity_stays_out_of_ids_manifest_and_console(export, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDFLOW_DEID_KEY", KEY)
    main(["run", str(_recipe(tmp_path, export)), "-q"])
    printed = capsys.readouterr()
    texts = {"stdout": printed.out, "stderr": printed.err,
             "manifest": (tmp_path / "out" / "manifest.json").read_text()}
    for where, text in texts.items():
        for value in (NAME, "DOE", MRN, str(export)):
            assert value not in text, f"{value!r} in {where}"
    assert "FAILED " in printed.out and "<file:" in printed.out  # failures still say which file, by token
    ids = {item["id"] for item in json.loads(texts["manifest"])["items"]}
    unkeyed = {instance_item_id(rel) for rel in _dicom_files(export)}
    assert len(ids) == 10 and not ids & unkeyed
    monkeypatch.setenv("MEDFLOW_DEID_KEY", KEY[::-1])
    main(["run", str(_recipe(tmp_path, export, out="other")), "-q"])
    other = {item["id"] for item in json.loads((tmp_path / "other" / "manifest.json").read_text())["items"]}
    assert len(other) == 10 and not other & ids  # another key, other ids: nobody links them without the key


def test_an_unchanged_rebuild_reads_nothing_again(export, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFLOW_DEID_KEY", KEY)
    recipe = load_recipe(_recipe(tmp_path, export))
    first = build(recipe, show_progress=False)
    second = build(recipe, show_progress=False)
    assert first.computed == 10
    assert second.computed == 1  # only the failed (truncated) file is tried again
    assert second.accounting == first.accounting
    assert [i["outputs"] for i in second.manifest["items"]] == [i["outputs"] for i in first.manifest["items"]]


def test_the_modality_filter_withholds_with_its_reason(export, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFLOW_DEID_KEY", KEY)
    report = build(load_recipe(_recipe(tmp_path, export, source_extra=", filter: {modality: [CT, SR]}")),
                   show_progress=False)
    withheld = [w["reason"] for w in report.accounting["withheld"]]
    assert sum(r.startswith("filtered: modality") for r in withheld) == 5  # 2 DX, 1 MR, 2 US
    assert report.accounting["written"] == 4 and report.accounting["inputs"] == 10


def _cache_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


@pytest.mark.parametrize("deidentify", [True, False], ids=["anonymize-first", "no-anonymize-control"])
def test_the_cache_of_a_deidentifying_recipe_holds_no_original_header(export, tmp_path, monkeypatch, deidentify):
    monkeypatch.setenv("MEDFLOW_DEID_KEY", KEY)
    steps = "[{step: anonymize}, {step: window, level: 40, width: 400}]" if deidentify else \
        "[{step: window, level: 40, width: 400}]"
    recipe = load_recipe(_recipe(tmp_path, export, steps=steps, writers="[{kind: npy}]",
                                 source_extra=", filter: {modality: [CT]}"))
    report = build(recipe, show_progress=False)
    assert report.ok == 1
    cached = _cache_bytes(tmp_path / ".medflow" / "cache")
    found = [v for v in (NAME.encode(), MRN.encode(), b"DOE") if v in cached]
    if deidentify:
        assert found == []  # no original header, no path with the patient's folder name
    else:
        assert NAME.encode() in found  # the control: a plain recipe caches the headers it read


def test_preview_of_a_deidentifying_recipe_shows_only_what_would_be_written(export, tmp_path, monkeypatch):
    from medflow.preview import run_stages

    monkeypatch.setenv("MEDFLOW_DEID_KEY", KEY)
    rows, errors = run_stages(load_recipe(_recipe(tmp_path, export)), n_items=10)
    tiles = [tile for _, row in rows for tile in row]
    assert not any(tile.title == "0 read" and tile.image is not None for tile in tiles)  # originals never drawn
    quarantined = [tile for tile in tiles if (tile.error or "").startswith("quarantined")]
    assert len(quarantined) == 1 and quarantined[0].image is None
    drawn = [tile for tile in tiles if tile.image is not None]
    assert len(drawn) == 7  # 3 CT, 2 DX, the localizer, the flagged US; the SR has no pixels
    text = repr(rows) + repr(errors)
    assert NAME not in text and MRN not in text and str(export) not in text


def test_the_manifest_counts_four_different_words(export, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFLOW_DEID_KEY", KEY)
    report = build(load_recipe(_recipe(tmp_path, export, source_extra=", filter: {modality: [CT, SR]}")),
                   show_progress=False)
    summary = report.manifest["summary"]
    assert summary["filtered_files"] == 5  # 2 DX, the localizer, 2 US: left out by the recipe's filter
    assert summary["skipped_files"] == 1  # README.txt: not DICOM
    assert summary["unreadable_files"] == 0
    assert summary["input_files_withheld"] == 6  # the 5 filtered and the truncated file
