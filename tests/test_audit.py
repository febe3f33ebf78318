"""``medflow audit``: a clean build passes, a residual value is found (and never printed), not a build is 2.

The builds here are written by hand from :func:`medflow.deid.deidentify` over part of the generated
export (``tests/phi_export.py``), so the audit is tested without the engine.
"""

from __future__ import annotations

import ast
import json
import shutil
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset, Sequence

from medflow.cli import main
from medflow.deid import DeidConfig, deidentify

sys.path.insert(0, str(Path(__file__).resolve().parent))
from phi_export import PATIENTS, build_export, variants  # noqa: E402

KEY = b"audit-test-key-0123456789abcdef!"
PATIENT = PATIENTS[0]
OPTIONS = ["retain-longitudinal-modified-dates", "retain-patient-characteristics", "clean-descriptors",
           "clean-structured-content"]
ROLES = ("ct", "sr", "ko", "dx", "enhanced-mr", "localizer")


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return build_export(tmp_path_factory.mktemp("export"))


def _write_build(folder: Path, export, options=()) -> list[Path]:
    """De-identify the first patient's files of ``ROLES`` into ``folder`` as a build; returns the .dcm paths."""
    items, written = [], []
    for f in export.files:
        if f.patient != PATIENT or f.role not in ROLES:
            continue
        result = deidentify(pydicom.dcmread(f.path), DeidConfig(options=set(options)), KEY)
        ds = result.dataset
        parts = (ds.StudyInstanceUID, ds.SeriesInstanceUID)
        dcm = folder.joinpath("dicom", *parts, ds.SOPInstanceUID + ".dcm")
        audit = folder.joinpath("audit", *parts, ds.SOPInstanceUID + ".jsonl")
        for path in (dcm, audit):
            path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(dcm, enforce_file_format=True)
        audit.write_text(result.audit_jsonl(), encoding="utf-8")
        written.append(dcm)
        outputs = [{"path": p.relative_to(folder).as_posix()} for p in (dcm, audit)]
        items.append({"id": f"{f.role}-{len(items)}", "status": "ok", "error": None, "outputs": outputs})
    manifest = {"manifest_version": 1, "items": items,
                "accounting": {"inputs": len(items), "written": len(items), "withheld": []}}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return written


@pytest.fixture(scope="module")
def clean_builds(tmp_path_factory, export):
    """Two clean builds (protective defaults; with the retain/clean options), written once."""
    builds = {}
    for name, options in (("basic", ()), ("options", OPTIONS)):
        folder = tmp_path_factory.mktemp(f"build-{name}")
        _write_build(folder, export, options)
        builds[name] = folder
    return builds


@pytest.fixture
def build(tmp_path, clean_builds):
    """A private copy of the basic build that a test may spoil."""
    folder = tmp_path / "build"
    shutil.copytree(clean_builds["basic"], folder)
    return folder


