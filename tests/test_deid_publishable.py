"""Acceptance: a hospital-style export goes through ``medflow run`` and comes out publishable.

The export (``tests/phi_export.py``: three patients, CT, MR + localizers, enhanced MR, DX, US, SR,
KO, identity planted everywhere) is built with the real command line twice: with the protective
defaults (basic profile, no option, burned-in instances quarantined) and with the options a
research release usually asks for. For each build:

* no planted value, in any written form, as text or bytes, in any case, is left anywhere: file
  contents, file and folder names, manifest, audit files, console output;
* every input DICOM file is accounted for: written + withheld (with a reason) == inputs, and the
  right ones are withheld (the US image without BurnedInAnnotation);
* dciodvfy reports no error on an output that it did not report on its input;
* references between instances still resolve (SR and KO to images, studies, frames of reference);
* ``medflow audit OUT --source EXPORT`` finds nothing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pydicom
import pytest

from medflow.deid import keyed_uid

sys.path.insert(0, str(Path(__file__).resolve().parent))
from phi_export import SHARED_STUDY_DESCRIPTION, build_export, variant_bytes, variants  # noqa: E402

KEY_HEX = "5f0c3a9e1d7b2468ace013579bdf2468" "0f1e2d3c4b5a69788796a5b4c3d2e1f0"  # 32 bytes, hex
KEY = KEY_HEX.encode("utf-8")  # MEDFLOW_DEID_KEY is used as its UTF-8 text
CONFIGS = {
    "protective": [],
    "options": ["retain-longitudinal-modified-dates", "retain-patient-characteristics", "clean-descriptors",
                "clean-structured-content"],
}
ROOT = Path(__file__).resolve().parents[1]
WRITTEN_ROLES = {"ct", "mr", "localizer", "enhanced-mr", "dx", "us-burned-in-no", "sr", "ko"}
WITHHELD_ROLES = {"us-burned-in-absent"}


def _medflow(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "medflow", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=900, check=False)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return build_export(tmp_path_factory.mktemp("export") / "EXPORT")


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def run(request, tmp_path_factory, export):
    """One build through the CLI: (name, out dir, completed process)."""
    name = request.param
    work = tmp_path_factory.mktemp(f"publish-{name}")
    out = work / "build" / "out"  # the cache goes next to it (work/build/.medflow), outside the dataset
    source = export.root
    step = {"step": "anonymize", **({"options": CONFIGS[name]} if CONFIGS[name] else {})}
    recipe = work / "publish.yaml"
    # YAML is a superset of JSON: no quoting worries for paths with ^ or non-ASCII letters
    recipe.write_text(json.dumps({
        "medflow": 1, "name": "publish", "source": {"dicom": str(source)}, "steps": [step],
        "outputs": {"dir": str(out), "writers": [{"kind": "dicom"}]},
    }), encoding="utf-8")
    env = {**os.environ, "MEDFLOW_DEID_KEY": KEY_HEX}
    done = _medflow("run", str(recipe), "-q", env=env)
    return name, out, done


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def _outputs(out: Path) -> dict[str, tuple[Path, pydicom.Dataset]]:
    """Every written .dcm by SOPInstanceUID."""
    found = {}
    for path in sorted(out.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        found[str(ds.SOPInstanceUID)] = (path, ds)
    return found


def _expected_uid(name: str, uid: str) -> str:
    return uid if "retain-uids" in CONFIGS[name] else keyed_uid(KEY, uid)


def _leaks(data: bytes, planted: set[str]) -> set[str]:
    """Planted values found in ``data`` in any written form, as bytes and as decoded text, any case."""
    lowered = data.lower()
    texts = [data.decode("utf-8", "ignore").casefold(), data.decode("latin-1").casefold()]
    found = set()
    for value in planted:
        if any(form.lower() in lowered for form in variant_bytes(value)) or any(
            form.casefold() in text for form in variants(value) for text in texts
        ):
            found.add(value)
    return found


def test_the_export_plants_what_it_promises(export):
    # Otherwise the scans below would prove nothing.
    everything = b"".join(f.path.read_bytes() for f in export.files)
    missing = [v for v in export.planted if not any(form in everything for form in variant_bytes(v))]
    assert missing == []
    patients = {f.patient for f in export.files}
    assert len(patients) >= 3 and any(p.charset == "ISO_IR 192" and not p.name.isascii() for p in patients)
    for p in patients:
        roles = [f.role for f in export.files if f.patient == p]
        assert {r: roles.count(r) for r in sorted(set(roles))} == {
            "ct": 4, "dx": 2, "enhanced-mr": 1, "ko": 1, "localizer": 2, "mr": 3, "sr": 1,
            "us-burned-in-absent": 1, "us-burned-in-no": 1,
        }
        folder = next(f.path for f in export.files if f.patient == p).relative_to(export.root).parts[0]
        assert p.mrn in folder and p.name.split("^")[0] in folder
    sr = pydicom.dcmread(export.by_role("sr")[0].path)
    assert {item.ValueType for item in sr.ContentSequence} == {"TEXT", "PNAME", "DATE", "CODE", "UIDREF", "IMAGE"}
    localizer = pydicom.dcmread(export.by_role("localizer")[0].path)
    assert "LOCALIZER" in localizer.ImageType
    dx = pydicom.dcmread(export.by_role("dx")[0].path)
    assert "ImagePositionPatient" not in dx and "ImageOrientationPatient" not in dx
    us = [pydicom.dcmread(f.path) for f in export.files if f.role.startswith("us-")]
    assert sorted(str(ds.get("BurnedInAnnotation")) for ds in us) == ["NO"] * 3 + ["None"] * 3
    assert not export.planted & {SHARED_STUDY_DESCRIPTION, "CT", "MR"}


def test_the_build_succeeds(run):
    name, out, done = run
    assert done.returncode == 0, f"{name}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert (out / "manifest.json").is_file()


def test_no_planted_value_survives_anywhere(run, export):
    name, out, done = run
    leaks: dict[str, set[str]] = {}
    for path in sorted(out.rglob("*")):
        relative = path.relative_to(out).as_posix()
        found = _leaks(relative.encode("utf-8"), export.planted)
        if path.is_file():
            found |= _leaks(path.read_bytes(), export.planted)
        if found:
            leaks[relative] = found
    console = _leaks((done.stdout + done.stderr).encode("utf-8"), export.planted)
    if console:
        leaks["(console output)"] = console
    assert leaks == {}, f"{name}: planted values left in the output"


def test_every_input_file_is_accounted_for(run, export):
    name, out, _ = run
    manifest = _manifest(out)
    accounting = manifest.get("accounting")
    assert accounting is not None, "the manifest of a de-identifying recipe must account for every input file"
    inputs = len(export.files)
    written = _outputs(out)
    withheld = accounting["withheld"]
    assert accounting["inputs"] == inputs
    assert accounting["written"] == len(written)
    assert accounting["written"] + len(withheld) == inputs
    assert all(w.get("reason") for w in withheld)
    # the right files: written by their new SOPInstanceUID; the US image without BurnedInAnnotation withheld
    expected = {_expected_uid(name, f.sop_instance_uid): f.role for f in export.files if f.role in WRITTEN_ROLES}
    assert sorted(written) == sorted(expected), "written instances differ from the expected roles"
    assert {f.role for f in export.files} == WRITTEN_ROLES | WITHHELD_ROLES
    assert len(withheld) == len([f for f in export.files if f.role in WITHHELD_ROLES])
    assert all(re.search(r"quarantin|burned", w["reason"], re.I) for w in withheld)


def _errors(path: Path) -> set[str]:
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120, check=False)
    return {line.strip() for line in (done.stdout + done.stderr).splitlines() if "Error" in line}


def test_dciodvfy_reports_no_new_error(run, export):
    name, out, _ = run
    written = _outputs(out)
    new = {}
    for f in export.files:
        output = written.get(_expected_uid(name, f.sop_instance_uid))
        if output is None:
            continue
        added = _errors(output[0]) - _errors(f.path)
        if added:
            new[f"{f.role} {f.path.name}"] = sorted(added)
    assert new == {}, f"{name}: dciodvfy errors that the inputs do not have"


def _referenced_sops(ds: pydicom.Dataset) -> set[str]:
    found = set()
    for elem in ds.iterall():
        if elem.keyword == "ReferencedSOPInstanceUID":
            found.add(str(elem.value))
    return found


def test_cross_file_references_resolve(run, export):
    name, out, _ = run
    written = _outputs(out)
    uids = set(written)
    for f in export.files:
        if f.role not in ("sr", "ko"):
            continue
        path, ds = written[_expected_uid(name, f.sop_instance_uid)]
        image_refs = {_expected_uid(name, uid) for uid in f.references}
        referenced = _referenced_sops(ds)
        assert image_refs <= referenced, f"{f.role}: the referenced images are not referenced any more"
        assert image_refs <= uids, f"{f.role}: a referenced image is not in the build"
        evidence = ds.CurrentRequestedProcedureEvidenceSequence[0]
        assert evidence.StudyInstanceUID == ds.StudyInstanceUID
        series = {str(s.SeriesInstanceUID) for s in evidence.ReferencedSeriesSequence}
        assert series <= {str(d.SeriesInstanceUID) for _, d in written.values()}
    by_study: dict[str, set[str]] = defaultdict(set)
    by_frame: dict[str, set[str]] = defaultdict(set)
    for f in export.files:
        output = written.get(_expected_uid(name, f.sop_instance_uid))
        if output is None:
            continue
        ds = output[1]
        by_study[f.study_uid].add(str(ds.StudyInstanceUID))
        if f.frame_of_reference_uid:
            by_frame[f.frame_of_reference_uid].add(str(ds.get("FrameOfReferenceUID", "")))
    assert all(len(v) == 1 for v in by_study.values()), "a study's series no longer share one StudyInstanceUID"
    assert len({next(iter(v)) for v in by_study.values()}) == len(by_study), "two studies merged into one"
    assert all(len(v) == 1 and "" not in v for v in by_frame.values()), "FrameOfReferenceUID not consistent"


def test_shared_study_description_kept_only_with_clean_descriptors(run, export):
    # Three patients share it: not identifying, so clean-descriptors keeps it; the basic profile removes it (X).
    name, out, _ = run
    expected = SHARED_STUDY_DESCRIPTION if "clean-descriptors" in CONFIGS[name] else None
    written = _outputs(out)
    for f in export.by_role("ct"):
        _, ds = written[_expected_uid(name, f.sop_instance_uid)]
        assert ds.get("StudyDescription") == expected


def test_audit_command_finds_nothing(run, export):
    name, out, _ = run
    source = export.root
    done = _medflow("audit", str(out), "--source", str(source))
    assert done.returncode == 0, f"{name}:\n{done.stdout}\n{done.stderr}"
    assert _leaks((done.stdout + done.stderr).encode("utf-8"), export.planted) == set()
