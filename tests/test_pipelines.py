"""Every recipe in pipelines/ validates, carries the schema comment, and runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medflow.engine.build import build
from medflow.recipe.loader import load_recipe, validate_recipe_files

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
RECIPES = sorted(p for p in PIPELINES.glob("*.yaml"))
BASES = sorted((PIPELINES / "base").glob("*.yaml"))


def test_there_are_recipes():
    assert any(p.name == "quickstart.yaml" for p in RECIPES)


@pytest.mark.parametrize("recipe", RECIPES + BASES, ids=lambda p: p.relative_to(PIPELINES).as_posix())
def test_recipe_carries_the_schema_comment(recipe):
    first_line = recipe.read_text().splitlines()[0]
    depth = len(recipe.relative_to(PIPELINES).parts) - 1
    expected = "../" * (depth + 1) + "schemas/recipe.schema.json"
    assert first_line == f"# yaml-language-server: $schema={expected}"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_validates(recipe):
    assert validate_recipe_files([recipe]) == []


def test_quickstart_builds_lung_window_tensors_from_the_sample(tmp_path):
    loaded = load_recipe(PIPELINES / "quickstart.yaml", overrides=[f"outputs.dir={tmp_path / 'out'}"])
    report = build(loaded, show_progress=False)
    assert report.exit_code == 0
    assert report.ok == report.total >= 3
    tensors = sorted((tmp_path / "out" / "tensors").glob("*.npy"))
    assert len(tensors) == report.total
    for path in tensors:
        array = np.load(path, mmap_mode="r")
        assert array.ndim == 4 and array.shape[1] == 1 and array.dtype == np.float32
        assert 0.0 <= float(array.min()) and float(array.max()) <= 1.0
        # LINEAR window L-600/W1500: bone (> 150 HU) saturates at 1; air (-1000 HU) maps to
        # ((-1000 - (-600 - 0.5)) / (1500 - 1) + 0.5) = 0.2335 (PS3.3 C.11.2.1.2.1), noise aside.
        assert float(array.max()) == 1.0
        assert 0.18 < float(np.median(array[:, :, :8, :8])) < 0.29
