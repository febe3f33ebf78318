"""medflow.deid.phi: identifying values found in any wording; PHI-like patterns; scrub results.

Every expected string below is written by hand (not produced by the code under test).
"""

from __future__ import annotations

import json
import pickle

import pytest
from pydicom import Dataset, Sequence

from medflow.deid.phi import Finding, IdentityValues, detect_patterns, find_identifiers, scrub_text


def _identity() -> IdentityValues:
    ds = Dataset()
    ds.PatientName = "DOE^JOHN^M"
    ds.PatientID = "12345678"
    ds.PatientBirthDate = "19570314"
    ds.AccessionNumber = "ACC901234"
    ds.StudyDate = "20210305"
    ds.InstitutionName = "SAINT ULRICHSBURG INFIRMARY"
    ds.PatientTelephoneNumbers = "555-0187-4411"
    ds.OtherPatientNames = "LI^BO"
    item = Dataset()
    item.ScheduledPerformingPhysicianName = "ØSTERGÅRD^KJELD"  # depth 1: collected too
    ds.ScheduledProcedureStepSequence = Sequence([item])
    return IdentityValues.from_dataset(ds)


IDENTITY = _identity()


@pytest.mark.parametrize(
    "written",
    ["19570314", "1957-03-14", "1957/03/14", "14/03/1957", "03/14/1957", "14.03.1957", "14-03-1957",
     "14.3.1957", "3/14/1957", "14/03/57", "14031957", "03141957", "14 Mar 1957", "14-Mar-1957",
     "14 March 1957", "March 14, 1957", "Mar 14 1957", "14th March 1957", "1957 Mar 14", "14. März 1957",
     "14 mars 1957"],
)
def test_birth_date_found_in_every_written_form(written):
    text = f"born {written}, seen today"
    cleaned, rules = scrub_text(text, IDENTITY, patterns=False)
    assert cleaned == "born , seen today"
    assert rules == ["identity:birth-date"]


@pytest.mark.parametrize(
    "written",
    ["John Doe", "JOHN DOE", "Doe, John", "DOE^JOHN", "doe john", "J. Doe", "Doe J.", "John M Doe", "Mr Doe"],
)
def test_name_found_in_every_component_order(written):
    cleaned, rules = scrub_text(f"report for {written} today", IDENTITY, patterns=False)
    assert "doe" not in cleaned.lower() and "john" not in cleaned.lower()
    assert rules == ["identity:patient-name"]


def test_short_name_components_only_as_whole_words():
    assert scrub_text("Li Bo", IDENTITY, patterns=False)[0].strip() == ""
    for text in ("Bolus injection", "Lipoma of the liver", "Obliquity", "Abdomen"):
        assert scrub_text(text, IDENTITY, patterns=False) == (text, [])


def test_accented_names_found_without_accents_and_at_depth():
    cleaned, rules = scrub_text("signed Kjeld Ostergard", IDENTITY, patterns=False)
    assert cleaned == "signed  " and rules == ["identity:person-name"]


@pytest.mark.parametrize("written", ["12345678", "12-345-678", "12 345 678", "MRN12345678", "MRN: 1234-5678",
                                     "id 12.34.56.78", "9912345678"])
def test_mrn_found_with_any_separators(written):
    cleaned, rules = scrub_text(f"x {written} y", IDENTITY, patterns=False)
    assert "12345678" not in "".join(ch for ch in cleaned if ch.isdigit())
    assert rules == ["identity:patient-id"]


def test_digit_runs_of_ids_found_alone():
    assert scrub_text("acc 901234 done", IDENTITY, patterns=False) == (" done", ["identity:accession-number"])
    assert scrub_text("ref 901234 done", IDENTITY, patterns=False) == ("ref  done", ["identity:accession-number"])
    assert scrub_text("call 0187 4411", IDENTITY, patterns=False)[1] == ["identity:phone"]
    assert scrub_text("value 123456789", IDENTITY, patterns=False)[0] == "value 9"  # MRN inside a longer number


def test_institution_words_but_not_generic_ones():
    assert scrub_text("sent from Ulrichsburg", IDENTITY, patterns=False) == ("sent from ", ["identity:institution"])
    assert scrub_text("Saint Mary hospital", IDENTITY, patterns=False)[0] == "Saint Mary hospital"


def test_study_date_in_text():
    assert scrub_text("compare 5 March 2021", IDENTITY, patterns=False) == ("compare ", ["identity:date"])


def test_findings_are_positions_in_the_original_text():
    text = "Øy: John Doe"
    findings = find_identifiers(text, IDENTITY)
    assert [(f.rule, text[f.start : f.end]) for f in findings] == [
        ("identity:patient-name", "John"), ("identity:patient-name", "Doe")]
    assert all(isinstance(f, Finding) for f in findings)


@pytest.mark.parametrize(
    ("text", "rule"),
    [("seen 2019-03-14", "pattern:date"), ("seen 14.03.2019", "pattern:date"), ("seen 3 Jan 2020", "pattern:date"),
     ("seen 20190314", "pattern:date"), ("mail jane.roe@example.org", "pattern:email"),
     ("call +49 30 1234567", "pattern:phone"), ("call (030) 778-8990", "pattern:phone"),
     ("number 7654321", "pattern:id"), ("MRN 4711", "pattern:id"), ("case ABC123456", "pattern:id")],
)
def test_patterns_without_any_header(text, rule):
    findings = detect_patterns(text)
    assert [f.rule for f in findings] == [rule]
    cleaned, rules = scrub_text(text, IdentityValues())
    assert rules == [rule] and not any(ch.isdigit() for ch in cleaned) and "@" not in cleaned


@pytest.mark.parametrize("text", ["CT ABDOMEN W/O CONTRAST", "B30f 5.0 mm", "DWI b1000", "T2 TSE 512", "1.25 x 0.7"])
def test_patterns_leave_ordinary_descriptions(text):
    assert detect_patterns(text) == []


def test_scrub_reports_rules_never_values():
    cleaned, rules = scrub_text("John Doe 1957-03-14 MRN 12345678 jd@x.org", IDENTITY)
    assert rules == ["identity:birth-date", "identity:patient-id", "identity:patient-name", "pattern:date",
                     "pattern:email", "pattern:id"]
    assert not any(ch.isdigit() for ch in cleaned)


def test_identity_json_pickle_and_merge():
    again = IdentityValues.from_json(IDENTITY.to_json())
    assert again == IDENTITY and hash(again) == hash(IDENTITY)
    assert pickle.loads(pickle.dumps(IDENTITY)) == IDENTITY
    assert json.loads(IDENTITY.to_json())["categories"]["patient-id"] == ["12345678"]
    other = Dataset()
    other.PatientID = "12345678"
    other.AccessionNumber = "ZZ777111"
    merged = IDENTITY.merge(IdentityValues.from_dataset(other))
    assert merged.values["accession-number"] == {"ACC901234", "ZZ777111"}
    assert scrub_text("acc ZZ777111", merged, patterns=False)[0] == "acc "
    assert scrub_text("acc ZZ777111", IDENTITY, patterns=False)[0] == "acc ZZ777111"
