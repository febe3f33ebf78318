"""The recipe library in pipelines/: each recipe runs and writes what it declares.

Golden values come from pydicom (apply_modality_lut, apply_voi_lut) and from the
standards' formulas written out here: DICOM PS3.3 C.11.2.1.2.1 (LINEAR window), the
documented blue->red LUT (R = i, G = 0, B = 255 - i) and ITU-R BT.601 full-range YCbCr
(JPEG / DICOM YBR_FULL). Never from medflow.

Speed: the sample-based recipes run on one series of the embedded phantom
(``Thorax 5.0*``: 16 slices of 192 x 192), in this process, with one shared cache.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from medflow.engine.build import build, prepare
from medflow.recipe.loader import load_recipe
from tests.conftest import shared_data_path

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
KEY = "pipelines-library-test-key-0123456789"
ONE_SERIES = 'source.filter.series_description=["Thorax 5.0*"]'


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def deid_key(monkeypatch):
    monkeypatch.setenv("MEDFLOW_DEID_KEY", KEY)


def run(recipe: str, tmp_path: Path, cache: Path, *overrides: str):
    """Build ``pipelines/<recipe>`` into tmp_path/out; returns (loaded recipe, output folder, manifest)."""
    out = tmp_path / "out"
    loaded = load_recipe(
        PIPELINES / recipe,
        overrides=[f"outputs.dir={out}", f"engine.cache_dir={cache}", "engine.workers=1", *overrides],
    )
    report = build(loaded, show_progress=False)
    assert report.exit_code == 0, report.failed
    assert report.ok == report.total >= 1
    manifest = json.loads((out / "manifest.json").read_text())
    return loaded, out, manifest


def npy_of(out: Path, item: dict) -> np.ndarray:
    path = next(o["path"] for o in item["outputs"] if o["path"].endswith(".npy"))
    return np.load(out / path)


def png_header(path: Path) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) from the IHDR chunk (PNG specification 11.2.2)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">IIBB", data[16:26])


def item_datasets(loaded, item_id: str) -> list[pydicom.Dataset]:
    """The item's files read by pydicom, sorted by ImagePositionPatient along the slice normal."""
    prepared = prepare(loaded)
    item = next(i for i in prepared.items if i.item_id == item_id)
    datasets = [pydicom.dcmread(Path(item.root) / rel) for rel in item.files]
    normal = np.cross(*np.reshape(np.asarray(datasets[0].ImageOrientationPatient, float), (2, 3)))
    return sorted(datasets, key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float))))


