"""The embedded phantom's organ labels (SEG and RTSTRUCT) read back on their series, through the engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medflow.recipe.model import SampleSource, SeriesFilter
from medflow.sources.discovery import discover_dicom
from medflow.sources.fingerprint import FingerprintMemo
from medflow.sources.pairing import label_options, pair_labels
from medflow.sources.phantom import make_anatomy, phantom_labels
from medflow.sources.sample_data import _PATIENTS, materialize_sample
from medflow.sources.sample_labels import materialize_sample_labels
from medflow.sources.series import read_item

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("samples")
    materialize_sample_labels("ct-phantom", dest)
    return dest


def _items(dest: Path, labels: dict):
    root = materialize_sample("ct-phantom", dest)
    memo = FingerprintMemo(None)
    source = SampleSource.model_validate({"sample": "ct-phantom", "labels": labels})
    found = discover_dicom(root, SeriesFilter(), memo)
    return pair_labels(found, root, source, memo, Path), label_options(source.labels)


def test_image_sample_is_untouched_and_label_objects_are_no_items(samples):
    root = samples / "ct-phantom"
    assert not any(p.name in ("seg.dcm", "rtstruct.dcm") for p in root.rglob("*"))
    found = discover_dicom(samples / "ct-phantom-labels", SeriesFilter(), FingerprintMemo(None))
    assert found.items == [] and all("not an image" in reason or "no pixel" in reason or rel == ".complete"
                                     for rel, reason in found.skipped)


def test_seg_labels_equal_the_analytic_phantom(samples):
    found, options = _items(samples, {"from": "seg"})
    anatomy = {p.folder: make_anatomy(p.anatomy_scale, p.anatomy_seed) for p in _PATIENTS}
    offsets = {(p.folder, s.folder): s.table_offset_mm for p in _PATIENTS for s in p.studies}
    for item in found.items:
        assert len(item.labels) == 1 and not item.broken_files
        sample = read_item(item, labels=options)
        patient, study = item.files[0].split("/")[:2]
        g = sample.geometry
        x = g.slice_positions[0][0] + g.pixel_spacing[1] * np.arange(sample.pixels.shape[2])
        y = g.slice_positions[0][1] + g.pixel_spacing[0] * np.arange(sample.pixels.shape[1])
        expected = np.stack([phantom_labels(anatomy[patient], p[2] - offsets[(patient, study)], x, y)
                             for p in g.slice_positions])
        names = {s.value: s.name for s in sample.segments}
        from medflow.sources.phantom import ORGANS

        organ_value = {name: value for value, name, _, _ in ORGANS}
        remapped = np.zeros_like(sample.label)
        for value, name in names.items():
            remapped[sample.label == value] = organ_value[name]
        np.testing.assert_array_equal(remapped, expected)


def test_rtstruct_hole_and_agreement_with_seg(samples):
    found, options = _items(samples, {"from": "rtstruct", "overlap": "last"})
    seg_found, seg_options = _items(samples, {"from": "seg", "segments": ["liver", "kidney", "aorta", "vertebra"],
                                              "overlap": "last"})
    item = next(i for i in found.items if len(i.files) == 40)  # P02: liver, kidneys, aorta
    seg_item = next(i for i in seg_found.items if i.item_id == item.item_id)
    rt = read_item(item, labels=options)
    seg = read_item(seg_item, labels=seg_options)
    names = {s.name: s.value for s in rt.segments}
    cortex = rt.label == names["vertebral_cortex"]
    g = rt.geometry
    # centre of the vertebral body (0, 63 mm x scale) is in the hole of the ring
    col = round((0 - g.slice_positions[0][0]) / g.pixel_spacing[1])
    row = round((63 * 0.82 - g.slice_positions[0][1]) / g.pixel_spacing[0])
    assert not cortex[:, row, col].any() and cortex.any()
    for name in ("liver", "aorta"):
        a, b = rt.label == names[name], seg.label == {"liver": 1, "aorta": 3}[name]
        dice = 2 * (a & b).sum() / (a.sum() + b.sum())
        assert dice > 0.9, (name, dice)


def test_labels_follow_spatial_steps_by_nearest_neighbour(samples):
    from medflow.steps.spatial import CropPadParams, ResampleParams, ResizeParams, crop_pad, resample, resize

    found, options = _items(samples, {"from": "seg"})
    sample = read_item(found.items[0], labels=options)
    values = set(np.unique(sample.label))
    for step, params in ((resample, ResampleParams(step="resample", spacing=[4.0, 2.0, 2.0])),
                         (resize, ResizeParams(step="resize", size=[100, 90])),
                         (crop_pad, CropPadParams(step="crop_pad", size=[None, 300, 120]))):
        out = step(sample, params)
        assert out.label.shape == out.pixels.shape and out.label.dtype == sample.label.dtype
        assert set(np.unique(out.label)) <= values  # nearest neighbour: no new values