def _audit(capsys, *args: str) -> tuple[int, str]:
    code = main(["audit", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _first(build: Path, predicate=lambda ds: ds.Modality == "CT") -> tuple[Path, Dataset]:
    for path in sorted(build.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        if predicate(ds):
            return path, ds
    raise AssertionError("no such file in the build")


def _assert_no_value(text: str, value: str) -> None:
    folded = text.casefold()
    assert not [v for v in variants(value) if v.casefold() in folded], "the report repeats the value"


@pytest.mark.parametrize("name", ["basic", "options"])
@pytest.mark.parametrize("with_source", [False, True], ids=["patterns", "source"])
def test_clean_build_exits_0(capsys, clean_builds, export, name, with_source):
    source = ["--source", export.root] if with_source else []
    code, out = _audit(capsys, clean_builds[name], *source)
    assert code == 0, out
    assert "clean: no residual identifying value found" in out
    assert "PatientName:" in out  # the audit records are summarised per keyword


def test_pseudonyms_uids_and_shifted_dates_are_not_findings(capsys, clean_builds):
    # The options build keeps MF- pseudonyms, 2.25. UIDs and shifted DA/DT/TM values, all legitimate.
    _, ds = _first(clean_builds["options"])
    assert str(ds.PatientID).startswith("MF-") and ds.SOPInstanceUID.startswith("2.25.")
    assert ds.StudyDate and ds.StudyDate != PATIENT.study_dates[0]
    code, out = _audit(capsys, clean_builds["options"])
    assert code == 0, out


def _plant_code_meaning(build: Path) -> tuple[str, str, str]:
    path, ds = _first(build)
    equivalent = Dataset()
    equivalent.CodeValue, equivalent.CodingSchemeDesignator = "EQ1", "99LOCAL"
    equivalent.CodeMeaning = PATIENT.name.replace("^", " ")
    procedure = Dataset()
    procedure.CodeValue, procedure.CodingSchemeDesignator, procedure.CodeMeaning = "P1", "99LOCAL", "CT CHEST"
    procedure.EquivalentCodeSequence = Sequence([equivalent])
    ds.ProcedureCodeSequence = Sequence([procedure])
    ds.save_as(path, enforce_file_format=True)
    return (path.relative_to(build).as_posix(), "ProcedureCodeSequence[0].EquivalentCodeSequence[0].CodeMeaning",
            "identity:patient-name")


def _plant_mrn_in_file_name(build: Path) -> tuple[str, str, str]:
    path, _ = _first(build)
    renamed = path.with_name(f"CT_{PATIENT.mrn}_0001.dcm")
    path.rename(renamed)
    shown = renamed.parent.relative_to(build).as_posix() + "/<pattern:id>_0001.dcm"  # "CT_" + MRN: ID-like
    return shown, "(file name)", "pattern:id"


def _plant_birth_date_in_comments(build: Path) -> tuple[str, str, str]:
    path, ds = _first(build)
    ds.ImageComments = "patient born 14/03/1957"
    ds.save_as(path, enforce_file_format=True)
    return path.relative_to(build).as_posix(), "ImageComments", "pattern:date"


def _plant_private_bytes(build: Path) -> tuple[str, str, str]:
    path, ds = _first(build)
    ds.add_new(0x00291001, "UN", PATIENT.address.encode("latin-1"))  # no creator: stays UN, raw bytes
    ds.save_as(path, enforce_file_format=True)
    # the address is also the InstitutionAddress: whichever identity rule matches first is right
    return path.relative_to(build).as_posix(), "(0029,1001)", "identity:"


def _plant_name_in_sr_content(build: Path) -> tuple[str, str, str]:
    path, ds = _first(build, lambda ds: ds.Modality == "SR")
    text = Dataset()
    text.RelationshipType, text.ValueType = "CONTAINS", "TEXT"
    text.TextValue = f"Seen by Dr. {PATIENT.reading.split('^')[0].title()} on 14.03.1957"
    ds.ContentSequence = Sequence([text])
    ds.save_as(path, enforce_file_format=True)
    return path.relative_to(build).as_posix(), "ContentSequence[0].TextValue", "identity:person-name"


@pytest.mark.parametrize(
    ("plant", "value", "with_source"),
    [
        (_plant_code_meaning, PATIENT.name, True),
        (_plant_mrn_in_file_name, PATIENT.mrn, False),
        (_plant_birth_date_in_comments, PATIENT.birth_date, False),
        (_plant_private_bytes, PATIENT.address, True),
        (_plant_name_in_sr_content, PATIENT.reading, True),
    ],
    ids=["name-in-nested-code-meaning", "mrn-in-file-name", "birth-date-in-image-comments",
         "address-in-private-un-bytes", "reader-in-sr-text"],
)
def test_planted_residual_is_found_and_not_printed(capsys, build, export, plant, value, with_source):
    shown, attribute, rule = plant(build)
    source = ["--source", export.root] if with_source else []
    code, out = _audit(capsys, build, *source)
    assert code == 1, out
    assert any(line.startswith(f"{shown}: {attribute}: {rule}") for line in out.splitlines()), out
    _assert_no_value(out, value)


def test_source_finds_a_surname_the_patterns_miss(capsys, build, export):
    path, ds = _first(build)
    ds.ImageComments = f"reviewed with {PATIENT.name.split('^')[0].title()}"
    ds.save_as(path, enforce_file_format=True)
    code, out = _audit(capsys, build)
    assert code == 0, out  # no date, number or e-mail: the pattern detector alone cannot know
    code, out = _audit(capsys, build, "--source", export.root)
    assert code == 1
    assert f"{path.relative_to(build).as_posix()}: ImageComments: identity:patient-name" in out.splitlines()
    _assert_no_value(out, PATIENT.name)


def test_manifest_error_and_withheld_items_are_reported_redacted(capsys, build):
    manifest = json.loads((build / "manifest.json").read_text())
    failed_index = len(manifest["items"]) + 1
    manifest["items"].append({"id": "us-1", "status": "quarantined", "outputs": [],
                              "error": "burned-in text risk (modality US)"})
    manifest["items"].append({"id": "ct-9", "status": "failed", "outputs": [],
                              "error": f"cannot read CT_{PATIENT.mrn}_0009.dcm"})
    manifest["accounting"]["inputs"] += 2
    manifest["accounting"]["withheld"] = [{"file": "<file:0123456789abcdef>", "reason": "quarantined: burned-in"}]
    (build / "manifest.json").write_text(json.dumps(manifest))
    code, out = _audit(capsys, build)
    assert code == 1
    lines = out.splitlines()
    assert f"manifest.json: items[{failed_index}].error: pattern:id" in lines
    assert any(line.startswith("manifest.json: accounting: accounting-mismatch") for line in lines)
    assert "  item us-1: quarantined: burned-in text risk (modality US)" in lines
    assert "  item ct-9: failed: cannot read <pattern:id>_0009.dcm" in lines
    _assert_no_value(out, PATIENT.mrn)


def test_json_report(capsys, build, export):
    _plant_code_meaning(build)
    code, out = _audit(capsys, build, "--source", export.root, "--json")
    report = json.loads(out)
    assert code == 1 and report["clean"] is False
    assert {"file", "path", "rule"} == set(report["findings"][0])
    assert report["source"]["patients"] == len(PATIENTS)
    assert report["audit_records"]["records"] > 0
    _assert_no_value(out, PATIENT.name)


def test_audit_file_holding_a_value_is_a_finding(capsys, build, export):
    audit = sorted((build / "audit").rglob("*.jsonl"))[0]
    audit.write_text(audit.read_text() + json.dumps({"keyword": "PatientName", "old": PATIENT.name}) + "\n")
    code, out = _audit(capsys, build, "--source", export.root)
    assert code == 1
    assert any(line.startswith(audit.relative_to(build).as_posix() + ": line ") for line in out.splitlines())


def test_original_file_copied_into_the_build_is_found(capsys, build, export):
    original = next(f for f in export.files if f.role == "ct")
    shutil.copy(original.path, build / "dicom" / "extra.dcm")
    code, out = _audit(capsys, build)
    assert code == 1
    assert "dicom/extra.dcm: PatientIdentityRemoved: not-deidentified:PatientIdentityRemoved is not YES" in out
    for value in (PATIENT.name, PATIENT.mrn, PATIENT.birth_date):
        _assert_no_value(out, value)


@pytest.mark.parametrize("kind", ["empty-folder", "missing", "foreign-json", "a-file"])
def test_not_a_build_exits_2(capsys, tmp_path, kind):
    target = tmp_path / "out"
    if kind == "empty-folder":
        target.mkdir()
    elif kind == "foreign-json":
        target.mkdir()
        (target / "manifest.json").write_text('{"name": "something else"}')
    elif kind == "a-file":
        target.write_text("not a folder")
    code, out = _audit(capsys, target)
    assert code == 2
    assert "not a medflow build" in out or "not a medflow manifest" in out


def test_missing_source_is_a_usage_error(capsys, build, tmp_path):
    code, out = _audit(capsys, build, "--source", tmp_path / "nowhere")
    assert code == 2 and "--source" in out


def test_audit_reads_builds_only():
    """ARCHITECTURE.md: commands that read builds import no engine and no step code."""
    package = Path(__file__).resolve().parents[1] / "medflow" / "audit"
    imported = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    assert not [m for m in imported if m.startswith(("medflow.engine", "medflow.steps", "medflow.writers"))]
