"""The git state of the recipe's repository belongs to the run: manifests differ only under ``run``.

Two builds of one recipe over the same inputs, made from two checkouts (another commit, a dirty
tree), must give manifests equal outside ``run``; ``medflow diff`` still names the git change.
The git state is injected (no git command runs here: the repository's own state is not touched).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import medflow.engine.provenance as provenance
from medflow.diff import diff_builds, diff_manifests, format_report, is_identical
from medflow.engine.build import build
from medflow.recipe.loader import load_recipe

RECIPE = ("medflow: 1\nname: g\nsource: {sample: ct-phantom}\nsteps: [{step: window, level: 40, width: 400}]\n"
          "outputs: {dir: out}\nengine: {workers: 1, cache_dir: cache}\n")
CLEAN = {"commit": "1" * 40, "dirty": False}
DIRTY = {"commit": "2" * 40, "dirty": True}


def _build_with_git(tmp_path: Path, monkeypatch, state: dict | None) -> dict:
    monkeypatch.setattr(provenance, "git_state", lambda folder: None if state is None else dict(state))
    recipe = tmp_path / "recipe.yaml"
    if not recipe.exists():
        recipe.write_text(RECIPE)
    assert build(load_recipe(recipe), show_progress=False).exit_code == 0
    return json.loads((tmp_path / "out" / "manifest.json").read_text())


def _outside_run(manifest: dict) -> dict:
    return {key: value for key, value in manifest.items() if key != "run"}


@pytest.mark.parametrize("second", [DIRTY, {"commit": "1" * 40, "dirty": True}, None],
                         ids=["other-commit-dirty", "same-commit-dirty", "no-repository"])
def test_builds_from_two_checkouts_have_manifests_equal_outside_run(tmp_path, monkeypatch, second):
    first = _build_with_git(tmp_path, monkeypatch, CLEAN)
    again = _build_with_git(tmp_path, monkeypatch, second)
    assert first["run"]["git"] == CLEAN and again["run"]["git"] == second
    assert "git" not in first["recipe"] and [f["path"] for f in first["recipe"]["files"]] == ["recipe.yaml"]
    assert _outside_run(first) == _outside_run(again)


def test_diff_names_the_git_change_from_run(tmp_path, monkeypatch):
    first = _build_with_git(tmp_path, monkeypatch, CLEAN)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "manifest.json").write_text(json.dumps(first))
    again = _build_with_git(tmp_path, monkeypatch, DIRTY)
    report = diff_builds(tmp_path / "a", tmp_path / "out")
    assert report["recipe"]["git"] == [CLEAN, DIRTY]
    assert is_identical(report)  # the git state alone changes no item, value or file
    assert (f'recipe git: {json.dumps(CLEAN, sort_keys=True)} -> {json.dumps(DIRTY, sort_keys=True)}'
            in format_report(report))
    # a manifest written before the move (git under recipe) still compares
    old = {**first, "recipe": {**first["recipe"], "git": CLEAN}, "run": {}}
    assert diff_manifests(old, again)["recipe"]["git"] == [CLEAN, DIRTY]
    assert diff_manifests(old, first)["recipe"]["git"] is None


def test_git_state_is_taken_while_the_build_runs_and_waited_for(tmp_path, monkeypatch):
    """run_provenance_soon runs git_state on a thread; its result (or its error) comes from the wait."""
    import threading
    from types import SimpleNamespace

    release = threading.Event()

    def slow(folder):  # answers only once the caller has gone on (run synchronously: "blocked", 10 s later)
        return {"commit": str(folder) if release.wait(10) else "blocked", "dirty": False}

    monkeypatch.setattr(provenance, "git_state", slow)
    wait = provenance.run_provenance_soon(SimpleNamespace(base_dir=tmp_path))
    release.set()  # the caller went on before git answered
    assert wait() == {"git": {"commit": str(tmp_path), "dirty": False}}

    def broken(folder):
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    monkeypatch.setattr(provenance, "git_state", broken)
    wait = provenance.run_provenance_soon(SimpleNamespace(base_dir=tmp_path))
    with pytest.raises(UnicodeDecodeError):
        wait()
