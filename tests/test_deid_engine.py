"""Engine behaviour beyond the options: recipe rules, config validation, unlisted attributes,
burned-in risk and policy, dry-run plan."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from pydicom import Dataset, Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from medflow.deid import (
    BurnedInTextError,
    DeidConfig,
    apply_burned_in_policy,
    burned_in_risk,
    deidentify,
    plan_deidentification,
)

KEY = b"engine-test-key-0123456789abcdef"


def _ds(**extra) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.2.1125.777.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.2.1125.777"
    ds.Modality = "CT"
    ds.PatientName = "VANTERPOOL^GWENDOLYN"
    ds.PatientID = "MRN777"
    ds.InstitutionName = "NORTH SHORE CLINIC"
    ds.StudyDescription = "HEAD for VANTERPOOL"
    ds.BodyPartExamined = "HEAD"
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    return ds


def test_rule_keep_overrides_profile():
    cfg = DeidConfig(rules={"keep": ["StudyDescription", "SOPInstanceUID"]})
    result = deidentify(_ds(), cfg, KEY)
    out = result.dataset
    assert out.StudyDescription == "HEAD for VANTERPOOL"
    assert out.SOPInstanceUID == "1.2.826.0.1.3680043.2.1125.777.1"
    assert any(r.keyword == "StudyDescription" and r.action == "rule:keep" for r in result.audit)


def test_rule_replace_everywhere_and_added_when_absent():
    ds = _ds()
    item = Dataset()
    item.InstitutionName = "NORTH SHORE CLINIC"
    ds.ReferencedPatientPhotoSequence = Sequence([item])  # X in the table: removed anyway
    ds.ContributingEquipmentSequence = Sequence([Dataset()])
    ds.ContributingEquipmentSequence[0].InstitutionName = "NORTH SHORE CLINIC"
    out = deidentify(ds, DeidConfig(rules={"replace": {"InstitutionName": "SITE-A", "StationName": "ST1"}}), KEY).dataset
    assert out.InstitutionName == "SITE-A"
    assert out.ContributingEquipmentSequence[0].InstitutionName == "SITE-A"
    assert out.StationName == "ST1"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"rules": {"keep": ["InstitutionNam"]}}, "did you mean 'InstitutionName'"),
        ({"rules": {"replace": {"PatientsName": "x"}}}, "not a DICOM keyword"),
        ({"rules": {"keep": ["PatientID"], "replace": {"PatientID": "x"}}}, "both kept and replaced"),
        ({"options": ["retain-uid"]}, "did you mean 'retain-uids'"),
        ({"options": ["retain-longitudinal-full-dates", "retain-longitudinal-modified-dates"]}, "exclude each other"),
        ({"mask_regions": [(0, 0, 0, 5)]}, "w, h > 0"),
        ({"burned_in": "ignore"}, "quarantine"),
        ({"profile": "strict"}, "basic"),
        ({"key": "literal"}, "Extra inputs"),
    ],
)
def test_config_errors(config, message):
    with pytest.raises(ValidationError, match=message):
        DeidConfig(**config)


def test_unlisted_attributes_conservative_rules():
    # None of these attributes is in Table E.1-1; medflow's extra rules apply (profile docstring).
    ds = _ds()
    ds.ContributingEquipmentSequence = Sequence([Dataset()])
    ds.ContributingEquipmentSequence[0].Manufacturer = "ACME"
    ds.add_new(0x0008001A, "UI", [CTImageStorage])  # RelatedGeneralSOPClassUID: registered
    ds.add_new(0x00209164 + 0x1000000, "UI", "1.2.826.0.1.3680043.2.1125.777.9")  # (0120,9164) unknown
    ds.add_new(0x0008041F, "DT", "20200105101010")  # StudyUpdateDateTime: unlisted DT
    ds.add_new(0x00140104, "PN", "REVIEWER^RITA")  # SecondaryReviewerName: unlisted PN
    ds.add_new(0x0040A160, "UT", "free text VANTERPOOL")  # TextValue: unlisted UT
    ds.add_new(0x00080064, "CS", "DV")  # ConversionType: unlisted CS
    out = deidentify(ds, DeidConfig(), KEY).dataset
    assert out.SOPClassUID == CTImageStorage
    assert out[0x0008001A].value == CTImageStorage  # registered UID kept
    assert out[0x01209164].value.startswith("2.25.")  # unlisted, unregistered: keyed UID
    assert out[0x0008041F].value == ""  # unlisted DT emptied
    assert out[0x00140104].value == ""  # unlisted PN emptied
    assert 0x0040A160 not in out  # unlisted free text removed
    assert out.ConversionType == "DV" and out.BodyPartExamined == "HEAD"
    assert out.ContributingEquipmentSequence[0].Manufacturer == "ACME"  # sequence visited
    kept = deidentify(ds, DeidConfig(options={"clean-structured-content"}), KEY).dataset
    assert kept[0x0040A160].value == "free text "  # scrubbed of the patient's family name


def test_burned_in_risk_rules():
    assert burned_in_risk(_ds(BurnedInAnnotation="YES")) == (True, "BurnedInAnnotation is YES")
    assert burned_in_risk(_ds(Modality="US"))[0]
    assert burned_in_risk(_ds(SOPClassUID="1.2.840.10008.5.1.4.1.1.7"))[0]
    assert burned_in_risk(_ds(SOPClassUID="1.2.840.10008.5.1.4.1.1.104.1"))[0]
    assert burned_in_risk(_ds()) == (False, "")
    result = deidentify(_ds(Modality="US"), DeidConfig(), KEY)
    assert result.burned_in_risk and "US" in result.burned_in_reason


def test_burned_in_policy():
    assert apply_burned_in_policy(True, "r", "quarantine", "item1") == "quarantine"
    assert apply_burned_in_policy(True, "r", "allow", "item1") == "write"
    assert apply_burned_in_policy(False, "", "fail", "item1") == "write"
    with pytest.raises(BurnedInTextError, match="item1: burned-in text risk"):
        apply_burned_in_policy(True, "modality US", "fail", "item1")


def test_plan_lists_every_action_without_a_key():
    ds = _ds()
    ds.ReferencedImageSequence = Sequence([Dataset()])
    ds.ReferencedImageSequence[0].ReferencedSOPClassUID = CTImageStorage
    ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = "1.2.3.4"
    plan = plan_deidentification(ds, DeidConfig())
    by_path = {path: action for path, _, action in plan}
    assert by_path["PatientName"] == "Z -> pseudonym"
    assert by_path["InstitutionName"] == "X/Z/D -> dummy"
    assert by_path["StudyDescription"] == "X -> remove"
    assert by_path["ReferencedImageSequence[0].ReferencedSOPInstanceUID"] == "U -> uid"
    assert all(len(entry) == 3 for entry in plan)


def test_file_meta_follows_and_preamble_cleared():
    from pydicom.dataset import FileMetaDataset

    ds = _ds()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.SourceApplicationEntityTitle = "NSHORE_CT"
    ds.preamble = b"II*\x00" + b"VANTERPOOL".ljust(124, b"\x00")
    out = deidentify(ds, DeidConfig(), KEY).dataset
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID != ds.SOPInstanceUID
    assert "SourceApplicationEntityTitle" not in out.file_meta
    assert out.preamble == b"\x00" * 128


def test_option_names_match_the_table_and_dump_sorted():
    from typing import get_args

    from medflow.deid.config import OptionName
    from medflow.deid.table import ALL_OPTIONS

    assert set(get_args(OptionName)) == ALL_OPTIONS
    config = DeidConfig(options=["retain-uids", "clean-graphics"])
    assert config.model_dump(mode="json")["options"] == ["clean-graphics", "retain-uids"]
    assert DeidConfig.model_validate(config.model_dump(mode="json")) == config
    with pytest.raises(ValidationError, match="not one string"):
        DeidConfig(options="retain-uids")


def test_scrubber_boundaries():
    # The old actions.Scrubber became medflow.deid.phi.scrub_text; the boundary promises stay.
    from medflow.deid.phi import IdentityValues, scrub_text

    identity = IdentityValues({"patient-name": {"VANTERPOOL^ANN", "AB"}, "patient-id": {"98765432"}})
    assert scrub_text("scanner for Ann, MRN98765432", identity, patterns=False)[0] == "scanner for , MRN"
    assert scrub_text("VANTERPOOL^ANN", identity, patterns=False)[0] == "^"
    assert scrub_text("Abdomen", identity)[0] == "Abdomen"  # short name components: whole words only


def test_audit_jsonl_one_object_per_record():
    import json

    result = deidentify(_ds(), DeidConfig(), KEY)
    lines = result.audit_jsonl().splitlines()
    assert len(lines) == len(result.audit)
    first = json.loads(lines[0])
    assert set(first) == {"tag", "keyword", "path", "action", "applied", "old_hash"}
    assert "VANTERPOOL" not in result.audit_jsonl()


@pytest.mark.parametrize(
    ("value", "days", "expected"),
    [
        ("20200228", 2, "20200301"),  # leap year
        ("20210228", 1, "20210301"),
        ("20200101", -1, "20191231"),
        ("2020", 5, None),  # partial dates cannot be shifted by days
        ("20200230", 1, None),  # invalid
    ],
)
def test_shift_date_golden(value, days, expected):
    from medflow.deid.actions import shift_date

    assert shift_date(value, days) == expected


def test_shift_datetime_keeps_time_and_offset():
    from medflow.deid.actions import shift_datetime

    assert shift_datetime("20191231235959.123+0100", 1) == "20200101235959.123+0100"
    assert shift_datetime("201912", 1) is None


def test_modified_dates_partial_date_is_emptied():
    ds = _ds(StudyDate="20200101", AcquisitionDateTime="2020")
    result = deidentify(ds, DeidConfig(options={"retain-longitudinal-modified-dates"}), KEY)
    assert result.dataset.AcquisitionDateTime == ""
    assert result.dataset.StudyDate != "20200101" and len(result.dataset.StudyDate) == 8
