"""Turn pydantic validation errors into located, readable :class:`RecipeIssue` s.

pydantic reports ``('steps', 1, 'window', 'widht')`` / "Extra inputs are not permitted";
users want ``ct.yaml:14:5: steps[1].widht: unknown key 'widht'; did you mean 'width'?``.
This module:

- walks the model's type annotations along the error's ``loc`` to drop the tags pydantic
  inserts for unions (discriminator tags like ``'window'``, member labels like
  ``"literal['auto']"``) and to find the model owning a key (for "did you mean");
- picks the position: the key for unknown keys, the parent mapping for missing keys,
  the ``step``/``kind`` value for unknown tags, the value otherwise;
- rewrites messages short, with the offending value.

Nothing here knows a step by name: it only reads the model built from the registries.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Discriminator, ValidationError
from pydantic.fields import FieldInfo

from medflow.errors import RecipeIssue
from medflow.recipe.messages import SUPPORTED_VERSIONS, show, version_issue  # noqa: F401 - also here
from medflow.recipe.model import deferred_of, member_errors, registered_of
from medflow.recipe.yaml_positions import Mark, Positions, YamlPath, format_path

TOP_LEVEL_EXTRA_KEYS = ("extends", "abstract")  # accepted by the loader, removed before validation
_TAG_NOUNS = {"step": "step", "kind": "writer kind"}


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str | None:
    """The closest of ``choices`` to ``word`` (case-insensitive), or None."""
    by_lower: dict[str, str] = {}
    for choice in choices:
        by_lower.setdefault(str(choice).lower(), str(choice))
    match = difflib.get_close_matches(str(word).lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[match[0]] if match else None


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _quoted(values: typing.Iterable[Any]) -> list[str]:
    return [show(v) for v in values]


# ----------------------------------------------------------------------------- loc -> path


@dataclass
class _Located:
    path: YamlPath  # loc without union tags and labels
    annotation: Any  # type at the end of the loc (None if unknown)
    owner: type[BaseModel] | None  # model whose field (or extra key) the last path item names
    union_at: YamlPath | None  # path where a non-discriminated union's member label was dropped
    tags: dict[str, Any]  # for a discriminated union at the end: tag -> member
    discriminator: str | None


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    metadata: list[Any] = []
    while typing.get_origin(annotation) is Annotated:
        args = typing.get_args(annotation)
        annotation, metadata = args[0], metadata + list(args[1:])
    return annotation, metadata


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (Union, types.UnionType)


def _discriminator(metadata: list[Any]) -> str | Discriminator | None:
    for item in metadata:
        if isinstance(item, FieldInfo) and item.discriminator is not None:
            return item.discriminator
        if isinstance(item, Discriminator):
            return item
    return None


def _tag_map(members: tuple[Any, ...], discriminator: Any) -> dict[str, Any]:
    tags: dict[str, Any] = {}
    for member in members:
        inner, metadata = _unwrap(member)
        for item in metadata:
            if type(item).__name__ == "Tag":
                tags[str(item.tag)] = member if deferred_of(member) is not None else inner  # imported if followed
        if isinstance(discriminator, str) and _is_model(inner) and discriminator in inner.model_fields:
            for value in typing.get_args(inner.model_fields[discriminator].annotation):
                tags[str(value)] = inner
    return tags


def _label_matches(member: Any, label: str) -> bool:
    inner, _ = _unwrap(member)
    if _is_model(inner):
        return label == inner.__name__
    origin = typing.get_origin(inner) or inner
    name = getattr(origin, "__name__", None) or getattr(origin, "_name", None) or str(origin)
    return label.split("[", 1)[0].lower() == str(name).lower()


def locate(model: type[BaseModel], loc: tuple[Any, ...]) -> _Located:
    """Follow a pydantic error ``loc`` through ``model``'s annotations."""
    annotation: Any = model
    metadata: list[Any] = []
    path: list[str | int] = []
    owner: type[BaseModel] | None = None
    union_at: YamlPath | None = None
    items = list(loc)
    while True:
        deferred = deferred_of(annotation)
        if deferred is not None:  # a union member imported when followed (see Deferred)
            annotation = deferred.model()
        registered = registered_of(annotation)
        inner, more = _unwrap(annotation)
        metadata = metadata + more
        if registered is not None:  # a union over a registry, resolved by name (see Registered)
            names = registered.names()
            if not items or str(items[0]) not in names:
                return _Located(tuple(path) + tuple(items), None, owner, union_at, dict.fromkeys(names),
                                registered.discriminator)
            annotation, metadata = registered.model(str(items.pop(0))), []
            continue
        if _is_union(inner):
            members = tuple(m for m in typing.get_args(inner) if m is not type(None))
            discriminator = _discriminator(metadata)
            tags = _tag_map(members, discriminator)
            if discriminator is not None or tags:
                if not items or str(items[0]) not in tags:
                    name = discriminator if isinstance(discriminator, str) else None
                    return _Located(tuple(path) + tuple(items), None, owner, union_at, tags, name)
                annotation, metadata = tags[str(items.pop(0))], []
                continue
            if len(members) == 1:
                annotation, metadata = members[0], []
                continue
            if items and isinstance(items[0], str):
                label = items.pop(0)
                union_at = tuple(path)
                chosen = [m for m in members if _label_matches(m, label)]
                annotation, metadata = (chosen[0] if chosen else None), []
                continue
        if not items:
            return _Located(tuple(path), inner, owner, union_at, {}, None)
        item = items.pop(0)
        path.append(item)
        metadata = []
        if _is_model(inner):
            owner = inner
            field = inner.model_fields.get(item) if isinstance(item, str) else None
            if field is None:  # an extra key: nothing below it is typed
                return _Located(tuple(path) + tuple(items), None, owner, union_at, {}, None)
            annotation, metadata = field.annotation, list(field.metadata)
            if field.discriminator is not None:
                metadata.append(
                    Discriminator(field.discriminator)
                    if isinstance(field.discriminator, str)
                    else field.discriminator
                )
            continue
        origin, args = typing.get_origin(inner), typing.get_args(inner)
        if origin in (list, set, frozenset) and args:
            annotation = args[0]
        elif origin is tuple and args:
            annotation = (
                args[0]
                if len(args) == 2 and args[1] is Ellipsis
                else (args[item] if isinstance(item, int) and item < len(args) else None)
            )
        elif origin is dict and len(args) == 2:
            annotation = args[1]
        else:
            return _Located(tuple(path) + tuple(items), None, owner, union_at, {}, None)


