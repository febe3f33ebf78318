"""Recipe loading: positions, extends, --set, ${ENV}, canonical resolved dict, paths."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import medflow.recipe
from medflow.errors import RecipeError, UsageError
from medflow.recipe.compose import deep_merge, interpolate_string, parse_override
from medflow.recipe.loader import LoadedRecipe, load_recipe, resolve_path, validate_recipe_files
from medflow.recipe.yaml_positions import (
    Mark,
    RecipeYamlLoader,
    format_path,
    load_yaml,
    parse_flow_value,
    parse_path,
)

RECIPE = """\
medflow: 1
name: lung
source: {sample: ct-phantom}
steps:
  - step: window
    level: -600
    width: 1500
  - step: layout
    layout: NHWC
outputs:
  dir: out
  writers: [{kind: npy}]
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- positions


def test_positions_of_nested_keys_and_values():
    text = textwrap.dedent("""\
        medflow: 1
        steps:
          - step: window
            level: 40
          - step: window
            output_range: [0, 255]
            width: 400
        outputs:
          dir: out
        """)
    loaded = load_yaml(text, "r.yaml")
    assert loaded.issues == []
    pos = loaded.positions
    assert pos.value("steps[1].width") == Mark("r.yaml", 7, 12)
    assert pos.key("steps[1].width") == Mark("r.yaml", 7, 5)
    assert pos.value("steps[1].output_range[1]") == Mark("r.yaml", 6, 23)
    assert pos.value("steps.1.output_range.0") == Mark("r.yaml", 6, 20)
    assert pos.value("steps[0]") == Mark("r.yaml", 3, 5)  # a mapping: where its first key is
    assert pos.value("outputs.dir") == Mark("r.yaml", 9, 8)
    assert pos.key("outputs") == Mark("r.yaml", 8, 1)


def test_paths_round_trip():
    assert format_path(("steps", 2, "output_range", 0)) == "steps[2].output_range[0]"
    assert parse_path("steps[2].output_range[0]") == ("steps", 2, "output_range", 0)
    assert format_path(()) == ""


def test_only_the_safe_loader_is_used():
    assert issubclass(RecipeYamlLoader, yaml.SafeLoader)
    recipe_sources = Path(medflow.recipe.__file__).parent.glob("*.py")
    text = "\n".join(path.read_text(encoding="utf-8") for path in recipe_sources)
    for unsafe in ("yaml.load(", "unsafe_load", "FullLoader", "UnsafeLoader", "yaml.Loader", "full_load"):
        assert unsafe not in text


def test_non_string_keys_are_reported_without_hiding_other_errors():
    loaded = load_yaml("? [a, b]\n: 1\nname: x\n", "r.yaml")
    assert [(i.line, i.col, i.message) for i in loaded.issues] == [
        (1, 3, "mapping keys must be plain strings")
    ]
    assert loaded.data == {"name": "x"}
    assert loaded.tainted == set()


def test_yaml_scalars_stay_json_able():
    loaded = load_yaml("when: 2024-01-01\non: yes\nn: 0x10\nx: ~\n", "r.yaml")
    assert loaded.data == {"when": "2024-01-01", "on": True, "n": 16, "x": None}
    json.dumps(loaded.data)


@pytest.mark.parametrize(
    "text, value",
    [
        ("350", 350),
        ("3.5", 3.5),
        ("[a, b]", ["a", "b"]),
        ('"x"', "x"),
        ("'350'", "350"),
        ("{k: 1}", {"k": 1}),
    ],
)
def test_flow_values(text, value):
    assert parse_flow_value(text) == value


# ----------------------------------------------------------------------------- extends


