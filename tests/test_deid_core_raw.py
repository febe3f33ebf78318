"""The raw-element path of ``deidentify`` writes the same bytes and audit as pydicom's conversion.

``deidentify(..., convert_all=True)`` converts every element with pydicom before the walker
sees it (the reference); the default path reads raw elements through
:class:`medflow.deid.rawelem.RawView` and keeps unchanged ones raw. For every file of both
generated corpora, their implicit-VR copies and a copy with hand-made non-canonical values, and
several configurations, the written file and the audit JSONL must be byte-identical.
"""

from __future__ import annotations

import io
import random
import struct
import sys
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.uid import ImplicitVRLittleEndian

from medflow.deid import DeidConfig, deidentify
from medflow.deid.rawelem import RawView, encodings_of, view_vr
from medflow.deid.walker import _value_bytes

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deid_corpus import build_corpus  # noqa: E402
from phi_export import build_export  # noqa: E402

KEY = b"raw-path-test-key-0123456789abcdef"
CONFIGS = {
    "basic": {},
    "dates-descriptors": {"options": ["retain-longitudinal-modified-dates", "clean-descriptors"]},
    "retain-all": {"options": ["retain-longitudinal-full-dates", "retain-uids", "retain-safe-private",
                               "retain-device-identity", "retain-institution-identity",
                               "retain-patient-characteristics"]},
    "clean-all": {"options": ["retain-longitudinal-modified-dates", "clean-descriptors", "clean-graphics",
                              "clean-structured-content"],
                  "rules": {"keep": ["StudyDescription"], "replace": {"InstitutionName": "SITE"}}},
}


def _raw(tag: int, vr: str, value: bytes) -> RawDataElement:
    return RawDataElement(pydicom.tag.Tag(tag), vr, len(value), value, 0, False, True, True, False)


#: Values whose bytes are not what pydicom writes back (padding, separators, charset, NaN...).
DIRTY = [
    (0x00080060, "CS", b"CT  "),  # two pad spaces
    (0x00080008, "CS", b"ORIGINAL \\PRIMARY\\AXIAL"),  # odd length, inner space
    (0x00081090, "LO", b"SCANNER \\MODEL\x00"),  # padded values inside a multi-value
    (0x00181020, "LO", b"V1.0\\V2 "),
    (0x00180015, "CS", b"CHEST\x00\x00"),
    (0x00200060, "CS", b""),  # empty
    (0x00280030, "DS", b" 0.70\\0.70 "),  # DS with spaces
    (0x00181050, "DS", b"1.20"),
    (0x00200012, "IS", b"007 "),
    (0x00200020, "CS", b"L\\F "),
    (0x00189305, "FD", struct.pack("<d", float("nan"))),
    (0x00189306, "FL", b"\x01\x00\x80\x7f"),  # signalling NaN: comes back quiet from Python
    (0x00280106, "US", b"\x00\x00"),
    (0x00080201, "SH", b"+0100"),
    (0x00081040, "LO", "Abteilung f\u00fcr Radiologie".encode("latin-1")),
    (0x00102000, "LO", b"\xff\xfe broken text"),  # invalid in UTF-8 datasets: pydicom replaces
    (0x00400254, "LO", b"\x1b$B text with escape"),
    (0x00321060, "LO", b"Study with trailing tabs\t\t"),
    (0x00080070, "UN", b"UN MANUFACTURER"),  # explicit UN of a known tag: pydicom takes the dictionary VR
    (0x00100010, "PN", b"DOE^JOHN^^^=\\ "),
    (0x00200052, "UI", b"1.2.3.4 "),  # space instead of NUL padding
    (0x00080018, "UI", b"1.2.3.4.5\x00\x00"),
    (0x00181030, "LO", b"PROTO\\"),
    (0x00081010, "SH", b" STATION "),
    (0x00080055, "AE", b" AE1 \\AE2"),
]


