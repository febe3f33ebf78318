"""The walker: text scrubbed at any depth, overlays, SR values, and dates moved with their times."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

from pydicom import Dataset, Sequence
from pydicom.uid import CTImageStorage

from medflow.deid import DeidConfig, deidentify

KEY = b"walk-test-key-0123456789abcdef01"
MODIFIED = DeidConfig(options={"retain-longitudinal-modified-dates"})


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "99LOCAL", meaning
    return item


def _ds(**extra) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.2.1125.55.1"
    ds.PatientName = "ZWANEVELD^PIETERNELLA"
    ds.PatientID = "40213377"
    ds.PatientBirthDate = "19690811"
    ds.Modality = "CT"
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    return ds


def test_code_meaning_scrubbed_at_depth_three_code_value_kept():
    ds = _ds()
    equivalent = _code("T-D1100", "Head CT Pieternella Zwaneveld 1969-08-11")
    procedure = _code("CTHEAD", "CT head for ZWANEVELD")
    procedure.EquivalentCodeSequence = Sequence([equivalent])
    request = Dataset()
    request.RequestedProcedureCodeSequence = Sequence([procedure])
    ds.ProcedureCodeSequence = Sequence([_code("P1", "Protocol 40213377")])
    ds.RequestAttributesSequence = Sequence([request])
    ds.PerformedProtocolCodeSequence = Sequence([_code("PP", "Routine, seen 11/08/1969")])
    config = DeidConfig(options={"clean-descriptors"})  # keeps RequestAttributesSequence (C)
    result = deidentify(ds, config, KEY)
    out = result.dataset
    deep = out.RequestAttributesSequence[0].RequestedProcedureCodeSequence[0].EquivalentCodeSequence[0]
    assert deep.CodeMeaning == "Head CT   " and deep.CodeValue == "T-D1100"
    assert out.RequestAttributesSequence[0].RequestedProcedureCodeSequence[0].CodeMeaning == "CT head for "
    assert out.ProcedureCodeSequence[0].CodeMeaning == "Protocol "
    assert out.PerformedProtocolCodeSequence[0].CodeMeaning == "Routine, seen "
    path = "RequestAttributesSequence[0].RequestedProcedureCodeSequence[0].EquivalentCodeSequence[0].CodeMeaning"
    record = next(r for r in result.audit if r.path == path)
    assert record.applied == "clean:identity:birth-date+identity:patient-name+pattern:date"
    assert "Zwaneveld" not in result.audit_jsonl() and "1969" not in result.audit_jsonl()


def test_overlay_and_graphic_text_scrubbed():
    ds = _ds()
    ds.add_new(0x60000010, "US", 4)
    ds.add_new(0x60000011, "US", 4)
    ds.add_new(0x60000022, "LO", "Overlay of Zwaneveld")
    ds.add_new(0x60001500, "LO", "MRN 40213377")
    ds.add_new(0x60003000, "OW", b"\x00\x00")
    ds.add_new(0x60004000, "LT", "drawn 2020-02-01 for Pieternella")
    text = Dataset()
    text.UnformattedTextValue = "Pieternella, 40213377"
    annotation = Dataset()
    annotation.GraphicLayer = "L1"
    annotation.TextObjectSequence = Sequence([text])
    ds.GraphicAnnotationSequence = Sequence([annotation])
    out = deidentify(ds, DeidConfig(options={"clean-graphics"}), KEY).dataset
    assert out[0x60000022].value == "Overlay of "
    assert out[0x60001500].value == "ANONYMIZED"  # all of it was identifying: a dummy, the label stays
    assert out[0x60004000].value == "drawn  for "
    assert out.GraphicAnnotationSequence[0].TextObjectSequence[0].UnformattedTextValue == "ANONYMIZED"


def test_kept_unlisted_text_scrubbed_everywhere():
    ds = _ds(Manufacturer="ACME", ManufacturerModelName="Scanner of Zwaneveld")
    out = deidentify(ds, DeidConfig(), KEY).dataset
    assert out.Manufacturer == "ACME" and out.ManufacturerModelName == "Scanner of "


def test_basic_profile_still_removes_x_descriptors():
    ds = _ds(SeriesDescription="AXIAL", ImageComments="nothing", StudyDescription="HEAD")
    out = deidentify(ds, DeidConfig(), KEY).dataset
    assert "SeriesDescription" not in out and "ImageComments" not in out and "StudyDescription" not in out


def _moved(date: str, time: str) -> dt.datetime:
    return dt.datetime.strptime(date + time, "%Y%m%d%H%M%S")


def _expected_offset(patient_id: str) -> int:
    """days * 86400 + seconds, recomputed from the formula in medflow.deid.pseudonyms."""
    def mac(label: bytes) -> int:
        return int.from_bytes(hmac.new(KEY, label + b"\x00" + patient_id.encode(), hashlib.sha256).digest()[:8], "big")

    n = mac(b"date-offset") % 730
    days = n - 365 if n < 365 else n - 364
    return days * 86400 + mac(b"time-offset") % 86400


def test_interval_between_two_series_preserved_to_the_second():
    first = _ds(StudyDate="20200102", StudyTime="081500", SeriesDate="20200102", SeriesTime="081700",
                AcquisitionDateTime="20200102081712")
    second = _ds(StudyDate="20200102", StudyTime="081500", SeriesDate="20200103", SeriesTime="003005",
                 AcquisitionDateTime="20200103003010.5")
    a, b = (deidentify(x, MODIFIED, KEY) for x in (first, second))
    offset = dt.timedelta(seconds=_expected_offset("40213377"))
    assert a.time_offset_seconds == b.time_offset_seconds == offset.total_seconds()
    for src, res in ((first, a), (second, b)):
        out = res.dataset
        assert _moved(out.SeriesDate, out.SeriesTime) - _moved(src.SeriesDate, src.SeriesTime) == offset
        assert _moved(out.StudyDate, out.StudyTime) - _moved(src.StudyDate, src.StudyTime) == offset
    gap = _moved(b.dataset.SeriesDate, b.dataset.SeriesTime) - _moved(a.dataset.SeriesDate, a.dataset.SeriesTime)
    assert gap == dt.timedelta(hours=16, minutes=13, seconds=5)
    assert b.dataset.AcquisitionDateTime.endswith(".5")  # the fraction is kept as written
    acq = dt.datetime.strptime(b.dataset.AcquisitionDateTime, "%Y%m%d%H%M%S.%f")
    assert acq - dt.datetime(2020, 1, 3, 0, 30, 10, 500000) == offset


def test_midnight_carry_moves_the_date_of_the_pair():
    seconds = _expected_offset("40213377") % 86400
    late = (86400 - seconds // 2) % 86400  # a time that crosses midnight when moved
    early = 0  # 00:00:00 never crosses
    hhmmss = [f"{t // 3600:02d}{t % 3600 // 60:02d}{t % 60:02d}" for t in (late, early)]
    out = deidentify(_ds(StudyDate="20200229", StudyTime=hhmmss[0], ContentDate="20200229",
                         ContentTime=hhmmss[1]), MODIFIED, KEY).dataset
    days = _expected_offset("40213377") // 86400
    leap = dt.date(2020, 2, 29)
    assert out.StudyDate == (leap + dt.timedelta(days=days + 1)).strftime("%Y%m%d")  # carried
    assert out.ContentDate == (leap + dt.timedelta(days=days)).strftime("%Y%m%d")
    assert int(out.StudyTime[:2]) * 3600 + int(out.StudyTime[2:4]) * 60 + int(out.StudyTime[4:]) == (
        late + seconds) % 86400


def test_time_without_date_moves_modulo_a_day_and_keeps_precision():
    seconds = _expected_offset("40213377") % 86400
    ds = _ds(InstanceCreationTime="1230")  # HHMM precision, no InstanceCreationDate
    out = deidentify(ds, MODIFIED, KEY).dataset
    moved = (12 * 3600 + 30 * 60 + seconds) % 86400
    assert out.InstanceCreationTime == f"{moved // 3600:02d}{moved % 3600 // 60:02d}"


def test_times_follow_the_profile_without_options_and_stay_with_full_dates():
    ds = _ds(StudyDate="20200102", StudyTime="081500", AcquisitionTime="081700")
    basic = deidentify(ds, DeidConfig(), KEY).dataset
    assert basic.StudyTime == "" and basic.AcquisitionTime == ""  # Z, and X/Z resolved to Z (actions.py)
    full = deidentify(ds, DeidConfig(options={"retain-longitudinal-full-dates"}), KEY).dataset
    assert full.StudyTime == "081500" and full.AcquisitionTime == "081700"
    modified = deidentify(ds, MODIFIED, KEY).dataset
    assert modified.StudyTime != "081500"
