"""pipelines/cxr.yaml: radiographs -> 512 px PNG (aspect kept) + index + patient-level splits."""

from __future__ import annotations

import csv
import json

import numpy as np
import pydicom
import pytest

from medflow.engine.build import build
from medflow.recipe.loader import load_recipe
from tests.conftest import REPO_ROOT, shared_data_path


def test_cxr_recipe_builds_one_item_per_image_with_index_and_leak_free_splits(tmp_path):
    source = shared_data_path("radiographs_cr_dx")
    loaded = load_recipe(REPO_ROOT / "pipelines" / "cxr.yaml",
                         overrides=[f"outputs.dir={tmp_path / 'out'}", "engine.workers=1"],
                         environ={"MEDFLOW_SHARED_DATA": str(source.parent)})
    report = build(loaded, show_progress=False)
    assert report.exit_code == 0, report.failed
    out = tmp_path / "out"
    manifest = json.loads((out / "manifest.json").read_text())
    with open(out / "index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    images = [p for p in sorted(source.glob("*.dcm")) if not p.name.startswith("fodicom-")]
    assert len(rows) == report.ok == len(images) >= 2
    patients: dict[str, set[str]] = {}
    for row in rows:
        patients.setdefault(row["patient"], set()).add(row["split"])
        assert row["shape"] == "1x512x512" and row["split"] in ("train", "val", "test")
        png = next(p for p in row["outputs"].split(";") if p.endswith(".png"))
        assert (out / png).is_file()
    assert all(len(splits) == 1 for splits in patients.values())
    assert {pydicom.dcmread(p, stop_before_pixels=True).PatientID for p in images} == set(patients)
    # aspect kept: the DX image is 169 x 211 (rows x columns): 410 x 512 of image, the rest padding
    dx = next(r for r in rows if r["modality"] == "DX")
    array = np.load(out / dx["array"])
    content_rows = np.flatnonzero(array[0].max(axis=1) > 0)
    assert content_rows[-1] - content_rows[0] + 1 == pytest.approx(round(169 * 512 / 211), abs=1)
    assert manifest["splits"]["leakage"] == []
