"""The library versions a manifest records (:func:`medflow.engine.manifest.library_versions`).

They come from the installed distributions' metadata; a build keeps them in its cache while no
folder of ``sys.path`` changed (a package installed, upgraded or removed changes one), so the
look-up (2-7 ms) is not paid by every command, and a changed environment is never reported
with stale versions.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata

import pytest

from medflow.engine import manifest


@pytest.fixture
def lookups(monkeypatch):
    """Counts the metadata look-ups library_versions makes."""
    calls = []
    real = metadata.distribution

    def counted(name):
        calls.append(name)
        return real(name)

    monkeypatch.setattr(manifest.metadata, "distribution", counted)
    return calls


def test_versions_are_those_of_the_installed_distributions():
    versions = manifest.library_versions()
    assert versions["numpy"] == metadata.version("numpy")
    assert versions["pydicom"] == metadata.version("pydicom")
    assert set(versions) == set(manifest._LIBRARIES)


def test_kept_versions_are_reused_while_the_search_path_is_unchanged(tmp_path, lookups):
    memo = tmp_path / "library-versions.json"
    first = manifest.library_versions(memo)
    assert len(lookups) == len(manifest._LIBRARIES) and memo.is_file()
    assert manifest.library_versions(memo) == first == manifest.library_versions()
    assert len(lookups) == 2 * len(manifest._LIBRARIES)  # the memo call looked nothing up


def test_a_package_installed_on_the_search_path_makes_them_looked_up_again(tmp_path, lookups, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.setattr(sys, "path", [*sys.path, str(site)])
    memo = tmp_path / "library-versions.json"
    manifest.library_versions(memo)
    before = len(lookups)
    (site / "numpy-99.0.dist-info").mkdir()  # what an install does to its folder
    os.utime(site, ns=(os.stat(site).st_atime_ns, os.stat(site).st_mtime_ns + 1_000_000))
    manifest.library_versions(memo)
    assert len(lookups) == before + len(manifest._LIBRARIES)


@pytest.mark.parametrize("content", ["", "{", "[]", '{"search_path": [], "libraries": {"numpy": "1"}}'])
def test_a_damaged_or_foreign_file_only_costs_a_look_up(tmp_path, content):
    memo = tmp_path / "library-versions.json"
    memo.write_text(content)
    assert manifest.library_versions(memo) == manifest.library_versions()


def test_an_unwritable_cache_is_no_error(tmp_path):
    assert manifest.library_versions(tmp_path / "missing" / "library-versions.json") == manifest.library_versions()
