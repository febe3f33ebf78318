"""The command line as a user meets it: exit codes, messages, plan, steps, schema."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medflow.cli import main
from tests.dicom_factory import write_ct_series
from tests.test_engine_cache import RECIPE

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for series in range(2):
        write_ct_series(tmp_path / "data", series, n_slices=2)
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    return tmp_path


def test_run_exits_0_and_prints_a_summary(project, capsys):
    assert main(["run", str(project / "recipe.yaml"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "2/2 items ok, 0 failed, 2 computed, 0 from cache" in out
    # a pixel recipe builds its input files into outputs (only DICOM-writing chains "write" them)
    assert "inputs: 4 DICOM file(s) = 4 built into the outputs + 0 withheld" in out


def test_second_run_is_all_from_cache(project, capsys):
    main(["run", str(project / "recipe.yaml"), "-q"])
    capsys.readouterr()
    assert main(["run", str(project / "recipe.yaml"), "-q"]) == 0
    assert "0 computed, 2 from cache" in capsys.readouterr().out


def test_run_exits_1_naming_the_corrupt_file(project, capsys):
    bad = project / "data" / "s1" / "slice000.dcm"
    bad.write_bytes(bad.read_bytes()[:400])
    assert main(["run", str(project / "recipe.yaml"), "-q"]) == 1
    out = capsys.readouterr().out
    # cut before its SeriesInstanceUID: the file belongs to no item and is reported on its own
    assert "2/2 items ok, 0 failed, 1 unreadable file(s)" in out
    assert f"UNREADABLE {bad}: truncated header" in out


def test_run_exits_1_when_a_series_has_a_cut_off_file(project, capsys):
    bad = project / "data" / "s1" / "slice001.dcm"
    bad.write_bytes(bad.read_bytes()[:900])  # the header holds SeriesInstanceUID, the pixels are gone
    assert main(["run", str(project / "recipe.yaml"), "-q"]) == 1
    out = capsys.readouterr().out
    assert "1/2 items ok, 1 failed" in out
    assert f"{bad}: truncated" in out


def test_invalid_recipe_exits_2_before_any_work(project, capsys):
    (project / "bad.yaml").write_text(RECIPE.replace("width: 400", "widht: 400"))
    assert main(["run", str(project / "bad.yaml"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml:8:5: steps[0].widht: unknown key 'widht'; did you mean 'width'?" in err
    assert not (project / "out").exists()


def test_bad_workers_value_exits_2(project, capsys):
    assert main(["run", str(project / "recipe.yaml"), "--workers", "zero"]) == 2
    assert "--workers must be an integer" in capsys.readouterr().err


def test_missing_source_folder_exits_2(project, capsys):
    (project / "nosrc.yaml").write_text(RECIPE.replace("dicom: data", "dicom: nowhere"))
    assert main(["run", str(project / "nosrc.yaml"), "-q"]) == 2
    assert "nowhere: source folder does not exist" in capsys.readouterr().err


def test_validate_reports_every_error(project, capsys):
    bad = RECIPE.replace("width: 400", "width: -5").replace("layout: NCHW", "layout: NCWH")
    (project / "bad.yaml").write_text(bad)
    assert main(["validate", str(project / "bad.yaml"), str(project / "recipe.yaml")]) == 2
    err = capsys.readouterr().err
    assert "steps[0].width" in err and "steps[1].layout" in err


def test_plan_shows_reasons_without_building(project, capsys):
    assert main(["plan", str(project / "recipe.yaml")]) == 0
    out = capsys.readouterr().out
    assert "2 items: 0 up to date, 2 to build" in out
    assert "new input" in out
    assert not (project / "out" / "tensors").exists()
    main(["run", str(project / "recipe.yaml"), "-q"])
    capsys.readouterr()
    main(["plan", str(project / "recipe.yaml"), "--set", "steps[0].level=50"])
    out = capsys.readouterr().out
    assert "changed parameter of step 1 'window': level 40.0 -> 50.0" in out
    assert "from cache: dicom_read; compute: window > layout" in out


def test_steps_lists_every_step_with_units(capsys):
    assert main(["steps"]) == 0
    out = capsys.readouterr().out
    from medflow.steps.registry import all_steps

    for spec in all_steps():
        assert f"{spec.name} (version {spec.version}" in out
    assert "    layout: \"NCHW\" | \"NHWC\"" in out
    assert "    spacing: number | [number, number, number] [mm], required" in out
    assert "[none]" not in out


def test_steps_name_shows_one_and_suggests_on_typo(capsys):
    assert main(["steps", "window"]) == 0
    assert "Window center" in capsys.readouterr().out
    assert main(["steps", "windw"]) == 2
    assert "did you mean 'window'?" in capsys.readouterr().err


def test_checked_in_schema_is_not_stale(capsys):
    main(["schema"])
    generated = json.loads(capsys.readouterr().out)
    checked_in = json.loads((REPO / "schemas" / "recipe.schema.json").read_text())
    assert checked_in == generated, "schemas/recipe.schema.json is stale: run `medflow schema --write schemas/recipe.schema.json`"


def test_python_dash_m_works_the_same(project):
    proc = subprocess.run([sys.executable, "-m", "medflow", "validate", str(project / "recipe.yaml")],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "1 recipe(s) valid" in proc.stdout


def test_killed_build_resumes_without_recomputing_finished_items(tmp_path):
    for series in range(12):
        write_ct_series(tmp_path / "data", series, n_slices=3, size=64)
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    # Slow each item down (in the child only) so the kill lands mid-build, deterministically.
    slow_run = (
        "import sys, time, medflow.engine.execute as b\n"
        "original = b.run_item\n"
        "def slow(task):\n"
        "    time.sleep(0.3)\n"
        "    return original(task)\n"
        "b.run_item = slow\n"
        "from medflow.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", slow_run, "run", str(tmp_path / "recipe.yaml"), "-q"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    tensors = tmp_path / "out" / "tensors"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(tensors.glob("*.npy"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = {p.stem for p in tensors.glob("*.npy")}
    # An item is finished once its cache record is written, just after its output: the kill may
    # fall between the two, and that item is then built again.
    records = (tmp_path / ".medflow" / "cache" / "records").rglob("*.json")
    finished = {json.loads(r.read_text()).get("record", {}).get("item_id") for r in records} - {None}
    assert finished <= written and len(written - finished) <= 1
    assert 2 <= len(finished) and len(written) < 12, "the kill must land mid-build"
    assert not (tmp_path / "out" / "manifest.json").exists()
    visible = [p.name for p in tensors.iterdir() if not p.name.startswith(".")]
    assert all(name.endswith(".npy") for name in visible)

    resumed = subprocess.run([sys.executable, "-m", "medflow", "run", str(tmp_path / "recipe.yaml"), "-q"],
                             cwd=REPO, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    recomputed = set(manifest["run"]["computed"])
    assert recomputed.isdisjoint(finished)
    assert len(recomputed) + len(finished) == 12 and written - finished <= recomputed
    assert not list(tensors.glob(".medflow-tmp-*")) and not list(tensors.glob(".*.tmp"))
