"""Fixtures of the fault-injection suite (see :mod:`tests.faults.helpers`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.helpers import make_project, medflow, outputs_of


@pytest.fixture(scope="session")
def phantom_samples(tmp_path_factory) -> Path:
    """The ct-phantom DICOM files, generated once (a ``samples`` folder of a cache)."""
    from medflow.sources.sample_data import materialize_sample

    samples = tmp_path_factory.mktemp("phantom") / "samples"
    materialize_sample("ct-phantom", samples)
    return samples


@pytest.fixture
def project(tmp_path, phantom_samples) -> Path:
    return make_project(tmp_path / "p", phantom_samples)


@pytest.fixture(scope="session")
def reference(tmp_path_factory, phantom_samples):
    """``reference(recipe_text)`` -> (manifest items, output digests) of an undisturbed build, made once."""
    built = {}

    def get(recipe: str):
        if recipe not in built:
            folder = make_project(tmp_path_factory.mktemp("reference"), phantom_samples, recipe)
            done = medflow(folder, "run", "recipe.yaml", "-q")
            assert done.returncode == 0, done.stdout + done.stderr
            built[recipe] = outputs_of(folder / "out")
        return built[recipe]

    return get
