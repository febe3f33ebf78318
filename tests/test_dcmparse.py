"""``read_file_bytes`` gives the dataset ``pydicom.dcmread`` gives, element by element and attribute by attribute.

The reference is pydicom's own reader on the same bytes: pydicom's bundled test files (implicit
and explicit VR, big endian, deflated, compressed, undefined-length sequences, files without
meta...) and the project's generated PHI corpora, plus truncated and damaged copies.
"""

from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import RawDataElement

from medflow.sources import dcmparse
from medflow.sources.dcmparse import read_file_bytes

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deid_corpus import build_corpus  # noqa: E402

BUNDLED = sorted((Path(pydicom.__file__).parent / "data" / "test_files").glob("*.dcm"))


def _state(ds) -> dict:
    """Everything a Dataset holds: attributes, and each element as a comparable tuple."""
    out = {}
    for name, value in ds.__dict__.items():
        if name == "_dict":
            out[name] = [(type(k).__name__, int(k), _element(e)) for k, e in value.items()]
            out["keys are the elements' tags"] = all(k is e.tag for k, e in value.items())
        elif name == "file_meta":
            out[name] = _state(value)
        elif name == "buffer":
            out[name] = (type(value).__name__, value.getvalue(), value.tell())
        else:
            out[name] = value
    return out


def _element(elem) -> tuple:
    if type(elem) is RawDataElement:
        return ("raw", *elem)
    value = [_state(item) for item in elem.value] if elem.VR == "SQ" else elem.value
    return ("elem", elem.tag, elem.VR, value, elem.file_tell, elem.is_undefined_length, elem.validation_mode)


def _same_as_pydicom(data: bytes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            expected = pydicom.dcmread(io.BytesIO(data))
        except Exception as exc:  # noqa: BLE001 - whatever pydicom raises, read_file_bytes raises too
            with pytest.raises(type(exc)):
                read_file_bytes(data)
            return
        got = read_file_bytes(data)
    assert type(got) is type(expected)
    assert _state(got) == _state(expected)


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.name)
def test_pydicoms_test_files_read_the_same(path):
    _same_as_pydicom(path.read_bytes())


def test_the_phi_corpus_reads_the_same_and_mostly_through_the_fast_loop(tmp_path):
    corpus = build_corpus(tmp_path / "corpus")
    fast = 0
    for item in corpus.files:
        data = item.path.read_bytes()
        _same_as_pydicom(data)
        try:
            dcmparse._read(data)
            fast += 1
        except dcmparse._Declined:
            pass
    assert fast >= len(corpus.files) - 2  # the point of the module: the common files take the fast loop


def test_damaged_files_read_the_same(tmp_path):
    corpus = build_corpus(tmp_path / "corpus")
    data = corpus.files[0].path.read_bytes()
    for cut in (100, 131, 140, 300, 700, len(data) // 2, len(data) - 3, len(data) - 1):
        _same_as_pydicom(data[:cut])
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF  # a broken tag, VR or length somewhere in the data set
    _same_as_pydicom(bytes(flipped))
    _same_as_pydicom(data + b"\x00\x00\x00")  # trailing bytes shorter than a header
