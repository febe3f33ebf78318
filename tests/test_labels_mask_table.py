"""NIfTI and NRRD masks on a real CT series, paired by pattern and by table, through ``medflow run``.

Oracle: SimpleITK reads the CT series with its own geometry, a sphere and a box are drawn in
physical (LPS mm) coordinates and written with ``sitk.WriteImage`` as .nii.gz and .nrrd. The
label map medflow writes (nnU-Net ``labelsTr``, read back with SimpleITK) must label exactly the
voxels whose physical centres SimpleITK labelled: compared point by point in world coordinates,
never through medflow's own geometry code. Failures (a wrong-size mask, a table row that matches
no item, two masks for one item, a path leaving the label folder) are one line naming the file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medflow.sources.labels.mask_table import MaskRow, pair_by_table, read_mask_table
from tests.conftest import REPO_ROOT, shared_data_path

sitk = pytest.importorskip("SimpleITK")

SLICES = "1-0[5-6]?.dcm"  # 20 consecutive slices (1-050 .. 1-069) of the 134: a fast, real, complete stack
SPHERE_MM, BOX = 25.0, (slice(4, 12), slice(300, 340), slice(120, 200))  # box as numpy (z, y, x) index ranges


@pytest.fixture(scope="module")
def ct(tmp_path_factory) -> dict:
    """The series as SimpleITK reads it, and the oracle label array drawn on its grid."""
    folder = shared_data_path("ct_pancreas_tcia")
    reader = sitk.ImageSeriesReader()
    series_uid = reader.GetGDCMSeriesIDs(str(folder))[0]
    files = [f for f in reader.GetGDCMSeriesFileNames(str(folder), series_uid) if Path(f).match(SLICES)]
    assert len(files) == 20
    image = sitk.ReadImage(files)
    size = np.array(image.GetSize())  # x, y, z
    direction = np.array(image.GetDirection()).reshape(3, 3)
    spacing, origin = np.array(image.GetSpacing()), np.array(image.GetOrigin())
    k, j, i = np.meshgrid(*(np.arange(n) for n in size[::-1]), indexing="ij")  # numpy order z, y, x
    index = np.stack([i, j, k], axis=-1).astype(float)
    points = origin + (index * spacing) @ direction.T  # LPS mm of every voxel centre
    centre = origin + (np.array([260.0, 230.0, 9.5]) * spacing) @ direction.T  # between slices 9 and 10
    labels = np.zeros(size[::-1], np.uint8)
    labels[np.linalg.norm(points - centre, axis=-1) <= SPHERE_MM] = 1
    labels[BOX] = 2
    assert (labels == 1).sum() > 1000 and (labels == 2).sum() == 8 * 40 * 80
    return {"folder": folder, "series_uid": series_uid, "image": image, "labels": labels,
            "study_uid": image_tag(files[0], "0020|000d"), "patient": image_tag(files[0], "0010|0020")}


def image_tag(path: str, tag: str) -> str:
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    return reader.GetMetaData(tag).strip()


def _mask(ct: dict, path: Path, array: np.ndarray | None = None, like: sitk.Image | None = None) -> Path:
    image = sitk.GetImageFromArray(ct["labels"] if array is None else array)
    image.CopyInformation(like if like is not None else ct["image"])
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def _run(tmp_path: Path, ct: dict, labels: str, name: str = "build",
         writer: str = "{kind: nnunet, folder: ., dtype: int16, compression: 1}") -> tuple[subprocess.CompletedProcess, Path]:
    recipe = tmp_path / f"{name}.yaml"
    recipe.write_text(
        f"medflow: 1\nname: masks\nsource:\n  dicom: {ct['folder']}\n  filter: {{include: ['{SLICES}']}}\n"
        f"  labels: {labels}\nsteps: []\n"
        f"outputs: {{dir: {name}, writers: [{writer}]}}\n"
        "engine: {workers: 1, cache_dir: cache}\n")
    done = subprocess.run([sys.executable, "-m", "medflow", "run", str(recipe), "-q"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    return done, tmp_path / name


def _oracle_values_at(out: sitk.Image, oracle: sitk.Image, oracle_labels: np.ndarray) -> np.ndarray:
    """The oracle's label at the physical centre of every voxel of ``out`` (numpy z, y, x order)."""
    size = np.array(out.GetSize())
    d_out, s_out, o_out = (np.array(out.GetDirection()).reshape(3, 3), np.array(out.GetSpacing()),
                           np.array(out.GetOrigin()))
    d_or, s_or, o_or = (np.array(oracle.GetDirection()).reshape(3, 3), np.array(oracle.GetSpacing()),
                        np.array(oracle.GetOrigin()))
    k, j, i = np.meshgrid(*(np.arange(n) for n in size[::-1]), indexing="ij")
    points = o_out + (np.stack([i, j, k], axis=-1) * s_out) @ d_out.T
    continuous = ((points - o_or) @ d_or) / s_or  # oracle index (x, y, z) of each point
    index = np.rint(continuous).astype(int)
    assert np.abs(continuous - index).max() < 1e-3, "medflow's label voxels are not on the image's voxel centres"
    assert (index >= 0).all() and (index < np.array(oracle.GetSize())).all()
    return oracle_labels[index[..., 2], index[..., 1], index[..., 0]]


