"""Dataset-level statistics: a first pass over every item, merged, recorded, reused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from medflow.engine.build import build
from medflow.recipe.loader import load_recipe
from tests.dicom_factory import write_ct_series

RECIPE = """\
medflow: 1
name: stats
source:
  dicom: data
steps:
  - step: normalize
    mode: zscore
    scope: dataset
  - step: layout
    layout: NCHW
outputs:
  dir: out
engine:
  workers: 1
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for series in range(3):
        write_ct_series(tmp_path / "data", series, n_slices=2)
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    return tmp_path


def _hu_of_all_files(folder: Path) -> np.ndarray:
    values = []
    for path in sorted(folder.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        values.append(ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    return np.concatenate([v.ravel() for v in values])


def test_zscore_uses_the_mean_and_std_of_the_whole_dataset(project):
    report = build(load_recipe(project / "recipe.yaml"), show_progress=False)
    assert report.exit_code == 0
    hu = _hu_of_all_files(project / "data")
    (entry,) = report.manifest["dataset_stats"]
    assert entry["step"] == "normalize" and entry["step_index"] == 1
    assert entry["stats"]["mean"] == pytest.approx(hu.mean(), rel=1e-9)
    assert entry["stats"]["std"] == pytest.approx(hu.std(), rel=1e-6)
    outputs = np.concatenate([np.load(p).ravel() for p in sorted((project / "out" / "tensors").glob("*.npy"))])
    # over the whole dataset the outputs are standardised (each item alone is not)
    assert outputs.mean() == pytest.approx(0.0, abs=1e-5)
    assert outputs.std() == pytest.approx(1.0, abs=1e-5)
    assert report.manifest["run"]["dataset_stats_computed"] is True


def test_statistics_are_reused_on_an_unchanged_rebuild(project):
    first = build(load_recipe(project / "recipe.yaml"), show_progress=False)
    second = build(load_recipe(project / "recipe.yaml"), show_progress=False)
    assert second.manifest["run"]["dataset_stats_computed"] is False
    assert second.computed == 0
    assert second.manifest["dataset_stats"] == first.manifest["dataset_stats"]


def test_a_new_item_changes_the_statistics_and_every_output(project):
    build(load_recipe(project / "recipe.yaml"), show_progress=False)
    write_ct_series(project / "data", 9, n_slices=2, pixels=np.full((16, 16), 3000, np.int16))
    report = build(load_recipe(project / "recipe.yaml"), show_progress=False)
    assert report.manifest["run"]["dataset_stats_computed"] is True
    assert report.computed == 4  # every item: the statistics joined their keys


def test_plan_announces_the_first_pass(project, capsys):
    from medflow.cli import main

    assert main(["plan", str(project / "recipe.yaml")]) == 0
    assert "dataset statistics for step 1 'normalize': computed in a first pass" in capsys.readouterr().out
    build(load_recipe(project / "recipe.yaml"), show_progress=False)
    main(["plan", str(project / "recipe.yaml")])
    assert "dataset statistics for step 1 'normalize': cached" in capsys.readouterr().out
