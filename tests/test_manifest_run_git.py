"""The git state of the recipe's repository belongs to the run: manifests differ only under ``run``.

Two builds of one recipe over the same inputs, made from two checkouts (another commit, a dirty
tree), must give manifests equal outside ``run``; ``medflow diff`` still names the git change.
The git state is injected in the builds (no git command runs on the project's repository);
``git_state`` itself is checked on repositories made in a temporary folder.
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


def test_git_state_of_a_real_repository(tmp_path):
    """The commit and the dirty flag as git reports them: none before the first commit or outside a
    repository; a changed tracked file is dirty, an untracked one is not."""
    import subprocess

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.email=t@example.org", "-c", "user.name=t", *args],
                       check=True, capture_output=True)

    outside = tmp_path / "outside"
    outside.mkdir()
    assert provenance.git_state(outside) is None
    repo = tmp_path / "repo"
    repo.mkdir()
    git("init", "-q", str(repo))
    assert provenance.git_state(repo) is None  # no commit yet
    (repo / "recipe.yaml").write_text("medflow: 1\n")
    git("-C", str(repo), "add", "recipe.yaml")
    git("-C", str(repo), "commit", "-qm", "first")
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert provenance.git_state(repo) == {"commit": head, "dirty": False}
    (repo / "notes.txt").write_text("untracked\n")
    assert provenance.git_state(repo) == {"commit": head, "dirty": False}
    (repo / "recipe.yaml").write_text("medflow: 1\nname: changed\n")
    assert provenance.git_state(repo) == {"commit": head, "dirty": True}
    git("-C", str(repo), "checkout", "-q", "--detach")
    assert provenance.git_state(repo / ".") == {"commit": head, "dirty": True}


def test_git_state_asks_an_old_git_with_two_commands(tmp_path, monkeypatch):
    """A git without ``--porcelain=v2``/``--no-ahead-behind`` (usage error 129) is asked as before."""
    import subprocess

    calls = []

    def run(args, **kwargs):
        calls.append(args[3:])
        if args[3] == "status" and "--porcelain=v2" in args:
            return subprocess.CompletedProcess(args, 129, "", "error: unknown option `no-ahead-behind'")
        if args[3] == "rev-parse":
            return subprocess.CompletedProcess(args, 0, "a" * 40 + "\n", "")
        return subprocess.CompletedProcess(args, 0, " M recipe.yaml\n", "")

    monkeypatch.setattr(provenance.subprocess, "run", run)
    assert provenance.git_state(tmp_path) == {"commit": "a" * 40, "dirty": True}
    assert [c[0] for c in calls] == ["status", "rev-parse", "status"]


def test_the_command_line_asks_git_once_before_loading_and_the_build_uses_that(tmp_path, monkeypatch):
    """``medflow run`` starts the git state of the recipe's folder before the recipe loads; the build
    records that one and asks no other. An early state of another folder is not used."""
    from medflow.cli import main

    asked = []

    def recorded(folder):
        asked.append(Path(folder))
        return dict(CLEAN)

    monkeypatch.setattr(provenance, "git_state", recorded)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    assert main(["run", str(recipe), "-q"]) == 0
    assert asked == [tmp_path.resolve()]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["run"]["git"] == CLEAN

    other = provenance.GitStateSoon(tmp_path / "elsewhere")
    wait = provenance.run_provenance_soon(load_recipe(recipe), other)
    assert wait() == {"git": CLEAN}
    other.wait()
    assert sorted(asked[1:]) == sorted([tmp_path / "elsewhere", tmp_path.resolve()])  # its own, not the other's
