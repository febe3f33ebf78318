"""Wording shared by every recipe message, and the recipe-version check: what loading a valid
recipe needs of :mod:`medflow.recipe.diagnostics`, without it (it is imported when a recipe has errors).
"""

from __future__ import annotations

import json
from typing import Any

from medflow.errors import RecipeIssue
from medflow.recipe.model import SCHEMA_VERSION
from medflow.recipe.yaml_positions import Mark, Positions

SUPPORTED_VERSIONS: tuple[int, ...] = (SCHEMA_VERSION,)


def show(value: Any, limit: int = 60) -> str:
    """A value as the user wrote it (YAML-ish), shortened: ``'NCWH'``, ``-5``, ``null``, ``[1, 2]``."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = f"'{value}'" if "'" not in value else json.dumps(value)
    elif isinstance(value, (int, float)):
        text = repr(value)
    else:
        try:
            text = json.dumps(value, separators=(", ", ": "), default=str).replace('"', "'")
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def version_issue(data: dict, positions: Positions, file: str) -> RecipeIssue | None:
    """An issue if ``medflow:`` names a recipe version this medflow cannot read (None if absent or fine)."""
    if "medflow" not in data:
        return None
    version = data["medflow"]
    if type(version) is int and version in SUPPORTED_VERSIONS:
        return None
    reads = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
    plural = "s" if len(SUPPORTED_VERSIONS) > 1 else ""
    mark = positions.value(("medflow",)) or Mark(file, 1, 1)
    message = f"unsupported recipe version {show(version)}; this medflow reads version{plural} {reads}"
    return RecipeIssue(mark.file, mark.line, mark.col, "medflow", message)
