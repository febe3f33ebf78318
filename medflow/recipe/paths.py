"""Checks on the folders a recipe names, so a build never damages what is not its own.

Refused when the recipe loads (``FILE:LINE:COL`` issues, exit 2, nothing built):

* ``outputs.dir`` equal to or inside the source folder (a second run would read its own
  outputs as input), and a source folder inside the output folder;
* ``engine.cache_dir`` equal to or inside the output folder (the cache keeps original
  headers; the output folder is what people copy and share).

Writer ``folder`` parameters are checked by the writers' params models (see
:class:`medflow.writers.registry.WriterParams`). Paths are compared after resolving
symlinks, relative ones against the recipe's folder, as the build resolves them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medflow.errors import RecipeIssue
from medflow.recipe.diagnostics import show
from medflow.recipe.yaml_positions import Mark, Positions, YamlPath, format_path


def folder_issues(recipe: Any, positions: Positions, file: str, base_dir: Path) -> list[RecipeIssue]:
    """Issues of the output, source and cache folders of a validated ``recipe``."""

    def real(value: str) -> Path:
        path = Path(value).expanduser()
        return Path(os.path.realpath(path if path.is_absolute() else base_dir / path))

    def issue(path: YamlPath, message: str) -> RecipeIssue:
        mark = positions.value(path) or positions.nearest(path) or Mark(file, 1, 1)
        return RecipeIssue(mark.file, mark.line, mark.col, format_path(path), message)

    issues = []
    out_text = recipe.outputs.dir
    out = real(out_text)
    source_text = getattr(recipe.source, "dicom", None)
    if source_text is not None:
        source = real(source_text)
        named = f"source.dicom: {show(source_text)}"
        if out == source:
            issues.append(issue(("outputs", "dir"), f"is the source folder ({named}); a second run would read "
                                "its own outputs as input: choose another folder"))
        elif out.is_relative_to(source):
            issues.append(issue(("outputs", "dir"), f"is inside the source folder ({named}); a second run would "
                                "read its own outputs as input: choose a folder outside it"))
        elif source.is_relative_to(out):
            issues.append(issue(("source", "dicom"), f"is inside the output folder (outputs.dir: {show(out_text)}); "
                                "choose an output folder outside the source"))
    cache_text = recipe.engine.cache_dir
    if cache_text is not None and real(cache_text).is_relative_to(out):
        issues.append(issue(("engine", "cache_dir"), f"is inside the output folder (outputs.dir: {show(out_text)}); "
                            "the cache keeps original headers and the output folder is what gets shared: "
                            "put the cache outside it"))
    return issues
