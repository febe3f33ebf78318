"""De-identify from one Orthanc and push to a second (pipelines/pacs-deid.yaml): nothing identifying arrives."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import blake3
import pydicom
import pytest

from medflow.cli import main
from tests.conftest import shared_data_path
from tests.dicomweb_server import Orthanc

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]
RECIPE = Path(__file__).resolve().parents[1] / "pipelines" / "pacs-deid.yaml"


@pytest.fixture
def two_servers(tmp_path, monkeypatch):
    clinical = Orthanc(tmp_path / "clinical").start()
    research = Orthanc(tmp_path / "research").start()
    for name, value in {**clinical.env("PACS"), **research.env("RESEARCH")}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MEDFLOW_DEID_KEY", "k" * 32)
    monkeypatch.setenv("MEDFLOW_PACS_URL", clinical.url)
    monkeypatch.setenv("MEDFLOW_RESEARCH_URL", research.url)
    yield clinical, research
    clinical.stop()
    research.stop()


def _identifying(files: list[Path]) -> set[str]:
    values = set()
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                        "AccessionNumber", "InstitutionName", "ReferringPhysicianName", "StudyDate"):
            text = str(ds.get(keyword, "") or "")
            if len(text) >= 4:
                values.add(text)
    return values


def test_pacs_deid_pipeline_pushes_only_deidentified_instances(two_servers, tmp_path, capsys):
    clinical, research = two_servers
    files = sorted(p for p in shared_data_path("ct_missing_duplicate_slices").glob("*.dcm"))
    clinical.stow(files)
    out = tmp_path / "out"
    args = ["run", "--quiet", str(RECIPE), "--set", f"outputs.dir={out}", "--set",
            f"engine.cache_dir={tmp_path / 'cache'}", "--set", "engine.workers=2"]
    assert main(args) == 0, capsys.readouterr()

    stored = research.instance_files()
    assert len(stored) == len(files)
    local = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (out / "dicom").rglob("*.dcm")}
    assert {hashlib.sha256(b).hexdigest() for b in stored} == local  # proven by content
    identifying = _identifying(files)
    for data in stored:
        text = data.decode("latin-1")
        assert not [v for v in identifying if v in text]
    # every instance has its receipt in the manifest
    manifest = json.loads((out / "manifest.json").read_text())
    receipts = [o["path"] for item in manifest["items"] for o in item["outputs"] if o["path"].startswith("dicomweb/")]
    assert len(receipts) == len(files)
    for rel in receipts:  # each names the pushed bytes by their BLAKE3 (the reference library on the local file)
        receipt = json.loads((out / rel).read_text())
        local_file = out / "dicom" / receipt["study"] / receipt["series"] / f"{receipt['sop']}.dcm"
        assert receipt["blake3"] == blake3.blake3(local_file.read_bytes()).hexdigest()
    # query the research server: no identifying value in what it answers
    answer = research.get("/dicom-web/studies?includefield=all").text + research.get("/dicom-web/series").text
    assert not [v for v in identifying if v in answer]

    # a rerun is idempotent: nothing to do, nothing pushed twice
    capsys.readouterr()
    assert main(args) == 0
    assert len(research.instance_files()) == len(files)
    # outputs removed: rebuilt and pushed again, the server already holds the same bytes
    for path in (out / "dicomweb").rglob("*.json"):
        path.unlink()
    assert main(args) == 0
    assert len(research.instance_files()) == len(files)


def test_a_server_holding_other_bytes_fails_the_item(two_servers, tmp_path, capsys):
    clinical, research = two_servers
    files = sorted(shared_data_path("ct_missing_duplicate_slices").glob("*.dcm"))[:2]
    clinical.stow(files)
    out = tmp_path / "out"
    args = ["run", "--quiet", str(RECIPE), "--set", f"outputs.dir={out}", "--set",
            f"engine.cache_dir={tmp_path / 'cache'}", "--set", "engine.workers=1"]
    assert main(args) == 0
    # the research server now holds a different file under the same SOPInstanceUID
    pushed = sorted((out / "dicom").rglob("*.dcm"))[0]
    ds = pydicom.dcmread(pushed)
    ds.SeriesDescription = "changed elsewhere"
    changed = tmp_path / "changed.dcm"
    ds.save_as(changed)
    research.stop()
    for child in (research.folder / "storage").iterdir():
        if child.is_dir():
            import shutil

            shutil.rmtree(child)
        else:
            child.unlink()
    research.start()
    research.stow([changed])
    for path in (out / "dicomweb").rglob("*.json"):
        path.unlink()
    capsys.readouterr()
    assert main(args) == 1
    assert "holds other bytes under this instance's SOPInstanceUID" in capsys.readouterr().out
