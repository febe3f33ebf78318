"""The index writer: one row per item (or slice), Parquet and CSV, keys pseudonymized when de-identifying."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medflow.engine.build import build
from medflow.recipe.loader import load_recipe

pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed")

KEY = "0123456789abcdef-test-key"


def _build(tmp_path: Path, steps: str, writers: str, extra: str = "", name: str = "out") -> Path:
    recipe = tmp_path / f"{name}.yaml"
    recipe.write_text(
        f"medflow: 1\nname: i\nsource: {{sample: ct-phantom}}\nsteps: {steps}\n{extra}\n"
        f"outputs: {{dir: {name}, writers: {writers}}}\nengine: {{workers: 1}}\n"
    )
    report = build(load_recipe(recipe), show_progress=False)
    assert report.exit_code == 0, report.failed
    return tmp_path / name


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_index_has_one_row_per_item_in_both_formats(tmp_path):
    out = _build(tmp_path, "[{step: window, level: -600, width: 1500}]", "[{kind: npy}, {kind: index}]",
                 "splits: {ratios: {train: 0.5, test: 0.5}}")
    manifest = json.loads((out / "manifest.json").read_text())
    rows = _csv(out / "index.csv")
    table = pq.read_table(out / "index.parquet").to_pylist()
    assert [r["id"] for r in rows] == [r["id"] for r in table] == sorted(i["id"] for i in manifest["items"])
    by_id = {i["id"]: i for i in manifest["items"]}
    for row, parquet_row in zip(rows, table, strict=True):
        item = by_id[row["id"]]
        array = np.load(out / row["array"], mmap_mode="r")
        assert row["shape"] == "x".join(map(str, array.shape)) and row["dtype"] == str(array.dtype)
        assert parquet_row["n_slices"] == array.shape[0]
        assert row["split"] == manifest["splits"]["items"][row["id"]]
        assert row["patient"] in ("MRN00012345", "PID-0098765") and row["modality"] == "CT"
        assert parquet_row["spacing_z"] == item["meta"]["geometry"]["spacing"][0]
    assert {o["path"] for o in manifest["dataset_outputs"]} == {"index.csv", "index.parquet"}


def test_per_slice_rows_carry_each_slice_position(tmp_path):
    out = _build(tmp_path, "[]", "[{kind: npy}, {kind: index, per_slice: true, formats: [parquet]}]")
    table = pq.read_table(out / "index.parquet").to_pylist()
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(table) == sum(i["meta"]["geometry"]["n_slices"] for i in manifest["items"])
    first = next(r for r in table if r["slice"] == 1)
    item = next(i for i in manifest["items"] if i["id"] == first["id"])
    origin, step = item["meta"]["geometry"]["origin"], item["meta"]["geometry"]["slice_step"]
    assert first["position_z"] == pytest.approx(origin[2] + step[2])


def test_a_user_table_is_joined_by_patient_id(tmp_path):
    (tmp_path / "labels.csv").write_text("PatientID,label\nMRN00012345,nodule\nPID-0098765,normal\n")
    out = _build(tmp_path, "[]", "[{kind: npy}, {kind: index, table: labels.csv, formats: [csv]}]")
    rows = _csv(out / "index.csv")
    assert {(r["patient"], r["label"], r["PatientID"]) for r in rows} == {
        ("MRN00012345", "nodule", "MRN00012345"), ("PID-0098765", "normal", "PID-0098765")}


def test_de_identifying_index_carries_the_pseudonyms_the_dicom_output_carries(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFLOW_DEID_KEY", KEY)
    anonymize = "{step: anonymize, profile: basic}"
    (tmp_path / "labels.csv").write_text("PatientID,label\nMRN00012345,nodule\nPID-0098765,normal\n")
    out = _build(tmp_path, f"[{anonymize}]", "[{kind: npy}, {kind: index, table: labels.csv}]",
                 "splits: {ratios: {train: 0.5, test: 0.5}}")
    dicom = _build(tmp_path, f"[{anonymize}]", "[{kind: dicom}]", name="dicom")
    written = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted((dicom / "dicom").rglob("*.dcm"))]
    assert written
    patients = {str(d.PatientID) for d in written}
    studies = {str(d.StudyInstanceUID) for d in written}
    series = {str(d.SeriesInstanceUID) for d in written}
    rows = _csv(out / "index.csv")
    assert {r["patient"] for r in rows} == patients
    assert {r["study"] for r in rows} <= studies and {r["series"] for r in rows} <= series
    assert {r["PatientID"] for r in rows} == patients and {r["label"] for r in rows} == {"nodule", "normal"}
    text = (out / "index.csv").read_text() + (out / "manifest.json").read_text()
    parquet = (out / "index.parquet").read_bytes()
    for original in ("MRN00012345", "PID-0098765", "ACC240312001", "Thorax"):
        assert original not in text and original.encode() not in parquet