def _assert_aligned(build: Path, ct: dict) -> dict:
    manifest = json.loads((build / "manifest.json").read_text())
    (item,) = manifest["items"]
    assert item["status"] == "ok", item["error"]
    out = sitk.ReadImage(str(build / "labelsTr" / f"{item['id']}.nii.gz"))
    got = sitk.GetArrayFromImage(out)
    expected = _oracle_values_at(out, ct["image"], ct["labels"])
    assert got.shape == ct["labels"].shape
    np.testing.assert_array_equal(got, expected)
    assert [(got == v).sum() for v in (1, 2)] == [(ct["labels"] == v).sum() for v in (1, 2)]
    return item


def test_nifti_mask_by_pattern_is_aligned_voxel_for_voxel(tmp_path, ct):
    _mask(ct, tmp_path / "masks" / f"{ct['series_uid']}.nii.gz")
    done, build = _run(tmp_path, ct, "{from: mask, folder: masks, pattern: '{series_uid}.nii.gz', "
                                     "segments: [sphere, box]}")
    assert done.returncode == 0, done.stdout + done.stderr
    item = _assert_aligned(build, ct)
    assert [(s["value"], s["name"]) for s in item["meta"]["labels"]["segments"]] == [(1, "sphere"), (2, "box")]
    assert json.loads((build / "dataset.json").read_text())["labels"] == {"background": 0, "sphere": 1, "box": 2}


@pytest.mark.parametrize("join_on", ["SeriesInstanceUID", "StudyInstanceUID", "PatientID"])
def test_nrrd_mask_by_table_is_aligned_and_an_unmatched_row_is_reported(tmp_path, ct, join_on):
    key = {"SeriesInstanceUID": ct["series_uid"], "StudyInstanceUID": ct["study_uid"],
           "PatientID": ct["patient"]}[join_on]
    _mask(ct, tmp_path / "masks" / "ct" / "organs.nrrd")
    _mask(ct, tmp_path / "masks" / "other.nrrd")
    (tmp_path / "masks.csv").write_text(f"{join_on},mask,comment\n{key},ct/organs.nrrd,the CT\n"
                                        "1.2.3.999,other.nrrd,no such image\n")
    done, build = _run(tmp_path, ct, f"{{from: mask, folder: masks, table: masks.csv, join_on: {join_on}}}")
    assert done.returncode == 0, done.stdout + done.stderr
    item = _assert_aligned(build, ct)
    assert [(s["value"], s["name"]) for s in item["meta"]["labels"]["segments"]] == [(1, "label 1"), (2, "label 2")]
    manifest = json.loads((build / "manifest.json").read_text())
    skipped = [row for row in manifest["inputs_skipped"] if "other.nrrd" in row["file"]]
    assert len(skipped) == 1 and "labels.table line 3" in skipped[0]["reason"]
    assert "1.2.3.999" in skipped[0]["reason"] and "matches no image item" in skipped[0]["reason"]
    assert any("other.nrrd" in line and "matches no image item" in line
               for line in (build / "build.log").read_text().splitlines())
    assert manifest["accounting"]["inputs"] == 20  # a mask is not a DICOM input


