"""The walker's memo (medflow.deid.walkmemo) changes nothing but the time: same bytes, same audit.

A warm memo (the same files de-identified before, in another order) must give exactly what a
cold one gives, and an outcome must never travel from one patient to another: identical element
bytes in files of different patients (a name in a free-text value or in a code sequence, a time
moved by each patient's own offset) give each patient's own result. The reference is the same
code with the memo emptied before every file (and, for one corpus, pydicom's conversion of every
element, ``convert_all``, which does not use the memo at all).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset, Sequence
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from medflow.deid import DeidConfig, deidentify, phi, walkmemo
from medflow.deid.encode import encode_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deid_corpus import build_corpus  # noqa: E402

KEY = b"memo-test-key-0123456789abcdef!!"
CONFIGS = {
    "basic": DeidConfig(),
    "dates-text": DeidConfig(options={"retain-longitudinal-modified-dates", "clean-descriptors",
                                      "clean-structured-content", "clean-graphics", "retain-safe-private"}),
    "keep-rules": DeidConfig(options={"retain-longitudinal-full-dates", "retain-uids", "retain-device-identity"},
                             rules={"keep": ["StudyDescription"], "replace": {"InstitutionName": "SITE"}}),
}


def _forget() -> None:
    walkmemo.forget_all()
    phi._CONTRIBUTIONS.clear()
    phi._IDENTITIES.clear()


def _written(data: bytes, config: DeidConfig, *, convert_all: bool = False) -> tuple[bytes, str]:
    result = deidentify(pydicom.dcmread(io.BytesIO(data)), config, KEY, convert_all=convert_all)
    return encode_file(result.dataset, result.element_bytes), result.audit_jsonl()


@pytest.fixture(scope="module")
def corpus_bytes(tmp_path_factory) -> list[bytes]:
    corpus = build_corpus(tmp_path_factory.mktemp("memo") / "corpus")
    return [f.path.read_bytes() for f in corpus.files]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_warm_memo_gives_what_a_cold_one_gives(corpus_bytes, name):
    config = CONFIGS[name]
    cold = []
    for data in corpus_bytes:
        _forget()
        cold.append(_written(data, config))
    _forget()
    for data in corpus_bytes:  # fills the memo
        _written(data, config)
    warm = [_written(data, config) for data in reversed(corpus_bytes)]
    assert warm[::-1] == cold
    if name == "basic":  # and both are what converting every element with pydicom gives
        assert cold == [_written(data, config, convert_all=True) for data in corpus_bytes]


def _file(name: str, patient_id: str, text: str) -> bytes:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = f"1.2.826.0.1.3680043.2.1125.{patient_id}.1"
    ds.StudyInstanceUID = f"1.2.826.0.1.3680043.2.1125.{patient_id}.2"
    ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.2.1125.{patient_id}.3"
    ds.Modality = "CT"
    ds.PatientName = name
    ds.PatientID = patient_id
    ds.StudyDate = "20200611"
    ds.AcquisitionDateTime = "20200611081530"
    ds.StudyTime = "081522"
    ds.ManufacturerModelName = text  # not in Table E.1-1: kept, scrubbed of the file's own identity
    code = Dataset()
    code.CodeValue = "P1"
    code.CodingSchemeDesignator = "99LOCAL"
    code.CodeMeaning = text
    ds.ProcedureCodeSequence = Sequence([code])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_identical_bytes_of_two_patients_get_each_patients_own_outcome(name):
    config = CONFIGS[name]
    text = "SCANNER QUIXOTERRA"  # the first patient's family name, nobody's in the second file
    first = _file("QUIXOTERRA^ZEBEDIAH", "98765432", text)
    second = _file("MULLERSTRAND^JORGINA", "55501234", text)
    _forget()
    alone = _written(second, config)
    _forget()
    _written(first, config)
    after_first = _written(second, config)
    assert after_first == alone
    out_first = pydicom.dcmread(io.BytesIO(_written(first, config)[0]))
    out_second = pydicom.dcmread(io.BytesIO(after_first[0]))
    # the test proves something: the same input bytes have different outcomes for the two patients
    assert "QUIXOTERRA" not in out_first.ManufacturerModelName
    assert out_second.ManufacturerModelName == text
    assert "QUIXOTERRA" not in out_first.ProcedureCodeSequence[0].CodeMeaning
    assert out_second.ProcedureCodeSequence[0].CodeMeaning == text
    if "retain-longitudinal-modified-dates" in config.options:  # each patient's own offset
        assert out_first.AcquisitionDateTime != out_second.AcquisitionDateTime
        assert out_first.StudyTime != out_second.StudyTime


def test_the_memo_keeps_a_bounded_number_of_value_bytes():
    memo = walkmemo.WalkMemo()
    token = memo.token(("file",))
    value = b"x" * 60000  # a sequence of unique references, say, in every file
    for i in range(2 * walkmemo.MAX_BYTES // len(value)):
        memo.store((token, 0x00081140, "SQ", len(value), value + i.to_bytes(4, "big"), False, True),
                   (walkmemo.REMOVED, None, (), {}))
        kept = sum(len(key[4]) for key in memo.outcomes)
        assert kept <= walkmemo.MAX_BYTES + len(value) + 4
    assert memo.outcomes  # it starts afresh, it does not stop memoizing
