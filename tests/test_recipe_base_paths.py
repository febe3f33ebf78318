"""Relative paths written in a base recipe resolve against the base's folder, not the child's."""

from __future__ import annotations

import textwrap
from pathlib import Path

from medflow.engine.prepare import output_dir
from medflow.recipe.loader import load_recipe, resolve_path
from medflow.recipe.model import recipe_model
from medflow.recipe.paths import is_recipe_path_field, recipe_path_locations
from medflow.steps.registry import all_steps
from medflow.writers.registry import all_writers

BASE = """\
medflow: 1
abstract: true
source: {dicom: ../data}
outputs: {dir: ../build/x}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def real(path: Path) -> Path:
    return path.resolve()


def test_base_paths_resolve_against_the_base_folder(tmp_path):
    write(tmp_path, "bases/base.yaml", BASE)
    child = write(tmp_path, "team/child.yaml", "extends: ../bases/base.yaml\nname: c\n")
    loaded = load_recipe(child)
    assert real(resolve_path(loaded, loaded.recipe.source.dicom)) == real(tmp_path / "data")
    assert real(resolve_path(loaded, loaded.recipe.outputs.dir)) == real(tmp_path / "build" / "x")
    # the resolved dict stays relative (to the recipe's folder), so it does not depend on the checkout
    assert loaded.resolved["source"]["dicom"] == "../data"
    assert loaded.resolved["outputs"]["dir"] == "../build/x"
    assert output_dir(loaded) == tmp_path.resolve() / "build" / "x"  # where the build writes


def test_base_in_a_sub_folder_is_rewritten(tmp_path):
    write(tmp_path, "bases/deep/base.yaml", BASE)
    child = write(tmp_path, "team/child.yaml", "extends: ../bases/deep/base.yaml\nname: c\n")
    loaded = load_recipe(child)
    assert real(resolve_path(loaded, loaded.recipe.source.dicom)) == real(tmp_path / "bases" / "data")
    assert real(resolve_path(loaded, loaded.recipe.outputs.dir)) == real(tmp_path / "bases" / "build" / "x")
    assert loaded.resolved["source"]["dicom"] == "../bases/data"


def test_child_override_keeps_the_child_folder(tmp_path):
    write(tmp_path, "bases/base.yaml", BASE)
    child = write(tmp_path, "team/child.yaml", "extends: ../bases/base.yaml\nname: c\noutputs: {dir: out}\n")
    loaded = load_recipe(child)
    assert real(resolve_path(loaded, loaded.recipe.outputs.dir)) == real(tmp_path / "team" / "out")
    assert real(resolve_path(loaded, loaded.recipe.source.dicom)) == real(tmp_path / "data")


def test_two_level_chain(tmp_path):
    write(tmp_path, "org/root.yaml", """\
        medflow: 1
        abstract: true
        source: {dicom: scans}
        outputs: {dir: builds/root}
        engine: {cache_dir: cache}
        """)
    write(tmp_path, "bases/mid/base.yaml", "extends: ../../org/root.yaml\nabstract: true\noutputs: {dir: ../out}\n")
    child = write(tmp_path, "team/a/child.yaml", "extends: ../../bases/mid/base.yaml\nname: c\n")
    loaded = load_recipe(child)
    assert real(resolve_path(loaded, loaded.recipe.source.dicom)) == real(tmp_path / "org" / "scans")
    assert real(resolve_path(loaded, loaded.recipe.engine.cache_dir)) == real(tmp_path / "org" / "cache")
    assert real(resolve_path(loaded, loaded.recipe.outputs.dir)) == real(tmp_path / "bases" / "out")


def test_set_and_source_keep_their_meaning(tmp_path, monkeypatch):
    write(tmp_path, "bases/base.yaml", BASE)
    child = write(tmp_path, "team/child.yaml", "extends: ../bases/base.yaml\nname: c\n")
    loaded = load_recipe(child, overrides=["outputs.dir=o2"])
    assert real(resolve_path(loaded, loaded.recipe.outputs.dir)) == real(tmp_path / "team" / "o2")
    monkeypatch.chdir(tmp_path)
    loaded = load_recipe(child, source="elsewhere")
    assert real(resolve_path(loaded, loaded.recipe.source.dicom)) == real(tmp_path / "elsewhere")
    assert real(resolve_path(loaded, loaded.recipe.outputs.dir)) == real(tmp_path / "build" / "x")


def test_absolute_and_env_paths_stay(tmp_path):
    absolute = tmp_path / "abs" / "data"
    write(tmp_path, "bases/base.yaml", f"""\
        medflow: 1
        abstract: true
        source: {{dicom: {absolute}}}
        outputs: {{dir: "${{OUT}}/x"}}
        engine: {{cache_dir: "${{CACHE:-cache}}"}}
        """)
    child = write(tmp_path, "team/child.yaml", "extends: ../bases/base.yaml\nname: c\n")
    loaded = load_recipe(child, environ={"OUT": str(tmp_path / "envout")})
    assert loaded.recipe.source.dicom == str(absolute)
    assert loaded.recipe.outputs.dir == str(tmp_path / "envout" / "x")
    # ${ENV} expanding to a relative path was written in the base: the base's folder
    assert real(resolve_path(loaded, loaded.recipe.engine.cache_dir)) == real(tmp_path / "bases" / "cache")


def test_step_writer_labels_and_splits_paths(tmp_path):
    lut = write(tmp_path, "bases/luts/map.csv", "".join(f"{i},{i},{i}\n" for i in range(256)))
    write(tmp_path, "bases/base.yaml", """\
        medflow: 1
        abstract: true
        source:
          dicom: ../data
          labels: {from: mask, folder: masks, pattern: "{series_uid}.nii.gz"}
        steps:
          - step: anonymize
            key_file: secret.key
            crosswalk: ../private/crosswalk.csv
          - step: colormap
            map: file
            path: luts/map.csv
        splits: {ratios: {train: 0.8, test: 0.2}, table: tables/labels.csv}
        outputs:
          dir: ../build/x
          writers: [{kind: index, table: tables/labels.csv}]
        """)
    child = write(tmp_path, "team/child.yaml", "extends: ../bases/base.yaml\nname: c\n")
    loaded = load_recipe(child)
    recipe = loaded.recipe
    bases = real(tmp_path / "bases")
    assert real(resolve_path(loaded, recipe.source.labels.folder)) == bases / "masks"
    assert recipe.source.labels.pattern == "{series_uid}.nii.gz"  # a glob under 'folder', not a recipe path
    anonymize, colormap = recipe.steps
    assert real(Path(anonymize.key_file)) == bases / "secret.key"
    assert real(Path(anonymize.crosswalk)) == real(tmp_path / "private" / "crosswalk.csv")
    assert real(Path(colormap.path)) == real(lut)
    assert real(resolve_path(loaded, recipe.splits.table)) == bases / "tables" / "labels.csv"
    assert real(resolve_path(loaded, recipe.outputs.writers[0].table)) == bases / "tables" / "labels.csv"


def test_every_recipe_path_field_is_found():
    """The fields documented as relative to the recipe are exactly the ones rebased."""
    steps = {spec.name: sorted(n for n, f in spec.params_model.model_fields.items() if is_recipe_path_field(f))
             for spec in all_steps()}
    assert steps["anonymize"] == ["crosswalk", "key_file"]
    assert steps["colormap"] == ["path"]
    writers = {spec.kind: sorted(n for n, f in spec.params_model.model_fields.items() if is_recipe_path_field(f))
               for spec in all_writers()}
    assert writers["index"] == ["table"]
    assert all(not any(n == "folder" or n.endswith("_folder") for n in names) for names in writers.values())
    data = {
        "source": {"dicom": "d", "labels": {"from": "seg", "folder": "l", "pattern": "*.dcm"}},
        "outputs": {"dir": "o", "writers": [{"kind": "npy"}, {"kind": "index", "table": "t"}]},
        "engine": {"cache_dir": "c"},
        "splits": {"table": "s"},
        "steps": [{"step": "window", "level": 1, "width": 2}, {"step": "colormap", "path": "p"}],
    }
    assert sorted(recipe_path_locations(data, recipe_model()), key=str) == sorted([
        ("source", "dicom"), ("source", "labels", "folder"), ("outputs", "dir"),
        ("outputs", "writers", 1, "table"), ("engine", "cache_dir"), ("splits", "table"),
        ("steps", 1, "path"),
    ], key=str)


def test_sample_source_has_no_path(tmp_path):
    write(tmp_path, "bases/base.yaml", "medflow: 1\nabstract: true\nsource: {sample: ct-phantom}\n"
          "outputs: {dir: ../build/x}\n")
    child = write(tmp_path, "team/child.yaml", "extends: ../bases/base.yaml\nname: c\n")
    loaded = load_recipe(child)
    assert loaded.recipe.source.sample == "ct-phantom"
    assert real(resolve_path(loaded, loaded.recipe.outputs.dir)) == real(tmp_path / "build" / "x")