def _variants(folder: Path) -> list[Path]:
    corpus = build_corpus(folder / "corpus")
    export = build_export(folder / "export")
    files = sorted(f.path for f in corpus.files) + sorted(f.path for f in export.files)
    implicit = folder / "implicit"
    implicit.mkdir()
    dirty = folder / "dirty"
    dirty.mkdir()
    out = list(files)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, path in enumerate(files):
            ds = pydicom.dcmread(path)
            if ds.file_meta.TransferSyntaxUID.is_compressed:
                continue
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
            target = implicit / f"{i}.dcm"
            ds.save_as(target, enforce_file_format=True)
            out.append(target)
            if i % 4:
                continue
            ds = pydicom.dcmread(path)
            for tag, vr, value in DIRTY:
                ds._dict[pydicom.tag.Tag(tag)] = _raw(tag, vr, value)
            target = dirty / f"{i}.dcm"
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)  # raw values are written as they are
            target.write_bytes(buffer.getvalue())
            out.append(target)
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[Path]:
    return _variants(tmp_path_factory.mktemp("raw"))


def _written(path: Path, config: DeidConfig, convert_all: bool) -> tuple[bytes, str, list[str]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = deidentify(pydicom.dcmread(path), config, KEY, convert_all=convert_all)
        buffer = io.BytesIO()
        result.dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue(), result.audit_jsonl(), result.notes


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_raw_path_writes_the_bytes_and_audit_of_full_conversion(files, name):
    config = DeidConfig.model_validate(CONFIGS[name])
    assert any("dirty" in p.parts for p in files) and any("implicit" in p.parts for p in files)
    differ = []
    for path in files:
        fast, reference = _written(path, config, False), _written(path, config, True)
        if fast != reference:
            differ.append(str(path))
    assert not differ, f"{len(differ)} of {len(files)} files differ, e.g. {differ[:3]}"


# -- RawView against pydicom's converters, value by value -------------------------------------------
_ALPHABET = b"AZ az09^=\\.-+ \x00\xe9\xc3\xa9E"
_VRS = ["AE", "AS", "CS", "DA", "DT", "TM", "UI", "UR", "LO", "SH", "UC", "LT", "ST", "UT", "PN",
        "DS", "IS", "US", "SS", "UL", "SL", "FL", "FD", "OB", "OW"]


def _random_value(rng: random.Random, vr: str) -> bytes:
    if vr in ("US", "SS", "UL", "SL", "FL", "FD", "OB", "OW"):
        return bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 2, 4, 6, 8, 16])))
    if vr in ("DS", "IS"):
        return bytes(rng.choice(b"0123456789.-+eE \\") for _ in range(rng.randrange(0, 12)))
    return bytes(rng.choice(_ALPHABET) for _ in range(rng.randrange(0, 14)))


@pytest.mark.parametrize("charset", ["ISO_IR 100", "ISO_IR 192", None])
def test_raw_view_decodes_like_pydicom(charset):
    rng = random.Random(20240611)
    from pydicom import Dataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_data_element

    checked = kept = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(6000):
            vr = rng.choice(_VRS)
            value = _random_value(rng, vr)
            raw = _raw(0x00410010 + 2 * _VRS.index(vr), vr, value)
            ds = Dataset()
            if charset:
                ds.SpecificCharacterSet = charset
            ds.set_original_encoding(False, True, encodings_of(ds))
            ds._dict[raw.tag] = raw  # where RawView.converted() finds it
            assert view_vr(raw) == vr
            view = RawView(raw, vr, ds, encodings_of(ds))
            try:
                elem = convert_raw_data_element(raw, encoding=encodings_of(ds), ds=ds)
            except Exception:  # noqa: BLE001 - pydicom refuses the value: the view must fall back too
                continue
            if elem.VR != vr:
                continue
            checked += 1
            data = view.value_bytes()
            assert (data if data is not None else _value_bytes(view.value)) == _value_bytes(elem.value), (vr, value)
            if view.kept() is raw:
                kept += 1
                fp = DicomBytesIO()
                fp.is_little_endian, fp.is_implicit_VR = True, False
                write_data_element(fp, elem, encodings_of(ds))
                written = fp.getvalue()
                assert written[8 if len(written) - 8 == len(value) else 12:] == value, (vr, value)
    assert checked > 3000 and kept > 500
