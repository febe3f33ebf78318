"""medflow diff: names exactly what changed between two builds, from manifests only."""

from __future__ import annotations

import ast
from pathlib import Path

from medflow.cli import main
from medflow.diff import diff_builds, format_report, is_identical
from medflow.engine.build import build
from medflow.recipe.loader import load_recipe

STEPS = "[{step: window, level: -600, width: 1500}, {step: layout, layout: NCHW}]"


def _build(tmp_path: Path, name: str, steps: str = STEPS, extends: str = "") -> Path:
    recipe = tmp_path / f"{name}.yaml"
    recipe.write_text(f"{extends}medflow: 1\nname: d\nsource: {{sample: ct-phantom}}\nsteps: {steps}\n"
                      f"outputs: {{dir: {name}}}\nengine: {{workers: 1, cache_dir: cache}}\n")
    assert build(load_recipe(recipe), show_progress=False).exit_code == 0
    return tmp_path / name


def test_diff_names_exactly_the_parameter_that_changed(tmp_path, capsys):
    a = _build(tmp_path, "a")
    b = _build(tmp_path, "b", STEPS.replace("width: 1500", "width: 1400"))
    report = diff_builds(a, b)
    values = [c["path"] for c in report["recipe"]["values"]]
    assert values == ["outputs.dir", "steps[0].width"]
    changed = report["items"]["changed"]
    assert len(changed) == 4 and not report["items"]["added"] and not report["items"]["removed"]
    for item in changed:
        assert "inputs" not in item
        assert item["steps"] == [{"index": 1, "step": "window", "change": "params",
                                  "params": [{"path": "width", "a": 1500.0, "b": 1400.0, "only_in": None}]}]
        assert item["outputs"]["changed"] == [f"tensors/{item['id']}.npy"]
    text = format_report(report)
    assert "recipe: steps[0].width: 1500 -> 1400" in text and "step 1 window: width: 1500.0 -> 1400.0" in text
    assert main(["diff", str(a), str(b)]) == 1
    assert "4 changed" in capsys.readouterr().out


def test_same_recipe_twice_is_identical(tmp_path):
    a = _build(tmp_path, "a")
    (tmp_path / "a.yaml").rename(tmp_path / "b.yaml")
    (tmp_path / "b.yaml").write_text((tmp_path / "b.yaml").read_text().replace("dir: a", "dir: b"))
    assert build(load_recipe(tmp_path / "b.yaml"), show_progress=False).exit_code == 0
    report = diff_builds(a, tmp_path / "b")
    assert report["items"]["changed"] == [] and report["items"]["unchanged"] == 4
    assert [c["path"] for c in report["recipe"]["values"]] == ["outputs.dir"]


def test_an_inserted_step_is_reported_by_position(tmp_path):
    a = _build(tmp_path, "a")
    b = _build(tmp_path, "b", "[{step: window, level: -600, width: 1500}, {step: normalize, mode: minmax}, "
                              "{step: layout, layout: NCHW}]")
    report = diff_builds(a, b)
    steps = report["items"]["changed"][0]["steps"]
    assert steps == [{"index": 2, "step": "normalize", "change": "replaced", "a": "layout", "b": "normalize"},
                     {"index": 3, "step": "layout", "change": "added"}]
    assert not is_identical(report)


def test_manifest_records_the_extends_chain_and_diff_names_the_changed_base(tmp_path):
    (tmp_path / "base.yaml").write_text("engine: {keep_going: true}\n")
    a = _build(tmp_path, "a", extends="extends: base.yaml\n")
    from medflow.dataset import open as open_build

    files = open_build(a).manifest["recipe"]["files"]
    assert [f["path"] for f in files] == ["base.yaml", "a.yaml"] and all(len(f["sha256"]) == 64 for f in files)
    (tmp_path / "base.yaml").write_text("engine: {keep_going: true}  # edited\n")
    (tmp_path / "a.yaml").write_text((tmp_path / "a.yaml").read_text().replace("dir: a", "dir: a2"))
    assert build(load_recipe(tmp_path / "a.yaml"), show_progress=False).exit_code == 0
    assert diff_builds(a, tmp_path / "a2")["recipe"]["files"]["changed"] == ["a.yaml", "base.yaml"]


def test_diff_imports_no_engine_step_or_writer_code():
    tree = ast.parse((Path(__file__).parents[1] / "medflow" / "diff.py").read_text())
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in modules if m.startswith(("medflow.engine", "medflow.steps", "medflow.writers",
                                                    "medflow.recipe"))}


def test_diff_of_a_folder_without_manifest_exits_2(tmp_path, capsys):
    assert main(["diff", str(tmp_path), str(tmp_path)]) == 2
    assert "no manifest" in capsys.readouterr().err
