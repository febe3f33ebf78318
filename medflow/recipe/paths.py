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

import copy
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from medflow.errors import RecipeIssue
from medflow.recipe.messages import show
from medflow.recipe.model import deferred_of, registered_of
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


# ----------------------------------------------------------------------------- paths written in bases

#: A field is a path relative to the recipe when its description says so (every such field of the
#: models, steps and writers does), or when it carries ``json_schema_extra={"recipe_path": True}``.
_RELATIVE_TO_RECIPE = re.compile(r"relative\s+to\s+the\s+recipe", re.IGNORECASE)


def is_recipe_path_field(info: FieldInfo) -> bool:
    """Is this model field a file or folder path relative to the recipe's folder?"""
    extra = info.json_schema_extra
    if isinstance(extra, dict) and "recipe_path" in extra:
        return bool(extra["recipe_path"])
    return bool(info.description and _RELATIVE_TO_RECIPE.search(" ".join(info.description.split())))


def recipe_path_locations(data: Any, model: Any, path: YamlPath = ()) -> list[YamlPath]:
    """The places in recipe ``data`` (not yet validated) that hold a recipe-relative path, per ``model``.

    ``model`` is a type annotation (a pydantic model, ``X | None``, ``list[X]``, a union, possibly
    ``Annotated``); a union is followed into the member model that fits the data (its literal tag
    keys such as ``step:`` / ``kind:`` match and it has every key given). Data that fits no model is
    skipped: validation reports it.
    """
    registered = registered_of(model)
    if registered is not None:  # a union over a registry: the one member the entry's tag names
        member = registered.member(data)
        fits = member is not None and _fits(member, data)
        return recipe_path_locations(data, member, path) if fits else []
    found: list[YamlPath] = []
    members = _members(model)
    for candidate in members:
        deferred = deferred_of(candidate)
        if deferred is not None:  # a union member whose model is imported only for the data it takes
            if not deferred.claims(data):
                continue
            candidate = deferred.model()
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            if not isinstance(data, dict) or (len(members) > 1 and not _fits(candidate, data)):
                continue
            for name, info in candidate.model_fields.items():
                key = info.alias or name
                if key not in data:
                    continue
                if is_recipe_path_field(info) and isinstance(data[key], str):
                    found.append(path + (key,))
                else:
                    found += recipe_path_locations(data[key], info.annotation, path + (key,))
            return found
        origin = typing.get_origin(candidate)
        if origin in (list, tuple) and isinstance(data, list):
            args = [a for a in typing.get_args(candidate) if a is not Ellipsis]
            for index, item in enumerate(data):
                for arg in args[:1] if origin is list or len(args) == 1 else args[index : index + 1]:
                    found += recipe_path_locations(item, arg, path + (index,))
            return found
        if origin is dict and isinstance(data, dict):
            args = typing.get_args(candidate)
            for key, value in data.items():
                found += recipe_path_locations(value, args[1] if len(args) == 2 else Any, path + (key,))
            return found
    return found


def _members(annotation: Any) -> list[Any]:
    """The alternatives of an annotation: ``Annotated`` unwrapped (but a :class:`Deferred` member's), unions
    flattened."""
    if deferred_of(annotation) is not None:
        return [annotation]
    if typing.get_origin(annotation) is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [annotation]


def _fits(model: type[BaseModel], data: dict) -> bool:
    """Does ``data`` look like ``model``: its literal fields match, no unknown key, its kind key present?"""
    keys = {info.alias or name for name, info in model.model_fields.items()}
    if any(key not in keys for key in data) and model.model_config.get("extra") == "forbid":
        return False
    for name, info in model.model_fields.items():
        key = info.alias or name
        if typing.get_origin(info.annotation) is typing.Literal and info.is_required():
            if key not in data and len(model.model_fields) > 1 and _is_tag(info):
                return False
            if key in data and data[key] not in typing.get_args(info.annotation):
                return False
    return True


def _is_tag(info: FieldInfo) -> bool:
    return len(typing.get_args(info.annotation)) == 1


def rebase_paths(
    data: Any, positions: Positions, locations: list[YamlPath], folders: dict[str, Path], recipe_dir: Path
) -> Any:
    """Make each relative path written in a base recipe relative to ``recipe_dir`` instead.

    ``folders`` maps each composed file (as shown in positions) to its folder; a value whose
    position is in a file of another folder than ``recipe_dir`` is rewritten, so it names what it
    named in its own file. Values from the recipe itself, ``--set`` and ``--source``, absolute
    values and ``~`` ones are left as they are. Returns new data (``data`` is not modified).
    """
    data = copy.deepcopy(data)
    for location in locations:
        mark = positions.value(location)
        folder = folders.get(mark.file) if mark is not None else None
        if folder is None or folder == recipe_dir:
            continue
        container = data
        for step in location[:-1]:
            container = container[step]
        value = container[location[-1]]
        if not isinstance(value, str) or not value or Path(value).expanduser().is_absolute():
            continue
        container[location[-1]] = os.path.relpath(os.path.join(folder, value), recipe_dir)
    return data
