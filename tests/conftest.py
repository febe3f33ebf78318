"""Shared test fixtures.

Real DICOM data lives in ``../shared/data`` (next to the repository, read-only).
Tests that need it use the ``shared_data`` fixture: they skip with a clear reason when
the folder is absent, and fail instead when ``MEDFLOW_REQUIRE_SHARED_DATA=1`` (CI sets it).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEDFLOW_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def shared_data_path(*parts: str) -> Path:
    """Path inside ../shared/data; skips (or fails under MEDFLOW_REQUIRE_SHARED_DATA=1) when absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        message = f"real DICOM test data not found at {path} (set MEDFLOW_SHARED_DATA to its folder)"
        if os.environ.get("MEDFLOW_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(message + "; MEDFLOW_REQUIRE_SHARED_DATA=1 makes it mandatory")
        pytest.skip(message)
    return path


@pytest.fixture
def shared_data() -> Path:
    """The ../shared/data folder (skip or fail when absent, see module docstring)."""
    return shared_data_path()


@pytest.fixture(autouse=True)
def _full_range_tables_for_small_series(monkeypatch):
    """Test series are small (a few 16 x 16 slices): they fold through full-range tables here, as a
    real series does in a build (tests/test_fold.py's small-item test turns this off again)."""
    import medflow.engine.fold

    monkeypatch.setattr(medflow.engine.fold, "FULL_RANGE_MIN_FRACTION", 0.0)
    # each test's builds start with none of the tables an earlier test's items left in this process
    medflow.engine.fold.PROCESS_TABLES.clear()
