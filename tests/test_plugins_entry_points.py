"""Plugins: the example package, pip-installed into a private folder, shows and runs; a broken one is named.

The example (examples/medflow-plugin-example) is installed with ``pip install --target`` into a
temporary folder (not into the venv) and medflow runs in a subprocess with that folder on
PYTHONPATH, so the test leaves the environment as it found it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "medflow-plugin-example"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("plugin-site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target),
         str(EXAMPLE)],
        check=True, capture_output=True, text=True,
    )
    return target


def _medflow(site: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    return subprocess.run([sys.executable, "-m", "medflow", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def _broken_plugin(site: Path) -> None:
    """A second installed plugin whose module raises on import."""
    dist = site / "medflow_plugin_broken-0.0.1.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: medflow-plugin-broken\nVersion: 0.0.1\n")
    (dist / "entry_points.txt").write_text("[medflow.steps]\nbroken = medflow_plugin_broken\n")
    (site / "medflow_plugin_broken.py").write_text("raise RuntimeError('this plugin is broken')\n")


def test_plugin_step_is_listed_in_steps_and_schema(site):
    steps = _medflow(site, "steps")
    assert steps.returncode == 0, steps.stderr
    assert "invert (version 1, pointwise): Mirror intensities" in steps.stdout
    schema = _medflow(site, "schema")
    assert '"invert"' in schema.stdout


def test_plugin_step_runs_in_a_recipe_and_joins_the_manifest_and_key(site, tmp_path):
    recipe = {
        "medflow": 1, "name": "plugin", "source": {"sample": "ct-phantom"},
        "steps": [{"step": "window", "level": 40, "width": 400}, {"step": "invert"}],
        "outputs": {"dir": str(tmp_path / "out"), "writers": [{"kind": "npy"}]},
        "engine": {"workers": 2},
    }
    path = tmp_path / "plugin.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run = _medflow(site, "run", "--quiet", str(path))
    assert run.returncode == 0, run.stdout + run.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    item = manifest["items"][0]
    assert item["steps"][-1]["name"] == "invert"
    assert item["steps"][-1]["params"]["plugin"] == "medflow-plugin-example==0.1.0"
    array = np.load(tmp_path / "out" / item["outputs"][0]["path"])
    assert 0.0 <= array.min() and array.max() <= 1.0


def test_a_broken_plugin_is_named_and_the_others_still_load(site):
    _broken_plugin(site)
    steps = _medflow(site, "steps")
    assert steps.returncode == 0
    assert "plugin 'broken' (medflow-plugin-broken 0.0.1, medflow.steps) failed to load" in steps.stderr
    assert "this plugin is broken" in steps.stderr
    assert "invert (version 1" in steps.stdout


def test_a_recipe_of_built_in_steps_loads_no_plugin(site, tmp_path):
    """Reading every installed package's entry points costs tens of milliseconds of start-up: a recipe
    naming only medflow's own steps and writers does not load plugins (not even a broken one), and its
    manifest lists none; a recipe naming a plugin step lists every installed plugin."""
    _broken_plugin(site)
    manifests = {}
    for name, steps in (("builtin", [{"step": "window", "level": 40, "width": 400}]),
                        ("plugin", [{"step": "window", "level": 40, "width": 400}, {"step": "invert"}])):
        recipe = {"medflow": 1, "name": name, "source": {"sample": "ct-phantom"}, "steps": steps,
                  "outputs": {"dir": str(tmp_path / name), "writers": [{"kind": "npy"}]}, "engine": {"workers": 1}}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(recipe))
        run = _medflow(site, "run", "--quiet", str(path))
        assert run.returncode == 0, run.stdout + run.stderr
        assert ("plugin 'broken'" in run.stderr) == (name == "plugin"), run.stderr
        manifests[name] = json.loads((tmp_path / name / "manifest.json").read_text())
    assert manifests["builtin"]["environment"]["plugins"] == {}
    assert manifests["plugin"]["environment"]["plugins"] == {"medflow.steps:invert": "medflow-plugin-example==0.1.0"}
