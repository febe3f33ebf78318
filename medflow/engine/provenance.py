"""Where a recipe came from: every file of its ``extends`` chain with its sha256, and its git state.

The manifest keeps the files under ``recipe.files`` (they are the recipe: same files, same record)
and the git state under ``run.git``: the commit and dirty flag vary with the checkout, not with
what is built, and everything that varies per run lives under ``run`` (two builds of the same
recipe and inputs give manifests equal outside ``run``). ``medflow diff`` reads both.
"""

from __future__ import annotations

import hashlib
import os
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

    ``dirty``: tracked files differ from the commit (untracked files do not count).
    """
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", os.fspath(folder), *args], capture_output=True, text=True,
                                  timeout=20, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.strip(), "dirty": bool(status and status.strip())}


def recipe_provenance(loaded: Any) -> dict[str, Any]:
    """``{"files": [...]}`` of a loaded recipe: its ``extends`` chain with hashes (the manifest's ``recipe``)."""
    return {"files": recipe_files(loaded.sources, loaded.base_dir)}


def run_provenance(loaded: Any) -> dict[str, Any]:
    """``{"git": {"commit", "dirty"} | None}`` of the recipe's folder at build time (the manifest's ``run``)."""
    return {"git": git_state(loaded.base_dir)}


def run_provenance_soon(loaded: Any) -> Callable[[], dict[str, Any]]:
    """:func:`run_provenance` of ``loaded``, taken on a thread from now on: the git commands run while
    the build does. Returns a function that waits for it (and raises what it raised)."""
    outcome: dict[str, Any] = {}

    def take() -> None:
        try:
            outcome["value"] = run_provenance(loaded)
        except BaseException as exc:  # noqa: BLE001 - raised by the waiting thread
            outcome["error"] = exc

    thread = threading.Thread(target=take, name="medflow-git", daemon=True)
    thread.start()

    def wait() -> dict[str, Any]:
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    return wait