# ----------------------------------------------------------------------------- messages

_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "tuple_type": "a list",
    "set_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "none_required": "null",
}
_COMPARISONS = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}


def _literal_choices(error: dict, located: _Located) -> list[Any]:
    if typing.get_origin(located.annotation) is Literal:
        return list(typing.get_args(located.annotation))
    return re.findall(r"'([^']*)'", (error.get("ctx") or {}).get("expected", ""))


def _expected(error: dict, located: _Located) -> str | None:
    if error["type"] == "literal_error":
        choices = _quoted(_literal_choices(error, located))
        return choices[0] if len(choices) == 1 else "one of " + ", ".join(choices)
    return _EXPECTED.get(error["type"])


def _message(error: dict, located: _Located) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    got = f"(got {show(value)})"
    if kind == "literal_error":
        message = f"must be {_expected(error, located)} {got}"
        choices = [c for c in _literal_choices(error, located) if isinstance(c, str)]
        guess = did_you_mean(value, choices) if isinstance(value, str) and len(choices) > 1 else None
        return f"{message}; did you mean '{guess}'?" if guess else message
    if kind in _EXPECTED:
        return f"must be {_EXPECTED[kind]} {got}"
    if kind in _COMPARISONS:
        key, sign = _COMPARISONS[kind]
        return f"must be {sign} {_number(ctx.get(key))} {got}"
    if kind == "multiple_of":
        return f"must be a multiple of {_number(ctx.get('multiple_of'))} {got}"
    if kind == "finite_number":
        return f"must be a finite number {got}"
    if kind == "string_too_short":
        n = ctx.get("min_length", 1)
        return "must not be empty" if n == 1 else f"must have at least {n} characters {got}"
    if kind == "string_too_long":
        return f"must have at most {ctx.get('max_length')} characters {got}"
    if kind in ("too_short", "too_long"):
        bound, word = ("min_length", "least") if kind == "too_short" else ("max_length", "most")
        if typing.get_origin(located.annotation) is tuple and ... not in typing.get_args(located.annotation):
            return f"must be a list of {len(typing.get_args(located.annotation))} items {got}"
        n = ctx.get(bound)
        return f"must have at {word} {n} item{'s' if n != 1 else ''} (got {ctx.get('actual_length')})"
    if kind in ("value_error", "assertion_error"):
        return re.sub(r"^(Value error|Assertion failed), ", "", error["msg"])
    if error["msg"].startswith("Input should be "):  # pydantic's own wording: say what was given
        return f"must be {error['msg'][len('Input should be ') :]} {got}"
    return error["msg"]  # custom errors (e.g. the source's) are already written for users


