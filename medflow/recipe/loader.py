"""Load a recipe: YAML with positions -> extends -> --set -> ${ENV} -> pydantic, all errors at once.

>>> loaded = load_recipe("pipelines/ct.yaml", overrides=["steps[0].width=350"])  # doctest: +SKIP
>>> loaded.recipe.steps[0].width                                                # doctest: +SKIP
350.0

Every problem found is raised together in one :class:`~medflow.errors.RecipeError`,
each issue located as ``FILE:LINE:COL: path: message`` with ``FILE`` as the caller
named it (bases: joined to the folder of the file that extends them). A relative path
written in a base (``source.dicom``, ``outputs.dir``, ``engine.cache_dir``, a step's or
writer's file) is relative to that base's folder; in ``resolved`` it is rewritten relative to
the recipe's folder, so :func:`resolve_path` and the steps resolve every path against ``base_dir``.
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
    apply_source,
    compose_recipe,
    interpolate,
    parse_override,
    source_override,
)
from medflow.recipe.messages import version_issue
from medflow.recipe.model import recipe_model
from medflow.recipe.paths import folder_issues, rebase_paths, recipe_path_locations
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
    source_override: str | None = None  # ``--source``'s value as given, when the source was replaced


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
    source: str | None = None,
) -> LoadedRecipe:
    """Load, compose and validate the recipe at ``path``.

    Args:
        path: the recipe file; shown in messages exactly as given.
        overrides: ``--set`` strings, ``PATH=VALUE`` (``steps[1].width=350``), applied in order
            after ``extends`` merging.
        environ: variables for ``${NAME}`` interpolation; default ``os.environ``.
        source: ``--source``: a folder read instead of the recipe's source (its filter and
            options are kept), relative to the current folder; applied before ``overrides``.

    Returns:
        The validated recipe.

    Raises:
        UsageError: a malformed ``--set`` or ``--source`` (before the file is read), or an
            override whose path cannot be followed (list index past the end, key inside a scalar).
        RecipeError: every issue found in the recipe and its bases, sorted by file, line, col;
            a base recipe (``abstract``) is refused in one issue: it is extended, not built.
    """
    loaded = _load(path, overrides, environ, source, abstract_ok=False)
    assert loaded is not None  # a concrete recipe either loads or raises
    return loaded


def _load(
    path: str | os.PathLike[str],
    overrides: Sequence[str],
    environ: Mapping[str, str] | None,
    source: str | None,
    *,
    abstract_ok: bool,
) -> LoadedRecipe | None:
    """:func:`load_recipe`; with ``abstract_ok`` a valid base recipe returns ``None`` instead of an error."""
    parsed = [parse_override(text) for text in overrides]
    source_flag = source_override(source) if source is not None else None
    display = os.fspath(path)
    absolute = Path(display).expanduser().absolute()
    composed = compose_recipe(absolute, display)
    issues = list(composed.issues)
    if composed.fatal:
        raise RecipeError(_sorted(issues))
    data, positions = composed.data, composed.positions
    version = version_issue(data, positions, display)
    if version is not None:
        raise RecipeError(_sorted(issues + [version]))

    if composed.abstract and not abstract_ok:
        raise RecipeError([RecipeIssue(
            display, 1, 1, "", "is a base recipe (abstract: true, or in a folder named 'base'): it is "
            "extended by other recipes, not built; write a recipe with 'extends: "
            f"{absolute.parent.name}/{absolute.name}' (or set 'abstract: false' in it)")])
    if source_flag is not None:
        apply_source(data, positions, source_flag)
    apply_overrides(data, positions, parsed)
    data, env_issues, env_tainted = interpolate(data, positions, os.environ if environ is None else environ)
    issues += env_issues
    tainted = composed.tainted | env_tainted
    model = recipe_model()
    # A relative path written in a base names a place next to that base: make it relative to this recipe.
    recipe_dir = absolute.resolve().parent
    data = rebase_paths(data, positions, recipe_path_locations(data, model), composed.folders, recipe_dir)
    resolved = canonical(data)

    recipe = None
    try:
        # Steps that name files (e.g. a LUT) resolve them against the recipe's folder.
        recipe = model.model_validate(resolved, context={"recipe_dir": str(absolute.resolve().parent)})
    except ValidationError as error:
        from medflow.recipe.diagnostics import issues_from_validation

        for issue in issues_from_validation(error, model, positions, display, abstract=composed.abstract):
            if not any(_under(issue.path, spot) for spot in tainted):
                issues.append(issue)
    if recipe is not None:
        issues += folder_issues(recipe, positions, display, absolute.resolve().parent)
    if issues:
        raise RecipeError(_sorted(issues))
    if recipe is None:
        if composed.abstract:
            return None  # a base recipe: every key it has is valid; its children add the rest
        raise RecipeError([])
    return LoadedRecipe(
        recipe=recipe,
        resolved=resolved,
        path=absolute.resolve(),
        base_dir=absolute.resolve().parent,
        sources=tuple(composed.sources),
        positions=positions,
        source_override=source,
    )


def _sorted(issues: list[RecipeIssue]) -> list[RecipeIssue]:
    """:func:`~medflow.recipe.diagnostics.sort_issues` (diagnostics is imported when a recipe has errors)."""
    from medflow.recipe.diagnostics import sort_issues

    return sort_issues(issues)


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
    one per line and exits 2 if there are any. A base recipe (``abstract: true``, or in a
    folder named ``base``) validates on its own: every key it has must be valid, the keys its
    children add (``name``, ``source``, ``outputs.dir``...) may be missing.
    """
    issues: list[RecipeIssue] = []
    for path in paths:
        try:
            _load(path, (), None, None, abstract_ok=True)
        except RecipeError as error:
            issues.extend(error.issues)
    return issues


def resolve_path(loaded: LoadedRecipe, value: str | os.PathLike[str]) -> Path:
    """A path written in the recipe: ``~`` expanded, then relative to ``loaded.base_dir`` unless absolute."""
    candidate = Path(value).expanduser()
    return candidate if candidate.is_absolute() else loaded.base_dir / candidate
