"""The fingerprint memo resolves paths as os.path.realpath does (one lstat per file, folders remembered)."""

from __future__ import annotations

import os

from medflow.sources.fingerprint import FingerprintMemo


def test_paths_resolve_as_realpath_does(tmp_path):
    real = tmp_path / "real" / "series"
    real.mkdir(parents=True)
    (real / "a.dcm").write_bytes(b"x")
    os.symlink(tmp_path / "real", tmp_path / "link")  # a linked folder
    os.symlink(real / "a.dcm", real / "b.dcm")  # a linked file
    os.symlink(tmp_path / "nowhere", real / "dangling.dcm")
    memo = FingerprintMemo(None)
    for path in (
        tmp_path / "link" / "series" / "a.dcm",
        tmp_path / "link" / "series" / "b.dcm",
        tmp_path / "link" / "series" / "dangling.dcm",
        tmp_path / "link" / "series" / "missing.dcm",
        f"{tmp_path}/link/series/../series/a.dcm",
        f"{tmp_path}/link//series/a.dcm",
        f"{tmp_path}/link/series/",
        "relative/name.dcm",
    ):
        assert memo._realpath(os.fspath(path)) == os.path.realpath(path), path


def test_a_folder_that_became_a_link_is_resolved_afresh_by_a_new_memo(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        (tmp_path / folder / "f.dcm").write_bytes(folder.encode())
    path = os.fspath(tmp_path / "current" / "f.dcm")
    os.symlink(tmp_path / "a", tmp_path / "current")
    assert FingerprintMemo(None)._realpath(path) == os.fspath(tmp_path / "a" / "f.dcm")
    os.unlink(tmp_path / "current")
    os.symlink(tmp_path / "b", tmp_path / "current")
    # the folders a memo remembers live as long as it (one build): the next build sees the change
    assert FingerprintMemo(None)._realpath(path) == os.fspath(tmp_path / "b" / "f.dcm")


def test_a_file_is_looked_up_with_its_own_size_and_mtime_and_a_linked_file_with_its_targets(tmp_path):
    """The lstat that resolves a plain file is its stat; a linked file's lstat is the link's, so it is stat'ed."""
    (tmp_path / "a.dcm").write_bytes(b"0123456789" * 10)
    os.utime(tmp_path / "a.dcm", ns=(1_000_000_000, 2_000_000_123))
    os.symlink(tmp_path / "a.dcm", tmp_path / "b.dcm")
    memo = FingerprintMemo(None)
    for name in ("a.dcm", "b.dcm"):
        key, resolved, size, mtime_ns = memo._looked_up(tmp_path / name)
        assert resolved == os.path.realpath(tmp_path / "a.dcm")
        assert (size, mtime_ns) == (100, 2_000_000_123), name


def test_nested_folders_resolve_as_realpath_does_whatever_links_lie_between(tmp_path):
    """Folders are resolved from their parents (one lstat each): links at any depth, relative
    links, links to links and '..' after a link must give what os.path.realpath gives."""
    deep = tmp_path / "data" / "p1" / "s1"
    deep.mkdir(parents=True)
    (deep / "a.dcm").write_bytes(b"x")
    os.symlink("data/p1", tmp_path / "rel")  # relative target
    os.symlink(tmp_path / "rel", tmp_path / "chain")  # a link to a link
    os.symlink("..", deep / "up")  # a link to the parent
    (tmp_path / "data" / "p2").mkdir()
    os.symlink("../p1/s1", tmp_path / "data" / "p2" / "s1")  # a series folder that is a link
    memo = FingerprintMemo(None)
    for path in (
        tmp_path / "data" / "p1" / "s1" / "a.dcm",
        tmp_path / "rel" / "s1" / "a.dcm",
        tmp_path / "chain" / "s1" / "a.dcm",
        tmp_path / "chain" / "s1" / "up" / "s1" / "a.dcm",
        tmp_path / "data" / "p2" / "s1" / "a.dcm",
        f"{tmp_path}/chain/s1/../s1/a.dcm",
        f"{tmp_path}/data/p2/s1/../s1/a.dcm",
    ):
        assert memo._realpath(os.fspath(path)) == os.path.realpath(path), path