def test_extends_deep_merges_mappings_and_replaces_lists(tmp_path):
    write(
        tmp_path,
        "common/base.yaml",
        """\
        medflow: 1
        name: base
        source: {sample: ct-phantom}
        steps:
          - {step: window, level: 40, width: 400}
          - {step: layout, layout: NCHW}
        outputs: {dir: base-out, writers: [{kind: npy}, {kind: npz_shards}]}
        engine: {workers: 1, keep_going: false}
        """,
    )
    child = write(
        tmp_path,
        "pipelines/child.yaml",
        """\
        extends: ../common/base.yaml
        name: child
        steps:
          - {step: layout, layout: NHWC}
        outputs: {dir: child-out}
        engine: {workers: 2}
        """,
    )
    loaded = load_recipe(child)
    assert loaded.resolved == {
        "medflow": 1,
        "name": "child",
        "source": {"sample": "ct-phantom"},
        "steps": [{"step": "layout", "layout": "NHWC"}],
        "outputs": {"dir": "child-out", "writers": [{"kind": "npy"}, {"kind": "npz_shards"}]},
        "engine": {"workers": 2, "keep_going": False},
    }
    assert loaded.sources == ((tmp_path / "common/base.yaml").resolve(), child.resolve())
    assert loaded.path == child.resolve()
    assert loaded.base_dir == child.resolve().parent


def test_positions_of_merged_keys_point_into_their_file(tmp_path):
    write(tmp_path, "base.yaml", RECIPE)
    child = write(tmp_path, "child.yaml", "extends: base.yaml\nname: child\n")
    loaded = load_recipe(str(child))
    assert loaded.positions.value("name") == Mark(str(child), 2, 7)
    assert loaded.positions.value("steps[0].width") == Mark(str(tmp_path / "base.yaml"), 7, 12)


def test_chain_and_list_of_bases_merge_in_order(tmp_path):
    write(tmp_path, "a.yaml", RECIPE)
    write(tmp_path, "b.yaml", "extends: a.yaml\ndescription: from b\nengine: {workers: 3}\n")
    write(tmp_path, "c.yaml", "description: from c\nengine: {keep_going: false}\n")
    top = write(tmp_path, "top.yaml", "extends: [b.yaml, c.yaml]\nname: top\n")
    loaded = load_recipe(top)
    assert loaded.resolved["description"] == "from c"  # later base wins
    assert loaded.resolved["engine"] == {"workers": 3, "keep_going": False}
    assert [p.name for p in loaded.sources] == ["a.yaml", "b.yaml", "c.yaml", "top.yaml"]


def test_diamond_extends_is_not_a_cycle(tmp_path):
    write(tmp_path, "root.yaml", RECIPE)
    write(tmp_path, "left.yaml", "extends: root.yaml\ndescription: left\n")
    write(tmp_path, "right.yaml", "extends: root.yaml\nname: right\n")
    top = write(tmp_path, "top.yaml", "extends: [left.yaml, right.yaml]\n")
    loaded = load_recipe(top)
    assert (loaded.resolved["name"], loaded.resolved["description"]) == ("right", "left")
    assert [p.name for p in loaded.sources] == ["root.yaml", "left.yaml", "right.yaml", "top.yaml"]


def test_self_extends_is_a_cycle(tmp_path):
    path = write(tmp_path, "self.yaml", "extends: self.yaml\n" + RECIPE)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    [issue] = caught.value.issues
    assert issue.message == f"extends cycle: {path} -> {path}"
    assert (issue.line, issue.col, issue.path) == (1, 10, "extends")


def test_extends_must_name_files(tmp_path):
    path = write(tmp_path, "r.yaml", "extends: {a: 1}\n" + RECIPE)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert (
        caught.value.issues[0].message
        == "extends must be a file name or a list of file names (got a mapping)"
    )


def test_deep_merge_does_not_modify_its_inputs():
    base = {"a": {"b": [1, 2], "c": 1}}
    over = {"a": {"b": [3]}}
    assert deep_merge(base, over) == {"a": {"b": [3], "c": 1}}
    assert base == {"a": {"b": [1, 2], "c": 1}} and over == {"a": {"b": [3]}}


# ----------------------------------------------------------------------------- --set


def test_set_int_list_str_and_new_key(tmp_path):
    path = write(tmp_path, "r.yaml", RECIPE)
    loaded = load_recipe(
        path,
        overrides=[
            "steps[0].width=350",
            "steps.0.output_range=[0, 255]",
            'name="350"',
            "outputs.writers[0].folder=arrays",
            "engine.workers=2",
        ],
    )
    assert loaded.resolved["steps"][0]["width"] == 350
    assert loaded.recipe.steps[0].width == 350.0
    assert loaded.resolved["steps"][0]["output_range"] == [0, 255]
    assert loaded.resolved["name"] == "350"
    assert loaded.resolved["outputs"]["writers"][0] == {"kind": "npy", "folder": "arrays"}
    assert loaded.resolved["engine"] == {"workers": 2}
    assert loaded.positions.value("steps[0].width") == Mark("<--set>", 0, 0)
    assert loaded.positions.value("steps[0].level") == Mark(str(path), 6, 12)


