"""`medflow plan` names exactly the input files that changed, appeared or disappeared."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medflow.engine.build import build, prepare
from medflow.recipe.loader import load_recipe
from tests.dicom_factory import write_ct_series, write_ct_slice


def _recipe(tmp_path: Path, source: Path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(f"medflow: 1\nname: reasons\nsource: {{dicom: '{source}'}}\n"
                    "steps: [{step: window, level: 40, width: 400}]\n"
                    "outputs: {dir: out, writers: [{kind: npy}]}\nengine: {workers: 1}\n")
    return path


def _reasons(recipe: Path) -> dict[str, list[str]]:
    prepared = prepare(load_recipe(recipe))
    return {p.item.files[0].split("/")[0]: p.reasons for p in prepared.plans}


def test_one_changed_slice_is_named_with_exact_counts(tmp_path):
    source = tmp_path / "src"
    write_ct_series(source, 1, n_slices=8)
    write_ct_series(source, 2, n_slices=3)
    recipe = _recipe(tmp_path, source)
    build(load_recipe(recipe), show_progress=False)
    write_ct_slice(source / "s1" / "slice005.dcm", series=1, index=5, z=10.0,
                   pixels=np.full((16, 16), 7, np.int16))
    reasons = _reasons(recipe)
    assert reasons["s1"] == ["changed input: 1 changed, 0 added, 0 removed (s1/slice005.dcm)"]
    assert reasons["s2"] == []  # up to date


def test_added_and_removed_slices_are_counted_apart(tmp_path):
    source = tmp_path / "src"
    write_ct_series(source, 1, n_slices=4)
    recipe = _recipe(tmp_path, source)
    build(load_recipe(recipe), show_progress=False)
    write_ct_slice(source / "s1" / "slice004.dcm", series=1, index=4, z=8.0)
    write_ct_slice(source / "s1" / "slice005.dcm", series=1, index=5, z=10.0)
    (source / "s1" / "slice000.dcm").unlink()
    assert _reasons(recipe)["s1"] == [
        "changed input: 0 changed, 2 added, 1 removed (s1/slice004.dcm, s1/slice005.dcm, s1/slice000.dcm)"
    ]


def test_plan_and_dry_run_write_nothing(tmp_path, capsys):
    from medflow.cli import main

    source = tmp_path / "src"
    write_ct_series(source, 1, n_slices=2)
    recipe = _recipe(tmp_path, source)
    before = sorted(p for p in tmp_path.rglob("*"))
    assert main(["plan", str(recipe)]) == 0
    assert main(["run", str(recipe), "--dry-run"]) == 0
    assert "1 items: 0 up to date, 1 to build" in capsys.readouterr().out
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_links_from_a_chain_template_are_the_links_made_item_by_item():
    """plan_all makes the recipe's chain once (chain_template); every item's links must be those
    item_links makes on its own: same names, versions, params, checkpoints and keys."""
    from medflow.engine.plan import chain_template, item_links
    from medflow.recipe.loader import load_recipe
    from medflow.sources.base import ItemRef
    from tests.conftest import REPO_ROOT

    recipes = sorted((REPO_ROOT / "pipelines").glob("*.yaml"))
    assert len(recipes) >= 8
    for path in recipes:
        steps = list(load_recipe(path).recipe.steps)
        reader_params = {"duplicates": "first"}
        template = chain_template(reader_params, steps)
        for fingerprint in ("0" * 64, "f" * 64):
            item = ItemRef(item_id="ct-1", root="/", files=("a.dcm",), kind="series", fingerprint=fingerprint)
            assert item_links(item, reader_params, steps, None, template) == item_links(item, reader_params, steps)


def test_output_keys_from_a_template_are_the_keys_made_item_by_item():
    """plan_all serializes each split's writers once (output_key_template): same keys as output_key."""
    from medflow.engine.keys import output_key, output_key_template
    from medflow.engine.plan import writer_specs
    from medflow.engine.prepare import per_item_writers
    from medflow.recipe.loader import load_recipe
    from tests.conftest import REPO_ROOT

    for path in sorted((REPO_ROOT / "pipelines").glob("*.yaml")):
        writers = per_item_writers(load_recipe(path).recipe)
        for split in (None, "train", "test"):
            chosen = [w.for_split(split) if split and hasattr(w, "for_split") else w for w in writers]
            template = output_key_template(writer_specs(chosen))
            for final in ("0" * 64, "f" * 64, 'a "quoted" \\ key é'):
                assert template.key(final) == output_key(final, writer_specs(chosen)), (path.name, split)
