"""The basic profile over the generated PHI corpus: no planted byte survives, pixels and relations do."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pydicom
import pytest

from medflow.deid import DeidConfig, deidentify

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deid_corpus import build_corpus, encodings  # noqa: E402

KEY = b"corpus-test-key-0123456789abcdef"
PREPROCESSING = (
    "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "RescaleSlope",
    "RescaleIntercept", "WindowCenter", "WindowWidth", "ImagePositionPatient", "ImageOrientationPatient",
    "PixelSpacing", "SliceThickness", "Modality", "PhotometricInterpretation", "SamplesPerPixel",
    "NumberOfFrames", "SharedFunctionalGroupsSequence",
)


def _save(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_corpus(tmp_path_factory.mktemp("phi"))


@pytest.fixture(scope="module")
def outputs(corpus):
    """(corpus file, input dataset, result, written bytes) for every file, basic profile."""
    out = []
    for f in corpus.files:
        ds = pydicom.dcmread(f.path)
        result = deidentify(ds, DeidConfig(), KEY)
        out.append((f, ds, result, _save(result.dataset)))
    return out


def test_corpus_has_the_promised_shape(corpus):
    modalities = {f.modality for f in corpus.files}
    assert modalities == {"CT", "MR", "CR", "CT-ENH"}
    assert len({f.patient.patient_id for f in corpus.files}) == 3
    assert len({f.study_uid for f in corpus.files}) == 6
    # planted values really are in the inputs (otherwise the scan below proves nothing)
    everything = b"".join(f.path.read_bytes() for f in corpus.files)
    for value in corpus.planted:
        assert any(form in everything for form in encodings(value)), value


def test_no_planted_value_in_output_bytes(corpus, outputs):
    leaks = [
        (f.path.name, value)
        for f, _, _, data in outputs
        for value in corpus.planted
        for form in encodings(value)
        if form in data
    ]
    assert leaks == []


def test_no_planted_value_after_reading_back_and_decoding(corpus, outputs):
    # Decode every text value of the written file (any charset) and look for the strings too.
    for f, _, _, data in outputs:
        back = pydicom.dcmread(io.BytesIO(data))
        joined = "\n".join(str(e.value) for e in back.iterall() if e.VR != "SQ").lower()
        for value in corpus.planted:
            assert value.lower() not in joined, (f.path.name, value)


def test_pixel_data_byte_identical(outputs):
    for f, ds, _, data in outputs:
        back = pydicom.dcmread(io.BytesIO(data))
        assert back.PixelData == ds.PixelData, f.path.name
        assert back.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID


def test_preprocessing_attributes_kept(outputs):
    for f, ds, result, _ in outputs:
        for keyword in PREPROCESSING:
            if keyword in ds:
                assert result.dataset[keyword].value == ds[keyword].value, (f.path.name, keyword)


def test_referential_integrity(outputs):
    new_uid = {f.sop_instance_uid: r.dataset.SOPInstanceUID for f, _, r, _ in outputs}
    for f, _, _r, data in outputs:
        back = pydicom.dcmread(io.BytesIO(data))
        assert back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID
        if f.modality == "CT" and f.referenced_sop_instance_uid:
            ref = back.ReferencedImageSequence[0].ReferencedSOPInstanceUID
            assert ref == new_uid[f.referenced_sop_instance_uid]
        if f.modality == "CT-ENH":
            for frame in back.PerFrameFunctionalGroupsSequence:
                source = frame.DerivationImageSequence[0].SourceImageSequence[0]
                assert source.ReferencedSOPInstanceUID == new_uid[f.referenced_sop_instance_uid]
                assert source.ReferencedSOPClassUID == pydicom.uid.CTImageStorage
    # files of one study share the new StudyInstanceUID and FrameOfReferenceUID, studies differ
    by_study: dict[str, set[tuple[str, str]]] = {}
    for f, _, r, _ in outputs:
        by_study.setdefault(f.study_uid, set()).add((r.dataset.StudyInstanceUID, r.dataset.FrameOfReferenceUID))
    assert all(len(v) == 1 for v in by_study.values())
    assert len({next(iter(v)) for v in by_study.values()}) == len(by_study)


def test_same_patient_same_pseudonym_across_files(outputs):
    by_patient: dict[str, set[str]] = {}
    for f, _, r, _ in outputs:
        by_patient.setdefault(f.patient.patient_id, set()).add(str(r.dataset.PatientID))
        assert str(r.dataset.PatientName) == str(r.dataset.PatientID)
    assert all(len(v) == 1 for v in by_patient.values())
    assert len({next(iter(v)) for v in by_patient.values()}) == 3


def test_two_runs_same_key_identical_bytes(corpus, outputs):
    for f, _, _, data in outputs[:6]:
        again = deidentify(pydicom.dcmread(f.path), DeidConfig(), KEY)
        assert _save(again.dataset) == data


def test_other_key_other_pseudonyms(corpus, outputs):
    f, ds, result, _ = outputs[0]
    other = deidentify(ds, DeidConfig(), b"another-key-0123456789abcdefghij")
    assert other.dataset.SOPInstanceUID != result.dataset.SOPInstanceUID
    assert other.dataset.PatientID != result.dataset.PatientID


def test_input_dataset_not_mutated(corpus):
    f = corpus.files[0]
    ds = pydicom.dcmread(f.path)
    before = _save(ds)
    deidentify(ds, DeidConfig(options={"clean-graphics", "retain-longitudinal-modified-dates"}), KEY)
    assert _save(ds) == before


def test_stamps_of_the_basic_profile(outputs):
    for _, _, r, _ in outputs:
        out = r.dataset
        assert out.PatientIdentityRemoved == "YES"
        assert out.LongitudinalTemporalInformationModified == "REMOVED"
        assert out.DeidentificationMethod[0].startswith("medflow ")
        assert all(len(value) <= 64 for value in out.DeidentificationMethod)  # LO, PS3.5 6.2
        codes = [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
        assert codes == ["113100"]
        assert all(item.CodingSchemeDesignator == "DCM" for item in out.DeidentificationMethodCodeSequence)


def test_private_overlay_curve_and_meta_removed(outputs):
    for f, _, _r, data in outputs:
        back = pydicom.dcmread(io.BytesIO(data))
        assert not any(elem.tag.is_private for elem in back.iterall()), f.path.name
        groups = {elem.tag.group for elem in back}
        assert not {g for g in groups if 0x5000 <= g <= 0x501E or 0x6000 <= g <= 0x601E}, f.path.name
        assert "SourceApplicationEntityTitle" not in back.file_meta


def test_audit_never_holds_values(corpus, outputs):
    for _, _, r, _ in outputs:
        text = repr([rec.as_dict() for rec in r.audit])
        for value in corpus.planted:
            assert value not in text
        paths = {rec.path for rec in r.audit}
        assert "PatientName" in paths and "file_meta.MediaStorageSOPInstanceUID" in paths


def test_audit_nested_path_and_keyed_hash(outputs):
    import hashlib
    import hmac

    f, ds, r, _ = next(o for o in outputs if o[0].modality == "CT-ENH")
    path = "PerFrameFunctionalGroupsSequence[1].DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID"
    record = next(rec for rec in r.audit if rec.path == path)
    assert record.tag == "(0008,1155)" and record.action == "U" and record.applied == "uid"
    expected = hmac.new(KEY, b"audit\x00" + f.referenced_sop_instance_uid.encode(), hashlib.sha256).hexdigest()[:16]
    assert record.old_hash == expected
