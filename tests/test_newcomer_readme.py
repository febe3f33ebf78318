"""README "Your first dataset": the five commands, as written, on a small DICOM folder; doctor; preview's place."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from medflow.cli import main
from medflow.engine.prepare import cache_dir, output_dir
from medflow.preview import preview_path
from medflow.recipe.loader import load_recipe
from tests.dicom_factory import write_ct_series

REPO = Path(__file__).resolve().parents[1]


def first_dataset_commands() -> list[str]:
    """The shell commands of the README section "Your first dataset", one per (possibly multi-line) command."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Your first dataset", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)
    commands, pending = [], ""
    for line in block.splitlines(keepends=True):
        pending += line
        try:
            shlex.split(pending)
        except ValueError:  # inside a quoted string: the command goes on
            continue
        if pending.strip():
            commands.append(pending.strip())
        pending = ""
    assert not pending.strip(), "unterminated command in the README block"
    return commands


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the recipes beside a folder of DICOM, as a user's checkout would have them."""
    root = tmp_path_factory.mktemp("newcomer")
    shutil.copytree(REPO / "pipelines", root / "pipelines")
    write_ct_series(root / "my_dicom" / "patient1" / "ct", 1, n_slices=6)
    write_ct_series(root / "my_dicom" / "patient2" / "ct", 2, n_slices=4)
    (root / "my_dicom" / "DICOMDIR.txt").write_text("index of the export\n")
    return root


def test_the_readme_has_five_commands_from_a_folder_to_a_training_loop():
    commands = first_dataset_commands()
    assert len(commands) == 5
    assert all("--source my_dicom" in c for c in commands[:4]) and "medflow.dataset.open" in commands[4]


def test_the_five_commands_run_as_written(project):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=str(REPO))
    outputs = []
    for command in first_dataset_commands():
        done = subprocess.run(["bash", "-c", command], cwd=project, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        outputs.append(done.stdout)
    doctor, plan, shown, run, loop = outputs
    assert "pixel decoders" in doctor and str(project / "build" / "quickstart") in doctor
    assert plan.startswith("2 items: 0 up to date, 2 to build")
    assert (project / "build" / "quickstart.preview.png").is_file() and "2 item(s)" in shown
    assert "2/2 items ok, 0 failed" in run
    assert (project / "build" / "quickstart" / "build.log").read_text() == (project / "first-build.log").read_text()
    epochs = [line.split()[0] for line in loop.splitlines()]
    assert epochs == ["0", "0", "1", "1"]  # two epochs over the two series
    assert all("(6, 1, 16, 16)" in line or "(4, 1, 16, 16)" in line for line in loop.splitlines())


def test_doctor_shows_versions_decoders_extras_and_where_a_recipe_writes(capsys):
    recipe = REPO / "pipelines" / "quickstart.yaml"
    assert main(["doctor", str(recipe)]) == 0
    out = capsys.readouterr().out
    loaded = load_recipe(recipe)
    assert re.search(r"^  pydicom: \d", out, re.MULTILINE)
    assert re.search(r"^  RLE Lossless \(1\.2\.840\.10008\.1\.2\.5\): \w", out, re.MULTILINE)
    assert "[torch]" in out and "[dask]" in out
    assert f"  output: {output_dir(loaded)}" in out and f"  cache: {cache_dir(loaded)}" in out
    # the disk's free space, so a user can see whether the cache will fit (it may keep the inputs' stored values)
    assert re.search(rf"^  cache: {re.escape(str(cache_dir(loaded)))} \([\d,]+\.\d GB free; stored values kept: auto ",
                     out, re.MULTILINE)
    assert f"  preview: {preview_path(loaded)}" in out
    assert "MEDFLOW_SHARED_DATA" in out


def test_doctor_never_shows_the_key(capsys, monkeypatch):
    monkeypatch.setenv("MEDFLOW_DEID_KEY", "a-secret-key-of-32-bytes-0123456")
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "MEDFLOW_DEID_KEY: set" in out and "a-secret-key" not in out


def test_doctor_on_an_invalid_recipe_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("medflow: 1\nname: x\n")
    assert main(["doctor", str(bad)]) == 2
    assert "missing required key" in capsys.readouterr().err


def test_preview_writes_beside_the_output_folder_not_in_the_current_folder(tmp_path, project, monkeypatch):
    here = tmp_path / "elsewhere"
    here.mkdir()
    monkeypatch.chdir(here)
    recipe = project / "pipelines" / "quickstart.yaml"
    out = tmp_path / "mine" / "data"
    args = ["--source", str(project / "my_dicom"), "--set", f"outputs.dir={out}", "--items", "1"]
    assert main(["preview", str(recipe), *args]) == 0
    assert (tmp_path / "mine" / "data.preview.png").is_file()
    assert not list(here.iterdir()) and not out.exists()  # nothing here, nothing inside the dataset
    assert main(["preview", str(recipe), *args, "--out", "p.png"]) == 0
    assert (here / "p.png").is_file()
