"""A series builds to the same bytes whatever transfer syntax its files were written in.

The copies are made by dcmtk (a real tool, installed by CI): explicit VR little and big
endian, deflated, RLE and JPEG lossless. Each is built with the streamed path a build takes
(stored values slab by slab, folded tables) and must give exactly the output of the original
implicit-VR files: the values are the same, only their encoding differs. Big endian files
once failed every build ("decoded stored values are >i2, the header says int16").
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ImplicitVRLittleEndian

from medflow.engine.build import build
from medflow.recipe.loader import load_recipe
from tests.dicom_factory import write_ct_series

RECIPE = """\
medflow: 1
name: syntaxes
source:
  dicom: {data}
steps:
  - step: window
    level: 40
    width: 400
  - step: colormap
    map: blue_red
    input_range: [0.0, 1.0]
  - step: layout
    layout: NCHW
    dtype: float32
outputs:
  dir: {out}
  writers:
    - kind: npy
engine:
  workers: 1
  cache_dir: {cache}
"""

#: dcmtk command (before input and output paths) per transfer syntax.
CONVERSIONS = {
    "explicit-little": ["dcmconv", "+te"],
    "explicit-big": ["dcmconv", "+tb"],
    "deflated": ["dcmconv", "+td"],
    "rle": ["dcmcrle"],
    "jpeg-lossless": ["dcmcjpeg", "--encode-lossless-sv1"],
}


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"{name} (dcmtk) is not installed; .ci/run installs it"
    return path


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Path:
    """A 5-slice CT series in implicit VR little endian, 64 x 64, values over the whole window and beyond."""
    folder = tmp_path_factory.mktemp("original")
    rng = np.random.default_rng(7)
    for index, path in enumerate(write_ct_series(folder, 1, n_slices=5, size=64)):
        ds = pydicom.dcmread(path)
        ds.PixelData = rng.integers(-1024, 3000, size=(64, 64)).astype(np.int16).tobytes()
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        assert index < 5
    return folder


def _build(data: Path, work: Path) -> bytes:
    work.mkdir()
    recipe = work / "recipe.yaml"
    recipe.write_text(RECIPE.format(data=data, out=work / "out", cache=work / "cache"))
    report = build(load_recipe(recipe), show_progress=False)
    assert report.exit_code == 0 and report.ok == 1, report.failed
    (tensor,) = sorted((work / "out" / "tensors").glob("*.npy"))
    return tensor.read_bytes()


@pytest.mark.parametrize("syntax", sorted(CONVERSIONS))
def test_a_series_in_any_transfer_syntax_builds_to_the_bytes_of_its_implicit_vr_original(original, tmp_path, syntax):
    command = CONVERSIONS[syntax]
    converted = tmp_path / "data"
    for source in sorted(original.rglob("*.dcm")):
        target = converted / source.relative_to(original)
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([_tool(command[0]), *command[1:], str(source), str(target)], check=True, capture_output=True)
        assert pydicom.dcmread(target, stop_before_pixels=True).file_meta.TransferSyntaxUID != ImplicitVRLittleEndian
    expected = _build(original, tmp_path / "plain")
    assert _build(converted, tmp_path / "converted") == expected
    # and the output is the window of pydicom's values (the golden: the standard's LINEAR formula)
    values = np.stack([pydicom.dcmread(p).pixel_array.astype(np.float64) - 1024.0
                       for p in sorted(original.rglob("*.dcm"))])
    output = np.load(sorted((tmp_path / "converted" / "out" / "tensors").glob("*.npy"))[0])
    window = np.clip(((values - (40 - 0.5)) / (400 - 1) + 0.5), 0.0, 1.0)  # PS3.3 C.11.2.1.2.1, then / 1
    assert output.shape == (5, 3, 64, 64)
    index = np.rint(window * 255).astype(int)  # blue_red: entry i = (i, 0, 255 - i) / 255
    assert np.array_equal(output[:, 1], np.zeros_like(output[:, 1]))
    assert np.allclose(output[:, 0] + output[:, 2], 1.0, atol=1e-6)
    assert np.abs(output[:, 0] * 255 - index).max() <= 1


def test_the_header_of_a_deflated_file_does_not_keep_its_pixels(tmp_path):
    """pydicom inflates a deflated file whole; the header medflow keeps must not hold that copy.

    A series' headers live for its whole build: a 512 x 512 deflated slice's header held the
    inflated file (~0.5 MB), 100 MB for 200 slices.
    """
    import tracemalloc

    from medflow.sources.discovery import read_image_header

    (source,) = write_ct_series(tmp_path / "plain", 1, n_slices=1, size=512)
    deflated = tmp_path / "deflated.dcm"
    subprocess.run([_tool("dcmconv"), "+td", str(source), str(deflated)], check=True, capture_output=True)
    assert deflated.stat().st_size < source.stat().st_size  # really deflated
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        headers = [read_image_header(deflated, check_pixel_data=True) for _ in range(5)]
        kept = (tracemalloc.get_traced_memory()[0] - before) / len(headers)
    finally:
        tracemalloc.stop()
    assert headers[0].Rows == 512 and "PixelData" not in headers[0]
    assert kept < 100_000, f"each header keeps {kept:.0f} bytes (the pixels are {512 * 512 * 2})"