def test_later_set_wins(tmp_path):
    path = write(tmp_path, "r.yaml", RECIPE)
    loaded = load_recipe(path, overrides=["steps[0].width=350", "steps[0].width=400"])
    assert loaded.resolved["steps"][0]["width"] == 400


def test_errors_on_set_values_point_at_set(tmp_path):
    path = write(tmp_path, "r.yaml", RECIPE)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, overrides=["steps[0].widht=350", "steps[1].layout=NCWH"])
    assert [i.format() for i in caught.value.issues] == [
        "<--set>:0:0: steps[0].widht: unknown key 'widht'; did you mean 'width'?",
        "<--set>:0:0: steps[1].layout: must be one of 'NCHW', 'NHWC', 'NCDHW', 'NDHWC', 'CHW', 'HWC' "
        "(got 'NCWH'); did you mean 'NCHW'?",
    ]


@pytest.mark.parametrize(
    "text, words",
    [
        ("steps[0].width", "expected PATH=VALUE"),
        ("=3", "empty path"),
        ("steps[x].width=1", "malformed path"),
        ("steps..width=1", "malformed path"),
        ("steps[0]width=1", "malformed path"),
        ("steps[-1].width=1", "malformed path"),
        ("name=[a, b", "not a valid YAML value"),
        ("name=!!python/object/apply:os.system [ls]", "unsupported YAML tag"),
        ("name=a: b", "must be a YAML scalar or flow value"),
        ("extends=other.yaml", "'extends' is resolved before overrides"),
    ],
)
def test_malformed_set_is_a_usage_error(tmp_path, text, words):
    path = write(tmp_path, "r.yaml", RECIPE)
    with pytest.raises(UsageError) as caught:
        load_recipe(path, overrides=[text])
    assert words in str(caught.value)
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize(
    "text, words",
    [
        ("steps[2].width=1", "index 2 is past the end of 'steps' (2 items)"),
        ("steps.5.width=1", "index 5 is past the end of 'steps' (2 items)"),
        ("name.first=x", "'name' is a string, it has no keys"),
        ("outputs[0]=x", "'outputs' is a mapping, not a list; write .0 for a key"),
        ("[0]=x", "'<recipe>' is a mapping, not a list"),
        ("steps.first=x", "'steps' is a list; index it with [n]"),
    ],
)
def test_set_path_that_cannot_be_followed_is_a_usage_error(tmp_path, text, words):
    path = write(tmp_path, "r.yaml", RECIPE)
    with pytest.raises(UsageError) as caught:
        load_recipe(path, overrides=[text])
    assert words in str(caught.value)


def test_set_is_parsed_before_the_file_is_read(tmp_path):
    with pytest.raises(UsageError):
        load_recipe(tmp_path / "missing.yaml", overrides=["no-equals-sign"])


def test_parse_override_keeps_the_value_type():
    assert parse_override("a.b=350").value == 350
    assert parse_override("a=x=y").value == "x=y"  # only the first '=' splits


# ----------------------------------------------------------------------------- ${ENV}


def test_env_interpolation_default_and_escape(tmp_path):
    path = write(
        tmp_path,
        "r.yaml",
        RECIPE.replace("dir: out", "dir: ${OUT_ROOT}/$${literal}/${MISSING:-fallback}/${SET:-unused}"),
    )
    loaded = load_recipe(path, environ={"OUT_ROOT": "/data/build", "SET": "given"})
    assert loaded.resolved["outputs"]["dir"] == "/data/build/${literal}/fallback/given"


def test_env_values_are_not_interpolated_again(tmp_path):
    path = write(tmp_path, "r.yaml", RECIPE.replace("name: lung", "name: ${A}"))
    loaded = load_recipe(path, environ={"A": "${B}", "B": "no"})
    assert loaded.resolved["name"] == "${B}"


