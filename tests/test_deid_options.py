"""One test per PS3.15 Annex E option: each does what the standard's option says (E.3.1-E.3.11)."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medflow.deid import DeidConfig, deidentify

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deid_corpus import STUDY_DATES, build_corpus  # noqa: E402

KEY = b"options-test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_corpus(tmp_path_factory.mktemp("phi-options"))


def _first(corpus, modality: str, patient: int = 0, study: int = 0):
    pid = corpus.files[0].patient.patient_id if patient == 0 else None
    for f in corpus.files:
        if f.modality == modality and f.study_index == study and (pid is None or f.patient.patient_id == pid):
            return f, pydicom.dcmread(f.path)
    raise LookupError(modality)


def _run(ds, *options, **kwargs):
    return deidentify(ds, DeidConfig(options=set(options), **kwargs), KEY)


def _codes(result) -> list[str]:
    return [item.CodeValue for item in result.dataset.DeidentificationMethodCodeSequence]


def test_retain_safe_private(corpus):
    # E.3.10: private attributes known safe (Table E.3.10-1) are kept with their creator; others go.
    _, ds = _first(corpus, "CT")
    out = _run(ds, "retain-safe-private").dataset
    assert out[0x00190010].value == "GEMS_ACQU_01"
    assert out[0x00191023].value == "12.5"
    assert 0x00191030 not in out  # same block, not listed as safe
    assert 0x00090010 not in out and 0x00091001 not in out and 0x00091002 not in out
    assert "113111" in _codes(_run(ds, "retain-safe-private"))
    assert 0x00191023 not in _run(ds).dataset  # basic profile: every private attribute removed


def test_retain_uids(corpus):
    # E.3.9: UIDs are kept (no U action), including references in sequences and the file meta.
    f, ds = _first(corpus, "CT-ENH")
    out = _run(ds, "retain-uids").dataset
    assert out.SOPInstanceUID == ds.SOPInstanceUID
    assert out.StudyInstanceUID == ds.StudyInstanceUID
    assert out.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    ref = out.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == f.referenced_sop_instance_uid
    assert "113110" in _codes(_run(ds, "retain-uids"))
    assert _run(ds).dataset.SOPInstanceUID.startswith("2.25.")


def test_retain_device_identity(corpus):
    # E.3.3: device identifiers (serial number, station name) are kept.
    _, ds = _first(corpus, "CT")
    out = _run(ds, "retain-device-identity").dataset
    assert out.DeviceSerialNumber == ds.DeviceSerialNumber
    assert out.StationName == ds.StationName
    assert out.InstitutionName != ds.InstitutionName
    assert _run(ds).dataset.DeviceSerialNumber != ds.DeviceSerialNumber


def test_retain_institution_identity(corpus):
    # E.3.11: institution name and address are kept.
    _, ds = _first(corpus, "CT")
    out = _run(ds, "retain-institution-identity").dataset
    assert out.InstitutionName == ds.InstitutionName
    # The corpus plants the patient's home address as InstitutionAddress too: kept text is still
    # scrubbed of the patient's identity, so that value goes; a distinct institution address stays.
    assert out.InstitutionAddress == "ANONYMIZED"
    distinct = ds.copy()
    distinct.InstitutionAddress = "1 Hospital Plaza"
    assert _run(distinct, "retain-institution-identity").dataset.InstitutionAddress == "1 Hospital Plaza"
    assert _run(ds).dataset.InstitutionName != ds.InstitutionName
    assert "InstitutionAddress" not in _run(ds).dataset


def test_retain_patient_characteristics(corpus):
    # E.3.4: sex, age, size, weight are kept; identity is not.
    _, ds = _first(corpus, "MR")
    out = _run(ds, "retain-patient-characteristics").dataset
    for keyword in ("PatientSex", "PatientAge", "PatientSize", "PatientWeight"):
        assert out[keyword].value == ds[keyword].value, keyword
    assert out.PatientBirthDate == ""
    basic = _run(ds).dataset
    assert basic.PatientSex == "" and "PatientAge" not in basic and "PatientWeight" not in basic


def test_retain_longitudinal_full_dates(corpus):
    # E.3.6: dates and times kept unmodified; (0028,0303) = UNMODIFIED.
    _, ds = _first(corpus, "CT")
    out = _run(ds, "retain-longitudinal-full-dates").dataset
    assert out.StudyDate == ds.StudyDate and out.StudyTime == ds.StudyTime
    assert out.AcquisitionDateTime == ds.AcquisitionDateTime
    assert out.LongitudinalTemporalInformationModified == "UNMODIFIED"
    assert out.PatientBirthDate == ""  # birth date is not longitudinal information
    basic = _run(ds).dataset
    assert basic.StudyDate == "" and basic.LongitudinalTemporalInformationModified == "REMOVED"


def _date(text: str) -> dt.date:
    return dt.datetime.strptime(text, "%Y%m%d").date()


def test_retain_longitudinal_modified_dates(corpus):
    # E.3.6: dates and times moved by one keyed offset per patient, intervals kept; (0028,0303) = MODIFIED.
    pid = corpus.files[0].patient.patient_id
    files = [f for f in corpus.files if f.patient.patient_id == pid]
    results = [(f, _run(pydicom.dcmread(f.path), "retain-longitudinal-modified-dates")) for f in files]
    offsets = {(r.date_offset_days, r.time_offset_seconds) for _, r in results}
    assert len(offsets) == 1
    offset, seconds = offsets.pop()
    assert offset != 0 and -365 <= offset <= 365
    assert offset * 86400 <= seconds < (offset + 1) * 86400
    for f, r in results:
        out = r.dataset
        study = dt.datetime.strptime(STUDY_DATES[f.study_index] + "081522", "%Y%m%d%H%M%S")
        moved = dt.datetime.strptime(out.StudyDate + out.StudyTime, "%Y%m%d%H%M%S")
        assert moved - study == dt.timedelta(seconds=seconds)  # StudyDate + StudyTime move together
        acquired = dt.datetime.strptime(STUDY_DATES[f.study_index] + "081530.250000", "%Y%m%d%H%M%S.%f")
        assert dt.datetime.strptime(out.AcquisitionDateTime, "%Y%m%d%H%M%S.%f") - acquired == dt.timedelta(
            seconds=seconds)
        assert out.LongitudinalTemporalInformationModified == "MODIFIED"
        assert out.PatientBirthDate == ""
        assert "113107" in _codes(r)
    by_study = {f.study_index: _date(r.dataset.StudyDate) for f, r in results}
    assert by_study[1] - by_study[0] == _date(STUDY_DATES[1]) - _date(STUDY_DATES[0])
    other = next(f for f in corpus.files if f.patient.patient_id != pid)
    assert _run(pydicom.dcmread(other.path), "retain-longitudinal-modified-dates").date_offset_days != offset


def test_clean_descriptors(corpus):
    # E.3.5: descriptions are kept but cleaned of identifying information.
    f, ds = _first(corpus, "CT")
    out = _run(ds, "clean-descriptors").dataset
    name = f.patient.name
    for keyword in ("StudyDescription", "SeriesDescription", "ImageComments"):
        text = str(out[keyword].value)
        assert f.patient.patient_id not in text and name.split("^")[0].lower() not in text.lower(), keyword
    assert out.StudyDescription.startswith("CT follow-up for")
    assert "StudyDescription" not in _run(ds).dataset


def test_clean_structured_content(corpus):
    # E.3.7: content items kept, identifying text cleaned; basic profile empties Content Sequence.
    f, ds = _first(corpus, "MR")
    out = _run(ds, "clean-structured-content").dataset
    container = out.ContentSequence[0]
    text = container.ContentSequence[0].TextValue
    assert "nodule 4 mm" in text
    assert f.patient.patient_id not in text and "QUIXOTERRA" not in text.upper()
    assert str(container.ContentSequence[1].PersonName) == "ANONYMIZED^"  # (0040,A123) is D
    # basic: the content tree stays (Type 1 values), every value a dummy
    basic = _run(ds).dataset.ContentSequence[0].ContentSequence
    assert basic[0].TextValue == "ANONYMIZED" and str(basic[1].PersonName) == "ANONYMIZED^"


def test_clean_graphics(corpus):
    # E.3.8: overlays, curves and graphic annotations kept, their text cleaned.
    f, ds = _first(corpus, "CT")
    out = _run(ds, "clean-graphics")
    o = out.dataset
    assert o[0x60003000].value == ds[0x60003000].value
    assert o[0x60000010].value == 16
    assert f.patient.patient_id not in o[0x60001500].value
    assert "QUIXOTERRA" not in o[0x60004000].value.upper()
    assert "QUIXOTERRA" not in o[0x50002500].value.upper()
    assert any("overlay bitmaps" in note for note in out.notes)
    basic = _run(ds).dataset
    assert not any(0x6000 <= g <= 0x601E or 0x5000 <= g <= 0x501E for g in {e.tag.group for e in basic})
    _, mr = _first(corpus, "MR")
    kept = _run(mr, "clean-graphics").dataset.GraphicAnnotationSequence[0].TextObjectSequence[0]
    assert "QUIXOTERRA" not in kept.UnformattedTextValue.upper()
    basic_text = _run(mr).dataset.GraphicAnnotationSequence[0].TextObjectSequence[0]
    assert basic_text.UnformattedTextValue == "ANONYMIZED"  # (0070,0006) is D; the item stays


def test_clean_pixel_data_masks_given_regions(corpus):
    # E.3.1: medflow masks only the regions a person gives, on uncompressed pixel data.
    _, ds = _first(corpus, "CT-ENH")
    region = (2, 3, 5, 4)
    result = _run(ds, "clean-pixel-data", mask_regions=(region,))
    assert result.pixels_masked and "113101" in _codes(result)
    before = np.frombuffer(ds.PixelData, "<u2").reshape(3, 16, 20)
    after = np.frombuffer(result.dataset.PixelData, "<u2").reshape(3, 16, 20)
    x, y, w, h = region
    assert (after[:, y : y + h, x : x + w] == 0).all()
    outside = np.ones(before.shape, bool)
    outside[:, y : y + h, x : x + w] = False
    assert (after[outside] == before[outside]).all()
    assert np.frombuffer(ds.PixelData, "<u2").reshape(3, 16, 20)[0, y, x] == before[0, y, x]


def test_clean_pixel_data_says_what_it_cannot_do(corpus):
    _, cr = _first(corpus, "CR")  # JPEG Baseline: not re-encoded
    result = _run(cr, "clean-pixel-data", mask_regions=((0, 0, 4, 4),))
    assert result.dataset.PixelData == cr.PixelData and not result.pixels_masked
    assert any("compressed" in note and "NOT applied" in note for note in result.notes)
    assert "113101" not in _codes(result)
    _, ct = _first(corpus, "CT")
    no_regions = _run(ct, "clean-pixel-data")
    assert no_regions.dataset.PixelData == ct.PixelData
    assert any("reviewed by a person" in note for note in no_regions.notes)


def test_clean_recognizable_visual_features(corpus):
    # E.3.2: same masking mechanism; face detection is not automatic and the result says so.
    _, ds = _first(corpus, "CT")
    result = _run(ds, "clean-recognizable-visual-features", mask_regions=((0, 0, 20, 2),))
    assert result.pixels_masked and "113102" in _codes(result)
    assert np.frombuffer(result.dataset.PixelData, "<u2").reshape(16, 20)[:2].max() == 0
    assert any("not detected" in note for note in result.notes)


def test_options_compose_and_are_all_recorded(corpus):
    _, ds = _first(corpus, "CT")
    options = {"retain-uids", "retain-device-identity", "retain-institution-identity",
               "retain-patient-characteristics", "retain-longitudinal-modified-dates", "clean-descriptors",
               "clean-structured-content", "clean-graphics", "retain-safe-private"}
    result = _run(ds, *options)
    assert sorted(_codes(result)) == sorted(
        ["113100", "113110", "113109", "113112", "113108", "113107", "113105", "113104", "113103", "113111"]
    )
    out = result.dataset
    assert out.SOPInstanceUID == ds.SOPInstanceUID and out.InstitutionName == ds.InstitutionName
    assert set(result.dataset.DeidentificationMethod[2:]) == options
