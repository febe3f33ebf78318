"""Content fingerprints of input files, memoized by (path, size, mtime).

Hashing every input file on every build would read the whole dataset; the memo
keeps each file's content digest (:mod:`medflow.hashing`, BLAKE3) next to its size and
modification time and reuses it while both are unchanged. ``verify=True`` ignores the memo
and rehashes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from stat import S_ISLNK

from medflow.hashing import ALGORITHM, file_digest
from medflow.sources import memo_store
from medflow.writers.atomic import atomic_write

# 3: BLAKE3 digests (2 held sha256: never read as BLAKE3, the memo starts afresh); 4 (27f7da1) kept
# every extra as JSON text, parsed on each read: a quarter of a no-op rebuild's discovery, so 5
# keeps values as they are again (discovery keeps its bulky reading facts as text itself); 6: one
# entry a line, each parsed when asked (:mod:`medflow.sources.memo_store`); a memo of format 5 is
# still read (whole) and saved as 6
MEMO_FORMAT = memo_store.FORMAT
_READ_WHOLE_FORMAT = 5
#: Entries made or changed by a build that the memo holds parsed; past this many they go to its
#: journal (:class:`medflow.sources.memo_store.Journal`): a cold build makes one for every file.
HELD_ENTRIES = 1024  # ~2 KB each parsed (header facts, digest)
#: Fewer bytes of files to hash than this, or files smaller than the second on average:
#: :meth:`FingerprintMemo.digest_many` leaves them to one thread (a tiny file's hash is mostly
#: Python holding the GIL, which threads would only pass around).
PARALLEL_MIN_BYTES = 16 << 20
PARALLEL_MIN_FILE_BYTES = 64 << 10


class FingerprintMemo:
    """Content digests of files, memoized in a file of JSON lines (``None`` path: in memory only).

    With a ``secret`` (a de-identifying build), entries are keyed by HMAC(secret, path) and no
    header facts are kept: the cache then holds neither the export's folder names (often the
    patient's) nor header values.

    The entries of the memo file stay in it (:class:`medflow.sources.memo_store.StoredEntries`),
    each parsed when asked for; the entries this build makes or changes are held (``_entries``),
    at most :data:`HELD_ENTRIES` of them, the others in a journal, until :meth:`save`. Every
    change goes through :meth:`_update`, so no caller holds an entry that may be let go of.
    """

    def __init__(self, memo_path: Path | None, verify: bool = False, secret: bytes | None = None):
        self._secret = secret
        self._path = memo_path
        self._verify = verify
        self._entries: dict[str, dict] = {}  # made or changed by this build (saved over the stored ones)
        self._stored: memo_store.StoredEntries | None = None  # the memo file's entries, parsed when asked
        self._journal: memo_store.Journal | None = None  # entries this build changed and let go of
        self._journal_works = True
        self._dirty = False
        self._lock = threading.Lock()
        self._folders: dict[str, str] = {}  # absolute folder -> its realpath (see _realpath)
        # One build asks about a file several times (its header facts, its digest for the item,
        # its digest for the plan): the path is resolved and stat'ed once per build (see _looked_up).
        self._looked: dict[str, tuple[str, str, int, int]] = {}  # path -> key, resolved, size, mtime_ns
        self._digests: dict[str, str] = {}  # path as asked -> its digest, this build
        # Keys whose entries this build made (``verify`` trusts those: one file reached by two
        # spellings of its path, the source folder's and its realpath's, is hashed once); kept
        # only with ``verify``, the one reader (a key a file otherwise, to the build's end).
        self._fresh: set[str] = set()
        if memo_path is not None and memo_path.is_file():
            try:
                self._stored = memo_store.StoredEntries(memo_path)
            except (ValueError, OSError):
                self._read_whole(memo_path)

    def _read_whole(self, memo_path: Path) -> None:
        """Take the entries of a memo in format 5 (one JSON object), all of them changed: saved as format 6."""
        try:
            data = json.loads(memo_path.read_text())
            if data.get("format") == _READ_WHOLE_FORMAT and isinstance(data["entries"], dict):
                self._entries, self._dirty = data["entries"], True
        except (ValueError, KeyError, OSError, AttributeError):
            self._entries = {}  # a damaged memo only costs a rehash

    def _valid_entry(self, key: str, size: int, mtime_ns: int) -> dict | None:
        """The memo entry of ``key`` if it is still valid for the file's ``size`` and ``mtime_ns``.

        With ``verify`` only entries made by this build count. An entry of the journal or the
        memo file is parsed for this call only: change entries through :meth:`_update`. Callers
        hold ``self._lock``.
        """
        entry = self._entries.get(key)
        if entry is None and self._journal is not None:
            entry = self._journal.get(key)
        if entry is None and self._stored is not None:
            entry = self._stored.get(key)
        if not isinstance(entry, dict) or (self._verify and key not in self._fresh):
            return None
        return entry if entry.get("size") == size and entry.get("mtime_ns") == mtime_ns else None

    def _update(self, key: str, size: int, mtime_ns: int, values: dict) -> None:
        """Set ``values`` in the entry of ``key`` (the valid one, else a fresh one), kept until :meth:`save`."""
        with self._lock:
            entry = self._valid_entry(key, size, mtime_ns)
            if entry is None:
                entry = {"size": size, "mtime_ns": mtime_ns}
                if self._verify:
                    self._fresh.add(key)
            entry.update(values)
            self._keep(key, entry)

    def _keep(self, key: str, entry: dict) -> None:
        """Hold ``entry`` as the entry of ``key``; the held ones go to the journal past :data:`HELD_ENTRIES`.

        Callers hold ``self._lock``.
        """
        if key not in self._entries and len(self._entries) >= HELD_ENTRIES and self._journal_works:
            try:
                if self._journal is None:
                    self._journal = memo_store.Journal(self._path.parent if self._path is not None else None)
                self._journal.append(self._entries)
                self._entries = {}
            except OSError:  # no room or no write access for the journal: hold the entries, as before
                self._journal_works = False
        self._entries[key] = entry
        self._dirty = True

    def _known(self, key: str, size: int, mtime_ns: int, name: str):
        """The value under ``name`` of the valid entry of ``key``, else None (nothing is kept or changed)."""
        with self._lock:
            entry = self._valid_entry(key, size, mtime_ns)
            return None if entry is None else entry.get(name)

    def _looked_up(self, path: Path) -> tuple[str, str, int, int]:
        """(memo key, resolved path, size, mtime_ns) of ``path``, looked up once in this memo's life.

        The memo lives for one build. A file changed later in the build is caught by the next
        build (its size or mtime then differs from the entry's), as when the change falls
        between a stat and the hash that follows it; files medflow writes go through
        :meth:`remember`, which stats afresh.

        Raises:
            OSError: as :func:`os.stat` (a failure is not kept).
        """
        name = os.fspath(path)
        found = self._looked.get(name)
        if found is None:
            resolved, stat = self._resolve(name)
            stat = stat or os.stat(resolved)
            found = self._looked[name] = (self._key_of(resolved), resolved, stat.st_size, stat.st_mtime_ns)
        return found

    def _key(self, path: Path | str) -> tuple[str, str]:
        """(memo key, resolved path) of ``path``."""
        resolved = self._realpath(os.fspath(path))
        return self._key_of(resolved), resolved

    def _key_of(self, resolved: str) -> str:
        if self._secret is None:
            return resolved
        mac = hmac.new(self._secret, b"memo-path\x00" + resolved.encode("utf-8", "surrogateescape"), hashlib.sha256)
        return "hmac:" + mac.hexdigest()

    def _realpath(self, path: str) -> str:
        """``os.path.realpath(path)``, with one lstat instead of one per component (see :meth:`_resolve`)."""
        return self._resolve(path)[0]

    def _resolve(self, path: str) -> tuple[str, os.stat_result | None]:
        """``os.path.realpath(path)``, with one lstat instead of one per component, and that lstat.

        realpath(folder/name) is realpath(folder)/name when name is no symbolic link; the
        resolved folders of absolute paths are kept for this memo's life (one build), so the
        files of a folder cost one lstat each, which is also their stat (``None`` for a
        symbolic link or when not looked at). Never raises (os.stat then does, as before).
        """
        folder, name = os.path.split(path)
        if not os.path.isabs(folder) or name in ("", ".", ".."):
            return os.path.realpath(path), None
        try:
            stat = os.lstat(path)
        except OSError:
            return os.path.realpath(path), None
        if S_ISLNK(stat.st_mode):
            return os.path.realpath(path), None
        resolved = os.path.join(self._real_folder(folder), name)
        return (path if resolved == path else resolved), stat  # one string a file kept, not two

    def _real_folder(self, folder: str) -> str:
        """``os.path.realpath(folder)`` of an absolute folder, memoized with its parents.

        realpath(parent/name) is realpath(parent)/name when name is no symbolic link: a new
        folder costs one lstat once its parent is known (a series per folder: 10,000 folders
        cost a full realpath walk each before, ~0.1 ms).
        """
        real = self._folders.get(folder)
        if real is not None:
            return real
        parent, name = os.path.split(folder)
        if name in ("", ".", "..") or parent == folder:
            real = os.path.realpath(folder)
        else:
            try:
                link = S_ISLNK(os.lstat(folder).st_mode)
            except OSError:
                link = True  # realpath says what it resolves to
            real = os.path.realpath(folder) if link else os.path.join(self._real_folder(parent), name)
        self._folders[folder] = real
        return real

    def digest(self, path: Path) -> str:
        """Hex digest (:func:`medflow.hashing.file_digest`) of ``path``'s bytes."""
        known = self._digests.get(os.fspath(path))
        if known is not None:
            return known
        key, resolved, size, mtime_ns = self._looked_up(path)
        digest = self._known(key, size, mtime_ns, ALGORITHM)
        if digest is None:
            digest = file_digest(resolved)
            self._update(key, size, mtime_ns, {ALGORITHM: digest})
        self._digests[os.fspath(path)] = digest
        return digest

    def digest_many(self, paths: Iterable[str], threads: int) -> None:
        """Hash, on up to ``threads`` threads, the files of ``paths`` whose digest the memo lacks.

        :meth:`digest` then answers them from the memo. File reads and BLAKE3 release the GIL,
        so the files of a cold discovery hash on every core instead of one (200 CT slices of
        0.5 MB: ~0.08 s on one core of the 2-core benchmark VM). Nothing is done below
        :data:`PARALLEL_MIN_BYTES` of files to hash or with one thread; a file that cannot be
        looked at or read is left to :meth:`digest`, which raises as it always did. Files of
        less than :data:`PARALLEL_MIN_FILE_BYTES` on average stay on the calling thread too.
        """
        todo: list[tuple[str, str, tuple[str, int, int]]] = []  # (path as asked, resolved, (key, size, mtime))
        size_sum = 0
        for path in paths:
            if path in self._digests:
                continue
            try:
                key, resolved, size, mtime_ns = self._looked_up(path)
            except OSError:
                continue
            known = self._known(key, size, mtime_ns, ALGORITHM)
            if known is None:
                todo.append((path, resolved, (key, size, mtime_ns)))
                size_sum += size
            else:
                self._digests[path] = known  # digest(path) is then one look-up (a rebuild asks twice)
        threads = min(int(threads), len(todo))
        if threads < 2 or size_sum < PARALLEL_MIN_BYTES or size_sum < PARALLEL_MIN_FILE_BYTES * len(todo):
            return
        digests: list[str | None] = [None] * len(todo)
        indices = iter(range(len(todo)))
        take = threading.Lock()

        def work() -> None:
            while True:
                with take:
                    index = next(indices, None)
                if index is None:
                    return
                try:
                    digests[index] = file_digest(todo[index][1])
                except Exception:  # noqa: BLE001 - nothing printed from a thread (paths may identify):
                    pass  # digest() reads the file again and raises what it raises

        pool = [threading.Thread(target=work, name="medflow-digest", daemon=True) for _ in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        for (path, _, looked), digest in zip(todo, digests, strict=True):
            if digest is not None:
                self._update(*looked, {ALGORITHM: digest})
                self._digests[path] = digest

    def known_digest(self, path: str | Path) -> str | None:
        """The digest the memo already holds for ``path`` as it is now, or None (nothing is hashed).

        Raises:
            OSError: ``path`` cannot be looked at.
        """
        known = self._digests.get(os.fspath(path))
        if known is not None:
            return known
        key, _, size, mtime_ns = self._looked_up(path)
        return self._known(key, size, mtime_ns, ALGORITHM)

    def prime(self, path: str, size: int, mtime_ns: int, digest: str | None, extras: dict) -> bool:
        """Take what another process read of ``path`` when its size and mtime were ``size``, ``mtime_ns``.

        ``digest``: its content digest (or None); ``extras``: values for :meth:`set_extra`.
        Taken only while the file still has that size and mtime (else ``False``, and nothing
        changes: the caller reads the file itself); with a secret the extras are not kept.
        """
        try:
            key, _, now_size, now_mtime_ns = self._looked_up(path)
        except OSError:
            return False
        if (now_size, now_mtime_ns) != (size, mtime_ns):
            return False
        values = {ALGORITHM: digest} if digest is not None else {}
        self._update(key, size, mtime_ns, values if self._secret is not None else {**values, **extras})
        if digest is not None:
            self._digests[os.fspath(path)] = digest
        return True

    def remember(self, path: Path, digest: str) -> None:
        """Record ``digest`` as the content digest of ``path`` as it is now (its size and mtime).

        For files medflow just wrote and hashed while writing: a later :meth:`digest` returns
        ``digest`` while the file is unchanged, and rehashes the file once it changed.
        """
        key, resolved = self._key(path)
        stat = os.stat(resolved)
        self._looked[os.fspath(path)] = (key, resolved, stat.st_size, stat.st_mtime_ns)
        self._digests[os.fspath(path)] = digest
        with self._lock:
            if self._verify:
                self._fresh.add(key)
            self._keep(key, {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, ALGORITHM: digest})

    def forget(self, paths: Iterable[str | Path]) -> None:
        """Let go of what this build looked up of ``paths`` (their stat, key and digest).

        For files the build asks no more about (an up-to-date item's inputs and outputs, once
        planned): ~0.5 KB a file otherwise held to the build's end. Asked again, a file is
        looked at again.
        """
        if not self._looked and not self._digests:  # nothing looked up (a discovery snapshot): no path made
            return
        for path in paths:
            name = os.fspath(path)
            self._looked.pop(name, None)
            self._digests.pop(name, None)

    def get_extra(self, path: Path, name: str):
        """A value memoized for ``path`` under ``name`` (e.g. its parsed header facts), or None.

        Valid while the file's size and mtime are unchanged; ``verify`` ignores earlier builds' values.
        """
        if self._secret is not None:
            return None
        key, _, size, mtime_ns = self._looked_up(path)
        with self._lock:
            entry = self._valid_entry(key, size, mtime_ns)
        if entry is None:
            return None
        digest = entry.get(ALGORITHM)
        if digest is not None:  # asked for next (discovery hashes what it found): not parsed a second time
            self._digests.setdefault(os.fspath(path), digest)
        return entry.get(name)

    def set_extra(self, path: Path, name: str, value) -> None:
        """Memoize a JSON-able ``value`` for ``path`` under ``name`` (not with a secret: values may identify)."""
        if self._secret is not None:
            return
        key, _, size, mtime_ns = self._looked_up(path)
        self._update(key, size, mtime_ns, {name: value})

    def save(self) -> None:
        """Write the memo atomically (no-op when nothing changed or in memory only).

        Written entry by entry (:func:`medflow.sources.memo_store.write_memo`): the whole text
        of 20,000 files (~17 MB) was a peak of the build. The entries of the file this memo
        loaded stay readable (the open file is the one loaded, see :mod:`~medflow.sources.memo_store`).
        """
        if self._path is None or not self._dirty:
            return
        with self._lock:
            changed = dict(self._entries)
        atomic_write(self._path, lambda f: memo_store.write_memo(f, self._stored, self._journal, changed),
                     mode=0o600)  # input paths: owner only
        self._dirty = False

    def close(self) -> None:
        """Let go of the memo file and the journal; the memo then knows only the entries it holds.

        Call it after :meth:`save` (a build does); else the garbage collector closes them.
        """
        with self._lock:
            for layer in (self._stored, self._journal):
                if layer is not None:
                    layer.close()
            self._stored = self._journal = None
            self._journal_works = False  # what it held stays held
