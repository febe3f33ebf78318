"""Where a recipe came from: every file of its ``extends`` chain with its sha256, and its git state.

The manifest keeps the files under ``recipe.files`` (they are the recipe: same files, same record)
and the git state under ``run.git``: the commit and dirty flag vary with the checkout, not with
what is built, and everything that varies per run lives under ``run`` (two builds of the same
recipe and inputs give manifests equal outside ``run``). ``medflow diff`` reads both.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any


def recipe_files(sources: tuple[Path, ...] | list[Path], base_dir: Path) -> list[dict[str, str]]:
    """The recipe file and its bases, deepest base first: ``{"path", "sha256"}``.

    ``path`` is relative to the recipe's folder (POSIX), so two checkouts give the same record.
    """
    files = []
    for source in sources:
        try:
            digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()
        except OSError:
            digest = ""
        files.append({"path": Path(os.path.relpath(source, base_dir)).as_posix(), "sha256": digest})
    return files


def git_state(folder: Path) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the git repository holding ``folder``; ``None`` outside one (or without git).

    ``dirty``: tracked files differ from the commit (untracked files do not count). One git
    command (``status --porcelain=v2 --branch``, git 2.17+; older gits answer two): every build
    waits for it, and on a no-op rebuild of a few milliseconds a second process showed.
    """
    def git(*args: str) -> subprocess.CompletedProcess | None:
        try:
            return subprocess.run(["git", "-C", os.fspath(folder), *args], capture_output=True, text=True,
                                  timeout=20, check=False)
        except (OSError, subprocess.SubprocessError):
            return None

    done = git("status", "--porcelain=v2", "--branch", "--no-ahead-behind", "--untracked-files=no")
    if done is not None and done.returncode == 129:  # a git without these options: usage error
        return _git_state_two_commands(git)
    if done is None or done.returncode != 0:
        return None
    lines = done.stdout.splitlines()
    commit = next((line.split()[2] for line in lines if line.startswith("# branch.oid ")), None)
    if commit is None or not _COMMIT.fullmatch(commit):  # "(initial)": no commit yet
        return None
    return {"commit": commit, "dirty": any(line and not line.startswith("#") for line in lines)}


_COMMIT = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")  # SHA-1 or SHA-256 object name


def _git_state_two_commands(git: Callable[..., subprocess.CompletedProcess | None]) -> dict[str, Any] | None:
    """:func:`git_state` with ``rev-parse HEAD`` and ``status --porcelain`` (gits before 2.17)."""
    head = git("rev-parse", "HEAD")
    commit = head.stdout.strip() if head is not None and head.returncode == 0 else ""
    if not _COMMIT.fullmatch(commit):
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    dirty = status is not None and status.returncode == 0 and bool(status.stdout.strip())
    return {"commit": commit, "dirty": dirty}


def recipe_provenance(loaded: Any) -> dict[str, Any]:
    """``{"files": [...]}`` of a loaded recipe: its ``extends`` chain with hashes (the manifest's ``recipe``)."""
    return {"files": recipe_files(loaded.sources, loaded.base_dir)}


def run_provenance(loaded: Any) -> dict[str, Any]:
    """``{"git": {"commit", "dirty"} | None}`` of the recipe's folder at build time (the manifest's ``run``)."""
    return {"git": git_state(loaded.base_dir)}


def run_provenance_soon(loaded: Any, early: GitStateSoon | None = None) -> Callable[[], dict[str, Any]]:
    """:func:`run_provenance` of ``loaded``, taken on a thread from now on: the git command runs
    while the build does. ``early``: the same taken since before the recipe loaded (the command
    line starts it first), used when it is of the recipe's folder. Returns a function that waits
    for it (and raises what it raised)."""
    folder = Path(loaded.base_dir)
    taking = early if early is not None and early.folder == folder else GitStateSoon(folder)
    return lambda: {"git": taking.wait()}


class GitStateSoon:
    """:func:`git_state` of ``folder``, taken on a daemon thread from creation on."""

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder = Path(folder)
        self._outcome: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._take, name="medflow-git", daemon=True)
        self._thread.start()

    @classmethod
    def of_recipe(cls, recipe_path: str | os.PathLike[str]) -> GitStateSoon:
        """Of the folder of the recipe file at ``recipe_path`` (its ``base_dir`` once loaded)."""
        return cls(Path(recipe_path).absolute().resolve().parent)

    def _take(self) -> None:
        try:
            self._outcome["value"] = git_state(self.folder)
        except BaseException as exc:  # noqa: BLE001 - raised by the waiting thread
            self._outcome["error"] = exc

    def wait(self) -> dict[str, Any] | None:
        """The git state (waits for it); raises what taking it raised."""
        self._thread.join()
        if "error" in self._outcome:
            raise self._outcome["error"]
        return self._outcome["value"]
