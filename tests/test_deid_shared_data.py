"""The basic profile over ../shared/data/deid_data_phi (pydicom/deid's fake-PHI files).

The PHI values are read from each original file (never typed here), then the written output
bytes are searched for them.
"""

from __future__ import annotations

import io
import warnings

import pydicom
import pytest

from medflow.deid import DeidConfig, deidentify

pytestmark = pytest.mark.shared_data

KEY = b"shared-data-key-0123456789abcdef"
IDENTIFYING = (
    "PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "OtherPatientNames", "PatientAddress",
    "InstitutionName", "InstitutionAddress", "AccessionNumber", "ReferringPhysicianName", "OperatorsName",
    "PerformingPhysicianName", "StudyDate", "SeriesDate", "StudyID", "StationName", "DeviceSerialNumber",
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID",
)


def _originals(shared_data):
    files = sorted((shared_data / "deid_data_phi").rglob("*.dcm"))
    assert len(files) == 10, files
    return files


def _values(ds) -> set[str]:
    found = set()
    for keyword in IDENTIFYING:
        value = ds.get(keyword)
        if value is None:
            continue
        values = value if isinstance(value, pydicom.multival.MultiValue) else [value]
        for v in values:
            text = str(v).strip()
            # "REMOVED"-style placeholders and very short values are not identifying here
            if len(text) >= 4 and text.upper() not in {"ANONYMOUS", "REMOVED"}:
                found.add(text)
                found.update(part for part in text.split("^") if len(part) >= 4)
    return found


def test_no_original_phi_value_in_output(shared_data):
    checked = 0
    for path in _originals(shared_data):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # one file has an over-long LO (see SOURCES.md)
            ds = pydicom.dcmread(path)
            values = _values(ds)
            result = deidentify(ds, DeidConfig(), KEY)
            buf = io.BytesIO()
            result.dataset.save_as(buf, enforce_file_format=True)
        data = buf.getvalue()
        assert values, path
        for value in values:
            for form in {value.encode("utf-8"), value.encode("latin-1", "ignore")}:
                assert form not in data, (path.name, value)
            checked += 1
        back = pydicom.dcmread(io.BytesIO(data))
        assert back.PixelData == ds.PixelData, path.name  # JPEG Baseline bytes untouched
        assert back.Rows == ds.Rows and back.Columns == ds.Columns
        assert not any(elem.tag.is_private for elem in back.iterall()), path.name
        assert result.burned_in_risk, path.name  # secondary captures and a US with burned-in text
    assert checked > 50


def test_private_elements_counted_in_audit(shared_data):
    path = shared_data / "deid_data_phi" / "humans" / "ctbrain1.dcm"
    ds = pydicom.dcmread(path)
    n_private = sum(1 for elem in ds if elem.tag.is_private)
    result = deidentify(ds, DeidConfig(), KEY)
    removed = [r for r in result.audit if r.action == "X" and int(r.tag[1:5], 16) & 1]
    assert n_private > 40 and len(removed) >= n_private
