"""Running any recipe on your own folder: --source, choice sections replaced whole, base recipes validate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medflow.cli import main
from medflow.errors import RecipeError, UsageError
from medflow.recipe.loader import load_recipe, validate_recipe_files
from tests.dicom_factory import write_ct_series

REPO = Path(__file__).resolve().parents[1]
PIPELINES = REPO / "pipelines"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mine") / "my_dicom"
    write_ct_series(root / "a", 1, n_slices=3)
    write_ct_series(root / "b", 2, n_slices=2)
    return root


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_childs_dicom_source_replaces_the_bases_sample_source_whole(tmp_path, folder):
    child = _write(tmp_path / "child.yaml", f"extends: {PIPELINES / 'ich.yaml'}\nname: mine\n"
                   f"source: {{dicom: {folder}}}\noutputs: {{dir: {tmp_path / 'out'}}}\n")
    loaded = load_recipe(child)
    assert loaded.resolved["source"] == {"dicom": str(folder)}  # no 'sample', no base filter merged in


def test_source_flag_replaces_the_folder_and_keeps_the_recipes_filter(folder):
    loaded = load_recipe(PIPELINES / "xray.yaml", source=str(folder))
    assert loaded.resolved["source"] == {"dicom": str(folder), "filter": {"modality": ["CR", "DX"]}}
    assert loaded.positions.value(("source", "dicom")).file == "<--source>"
    assert loaded.source_override == str(folder)


def test_source_flag_on_a_sample_recipe_drops_the_sample_key(folder):
    loaded = load_recipe(PIPELINES / "ich.yaml", source=str(folder))
    assert loaded.resolved["source"] == {"dicom": str(folder), "filter": {"modality": ["CT"]}}


def test_a_relative_source_is_relative_to_the_current_folder(folder, monkeypatch):
    monkeypatch.chdir(folder.parent)
    loaded = load_recipe(PIPELINES / "quickstart.yaml", source="my_dicom")
    assert loaded.recipe.source.dicom == str(folder)


def test_set_of_a_source_kind_drops_the_other_kind(folder):
    loaded = load_recipe(PIPELINES / "ich.yaml", overrides=[f"source.dicom={folder}"])
    assert "sample" not in loaded.resolved["source"]
    assert loaded.resolved["source"]["filter"] == {"modality": ["CT"]}


def test_a_url_source_becomes_a_dicomweb_source_with_the_recipes_filter():
    from medflow.recipe.model import source_kinds

    if "dicomweb" not in source_kinds():
        with pytest.raises(UsageError, match="DICOM folders only"):
            load_recipe(PIPELINES / "ich.yaml", source="https://pacs.example/dicomweb")
        return
    loaded = load_recipe(PIPELINES / "ich.yaml", source="https://pacs.example/dicomweb")
    assert loaded.resolved["source"]["dicomweb"]["url"] == "https://pacs.example/dicomweb"
    assert loaded.resolved["source"]["filter"] == {"modality": ["CT"]} and "sample" not in loaded.resolved["source"]


def test_an_empty_source_is_a_usage_error():
    with pytest.raises(UsageError, match="--source needs a folder"):
        load_recipe(PIPELINES / "quickstart.yaml", source=" ")


def test_run_with_source_builds_the_folder_without_editing_the_recipe(tmp_path, folder, capsys):
    out = tmp_path / "out"
    code = main(["run", str(PIPELINES / "quickstart.yaml"), "--source", str(folder), "-q",
                 "--set", f"outputs.dir={out}", "--set", "engine.workers=1"])
    assert code == 0, capsys.readouterr()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["recipe"]["resolved"]["source"] == {"dicom": str(folder)}
    assert len(manifest["items"]) == 2 and all(item["status"] == "ok" for item in manifest["items"])
    assert "2/2 items ok" in capsys.readouterr().out


def test_plan_with_a_missing_source_folder_names_the_flag(tmp_path, capsys):
    code = main(["plan", str(PIPELINES / "quickstart.yaml"), "--source", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert code == 2 and "nowhere" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- base recipes


def test_the_shipped_bases_validate_on_their_own():
    bases = sorted((PIPELINES / "base").glob("*.yaml"))
    assert bases and validate_recipe_files(bases) == []


def test_a_base_still_reports_what_is_wrong_in_it(tmp_path):
    base = _write(tmp_path / "base.yaml", "abstract: true\nmedflow: 1\nengine: {workerz: 2}\n")
    [issue] = validate_recipe_files([base])
    assert issue.path == "engine.workerz" and "did you mean 'workers'" in issue.message


def test_a_base_step_missing_a_required_key_is_still_an_error(tmp_path):
    base = _write(tmp_path / "base.yaml", "abstract: true\nmedflow: 1\nsteps: [{step: color_space}]\n")
    issues = validate_recipe_files([base])
    assert [(i.path, i.message) for i in issues] == [("steps[0]", "missing required key 'to'")]


def test_abstract_must_be_a_boolean(tmp_path):
    base = _write(tmp_path / "base.yaml", "abstract: yes please\nmedflow: 1\n")
    issues = {i.path: i.message for i in validate_recipe_files([base])}
    assert "true or false" in issues["abstract"]


def test_a_recipe_without_abstract_outside_base_still_needs_its_keys(tmp_path):
    recipe = _write(tmp_path / "partial.yaml", "medflow: 1\nengine: {workers: 2}\n")
    messages = [i.message for i in validate_recipe_files([recipe])]
    assert "missing required key 'name'" in messages


def test_abstract_is_not_inherited(tmp_path):
    _write(tmp_path / "common.yaml", "abstract: true\nmedflow: 1\n")
    child = _write(tmp_path / "child.yaml", "extends: common.yaml\nname: x\n")
    messages = [i.message for i in validate_recipe_files([child])]
    assert any("missing required key" in m for m in messages)


def test_running_a_base_is_refused_in_one_line(capsys):
    assert main(["run", str(PIPELINES / "base" / "ct.yaml"), "-q"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "is a base recipe" in err[0] and "extends: base/ct.yaml" in err[0]
    with pytest.raises(RecipeError):
        load_recipe(PIPELINES / "base" / "common.yaml")


def test_the_schema_accepts_abstract():
    schema = json.loads((REPO / "schemas" / "recipe.schema.json").read_text())
    assert schema["properties"]["abstract"]["type"] == "boolean"
