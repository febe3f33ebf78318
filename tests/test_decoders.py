"""medflow names the pydicom decoding plugins, so installed extras do not change its outputs.

Oracles are pydicom's plugins themselves: for lossless syntaxes every installed plugin must
give the values medflow reads (so taking the fastest changes nothing); for lossy syntaxes
medflow must give the values of pydicom's plugins without GDCM (the decoders of medflow's
earlier versions), even though GDCM, installed now, decodes them a little differently.
"""

from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pydicom
import pytest
from pydicom.data import data_manager, get_testdata_files
from pydicom.pixels import get_decoder, pixel_array

from medflow.sources.decoders import PLUGIN_ORDER, decode_with, plugins_for
from medflow.sources.pixels import decode_file

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom.*")

LOSSLESS = {"1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.80",
            "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202"}


def _compressed_files() -> list[tuple[Path, str]]:
    with mock.patch.object(data_manager, "online_test_file_dummy_paths", dict):
        paths = sorted({Path(p) for p in get_testdata_files("*") if Path(p).is_file()})
    found = []
    for path in paths:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            syntax = str(ds.file_meta.TransferSyntaxUID)
        except Exception:  # noqa: BLE001 - not DICOM, no file meta
            continue
        if syntax in PLUGIN_ORDER and int(ds.get("NumberOfFrames") or 1) == 1 and "Rows" in ds:
            found.append((path, syntax))
    return found


FILES = _compressed_files()


def _decode(path: Path, plugin: str) -> np.ndarray | None:
    """pydicom's values with ``plugin``: from the file, else from the data set dcmread reads (None: cannot)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for source in (lambda: path, lambda: pydicom.dcmread(path, force=True)):
            try:
                return pixel_array(source(), decoding_plugin=plugin)
            except Exception:  # noqa: BLE001 - this plugin cannot decode this file
                continue
    return None


def test_the_corpus_has_files_of_both_kinds():
    syntaxes = {syntax for _, syntax in FILES}
    assert {"1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.50"} <= syntaxes


@pytest.mark.parametrize("syntax", sorted(PLUGIN_ORDER))
def test_every_named_plugin_is_one_pydicom_has_for_the_syntax(syntax):
    # CI installs them all: a name pydicom does not know (a typo) would never be tried
    assert set(PLUGIN_ORDER[syntax]) <= set(get_decoder(syntax).available_plugins)
    assert plugins_for(syntax) == PLUGIN_ORDER[syntax]


@pytest.mark.parametrize("path,syntax", [f for f in FILES if f[1] in LOSSLESS], ids=lambda v: getattr(v, "name", ""))
def test_lossless_files_read_as_every_installed_plugin_decodes_them(path, syntax):
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    ours = decode_file(path, ds)
    decoded = {plugin: _decode(path, plugin) for plugin in get_decoder(syntax).available_plugins}
    agreeing = [plugin for plugin, values in decoded.items() if values is not None]
    assert agreeing, f"no plugin decodes {path.name}"
    for plugin in agreeing:
        assert np.array_equal(ours, decoded[plugin]), f"{path.name}: medflow differs from {plugin}"


@pytest.mark.parametrize("path,syntax", [f for f in FILES if f[1] not in LOSSLESS], ids=lambda v: getattr(v, "name", ""))
def test_lossy_files_read_as_pydicom_decoded_them_without_gdcm(path, syntax):
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    expected = next((values for plugin in ("pylibjpeg", "pillow", "pyjpegls")
                     if (values := _decode(path, plugin)) is not None), None)
    if expected is None:  # only GDCM decodes it: medflow then uses GDCM
        expected = _decode(path, "gdcm")
    if expected is None:  # a broken file no plugin decodes: medflow must say so too
        with pytest.raises(Exception):  # noqa: B017 - decoders raise many types; the reader words them
            decode_file(path, ds)
        return
    assert np.array_equal(decode_file(path, ds), expected)


def test_a_plugin_that_fails_leaves_the_file_to_the_next_and_the_first_error_is_raised():
    calls: list[str] = []

    def decode(decoding_plugin: str = "") -> str:
        calls.append(decoding_plugin)
        if decoding_plugin != "pylibjpeg":
            raise ValueError(f"{decoding_plugin} cannot")
        return "values"

    assert decode_with(decode, "1.2.840.10008.1.2.4.70") == "values"
    assert calls == ["gdcm", "pylibjpeg"]

    def never(decoding_plugin: str = "") -> str:
        raise ValueError(f"{decoding_plugin} cannot")

    with pytest.raises(ValueError, match="gdcm cannot"):
        decode_with(never, "1.2.840.10008.1.2.4.70")
    assert decode_with(lambda **kwargs: kwargs, "1.2.840.10008.1.2.1") == {}  # native: pydicom's own choice


def test_every_syntax_of_dcm_qa_ts_reads_as_its_uncompressed_file():
    """The same slice in nine transfer syntaxes (JPEG-LS and JPEG 2000 Lossless among them): one set of values."""
    from tests.conftest import shared_data_path

    root = shared_data_path("dcm_qa_ts", "In")
    reference = pydicom.dcmread(root / "1.dcm").pixel_array  # native little endian: no decoder involved
    for path in sorted(root.glob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert np.array_equal(decode_file(path, ds), reference), f"{path.name} ({ds.file_meta.TransferSyntaxUID.name})"


@pytest.mark.skipif(shutil.which("dcmcjpls") is None, reason="dcmtk's dcmcjpls encodes the JPEG-LS file")
def test_ct_slices_encoded_by_other_tools_read_as_the_original(tmp_path):
    """Real 512 x 512 CT slices as dcmtk writes them in JPEG-LS Lossless and GDCM in JPEG 2000 Lossless:
    the decoders medflow tries first for those syntaxes give the original stored values."""
    import gdcm

    from tests.conftest import shared_data_path

    originals = sorted(shared_data_path("ct_pancreas_tcia").rglob("*.dcm"))[:3]
    for original in originals:
        expected = pydicom.dcmread(original).pixel_array
        jpeg_ls = tmp_path / f"jls-{original.name}"
        subprocess.run(["dcmcjpls", "--encode-lossless", str(original), str(jpeg_ls)], check=True, capture_output=True)
        jpeg_2000 = tmp_path / f"j2k-{original.name}"
        reader = gdcm.ImageReader()
        reader.SetFileName(str(original))
        assert reader.Read()
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEG2000Lossless))
        change.SetInput(reader.GetImage())
        assert change.Change()
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(jpeg_2000))
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        assert writer.Write()
        for encoded, syntax in ((jpeg_ls, "1.2.840.10008.1.2.4.80"), (jpeg_2000, "1.2.840.10008.1.2.4.90")):
            ds = pydicom.dcmread(encoded, stop_before_pixels=True)
            assert str(ds.file_meta.TransferSyntaxUID) == syntax
            assert np.array_equal(decode_file(encoded, ds), expected), f"{encoded.name}"
            first = plugins_for(syntax)[0]
            assert np.array_equal(_decode(encoded, first), expected), f"{encoded.name} with {first}"