def test_env_default_from_process_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFLOW_TEST_NAME", "from-env")
    path = write(tmp_path, "r.yaml", RECIPE.replace("name: lung", "name: ${MEDFLOW_TEST_NAME}"))
    assert load_recipe(path).resolved["name"] == "from-env"


@pytest.mark.parametrize(
    "text, result, problems",
    [
        ("plain $HOME and $ sign", "plain $HOME and $ sign", []),
        ("${X}", "x-value", []),
        ("$${X}", "${X}", []),
        ("${NOPE}", "${NOPE}", ["environment variable NOPE is not set"]),
        ("${NOPE:-}", "", []),
        ("${EMPTY:-fallback}", "fallback", []),  # shell semantics: ':-' also covers empty
        ("${EMPTY}", "", []),
        ("${1BAD}", "${1BAD}", ["malformed"]),
        ("${X", "${X", ["malformed"]),
        ("${X.attr}", "${X.attr}", ["malformed"]),
    ],
)
def test_interpolate_string(text, result, problems):
    out, found = interpolate_string(text, {"X": "x-value", "EMPTY": ""})
    assert out == result
    assert len(found) == len(problems)
    for problem, words in zip(found, problems, strict=True):
        assert words in problem


def test_unset_variable_is_located(tmp_path):
    path = write(tmp_path, "r.yaml", RECIPE.replace("dir: out", "dir: ${MEDFLOW_FOO}"))
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, environ={})
    assert [i.format() for i in caught.value.issues] == [
        f"{path}:11:8: outputs.dir: environment variable MEDFLOW_FOO is not set"
    ]


# ----------------------------------------------------------------------------- resolved / paths


def test_resolved_is_json_and_has_no_extends(tmp_path):
    write(tmp_path, "base.yaml", RECIPE)
    child = write(tmp_path, "child.yaml", "extends: base.yaml\n")
    loaded = load_recipe(child)
    assert "extends" not in loaded.resolved
    assert json.loads(json.dumps(loaded.resolved)) == loaded.resolved
    assert isinstance(loaded, LoadedRecipe)


_TOP_LINES = [
    "medflow: 1",
    "name: lung",
    "source: {sample: ct-phantom}",
    "outputs: {dir: out, writers: [{kind: npy}]}",
    "engine: {workers: 2, keep_going: false}",
]
_STEP_ITEMS = ["step: window", "level: -600", "width: 1500", "function: SIGMOID"]


@settings(max_examples=25, deadline=None)
@given(top=st.permutations(_TOP_LINES), step=st.permutations(_STEP_ITEMS))
def test_key_order_does_not_change_the_resolved_dict(tmp_path_factory, top, step):
    folder = tmp_path_factory.mktemp("order")
    text = "\n".join(top) + "\nsteps:\n  - {" + ", ".join(step) + "}\n"
    loaded = load_recipe(write(folder, "r.yaml", text))
    reference = "\n".join(_TOP_LINES) + "\nsteps:\n  - {" + ", ".join(_STEP_ITEMS) + "}\n"
    expected = load_recipe(write(folder, "ref.yaml", reference))
    assert json.dumps(loaded.resolved) == json.dumps(expected.resolved)
    assert list(loaded.resolved) == sorted(loaded.resolved)


def test_resolve_path(tmp_path):
    path = write(tmp_path, "sub/r.yaml", RECIPE)
    loaded = load_recipe(path)
    assert resolve_path(loaded, "data/ct") == path.resolve().parent / "data" / "ct"
    assert resolve_path(loaded, "/abs/ct") == Path("/abs/ct")
    assert resolve_path(loaded, "~/ct") == Path(os.path.expanduser("~")) / "ct"


def test_validate_recipe_files_collects_only_the_bad_ones(tmp_path):
    good = write(tmp_path, "good.yaml", RECIPE)
    bad = write(tmp_path, "bad.yaml", RECIPE.replace("width: 1500", "width: -1"))
    issues = validate_recipe_files([good, bad])
    assert [i.format() for i in issues] == [f"{bad}:7:12: steps[0].width: must be > 0 (got -1)"]
