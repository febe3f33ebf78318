"""The fast encoder writes the bytes of pydicom's ``save_as(enforce_file_format=True)``, or refuses.

For every file of both generated PHI corpora (explicit VR little endian, JPEG-encapsulated CR),
their implicit-VR and explicit big-endian copies, a copy with hand-made non-canonical raw values,
and several configurations, the de-identified dataset is encoded by :func:`encode_file` and, from
a second de-identification of the same file, by pydicom: the bytes must be identical. Datasets
pydicom must write (deflated, ambiguous VR...) raise :class:`NotEncodable` and leave the dataset
as it was.
"""

from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import DataElement
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from medflow.deid import DeidConfig, deidentify
from medflow.deid.encode import NotEncodable, encode_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deid_corpus import build_corpus  # noqa: E402
from phi_export import build_export  # noqa: E402
from test_deid_core_raw import CONFIGS, DIRTY, _raw  # noqa: E402

KEY = b"fast-encode-test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("encode")
    corpus = build_corpus(folder / "corpus")
    export = build_export(folder / "export")
    originals = sorted(f.path for f in corpus.files) + sorted(f.path for f in export.files)
    out = list(originals)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, path in enumerate(originals):
            if pydicom.dcmread(path).file_meta.TransferSyntaxUID.is_compressed:
                continue
            for name, syntax in (("implicit", ImplicitVRLittleEndian), ("big", ExplicitVRBigEndian)):
                if name == "big" and i % 3:
                    continue
                ds = pydicom.dcmread(path)  # dcmwrite converts every element: the encoding changes
                ds.file_meta.TransferSyntaxUID = syntax
                target = folder / name / f"{i}.dcm"
                target.parent.mkdir(exist_ok=True)
                # dcmwrite, not save_as (which refuses to change endianness): OB/OW bytes stay as they are
                pydicom.dcmwrite(target, ds, enforce_file_format=True)
                out.append(target)
            if i % 4 == 0:
                ds = pydicom.dcmread(path)
                for tag, vr, value in DIRTY:
                    ds._dict[pydicom.tag.Tag(tag)] = _raw(tag, vr, value)
                target = folder / "dirty" / f"{i}.dcm"
                target.parent.mkdir(exist_ok=True)
                ds.save_as(target, enforce_file_format=True)
                out.append(target)
    return out


def _pydicom_bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _pair(path: Path, config: DeidConfig, convert_all: bool) -> tuple[pydicom.Dataset, pydicom.Dataset]:
    """Two de-identifications of ``path``: pydicom's writer changes the dataset it writes."""
    return tuple(deidentify(pydicom.dcmread(path), config, KEY, convert_all=convert_all).dataset for _ in range(2))


@pytest.mark.parametrize("convert_all", [False, True], ids=["raw-elements", "converted-elements"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fast_encoder_writes_pydicoms_bytes(files, name, convert_all):
    config = DeidConfig.model_validate(CONFIGS[name])
    kinds = {p.parent.name for p in files}
    assert {"implicit", "big", "dirty"} <= kinds
    differ, refused = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in files:
            fast, reference = _pair(path, config, convert_all)
            try:
                data = encode_file(fast)
            except NotEncodable as exc:
                refused.append((str(path), str(exc)))
                continue
            if data != _pydicom_bytes(reference):
                differ.append(str(path))
            elif _pydicom_bytes(fast) != data:  # encoding left the dataset as it was
                differ.append(f"{path} (changed by encode_file)")
    assert not differ, f"{len(differ)} of {len(files)} files differ, e.g. {differ[:3]}"
    assert not refused, f"{len(refused)} refused: {refused[:3]}"


def test_big_endian_copies_are_really_big_endian(files):
    big = [p for p in files if p.parent.name == "big"]
    assert big
    ds = pydicom.dcmread(big[0])
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    result = deidentify(ds, DeidConfig(), KEY)
    data = encode_file(result.dataset)
    assert pydicom.dcmread(io.BytesIO(data)).Rows == ds.Rows


def _one(files: list[Path]) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return deidentify(pydicom.dcmread(files[0]), DeidConfig(), KEY).dataset


def test_deflated_transfer_syntax_is_left_to_pydicom(files):
    ds = _one(files)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    with pytest.raises(NotEncodable, match="deflated"):
        encode_file(ds)


def test_ambiguous_vr_is_left_to_pydicom(files):
    ds = _one(files)
    ds[0x00280106] = DataElement(0x00280106, "US or SS", 0)  # SmallestImagePixelValue before correction
    before = _pydicom_bytes(_one(files))
    with pytest.raises(NotEncodable, match="ambiguous VR"):
        encode_file(ds)
    del ds[0x00280106]
    assert _pydicom_bytes(ds) == before  # nothing was changed by the refusal


def test_missing_transfer_syntax_is_left_to_pydicom(files):
    ds = _one(files)
    del ds.file_meta.TransferSyntaxUID
    with pytest.raises(NotEncodable, match="transfer syntax"):
        encode_file(ds)
