"""Load a recipe: YAML with positions -> extends -> --set -> ${ENV} -> pydantic, all errors at once.

>>> loaded = load_recipe("pipelines/ct.yaml", overrides=["steps[0].width=350"])  # doctest: +SKIP
>>> loaded.recipe.steps[0].width                                                # doctest: +SKIP
350.0

Every problem found is raised together in one :class:`~medflow.errors.RecipeError`,
each issue located as ``FILE:LINE:COL: path: message`` with ``FILE`` as the caller
named it (bases: joined to the folder of the file that extends them).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from medflow.errors import RecipeError, RecipeIssue
from medflow.recipe.compose import (
    apply_overrides,
    compose_recipe,
    interpolate,
    parse_override,
)
from medflow.recipe.diagnostics import issues_from_validation, sort_issues, version_issue
from medflow.recipe.model import recipe_model
from medflow.recipe.paths import folder_issues
from medflow.recipe.yaml_positions import Positions, format_path


@dataclass(frozen=True)
class LoadedRecipe:
    """A validated recipe and where it came from.

    Attributes:
        recipe: the validated Recipe instance.
        resolved: the merged, overridden and interpolated plain dict that was validated;
            JSON-able, mapping keys sorted (so the input's key order does not change it),
            without ``extends``.
        path: absolute path of the recipe file.
        base_dir: folder that relative paths in the recipe resolve against (the recipe's folder).
        sources: the recipe file and every base it extends (absolute), in merge order:
            deepest base first, the recipe file last; each file once.
        positions: where each key and value of ``resolved`` was written (file, line, col).
    """

    recipe: BaseModel
    resolved: dict
    path: Path
    base_dir: Path
    sources: tuple[Path, ...]
    positions: Positions = field(default_factory=Positions, compare=False, repr=False)


def canonical(data: Any) -> Any:
    """A copy of ``data`` with every mapping's keys sorted (lists keep their order)."""
    if isinstance(data, dict):
        return {key: canonical(data[key]) for key in sorted(data, key=str)}
    if isinstance(data, list):
        return [canonical(item) for item in data]
    return data


def load_recipe(
    path: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> LoadedRecipe:
    """Load, compose and validate the recipe at ``path``.

    Args:
        path: the recipe file; shown in messages exactly as given.
        overrides: ``--set`` strings, ``PATH=VALUE`` (``steps[1].width=350``), applied in order
            after ``extends`` merging.
        environ: variables for ``${NAME}`` interpolation; default ``os.environ``.

    Returns:
        The validated recipe.

    Raises:
        UsageError: a malformed ``--set`` (before the file is read), or one whose path
            cannot be followed (list index past the end, key inside a scalar).
        RecipeError: every issue found in the recipe and its bases, sorted by file, line, col.
    """
    parsed = [parse_override(text) for text in overrides]
    display = os.fspath(path)
    absolute = Path(display).expanduser().absolute()
    composed = compose_recipe(absolute, display)
    issues = list(composed.issues)
    if composed.fatal:
        raise RecipeError(sort_issues(issues))
    data, positions = composed.data, composed.positions
    version = version_issue(data, positions, display)
    if version is not None:
        raise RecipeError(sort_issues(issues + [version]))

    apply_overrides(data, positions, parsed)
    data, env_issues, env_tainted = interpolate(data, positions, os.environ if environ is None else environ)
    issues += env_issues
    tainted = composed.tainted | env_tainted
    resolved = canonical(data)

    model = recipe_model()
    recipe = None
    try:
        # Steps that name files (e.g. a LUT) resolve them against the recipe's folder.
        recipe = model.model_validate(resolved, context={"recipe_dir": str(absolute.resolve().parent)})
    except ValidationError as error:
        for issue in issues_from_validation(error, model, positions, display):
            if not any(_under(issue.path, spot) for spot in tainted):
                issues.append(issue)
    if recipe is not None:
        issues += folder_issues(recipe, positions, display, absolute.resolve().parent)
    if issues or recipe is None:
        raise RecipeError(sort_issues(issues))
    return LoadedRecipe(
        recipe=recipe,
        resolved=resolved,
        path=absolute.resolve(),
        base_dir=absolute.resolve().parent,
        sources=tuple(composed.sources),
        positions=positions,
    )


def _under(issue_path: str, spot: tuple) -> bool:
    """Is the issue at ``spot`` or below it? (``spot`` already has its own issue.)"""
    prefix = format_path(spot)
    return (
        not spot
        or issue_path == prefix
        or issue_path.startswith(prefix + ".")
        or issue_path.startswith(prefix + "[")
    )


def validate_recipe_files(paths: Iterable[str | os.PathLike[str]]) -> list[RecipeIssue]:
    """Every issue of every recipe in ``paths`` (no overrides; environment from ``os.environ``).

    An empty list means all recipes are valid; ``medflow validate`` prints the issues
    one per line and exits 2 if there are any.
    """
    issues: list[RecipeIssue] = []
    for path in paths:
        try:
            load_recipe(path)
        except RecipeError as error:
            issues.extend(error.issues)
    return issues


def resolve_path(loaded: LoadedRecipe, value: str | os.PathLike[str]) -> Path:
    """A path written in the recipe: ``~`` expanded, then relative to ``loaded.base_dir`` unless absolute."""
    candidate = Path(value).expanduser()
    return candidate if candidate.is_absolute() else loaded.base_dir / candidate