# ----------------------------------------------------------------------------- issues


def _issue(mark: Mark | None, file: str, path: YamlPath, message: str) -> RecipeIssue:
    mark = mark or Mark(file, 0, 0)
    return RecipeIssue(mark.file, mark.line, mark.col, format_path(path), message)


def _convert(
    error: dict, model: type[BaseModel], positions: Positions, file: str
) -> tuple[RecipeIssue, _Located]:
    located = locate(model, tuple(error["loc"]))
    path, kind = located.path, error["type"]
    if kind == "extra_forbidden" and path:
        key = str(path[-1])
        allowed = list(located.owner.model_fields) if located.owner else []
        if located.owner is model:
            allowed += list(TOP_LEVEL_EXTRA_KEYS)
        guess = did_you_mean(key, allowed)
        hint = (
            f"; did you mean '{guess}'?"
            if guess
            else ("; allowed keys: " + ", ".join(f"'{k}'" for k in sorted(allowed)) if allowed else "")
        )
        return _issue(
            positions.keys.get(path) or positions.nearest(path), file, path, f"unknown key '{key}'{hint}"
        ), located
    if kind == "missing" and path:
        parent, name = path[:-1], path[-1]
        if isinstance(name, int):  # a fixed-length tuple given too few items
            count = len(typing.get_args(locate(model, tuple(error["loc"])[:-1]).annotation)) or name + 1
            message = f"must be a list of {count} items (got {show(error.get('input'))})"
        else:
            message = f"missing required key '{name}'"
            if parent == () and name == "medflow":
                message += f" (the recipe version; this medflow reads version {SUPPORTED_VERSIONS[-1]})"
        return _issue(positions.nearest(parent), file, parent, message), located
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        ctx = error.get("ctx") or {}
        name = located.discriminator or str(ctx.get("discriminator", "")).strip("'")
        tags = sorted(located.tags) or re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
        noun = _TAG_NOUNS.get(name, name)
        choices = ", ".join(f"'{t}'" for t in tags)
        if kind == "union_tag_not_found":
            return _issue(
                positions.nearest(path), file, path, f"missing required key '{name}' (one of {choices})"
            ), located
        tag = ctx.get("tag", "")
        guess = did_you_mean(tag, tags)
        hint = f"; did you mean '{guess}'?" if guess else f"; known: {choices}"
        return _issue(
            positions.value(path + (name,)) or positions.nearest(path),
            file,
            path + (name,),
            f"unknown {noun} '{tag}'{hint}",
        ), located
    return _issue(positions.nearest(path), file, path, _message(error, located)), located


def issues_from_validation(
    error: ValidationError, model: type[BaseModel], positions: Positions, file: str, *, abstract: bool = False
) -> list[RecipeIssue]:
    """Every error of ``error`` as a located issue, sorted by file, line, col.

    Errors from the members of a plain union at one spot (``workers: x`` fails both
    ``int`` and ``'auto'``) are merged into one issue: "must be an integer or 'auto'".
    ``abstract`` (a base recipe): keys missing from mappings are not errors (a recipe
    extending it adds them); keys missing inside a list entry still are (lists are replaced whole).
    """
    issues: list[RecipeIssue] = []
    groups: dict[YamlPath, list[tuple[dict, _Located, RecipeIssue]]] = {}
    for raw in member_errors(error.errors(include_url=False)):
        if abstract and raw["type"] == "missing" and not any(isinstance(part, int) for part in raw["loc"]):
            continue
        issue, located = _convert(raw, model, positions, file)
        if located.union_at is not None and located.union_at == located.path:
            groups.setdefault(located.path, []).append((raw, located, issue))
        else:
            issues.append(issue)
    for members in groups.values():
        phrases = [_expected(raw, located) for raw, located, _ in members]
        first = members[0][2]
        if all(phrases):
            got = show(members[0][0].get("input"))
            issues.append(
                RecipeIssue(
                    first.file,
                    first.line,
                    first.col,
                    first.path,
                    f"must be {' or '.join(dict.fromkeys(phrases))} (got {got})",
                )
            )
        else:
            issues.append(
                RecipeIssue(
                    first.file,
                    first.line,
                    first.col,
                    first.path,
                    "; or ".join(dict.fromkeys(issue.message for _, _, issue in members)),
                )
            )
    return sort_issues(issues)


def sort_issues(issues: typing.Iterable[RecipeIssue]) -> list[RecipeIssue]:
    """Issues without duplicates, sorted by file, line, col, path, message."""
    unique = {(i.file, i.line, i.col, i.path, i.message): i for i in issues}
    return [unique[key] for key in sorted(unique)]
