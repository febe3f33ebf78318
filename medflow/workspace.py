"""The output folder and the cache folder are workspaces medflow owns.

This is the one module that knows:

* **the ownership marker**: ``.medflow-output`` in an output folder, ``.medflow-cache`` in a
  cache folder (small JSON files written on the first build). medflow writes only into a
  folder that is new, empty or marked; ``force=True`` adopts another folder (it is marked,
  and still nothing medflow did not create there is ever deleted). A folder written by a
  medflow from before the marker (an output with a medflow ``manifest.json``, a cache made
  only of medflow's own entries) is recognised and marked.
* **the locks**: ``.medflow-lock`` in the output folder lets one build at a time write it;
  a cache is shared by several builds (entries are content-addressed and published
  atomically by ``os.replace``), and each live run holds ``.medflow-runs/<run id>.lock``
  in it. They are ``flock`` locks (:mod:`medflow.locks`): the OS releases them when
  their process dies, so a killed build never blocks the next one.
* **temp-file naming**: ``.medflow-tmp-<run id>-<random>-<name>``, next to the file being
  written; the run id is 12 hex digits, one per build (workers get their parent's).
* **the cleanup rule**: only entries named like that, and only those of runs that are not
  alive. In the output folder, whoever holds the lock is the only live run. In the cache a
  run is alive while its run lock is held; a temp file whose run never held one there (a
  process outside any build) is removed once older than :data:`ORPHAN_SECONDS`.

Nothing else in medflow deletes files in these folders, except the writers replacing
their own outputs. This module sits next to ``errors`` (not in ``engine/``) because the
writers and the sources make temp files too, and they must not import the engine.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from medflow.errors import WorkspaceError, describe_os_error
from medflow.locks import FileLock

OUTPUT_MARKER = ".medflow-output"
CACHE_MARKER = ".medflow-cache"
LOCK_NAME = ".medflow-lock"
RUNS_FOLDER = ".medflow-runs"
TEMP_PREFIX = ".medflow-tmp-"
ORPHAN_SECONDS = 3600.0  # a temp file of a run that held no run lock: surely dead after an hour
WATCH_SECONDS = 0.2  # how often a worker checks that its parent is alive
_TEMP_NAME = re.compile(r"^\.medflow-tmp-([0-9a-f]{12})-")
_MAX_NAME = 100  # characters of the target's name kept in a temp name (file names stop at 255 bytes)
# Entries a cache written before the marker holds: it may be adopted without --force.
_LEGACY_CACHE_ENTRIES = {"objects", "records", "samples", "fingerprints.json", ".dask-probe", LOCK_NAME, RUNS_FOLDER}

_run_id: str | None = None
_live_temps: set[str] = set()  # temp paths this process has open (removed if its parent dies)
_watched_parent: int | None = None


# --------------------------------------------------------------------------- temp-file naming


def new_run_id() -> str:
    """A fresh run id: 12 hex digits."""
    return secrets.token_hex(6)


def current_run_id() -> str:
    """The run this process works for (set by :func:`claim_output` or a worker's supervisor).

    A process outside any build (``medflow plan``, a library call) gets an id of its own.
    """
    global _run_id
    if _run_id is None:
        _run_id = new_run_id()
    return _run_id


def set_run_id(run_id: str | None) -> str | None:
    """Make ``run_id`` the current run of this process; returns the previous one."""
    global _run_id
    previous, _run_id = _run_id, run_id
    return previous


def temp_name(name: str) -> str:
    """The name of a temp file for ``name``: ``.medflow-tmp-<run id>-<random>-<name>.tmp``."""
    # ends in ".tmp", never in the target's extension: a reader's "*.npy" glob never sees a partial file
    return f"{TEMP_PREFIX}{current_run_id()}-{secrets.token_hex(4)}-{name[-_MAX_NAME:]}.tmp"


def temp_run_id(filename: str) -> str | None:
    """The run id in a medflow temp name, ``None`` for any other name."""
    match = _TEMP_NAME.match(filename)
    return match.group(1) if match else None


def create_temp_file(folder: Path, name: str) -> tuple[int, Path]:
    """Create a new temp file for ``name`` in ``folder`` (mode 0600); returns its fd and path.

    The path is registered as live until :func:`release_temp` (a worker whose parent dies
    removes its live temp files before exiting).

    Raises:
        OSError: as :func:`os.open` (the folder is not writable, the disk is full...).
    """
    for _ in range(100):
        path = Path(folder) / temp_name(name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
        _live_temps.add(str(path))
        return fd, path
    raise FileExistsError(f"no free temp name for {name} in {folder}")


def create_temp_dir(folder: Path, name: str) -> Path:
    """Create a new temp folder for ``name`` in ``folder`` (mode 0700), registered like a temp file."""
    for _ in range(100):
        path = Path(folder) / temp_name(name)
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        _live_temps.add(str(path))
        return path
    raise FileExistsError(f"no free temp name for {name} in {folder}")


def release_temp(path: str | os.PathLike[str]) -> None:
    """``path`` was renamed into place or removed: no longer a live temp file of this process."""
    _live_temps.discard(str(path))


def _remove(path: Path) -> bool:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        return True
    except FileNotFoundError:
        return False
    except OSError:
        return False


def temp_entries(root: Path) -> Iterator[tuple[Path, str]]:
    """Every medflow temp file or folder under ``root`` with its run id (symlinks are not followed)."""
    for folder, dirs, files in os.walk(root, onerror=lambda _error: None):
        base = Path(folder)
        for name in files:
            run_id = temp_run_id(name)
            if run_id:
                yield base / name, run_id
        kept = []
        for name in dirs:
            run_id = temp_run_id(name)
            if run_id:
                yield base / name, run_id
            elif name != RUNS_FOLDER:
                kept.append(name)
        dirs[:] = kept


# --------------------------------------------------------------------------- ownership and locks


def _notify_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Workspace:
    """A claimed output folder (locked) and, optionally, its cache folder (this run registered).

    Use as a context manager (see :func:`claim_output`); leaving it removes this run's own
    temp files (e.g. of workers killed by an interrupt) and releases the locks.
    """

    def __init__(self, out_dir: Path, cache_dir: Path | None, run_id: str):
        self.out_dir = out_dir
        self.cache_dir = cache_dir
        self.run_id = run_id
        self._out_lock = None
        self._run_lock = None
        self._previous_run_id: str | None = None
        self._created: list[tuple[Path, Path, set[str]]] = []  # (folder, topmost folder made, our names)

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def cleanup_stale_temp_files(self) -> list[Path]:
        """Remove temp files of runs that are not alive; returns what was removed.

        Output folder: every run but this one (this run holds its lock). Cache: runs whose
        run lock is free (then their lock file goes too), and temp files of processes that
        held no run lock, once older than :data:`ORPHAN_SECONDS`.
        """
        removed = [path for path, run_id in temp_entries(self.out_dir) if run_id != self.run_id and _remove(path)]
        if self.cache_dir is not None:
            removed += _cleanup_cache(self.cache_dir, self.run_id)
        return removed

    def remove_own_temp_files(self) -> None:
        """Remove this run's temp files (left by workers that were killed) from the folders it holds."""
        held = [self.out_dir] if self._out_lock is not None else []
        held += [self.cache_dir] if self._run_lock is not None and self.cache_dir is not None else []
        for root in held:
            for path, run_id in temp_entries(root):
                if run_id == self.run_id:
                    _remove(path)

    def close(self) -> None:
        try:
            self.remove_own_temp_files()
        finally:
            if self._run_lock is not None:
                _unlink_quietly(Path(self._run_lock.lock_file))
                self._run_lock.release()
                self._run_lock = None
            if self._out_lock is not None:
                self._out_lock.release()
                self._out_lock = None
            for folder, top, ours in self._created:
                _prune_unused(folder, top, ours)
            self._created = []
            set_run_id(self._previous_run_id)


def claim_output(
    out_dir: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    wait: bool = True,
    notify: Callable[[str], None] = _notify_stderr,
) -> Workspace:
    """Claim ``out_dir`` for one build (and register it in ``cache_dir``); use as a context manager.

    Checks that the folder is new, empty or a medflow output (``force`` adopts any folder),
    creates it, takes its lock (``wait``: waits for a running build, after telling
    ``notify``; otherwise refuses), marks it, checks that it is writable, does the same for
    the cache folder, then removes the temp files of dead runs.

    Raises:
        WorkspaceError: the folder is not medflow's, another build holds it (``wait=False``),
            or it cannot be created, locked or written (the message names the cause).
    """
    out = Path(os.path.abspath(out_dir))
    cache = Path(os.path.abspath(cache_dir)) if cache_dir is not None else None
    workspace = Workspace(out, cache, new_run_id())
    workspace._previous_run_id = set_run_id(workspace.run_id)
    try:
        _check_owner(out, OUTPUT_MARKER, _is_legacy_output, force, "an output")
        top = _first_missing(out)
        _make_folder(out)
        if top is not None:  # a build that could not start leaves no folder behind
            workspace._created.append((out, top, {OUTPUT_MARKER, LOCK_NAME}))
        lock = FileLock(out / LOCK_NAME)
        try:
            if not lock.acquire(wait=False):
                if not wait:
                    raise WorkspaceError(
                        str(out), "another medflow build is writing to this folder (run without --no-wait to wait for it)"
                    ) from None
                notify(f"medflow: another build is writing to {out}; waiting for it to finish (--no-wait to refuse)")
                lock.acquire(wait=True)
        except OSError as exc:
            raise WorkspaceError(str(out), f"cannot lock the folder: {describe_os_error(exc)}") from None
        workspace._out_lock = lock
        _check_owner(out, OUTPUT_MARKER, _is_legacy_output, force, "an output")  # the winner of a race may differ
        _mark(out, OUTPUT_MARKER, force)
        if cache is not None:
            _check_owner(cache, CACHE_MARKER, _is_legacy_cache, force, "a cache")
            top = _first_missing(cache)
            _make_folder(cache / RUNS_FOLDER)
            if top is not None:
                workspace._created.append((cache, top, {CACHE_MARKER, RUNS_FOLDER}))
            run_lock = FileLock(cache / RUNS_FOLDER / f"{workspace.run_id}.lock")
            try:
                cause = None if run_lock.acquire(wait=False) else "lock busy"
            except OSError as exc:
                cause = describe_os_error(exc)
            if cause is not None:
                raise WorkspaceError(str(cache), f"cannot register the run in the cache: {cause}") from None
            workspace._run_lock = run_lock
            _mark(cache, CACHE_MARKER, force)
        workspace.cleanup_stale_temp_files()
    except BaseException:
        workspace.close()
        raise
    return workspace


def _check_owner(folder: Path, marker: str, is_legacy: Callable[[Path, list[str]], bool], force: bool, what: str) -> None:
    try:
        if not folder.exists():
            return
        if not folder.is_dir():
            raise WorkspaceError(str(folder), "exists and is not a folder")
        names = [name for name in os.listdir(folder) if name != LOCK_NAME and not temp_run_id(name)]
    except OSError as exc:
        raise WorkspaceError(str(folder), f"cannot read the folder: {describe_os_error(exc)}") from None
    if force or not names or marker in names or is_legacy(folder, names):
        return
    raise WorkspaceError(
        str(folder),
        f"not {what} folder of medflow (not empty, no {marker} marker); choose a new or empty folder, "
        "or pass --force to write into it (medflow never deletes files it did not create)",
    )


def _first_missing(folder: Path) -> Path | None:
    """The topmost of ``folder`` and its parents that does not exist yet (``None``: it exists)."""
    missing = None
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return missing
        missing = candidate
    return missing


def _prune_unused(folder: Path, top: Path, ours: set[str]) -> None:
    """Remove ``folder`` (and its new parents up to ``top``) if it holds nothing but our own entries."""
    try:
        names = set(os.listdir(folder))
        if not names <= ours:
            return
        for name in names:
            path = folder / name
            if path.is_dir():
                path.rmdir()  # the runs folder, only when empty
            else:
                path.unlink()
        for candidate in (folder, *folder.parents):
            candidate.rmdir()
            if candidate == top:
                break
    except OSError:
        pass  # not empty after all (another build started): keep it


def _is_legacy_output(folder: Path, names: list[str]) -> bool:
    """An output written before the marker: its manifest.json is a medflow manifest."""
    if "manifest.json" not in names:
        return False
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and "manifest_version" in manifest and "items" in manifest


def _is_legacy_cache(folder: Path, names: list[str]) -> bool:
    return set(names) <= _LEGACY_CACHE_ENTRIES


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WorkspaceError(str(folder), f"cannot create the folder: {describe_os_error(exc)}") from None


def _mark(folder: Path, marker: str, force: bool) -> None:
    """Write the marker if absent; either way prove the folder writable (a temp file is made)."""
    from medflow import __version__

    path = folder / marker
    try:
        fd, tmp = create_temp_file(folder, marker)
        try:
            if not path.exists():
                # no timestamp: two builds of one recipe give the same bytes, marker included
                text = json.dumps({"medflow": __version__, "folder": marker, "adopted": force}) + "\n"
                os.write(fd, text.encode())
                os.close(fd)
                fd = -1
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
        finally:
            if fd >= 0:
                os.close(fd)
            _unlink_quietly(tmp)
            release_temp(tmp)
    except OSError as exc:
        raise WorkspaceError(str(folder), f"cannot write into the folder: {describe_os_error(exc)}") from None


def _cleanup_cache(cache: Path, own_run: str) -> list[Path]:
    by_run: dict[str, list[Path]] = {}
    for path, run_id in temp_entries(cache):
        if run_id != own_run:
            by_run.setdefault(run_id, []).append(path)
    runs = cache / RUNS_FOLDER
    try:
        lock_files = {p.stem: p for p in runs.glob("*.lock") if p.stem != own_run}
    except OSError:
        lock_files = {}
    removed: list[Path] = []
    now = time.time()
    for run_id in sorted(set(by_run) | set(lock_files)):
        lock_file = lock_files.get(run_id)
        if lock_file is None:  # a process outside any build: judge by age
            for path in by_run.get(run_id, []):
                try:
                    old = now - path.lstat().st_mtime > ORPHAN_SECONDS
                except OSError:
                    continue
                if old and _remove(path):
                    removed.append(path)
            continue
        probe = FileLock(lock_file)
        try:
            if not probe.acquire(wait=False):
                continue  # alive
        except OSError:
            continue  # not ours to judge
        try:
            removed += [path for path in by_run.get(run_id, []) if _remove(path)]
            _unlink_quietly(lock_file)
        finally:
            probe.release()
    return removed


def _unlink_quietly(path: str | os.PathLike[str]) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# --------------------------------------------------------------------------- worker supervision


def supervise_worker(run_id: str, parent_pid: int) -> None:
    """In a worker process: work for run ``run_id``, and stop when the parent ``parent_pid`` dies.

    A daemon thread polls the parent every :data:`WATCH_SECONDS`; when the worker has been
    orphaned (the build was killed) it removes its live temp files and exits at once, so
    nothing keeps writing into a folder whose build is gone. Calling it again is cheap.
    """
    set_run_id(run_id)
    watch_parent(parent_pid)


def watch_parent(parent_pid: int) -> None:
    """In a worker process: exit at once (removing its live temp files) when ``parent_pid`` dies.

    Also the initializer of medflow's worker processes, so a worker still starting when its
    parent is killed does not outlive it. Calling it again is cheap.
    """
    global _watched_parent
    if os.getpid() == parent_pid or _watched_parent == parent_pid:
        return
    _watched_parent = parent_pid
    if os.getppid() != parent_pid:
        _parent_gone()
    threading.Thread(target=_watch, args=(parent_pid,), name="medflow-parent-watch", daemon=True).start()


def supervised_call(function, arg, run_id: str, parent_pid: int):
    """In a worker: ``function(arg)`` under :func:`supervise_worker` (this module is light to import)."""
    supervise_worker(run_id, parent_pid)
    return function(arg)


def _watch(parent_pid: int) -> None:
    while True:
        time.sleep(WATCH_SECONDS)
        if os.getppid() != parent_pid:
            _parent_gone()


def _parent_gone() -> None:
    for path in list(_live_temps):
        _remove(Path(path))
    os._exit(1)