def test_wrong_size_mask_fails_its_item_naming_the_file(tmp_path, ct):
    cropped = ct["labels"][:, :256, :256]
    like = sitk.GetImageFromArray(cropped)
    like.CopyInformation(ct["image"][:256, :256, :])
    _mask(ct, tmp_path / "masks" / "small.nii.gz", cropped, like)
    (tmp_path / "masks.csv").write_text(f"SeriesInstanceUID,mask\n{ct['series_uid']},small.nii.gz\n")
    done, _ = _run(tmp_path, ct, "{from: mask, folder: masks, table: masks.csv, join_on: SeriesInstanceUID}")
    assert done.returncode == 1
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and "small.nii.gz" in failed[0]
    assert "20x256x256" in failed[0] and "20x512x512" in failed[0] and "cover the image's grid exactly" in failed[0]


def test_two_masks_for_one_item_fail_or_keep_it_without_labels(tmp_path, ct):
    _mask(ct, tmp_path / "masks" / "a.nii.gz")
    _mask(ct, tmp_path / "masks" / "b.nrrd")
    (tmp_path / "masks.csv").write_text(f"SeriesInstanceUID,mask\n{ct['series_uid']},a.nii.gz\n"
                                        f"{ct['series_uid']},b.nrrd\n")
    labels = "{from: mask, folder: masks, table: masks.csv, join_on: SeriesInstanceUID}"
    done, _ = _run(tmp_path, ct, labels)
    (failed,) = [line for line in done.stdout.splitlines() if line.startswith("FAILED")]
    assert done.returncode == 1 and "lines 2, 3" in failed and "a.nii.gz" in failed and "b.nrrd" in failed
    assert "ambiguous" in failed
    done, build = _run(tmp_path, ct, labels.replace("}", ", missing: keep}"), name="kept",
                       writer="{kind: nnunet, folder: ., dtype: int16, compression: 1, require_labels: false}")
    assert done.returncode == 0, done.stdout + done.stderr
    (item,) = json.loads((build / "manifest.json").read_text())["items"]
    assert item["status"] == "ok" and not (build / "labelsTr" / f"{item['id']}.nii.gz").exists()
    assert any("ambiguous" in note and "built without labels" in note for note in _notes(item["meta"]))


def _notes(meta) -> list[str]:
    found: list[str] = []
    stack = [meta]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack += list(value.values())
        elif isinstance(value, list):
            found += [v for v in value if isinstance(v, str)]
            stack += [v for v in value if not isinstance(v, str)]
    return found


# ----------------------------------------------------------------------------- the table's rules, without pixels


