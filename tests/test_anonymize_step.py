"""The ``anonymize`` step: params (no key in a recipe), cache identity, headers, meta, burned-in policy, dry run.

Golden pseudonyms come from the formulas documented in ``medflow.deid.pseudonyms`` recomputed
here with the standard library's ``hmac``, not from medflow's own functions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medflow.errors import QuarantineItem, RecipeError, StepError
from medflow.recipe.loader import load_recipe
from medflow.sample import Sample
from medflow.steps.anonymize import AnonymizeParams, anonymize, dry_run
from tests.deid_corpus import build_corpus, encodings

KEY = "step-test-key-0123456789abcdef"
PRESERVED = (
    "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "RescaleSlope",
    "RescaleIntercept", "WindowCenter", "WindowWidth", "ImagePositionPatient", "ImageOrientationPatient",
    "PixelSpacing", "SliceThickness", "Modality", "PhotometricInterpretation",
)


def _key_id(key: bytes) -> str:
    return hmac.new(key, b"medflow-key-id", hashlib.sha256).hexdigest()[:16]


def _pseudonym(key: bytes, patient_id: str) -> str:
    """PS: ``MF-`` + base32 of the first 80 bits of HMAC-SHA256(key, "patient" 0x00 PatientID)."""
    digest = hmac.new(key, b"patient\x00" + patient_id.encode(), hashlib.sha256).digest()
    return "MF-" + base64.b32encode(digest[:10]).decode()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_corpus(tmp_path_factory.mktemp("corpus"))


def _sample(paths: list[Path], item_id: str = "ct-0000000000000000") -> Sample:
    headers = []
    for path in paths:
        ds = pydicom.dcmread(path)
        del ds.PixelData
        headers.append(ds.to_json_dict())
    return Sample(item_id, np.zeros((len(paths), 2, 2), np.float32), "zyx", headers=headers,
                  meta={"modality": "CT"}, source_files=tuple(map(str, paths)))


def _params(**fields) -> AnonymizeParams:
    return AnonymizeParams.model_validate({"step": "anonymize", **fields})


def _ct_files(corpus, patient_index: int = 0) -> list[Path]:
    pid = corpus.files[0].patient.patient_id if patient_index == 0 else None
    return [f.path for f in corpus.files if f.modality == "CT" and f.study_index == 0
            and (pid is None or f.patient.patient_id == pid)]


def _recipe(tmp_path: Path, step_yaml: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "medflow: 1\nname: t\nsource:\n  sample: ct-phantom\nsteps:\n  - step: anonymize\n"
        + "".join(f"    {line}\n" for line in step_yaml.strip().splitlines())
        + "outputs:\n  dir: out\n  writers:\n    - kind: dicom\n"
    )
    return path


def test_a_literal_key_in_a_recipe_is_an_unknown_key_pointing_to_key_env(tmp_path):
    recipe = _recipe(tmp_path, "key: thisIsTheSecretKeyValue123")
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe)
    text = str(info.value)
    assert "unknown key 'key'; did you mean 'key_env'?" in text
    assert "thisIsTheSecretKeyValue123" not in text


def test_key_env_holding_the_key_itself_is_refused_without_echoing_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFLOW_DEID_KEY", "Alnum0Secret0Key0Value0987")
    recipe = _recipe(tmp_path, "key_env: ${MEDFLOW_DEID_KEY}")
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe)
    text = str(info.value)
    assert "VALUE of an environment variable, not its name" in text
    assert "Alnum0Secret0Key0Value0987" not in text


def test_key_env_description_says_why_the_key_stays_out():
    description = AnonymizeParams.model_fields["key_env"].description
    assert "NAME" in description and "never written in a recipe" in description


def test_canonical_params_hold_a_keyed_fingerprint_never_the_key(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDFLOW_DEID_KEY", KEY)
    params = _params(options=["retain-uids"])
    canonical = params.canonical_params()
    assert canonical["key_id"] == _key_id(KEY.encode())
    assert KEY not in json.dumps(canonical)
    assert canonical["options"] == ["retain-uids"]
    monkeypatch.setenv("MEDFLOW_DEID_KEY", KEY + "-rotated")
    assert params.canonical_params()["key_id"] == _key_id((KEY + "-rotated").encode())


def test_key_file_resolves_against_the_recipe_folder_and_stays_out_of_the_cache_key(tmp_path):
    (tmp_path / "secret.key").write_bytes(KEY.encode() + b"\n")
    (tmp_path / "secret.key").chmod(0o600)
    params = AnonymizeParams.model_validate(
        {"step": "anonymize", "key_file": "secret.key", "crosswalk": "../xwalk.csv"},
        context={"recipe_dir": str(tmp_path)},
    )
    assert params.key_file == str(tmp_path / "secret.key")
    canonical = params.canonical_params()
    assert canonical["key_id"] == _key_id(KEY.encode())  # the trailing newline is not part of the key
    text = json.dumps(canonical)
    assert str(tmp_path) not in text and "secret.key" not in text
    assert canonical["crosswalk"]["name"] == "xwalk.csv"


def test_key_env_and_key_file_together_are_refused(tmp_path):
    with pytest.raises(ValueError, match="key_env or key_file, not both"):
        _params(key_env="OTHER", key_file=str(tmp_path / "k"))


def test_missing_key_fails_the_item_naming_the_variable(monkeypatch, corpus):
    monkeypatch.delenv("MEDFLOW_DEID_NOT_SET", raising=False)
    params = _params(key_env="MEDFLOW_DEID_NOT_SET")
    assert params.canonical_params()["key_id"] == "missing"
    with pytest.raises(StepError, match="environment variable MEDFLOW_DEID_NOT_SET .* not set"):
        anonymize(_sample(_ct_files(corpus)), params)


def test_headers_are_deidentified_and_preprocessing_attributes_kept(monkeypatch, corpus):
    monkeypatch.setenv("MEDFLOW_DEID_KEY", KEY)
    files = _ct_files(corpus)
    sample = _sample(files)
    out = anonymize(sample, _params())
    planted = set().union(*(encodings(v) for v in corpus.planted))
    text = json.dumps(out.headers, ensure_ascii=False).encode("utf-8")
    assert not {v for v in planted if v in text}
    patient = corpus.files[0].patient
    for before, after in zip(sample.headers, out.headers, strict=True):
        new = pydicom.Dataset.from_json(after)
        old = pydicom.Dataset.from_json(before)
        assert new.PatientID == _pseudonym(KEY.encode(), patient.patient_id)
        assert new.PatientIdentityRemoved == "YES"
        for keyword in PRESERVED:
            assert new[keyword].value == old[keyword].value, keyword
    assert sample.headers[0]["00100020"]["Value"] == [patient.patient_id]  # the input Sample is unchanged


def test_meta_records_the_configuration_and_no_identity(monkeypatch, corpus):
    monkeypatch.setenv("MEDFLOW_DEID_KEY", KEY)
    out = anonymize(_sample(_ct_files(corpus)), _params(options=["retain-longitudinal-modified-dates"]))
    deid = out.meta["deid"]
    assert deid["options"] == ["retain-longitudinal-modified-dates"]
    assert deid["profile"] == "basic" and deid["table_edition"]
    assert deid["key_source"] == {"env": "MEDFLOW_DEID_KEY"}
    assert deid["key_id"] == _key_id(KEY.encode())
    assert deid["burned_in"] == "no risk found"
    assert any("retain-longitudinal-modified-dates" in line for line in deid["method"])
    text = json.dumps(out.meta, ensure_ascii=False).encode("utf-8")
    planted = set().union(*(encodings(v) for v in corpus.planted))
    assert not {v for v in planted if v in text}
    assert KEY.encode() not in text
    assert out.private_tables == {}  # no crosswalk unless asked


def test_crosswalk_rows_only_when_asked(monkeypatch, corpus, tmp_path):
    monkeypatch.setenv("MEDFLOW_DEID_KEY", KEY)
    target = tmp_path / "private" / "crosswalk.csv"
    out = anonymize(_sample(_ct_files(corpus)), _params(crosswalk=str(target)))
    pid = corpus.files[0].patient.patient_id
    assert out.private_tables == {
        str(target.resolve()): [["original_patient_id", "pseudonym_patient_id"], [pid, _pseudonym(KEY.encode(), pid)]]
    }


def _write_us(path: Path) -> Path:
    ds = pydicom.dcmread(path)
    ds.Modality = "US"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    out = path.with_name("us-" + path.name)
    ds.save_as(out, enforce_file_format=True)
    return out


@pytest.mark.parametrize("policy", ["quarantine", "fail", "allow"])
def test_burned_in_policy(monkeypatch, corpus, tmp_path, policy):
    monkeypatch.setenv("MEDFLOW_DEID_KEY", KEY)
    us = _write_us(_ct_files(corpus)[0])
    sample = _sample([us], item_id="us-0000000000000001")
    params = _params(burned_in=policy)
    if policy == "quarantine":
        with pytest.raises(QuarantineItem, match="modality US"):
            anonymize(sample, params)
    elif policy == "fail":
        with pytest.raises(StepError, match="burned-in text risk.*policy is 'fail'"):
            anonymize(sample, params)
    else:
        assert anonymize(sample, params).meta["deid"]["burned_in"].startswith("allowed: modality US")


def test_dry_run_lists_actions_never_values(corpus):
    path = _ct_files(corpus)[1]  # the second slice references the first (depth 1)
    lines = dry_run(_params(options=["retain-uids"]), path)
    assert lines[0].startswith("profile basic, options: retain-uids")
    assert "PatientName: Z -> pseudonym" in lines
    assert "SOPInstanceUID: K -> keep" in lines  # Table E.1-1, Retain UIDs column
    assert "SOPInstanceUID: U -> uid" in dry_run(_params(), path)
    assert "ReferencedImageSequence[0].ReferencedSOPInstanceUID: U -> uid" in dry_run(_params(), path)
    assert "OtherPatientIDsSequence: X -> remove" in lines
    text = "\n".join(lines).encode("utf-8")
    planted = set().union(*(encodings(v) for v in corpus.planted))
    assert not {v for v in planted if v in text}


@pytest.mark.slow
def test_the_deidentify_pipeline_builds(monkeypatch, tmp_path):
    from medflow.engine.build import build

    monkeypatch.setenv("MEDFLOW_DEID_KEY", KEY)
    recipe = Path(__file__).resolve().parents[1] / "pipelines" / "deidentify.yaml"
    loaded = load_recipe(recipe, overrides=[f"outputs.dir={tmp_path / 'out'}", "engine.workers=1"])
    report = build(loaded, show_progress=False)
    assert report.exit_code == 0 and report.ok == report.total >= 1
    written = sorted((tmp_path / "out" / "dicom").rglob("*.dcm"))
    assert written
    ds = pydicom.dcmread(written[0])
    assert ds.InstitutionName == "SITE-A"
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    assert ds.PatientIdentityRemoved == "YES" and ds.PatientID.startswith("MF-")


def test_manifest_of_a_deidentifying_recipe_carries_no_input_path(tmp_path, monkeypatch):
    """Folders named after the patient must not reach manifest.json through the file lists."""
    from medflow.engine.build import build
    from medflow.recipe.loader import load_recipe
    from tests.dicom_factory import write_ct_series

    monkeypatch.setenv("MEDFLOW_DEID_KEY", "manifest-test-key-0123456789abcdef")
    source = tmp_path / "DOE_JANE_MRN4711"
    write_ct_series(source / "study_DOE", 1, n_slices=2, patient="DOE^JANE")
    (source / "notes_DOE_JANE.txt").write_text("not dicom")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"medflow: 1\nname: r\nsource:\n  dicom: {source}\nsteps:\n  - step: anonymize\n"
                      "  - step: window\n    level: 40\n    width: 400\noutputs:\n  dir: out\n")
    report = build(load_recipe(recipe), show_progress=False)
    assert report.exit_code == 0
    text = (tmp_path / "out" / "manifest.json").read_text()
    for planted in ("DOE", "JANE", "4711", "slice000"):
        assert planted not in text
    assert "<file:" in text and "inputs_redacted" in text
