"""Error text of bad recipes, tested like output.

Each ``tests/golden/recipe_errors/<case>.yaml`` has a hand-written ``<case>.expected``:
the exact lines ``medflow validate`` prints (file paths relative to the golden folder,
because the loader reports paths as the caller gave them). Files under ``bases/`` are
extended by the cases and are not cases themselves.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from medflow.errors import RecipeError, RecipeIssue
from medflow.recipe.diagnostics import did_you_mean, show
from medflow.recipe.loader import load_recipe, validate_recipe_files
from medflow.steps.registry import all_steps

GOLDEN = Path(__file__).parent / "golden" / "recipe_errors"
CASES = sorted(path.stem for path in GOLDEN.glob("*.yaml"))

VALID = """\
medflow: 1
name: ok
source: {sample: ct-phantom}
outputs: {dir: out}
"""


def test_every_golden_recipe_has_its_expected_text():
    expected = sorted(path.stem for path in GOLDEN.glob("*.expected"))
    assert CASES == expected
    assert len(CASES) >= 12


@pytest.mark.parametrize("case", CASES)
def test_golden_recipe_error(case, monkeypatch):
    monkeypatch.chdir(GOLDEN)
    with pytest.raises(RecipeError) as caught:
        load_recipe(f"{case}.yaml", environ={})
    expected = (GOLDEN / f"{case}.expected").read_text(encoding="utf-8")
    assert str(caught.value) + "\n" == expected


def test_validate_reports_the_same_lines_as_load(monkeypatch):
    monkeypatch.chdir(GOLDEN)
    issues = validate_recipe_files(["several_errors.yaml", "bad_layout_literal.yaml"])
    lines = [issue.format() for issue in issues]
    expected = (GOLDEN / "several_errors.expected").read_text() + (
        GOLDEN / "bad_layout_literal.expected"
    ).read_text()
    assert lines == expected.splitlines()


def test_python_tag_is_never_executed(tmp_path):
    target = tmp_path / "pwned"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(VALID + f'description: !!python/object/apply:os.mkdir ["{target}"]\n')
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe)
    assert not target.exists()
    [issue] = caught.value.issues
    assert (issue.line, issue.col, issue.path) == (5, 14, "description")
    assert issue.message == "unsupported YAML tag '!!python/object/apply:os.mkdir'"


@pytest.mark.parametrize(
    "text, tag",
    [
        ("description: !!binary aGVsbG8=\n", "!!binary"),
        ("description: !!set {a, b}\n", "!!set"),
        ("description: !custom x\n", "!custom"),
        ("description: !!python/name:os.system\n", "!!python/name:os.system"),
    ],
)
def test_other_unsupported_tags_are_issues(tmp_path, text, tag):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(VALID + text)
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe)
    assert [i.message for i in caught.value.issues] == [f"unsupported YAML tag '{tag}'"]
    assert caught.value.issues[0].line == 5


def _billion_laughs(levels: int, fan_out: int = 10) -> str:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * fan_out) + "]"]
    for level in range(1, levels):
        refs = ", ".join([f"*a{level - 1}"] * fan_out)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_is_refused_quickly(tmp_path):
    recipe = tmp_path / "lol.yaml"
    recipe.write_text(VALID + _billion_laughs(9))  # 10**9 strings if expanded
    start = time.perf_counter()
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe)
    assert time.perf_counter() - start < 5
    [issue] = caught.value.issues
    assert "expands to more than 100000 values" in issue.message
    assert issue.file == str(recipe)
    assert issue.line >= 5  # somewhere inside the alias bomb, not line 0


def test_small_alias_use_is_fine(tmp_path):
    recipe = tmp_path / "ok.yaml"
    recipe.write_text(
        VALID
        + "steps:\n"
        + "  - &lung {step: window, level: -600, width: 1500}\n"
        + "  - *lung\n"
        + "  - {<<: *lung, level: -500}\n"
    )
    loaded = load_recipe(recipe)
    assert [step["level"] for step in loaded.resolved["steps"]] == [-600, -600, -500]
    assert loaded.resolved["steps"][2]["width"] == 1500


def test_recursive_alias_is_an_issue(tmp_path):
    recipe = tmp_path / "rec.yaml"
    recipe.write_text(VALID + "description: &loop [*loop]\n")
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe)
    assert "recursive alias" in caught.value.issues[0].message


def test_deep_nesting_is_an_issue_not_a_crash(tmp_path):
    recipe = tmp_path / "deep.yaml"
    recipe.write_text(VALID + "description: " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe)
    [issue] = caught.value.issues
    assert issue.message == "document is nested more than 64 levels deep"
    # the top-level mapping is level 1, so the 64th "[" (col 14 + 63) is level 65
    assert (issue.line, issue.col) == (5, 14 + 63)


def test_missing_step_key_lists_the_registered_steps(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(VALID + "steps:\n  - level: 40\n    width: 400\n")
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe)
    names = ", ".join(f"'{spec.name}'" for spec in all_steps())
    assert caught.value.issues == [
        RecipeIssue(str(recipe), 6, 5, "steps[0]", f"missing required key 'step' (one of {names})")
    ]


def test_unknown_step_without_close_match_lists_the_known_ones(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(VALID + "steps:\n  - step: zzzzzz\n")
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe)
    [issue] = caught.value.issues
    assert issue.message.startswith("unknown step 'zzzzzz'; known: ")
    for spec in all_steps():
        assert f"'{spec.name}'" in issue.message


def test_missing_recipe_file_is_an_issue(tmp_path):
    missing = tmp_path / "nope.yaml"
    issues = validate_recipe_files([missing])
    assert [(i.file, i.message) for i in issues] == [
        (str(missing), f"cannot read recipe '{missing}': file not found")
    ]


def test_non_utf8_file_is_located(tmp_path):
    recipe = tmp_path / "latin1.yaml"
    recipe.write_bytes(VALID.encode() + "description: Ärger\n".encode("latin-1"))
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe)
    [issue] = caught.value.issues
    assert (issue.line, issue.col) == (5, 14)
    assert "not UTF-8" in issue.message


def test_unset_variable_hides_the_type_error_it_causes(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(VALID + "steps:\n  - step: window\n    level: 40\n    width: ${WIDTH}\n")
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe, environ={})
    assert [i.format() for i in caught.value.issues] == [
        f"{recipe}:8:12: steps[0].width: environment variable WIDTH is not set"
    ]


def test_linear_window_below_one_reports_the_model_rule(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(VALID + "steps:\n  - step: window\n    level: 40\n    width: 0.5\n")
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe)
    assert [i.format() for i in caught.value.issues] == [
        f"{recipe}:6:5: steps[0]: width must be >= 1 for the LINEAR function (got 0.5)"
    ]


def test_tuple_of_wrong_length(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        VALID + "steps:\n  - {step: window, level: 0, width: 9, output_range: [1]}\n"
        "  - {step: window, level: 0, width: 9, output_range: [0, 1, 2]}\n"
    )
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe)
    assert [(i.line, i.path, i.message) for i in caught.value.issues] == [
        (6, "steps[0].output_range", "must be a list of 2 items (got [1])"),
        (7, "steps[1].output_range", "must be a list of 2 items (got [0, 1, 2])"),
    ]


@pytest.mark.parametrize(
    "word, choices, expected",
    [
        ("widht", ["level", "width", "function"], "width"),
        ("nchw", ["NCHW", "NHWC"], "NCHW"),
        ("qqq", ["level", "width"], None),
    ],
)
def test_did_you_mean(word, choices, expected):
    assert did_you_mean(word, choices) == expected


@pytest.mark.parametrize(
    "value, text",
    [(None, "null"), (True, "true"), (-5, "-5"), (0.5, "0.5"), ("NCWH", "'NCWH'"), ([1, "a"], "[1, 'a']")],
)
def test_show_values_as_yaml(value, text):
    assert show(value) == text