def test_table_rules_one_finding_per_row_or_item(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("PatientID,mask\nP1,a.nii.gz\nP2,b.nii.gz\nP2,c.nii.gz\nP3,d.nii.gz\n,e.nii.gz\nP4,\nP5,f.nii.gz\n")
    rows, malformed = read_mask_table(table, "PatientID", "mask")
    assert [r.line for r in rows] == [2, 3, 4, 5, 8] and malformed == [(6, "no PatientID value"), (7, "no mask value")]
    keys = {"i1": "P1", "i2": "P2", "i3a": "P3", "i3b": "P3", "i9": "P9", "i5": "P5"}

    def locate(text):
        return (None, "resolves outside the label folder") if text == "f.nii.gz" else (f"m/{text}", None)

    found, problems, unpaired = pair_by_table(keys, rows, "PatientID", locate)
    assert found == {"i1": ("m/a.nii.gz",)}
    assert "2 masks of the labels table (lines 3, 4)" in problems["i2"] and "ambiguous" in problems["i2"]
    assert "matches 2 image items" in problems["i3a"] and problems["i3a"] == problems["i3b"]
    assert problems["i9"] == "no row of the labels table has this item's PatientID 'P9'"
    assert "outside the label folder" in problems["i5"] and "line 8" in problems["i5"]
    assert unpaired == []
    found, problems, unpaired = pair_by_table({"i1": "P1"}, [MaskRow(2, "P7", "x.nrrd")], "PatientID", locate)
    assert unpaired == [("m/x.nrrd", "not a DICOM file: a label mask; labels.table line 2 (PatientID 'P7') matches "
                                     "no image item: not paired")]


def test_table_without_its_columns_names_them(tmp_path):
    from medflow.errors import InputError

    table = tmp_path / "t.csv"
    table.write_text("SeriesInstanceUID,path\n1.2,a.nii.gz\n")
    with pytest.raises(InputError, match=r"no column 'mask'.*its columns: SeriesInstanceUID, path"):
        read_mask_table(table, "SeriesInstanceUID", "mask")


@pytest.mark.parametrize("path", ["../outside.nii.gz", "sub/../../outside.nii.gz", "link.nii.gz", "/abs.nii.gz"])
def test_mask_paths_never_leave_the_label_folder(tmp_path, path):
    from medflow.sources.pairing import mask_location

    root = (tmp_path / "labels").resolve()
    root.mkdir()
    (tmp_path / "outside.nii.gz").write_bytes(b"x")
    (root / "link.nii.gz").symlink_to(tmp_path / "outside.nii.gz")
    (root / "inside.nii.gz").write_bytes(b"x")
    assert mask_location(root / "inside.nii.gz", root) is None
    assert "outside the label folder" in mask_location(root / path if not path.startswith("/") else Path(path), root)


def test_recipe_refuses_unclear_mask_options():
    from pydantic import ValidationError

    from medflow.recipe.model import Labels

    for bad, words in [({"from": "mask"}, "exactly one of 'pattern'"),
                       ({"from": "mask", "pattern": "x", "table": "t.csv", "join_on": "PatientID"}, "exactly one"),
                       ({"from": "mask", "table": "t.csv"}, "'table' needs 'join_on'"),
                       ({"from": "seg", "table": "t.csv", "join_on": "PatientID"}, "pair masks only"),
                       ({"from": "mask", "table": "t.csv", "join_on": "Modality"}, "SeriesInstanceUID")]:
        with pytest.raises(ValidationError, match=words):
            Labels.model_validate(bad)


@pytest.mark.parametrize("how", ["pattern", "table"])
def test_a_mask_path_leading_out_of_the_label_folder_fails_the_item(tmp_path, how):
    from medflow.recipe.model import DicomSource
    from medflow.sources.discovery import discover_dicom
    from medflow.sources.fingerprint import FingerprintMemo
    from medflow.sources.pairing import pair_labels
    from tests.dicom_factory import uid, write_ct_series

    write_ct_series(tmp_path / "ct", series=1, n_slices=3, size=8)
    (tmp_path / "labels").mkdir()
    (tmp_path / "secret.nii.gz").write_bytes(b"not yours")
    (tmp_path / "t.csv").write_text(f"SeriesInstanceUID,mask\n{uid('series', 1)},../secret.nii.gz\n")
    labels = ({"from": "mask", "folder": "labels", "pattern": "../secret.nii.gz"} if how == "pattern" else
              {"from": "mask", "folder": "labels", "table": "t.csv", "join_on": "SeriesInstanceUID"})
    source = DicomSource.model_validate({"dicom": str(tmp_path / "ct"), "labels": labels})
    memo = FingerprintMemo(None)
    found = pair_labels(discover_dicom(tmp_path / "ct", source.filter, memo), (tmp_path / "ct").resolve(), source,
                        memo, lambda value: tmp_path / value)
    [item] = found.items
    assert item.labels == () and len(item.broken_files) == 1
    assert "outside the label folder" in item.broken_files[0][1] and "secret.nii.gz" in item.broken_files[0][1]
