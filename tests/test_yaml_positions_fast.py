"""load_yaml skips its nesting-check parse when the text cannot nest too deep: same result either way.

The check parses the whole stream for events before the composer (which recurses) ever sees a
deep document; a text with at most ``max_depth`` collection indicators (``- : ? [ {``) cannot
nest deeper than that, so it is composed at once, and any YAML error sends it down the usual
path (check first) so that the issue reported is the one it always was. The oracle here is that
usual path, forced for every document.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from medflow.recipe import yaml_positions
from medflow.recipe.yaml_positions import load_yaml

REPO = Path(__file__).resolve().parents[1]
FILES = sorted([*REPO.glob("pipelines/**/*.yaml"), *REPO.glob("benchmarks/recipes/*.yaml"),
                *REPO.glob("tests/golden/recipe_errors/**/*.yaml")])
CRAFTED = {
    "empty": "",
    "comment-only": "# nothing\n",
    "scalar": "just text\n",
    "flow": "a: {b: [1, 2, {c: d}]}\n",
    "explicit-key": "? a\n: b\n",
    "single-pair-in-flow-list": "[a: b, c]\n",
    "indentless-list": "a:\n- 1\n- 2\n",
    "nested-lists": "- - - x\n",
    "anchors": "base: &b {level: 40}\nother: *b\nmerged: {<<: *b, width: 400}\n",
    "undefined-alias-then-bad-flow": "a: *nowhere\nb: [unclosed\n",
    "two-documents": "a: 1\n---\nb: 2\n",
    "two-documents-second-bad": "a: 1\n---\nb: [2\n",
    "duplicate-key": "a: 1\na: 2\n",
    "python-tag": "a: !!python/object:os.system ls\n",
    "bad-int": "a: !!int abc\n",
    "tab-indent": "a:\n\tb: 1\n",
    "unclosed-quote": "a: 'open\n",
    "deep-flow": "[" * 70 + "]" * 70 + "\n",
    "deep-block": "".join("  " * i + f"k{i}:\n" for i in range(70)) + "  " * 70 + "v\n",
    "recursive-alias": "a: &x [*x]\n",
}


def _slow(text: str, **limits):
    """The usual path (nesting check first), whatever the text."""
    original = yaml_positions._collections_at_most
    yaml_positions._collections_at_most = lambda text: 10**9
    try:
        return load_yaml(text, "f.yaml", **limits)
    finally:
        yaml_positions._collections_at_most = original


def _same(a, b) -> None:
    assert (a.data, a.issues, a.fatal, a.empty, a.tainted) == (b.data, b.issues, b.fatal, b.empty, b.tainted)
    assert (a.positions.values, a.positions.keys) == (b.positions.values, b.positions.keys)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_recipe_of_the_repository_loads_the_same_either_way(path):
    text = path.read_text(encoding="utf-8")
    _same(load_yaml(text, "f.yaml"), _slow(text))


@pytest.mark.parametrize("max_depth", [0, 1, 2, 3, 64])
@pytest.mark.parametrize("text", CRAFTED.values(), ids=CRAFTED.keys())
def test_crafted_documents_load_the_same_either_way_at_every_depth_limit(text, max_depth):
    _same(load_yaml(text, "f.yaml", max_depth=max_depth), _slow(text, max_depth=max_depth))


def test_the_indicator_count_bounds_the_nesting_of_every_crafted_document():
    """The fast path rests on this: a mapping or list cannot start without an indicator of its own."""
    for name, text in CRAFTED.items():
        depth = max_depth = 0
        loader = yaml_positions.RecipeYamlLoader(text)
        try:
            while loader.check_event():
                event = loader.get_event()
                if isinstance(event, yaml_positions.yaml.CollectionStartEvent):
                    depth += 1
                    max_depth = max(max_depth, depth)
                elif isinstance(event, yaml_positions.yaml.CollectionEndEvent):
                    depth -= 1
        except yaml_positions.yaml.YAMLError:
            pass
        assert max_depth <= yaml_positions._collections_at_most(text), name