def linear_window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 LINEAR, output range [0, 1]."""
    x = np.asarray(x, np.float64)
    y = ((x - (center - 0.5)) / (width - 1) + 0.5)
    y = np.where(x <= center - 0.5 - (width - 1) / 2, 0.0, y)
    y = np.where(x > center - 0.5 + (width - 1) / 2, 1.0, y)
    return y


# ----------------------------------------------------------------------------- sample recipes


def test_seed_on_the_sample_gives_nchw_float32_ycbcr(tmp_path, cache):
    _, out, manifest = run("seed.yaml", tmp_path, cache, ONE_SERIES)
    assert manifest["recipe"]["resolved"]["steps"][0]["step"] == "anonymize"
    for item in manifest["items"]:
        array = npy_of(out, item)
        assert array.dtype == np.float32 and array.ndim == 4 and array.shape[1] == 3
        assert float(array.min()) >= 0.0 and float(array.max()) <= 1.0
        window = item["meta"]["window"]
        assert (window["center"], window["width"]) == (-600, 1500)
        assert "deid" in item["meta"]
        # blue->red then BT.601: G = 0 and R + B = 1, so Y = 0.299 R + 0.114 (1 - R) and
        # Cb - 0.5 = -0.168736 R + 0.5 (1 - R): Y and Cb are both affine in R and tied together
        y, cb = array[:, 0].astype(np.float64), array[:, 1].astype(np.float64)
        r = (y - 0.114) / (0.299 - 0.114)
        np.testing.assert_allclose(cb, -0.168736 * r + 0.5 * (1 - r) + 0.5, atol=2e-6)


def test_ich_three_windows_as_nhwc_uint8_and_rgb_png(tmp_path, cache):
    loaded, out, manifest = run("ich.yaml", tmp_path, cache, ONE_SERIES)
    windows = [(40, 80), (80, 200), (40, 380)]  # brain, subdural, soft tissue (RSNA ICH)
    for item in manifest["items"]:
        array = npy_of(out, item)
        assert array.dtype == np.uint8 and array.ndim == 4 and array.shape[-1] == 3
        assert [(w["center"], w["width"]) for w in item["meta"]["windows"]] == windows
        pngs = sorted(o["path"] for o in item["outputs"] if o["path"].endswith(".png"))
        assert pngs == [f"png/{item['id']}/{i:04d}.png" for i in range(array.shape[0])]
        k = array.shape[0] // 2
        n, h, w, _ = array.shape
        assert png_header(out / pngs[k]) == (w, h, 8, 2)  # 8-bit RGB
        np.testing.assert_array_equal(cv2.imread(str(out / pngs[k]))[..., ::-1], array[k])
        # independent: pydicom HU of slice k -> LINEAR window -> rint(255 y)
        ds = item_datasets(loaded, item["id"])[k]
        hu = apply_modality_lut(ds.pixel_array, ds)
        expected = np.stack([np.rint(linear_window(hu, c, wd) * 255) for c, wd in windows], axis=-1)
        assert np.abs(array[k].astype(int) - expected.astype(int)).max() <= 1


def test_radiomics_writes_1mm_nifti_in_hu(tmp_path, cache):
    sitk = pytest.importorskip("SimpleITK")
    loaded, out, manifest = run("radiomics.yaml", tmp_path, cache, ONE_SERIES)
    for item in manifest["items"]:
        paths = [o["path"] for o in item["outputs"]]
        assert len(paths) == 1 and paths[0].endswith(".nii.gz")
        image = sitk.ReadImage(str(out / paths[0]))
        np.testing.assert_allclose(image.GetSpacing(), (1.0, 1.0, 1.0), atol=1e-4)
        values = sitk.GetArrayViewFromImage(image)
        datasets = item_datasets(loaded, item["id"])
        hu = np.stack([apply_modality_lut(ds.pixel_array, ds) for ds in datasets])
        # no intensity change: linear interpolation stays inside the HU range of the input
        assert hu.min() - 1e-3 <= float(values.min()) and float(values.max()) <= hu.max() + 1e-3
        assert float(values.max()) > 300  # bone survives: values are HU, not a window
        # the field of view is kept: size x 1 mm = number of voxels x their spacing on every axis
        first, last = (np.asarray(ds.ImagePositionPatient, float) for ds in (datasets[0], datasets[-1]))
        rows, columns, n = datasets[0].Rows, datasets[0].Columns, len(datasets)
        spacing = [float(v) for v in datasets[0].PixelSpacing]
        extent = (columns * spacing[1], rows * spacing[0], n * abs(last[2] - first[2]) / (n - 1))
        size = image.GetSize()
        for got, want in zip(size, extent, strict=True):
            assert abs(got - want) <= 1.0


# ----------------------------------------------------------------------------- real data recipes


def test_xray_uses_the_header_window_and_inverts_monochrome1(tmp_path, cache):
    shared_data_path("misc_singles", "gdcm-CR-MONO1-10-chest.dcm")
    _, out, manifest = run("xray.yaml", tmp_path, cache)
    [item] = manifest["items"]
    assert item["modality"] == "CR"
    array = npy_of(out, item)
    assert array.dtype == np.float32 and array.shape == (1, 440, 440)
    ds = pydicom.dcmread(shared_data_path("misc_singles", "gdcm-CR-MONO1-10-chest.dcm"))
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.PixelRepresentation == 0
    assert "RescaleSlope" not in ds and "ModalityLUTSequence" not in ds
    # pydicom's VOI LUT (WC 550 / WW 1024, LINEAR) outputs 0 .. 2**BitsStored - 1 here
    voi = apply_voi_lut(ds.pixel_array, ds) / (2**ds.BitsStored - 1)
    expected = 1.0 - voi  # MONOCHROME1: inverted after the VOI transform
    np.testing.assert_allclose(array[0], expected, atol=1e-5)
    [png] = [o["path"] for o in item["outputs"] if o["path"].endswith(".png")]
    assert png_header(out / png) == (440, 440, 8, 0)  # 8-bit grayscale
    read = cv2.imread(str(out / png), cv2.IMREAD_UNCHANGED)
    assert np.abs(read.astype(int) - np.rint(expected * 255).astype(int)).max() <= 1


def test_mr_n4_zscore_ncdhw(tmp_path, cache):
    shared_data_path("dicom2nifti_cases", "hitachi", "anatomical")
    _, out, manifest = run("mr.yaml", tmp_path, cache)
    [item] = manifest["items"]
    assert item["modality"] == "MR"
    array = npy_of(out, item)
    assert array.dtype == np.float32 and array.shape == (1, 1, 4, 64, 64)
    volume = array.astype(np.float64)
    assert abs(volume.mean()) < 1e-4 and abs(volume.std() - 1.0) < 1e-4  # z-score over the volume


# ----------------------------------------------------------------------------- the seed's bar


def test_seed_matches_an_independent_computation_on_a_real_ct_slice(tmp_path, cache):
    source = shared_data_path("ct_pancreas_tcia")
    first = sorted(p for p in source.iterdir() if p.suffix.lower() == ".dcm")[0]
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / first.name).symlink_to(first)
    _, out, manifest = run("seed.yaml", tmp_path, cache, f'source={{"dicom": "{folder}"}}')
    [item] = manifest["items"]
    array = npy_of(out, item)
    assert array.dtype == np.float32 and array.shape == (1, 3, 512, 512)

    ds = pydicom.dcmread(first)
    hu = apply_modality_lut(ds.pixel_array, ds)  # RescaleSlope 1, RescaleIntercept -1000
    y = linear_window(hu, -600.0, 1500.0)  # lung window, PS3.3 C.11.2.1.2.1
    i = np.clip(np.rint(y * 255), 0, 255)  # 8-bit LUT index
    r, g, b = i / 255, np.zeros_like(i), (255 - i) / 255  # blue->red: (i, 0, 255 - i)
    luma = 0.299 * r + 0.587 * g + 0.114 * b  # ITU-R BT.601, full range
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b + 0.5
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b + 0.5
    expected = np.stack([luma, cb, cr])
    assert np.abs(array[0].astype(np.float64) - expected).max() <= 1 / 255
    assert np.ptp(i) > 100, "the slice covers much of the window (a meaningful comparison)"


@pytest.mark.parametrize("recipe", ["seed.yaml", "ich.yaml", "radiomics.yaml", "xray.yaml", "mr.yaml"])
def test_library_recipes_declare_their_output_and_extend_a_team_base(recipe):
    loaded = load_recipe(PIPELINES / recipe)
    expect = loaded.recipe.outputs.expect
    assert expect is not None and expect.layout and expect.dtype, "the engine checks every item against it"
    assert len(loaded.sources) >= 2 and all(p.parent.name == "base" for p in loaded.sources[:-1])
    assert loaded.recipe.outputs.dir == f"../build/{recipe.removesuffix('.yaml')}"
