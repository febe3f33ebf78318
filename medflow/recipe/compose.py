"""Composition of a recipe before validation: ``extends:``, ``--set`` and ``${ENV}``.

Order (each stage keeps positions, so every later error points at a file, line and col):

1. ``extends:`` - each base (path relative to the file that names it; a string or a
   list) is loaded, itself composed, and deep-merged under the file: mappings merge
   key by key, anything else (lists included) is replaced whole; in a list of bases
   later ones override earlier ones. A *choice* section (``source``: one of
   ``dicom``, ``sample``...) is replaced whole, never merged: a base's ``sample:``
   must not survive under a child's ``dicom:``. The merged keys keep the positions
   of the file they came from; a relative path a base writes (``source.dicom``,
   ``outputs.dir``, a step's ``key_file``...) is relative to the base's own folder, and
   the loader rewrites it relative to the recipe's folder after stage 3
   (:func:`medflow.recipe.paths.rebase_paths`). ``abstract:`` (a base recipe, validated without its
   missing keys) belongs to its own file only and is never inherited.
2. ``--source PATH`` (the source folder replaced, the source's other settings kept),
   then ``--set path=value`` overrides on the merged data; overridden values are
   located at ``<--source>:0:0`` / ``<--set>:0:0``. Setting a choice's kind key
   (``--set source.dicom=/data``) drops the other kinds' keys.
3. ``${NAME}`` / ``${NAME:-default}`` in string values, from the environment (as in
   the shell, the default also replaces an empty value); ``$${`` is a literal ``${``.
   Only plain variable names: no code, no nesting; substituted text is not re-read.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medflow.errors import RecipeIssue, UsageError
from medflow.recipe.yaml_positions import (
    Mark,
    Positions,
    YamlPath,
    format_path,
    parse_flow_value,
    read_yaml_file,
)

SET_FILE = "<--set>"
SOURCE_FLAG = "<--source>"
MAX_EXTENDS_DEPTH = 16
#: Top-level sections that hold one choice among kinds (each kind a key): replaced whole by a child.
CHOICE_SECTIONS = ("source",)
#: Keys of one file only, removed before merging: ``extends`` and ``abstract`` are never inherited.
_OWN_KEYS = ("extends", "abstract")


# ----------------------------------------------------------------------------- extends


@dataclass
class Composed:
    """The merged recipe data of a file and its bases, before overrides and validation.

    ``fatal`` means validation would only add noise (syntax error, missing base...).
    ``sources`` lists the files in merge order: deepest base first, the recipe file last.
    """

    data: Any
    positions: Positions
    sources: list[Path] = field(default_factory=list)
    issues: list[RecipeIssue] = field(default_factory=list)
    fatal: bool = False
    tainted: set[YamlPath] = field(default_factory=set)
    abstract: bool = False  # the recipe file is a base: ``abstract: true``, or it lies in a ``base/`` folder
    folders: dict[str, Path] = field(default_factory=dict)  # each file as positions show it -> its folder


def deep_merge(base: Any, override: Any) -> Any:
    """Merge ``override`` onto ``base``: mappings key by key, everything else replaced.

    Returns a new tree; neither argument is modified.
    """
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = deep_merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    return copy.deepcopy(override)


def merge_layer(base: dict, layer: dict) -> dict:
    """:func:`deep_merge` of a recipe layer onto its base, choice sections (``source``) replaced whole."""
    merged = deep_merge(base, layer)
    for key in CHOICE_SECTIONS:
        if key in layer:
            merged[key] = copy.deepcopy(layer[key])
    return merged


def is_abstract(data: Any, path: Path) -> bool:
    """A base recipe: ``abstract: true``, or no ``abstract:`` key and the file lies in a folder named ``base``."""
    flag = data.get("abstract") if isinstance(data, dict) else None
    return flag if isinstance(flag, bool) else path.parent.name == "base"


def compose_recipe(path: Path, display: str) -> Composed:
    """Load the recipe at ``path`` (shown as ``display``) and deep-merge its bases under it."""
    result = Composed(None, Positions())
    loaded = _load_layer(Path(path), display, (), None, result)
    if loaded is not None:
        result.data, result.positions = loaded[0], loaded[1].restricted_to(loaded[0])
    if result.data is None:
        result.fatal = True
    seen: list[Path] = []
    for source in result.sources:
        if source not in seen:
            seen.append(source)
    result.sources = seen
    return result


def _issue(mark: Mark | None, display: str, path: YamlPath, message: str) -> RecipeIssue:
    if mark is None:
        return RecipeIssue(display, 0, 0, format_path(path), message)
    return RecipeIssue(mark.file, mark.line, mark.col, format_path(path), message)


def _load_layer(
    path: Path,
    display: str,
    chain: tuple[tuple[Path, str], ...],
    origin: tuple[Mark, YamlPath] | None,
    result: Composed,
) -> tuple[dict, Positions] | None:
    """Load one file and, recursively, its bases; returns its merged data and positions.

    ``origin`` is where the ``extends`` value naming this file is (None for the recipe).
    Issues go into ``result``; None means this layer is unusable.
    """
    what = "recipe" if origin is None else "base recipe"
    try:
        resolved = path.resolve()
        loaded = read_yaml_file(resolved, display)
    except OSError as error:
        reason = "file not found" if isinstance(error, FileNotFoundError) else (error.strerror or str(error))
        mark, at = origin if origin else (None, ())
        result.issues.append(_issue(mark, display, at, f"cannot read {what} '{display}': {reason}"))
        result.fatal = True
        return None
    result.issues.extend(loaded.issues)
    result.tainted |= loaded.tainted
    result.folders.setdefault(display, resolved.parent)
    if loaded.fatal:
        result.fatal = True
        return None
    data = loaded.data
    if loaded.empty or not isinstance(data, dict):
        mark = loaded.positions.value(()) or Mark(display, 1, 1)
        got = "empty" if loaded.empty else f"a {_kind(data)}, not a mapping"
        message = (
            f"the {what} file is {got}; it must be a mapping of keys (medflow, name, source, steps, outputs)"
        )
        result.issues.append(_issue(mark, display, (), message))
        result.fatal = True
        return None

    if origin is None:
        result.abstract = is_abstract(data, resolved)
    if "abstract" in data and not isinstance(data["abstract"], bool):
        message = f"must be true or false (got a {_kind(data['abstract'])})"
        result.issues.append(_issue(loaded.positions.value(("abstract",)), display, ("abstract",), message))
    chain = chain + ((resolved, display),)
    merged: dict = {}
    positions = Positions()
    for base_text, base_path in _extends_entries(data, loaded.positions, display, result):
        mark = loaded.positions.value(base_path)
        target = Path(os.path.expanduser(base_text))
        base_display = (
            str(target)
            if target.is_absolute()
            else os.path.normpath(os.path.join(os.path.dirname(display), base_text))
        )
        target = target if target.is_absolute() else resolved.parent / target
        names = [shown for _, shown in chain]
        if target.resolve() in [p for p, _ in chain]:
            cycle = " -> ".join(names[[p for p, _ in chain].index(target.resolve()) :] + [base_display])
            result.issues.append(_issue(mark, display, base_path, f"extends cycle: {cycle}"))
            result.fatal = True
            continue
        if len(chain) >= MAX_EXTENDS_DEPTH:
            result.issues.append(
                _issue(mark, display, base_path, f"extends chain deeper than {MAX_EXTENDS_DEPTH} files")
            )
            result.fatal = True
            continue
        layer = _load_layer(target, base_display, chain, (mark, base_path), result)
        if layer is not None:
            merged = merge_layer(merged, layer[0])
            positions.update(layer[1])
    data = {key: value for key, value in data.items() if key not in _OWN_KEYS}
    merged = merge_layer(merged, data)
    positions.update(loaded.positions)
    result.sources.append(resolved)
    return merged, positions


def _extends_entries(
    data: dict, positions: Positions, display: str, result: Composed
) -> list[tuple[str, YamlPath]]:
    if "extends" not in data:
        return []
    value = data["extends"]
    if isinstance(value, str):
        return [(value, ("extends",))]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [(item, ("extends", index)) for index, item in enumerate(value)]
    message = f"extends must be a file name or a list of file names (got a {_kind(value)})"
    result.issues.append(_issue(positions.value(("extends",)), display, ("extends",), message))
    result.fatal = True
    return []


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string"}.get(
        type(value), type(value).__name__
    )


# ----------------------------------------------------------------------------- --set


@dataclass(frozen=True)
class _Segment:
    name: str  # the text: a key, or digits
    bracket: bool  # written as [n]: must index a list


@dataclass(frozen=True)
class Override:
    """One parsed ``--set PATH=VALUE``."""

    text: str
    segments: tuple[_Segment, ...]
    value: Any


_INDEX = re.compile(r"\[(\d+)\]")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")


def parse_override(text: str) -> Override:
    """Parse ``steps[1].width=350`` (or ``steps.1.width=350``).

    The value is read as one YAML scalar or flow value with the safe loader.

    Raises:
        UsageError: no ``=``, a malformed path, or a value that is not a valid YAML value.
    """
    example = "e.g. --set steps[1].width=350"
    if "=" not in text:
        raise UsageError(f"--set {text!r}: expected PATH=VALUE, {example}")
    path_text, value_text = text.split("=", 1)
    path_text = path_text.strip()
    segments: list[_Segment] = []
    position = 0
    while position < len(path_text):
        index = _INDEX.match(path_text, position)
        start = position + 1 if segments and path_text.startswith(".", position) else position
        name = None if index or (segments and start == position) else _NAME.match(path_text, start)
        if index is None and name is None:
            raise UsageError(
                f"--set {text!r}: malformed path {path_text!r} at character {position + 1}; "
                f"use dotted keys and [n] list indices, {example}"
            )
        if index is not None:
            segments.append(_Segment(index.group(1), True))
            position = index.end()
        else:
            segments.append(_Segment(name.group(0), False))
            position = name.end()
    if not segments:
        raise UsageError(f"--set {text!r}: empty path, {example}")
    if segments[0].name == "extends":
        raise UsageError(f"--set {text!r}: 'extends' is resolved before overrides; edit the recipe instead")
    try:
        value = parse_flow_value(value_text)
    except ValueError as error:
        raise UsageError(f"--set {text!r}: value {value_text!r} {error}") from None
    return Override(text, tuple(segments), value)


def apply_override(data: dict, positions: Positions, override: Override, mark: Mark | None = None) -> None:
    """Set ``override.value`` at its path in ``data`` (in place); positions become ``<--set>:0:0``.

    Missing mapping keys are created (validation then judges them); a list index past
    the end, or a path through a scalar, is a usage error.

    Raises:
        UsageError: the path cannot be followed in ``data``.
    """
    container: Any = data
    walked: YamlPath = ()
    mark = mark or Mark(SET_FILE, 0, 0)
    last = len(override.segments) - 1
    for number, segment in enumerate(override.segments):
        step: str | int
        if isinstance(container, dict):
            if segment.bracket:
                raise UsageError(
                    f"--set {override.text!r}: '{format_path(walked) or '<recipe>'}' is a mapping, "
                    f"not a list; write .{segment.name} for a key"
                )
            step = segment.name
            if number < last and not isinstance(container.get(step), (dict, list)):
                if container.get(step) is not None:
                    raise UsageError(
                        f"--set {override.text!r}: '{format_path(walked + (step,))}' is a "
                        f"{_kind(container[step])}, it has no keys"
                    )
                container[step] = {}
                positions.replace_subtree(walked + (step,), {}, mark)
        elif isinstance(container, list):
            if not segment.name.isdigit():
                raise UsageError(
                    f"--set {override.text!r}: '{format_path(walked)}' is a list; index it with [n]"
                )
            step = int(segment.name)
            if step >= len(container):
                raise UsageError(
                    f"--set {override.text!r}: index {step} is past the end of "
                    f"'{format_path(walked)}' ({len(container)} items)"
                )
        else:  # pragma: no cover - the dict branch above stops before scalars
            raise UsageError(f"--set {override.text!r}: '{format_path(walked)}' has no keys")
        walked = walked + (step,)
        if number == last:
            container[step] = copy.deepcopy(override.value)
            positions.replace_subtree(walked, container[step], mark)
        else:
            container = container[step]


def apply_overrides(
    data: dict, positions: Positions, overrides: Sequence[Override], mark: Mark | None = None
) -> None:
    """Apply every override in order (later ones win)."""
    for override in overrides:
        _switch_choice(data, positions, tuple(s.name for s in override.segments))
        apply_override(data, positions, override, mark)


def _switch_choice(data: dict, positions: Positions, path: tuple[str, ...]) -> None:
    """Before ``--set source.<kind>=...``: keep only the source keys that kind accepts."""
    if len(path) != 2 or path[0] not in CHOICE_SECTIONS or not isinstance(data.get(path[0]), dict):
        return
    from medflow.recipe.model import source_kinds

    kinds = source_kinds()
    if path[1] not in kinds:
        return
    accepted = set(kinds[path[1]].model_fields)
    section = data[path[0]]
    for key in [k for k in section if k not in accepted]:
        del section[key]
    for table in (positions.values, positions.keys):
        for old in [p for p in table if len(p) > 1 and p[0] == path[0] and p[1] not in accepted]:
            del table[old]


def source_override(path_text: str) -> Override:
    """``--source PATH``: the recipe's source reads PATH instead; its filter and options stay.

    PATH is a folder (relative to the current folder: it comes from the command line) or the
    URL of a DICOMweb server (``source: {dicomweb: {url: PATH}}``).

    Raises:
        UsageError: an empty PATH, or a URL while no source kind reads URLs.
    """
    from medflow.recipe.model import source_kinds

    text = path_text.strip()
    if not text:
        raise UsageError("--source needs a folder, e.g. --source /data/ct")
    if re.match(r"^[a-z][a-z0-9+.-]*://", text, re.IGNORECASE):
        if "dicomweb" not in source_kinds():
            raise UsageError(f"--source {text}: this medflow reads DICOM folders only (no DICOMweb source yet)")
        kind, value = "dicomweb", {"url": text}  # the server's other settings: --set source.dicomweb.KEY=...
    else:
        kind, value = "dicom", os.fspath(Path(text).expanduser().absolute())
    return Override(f"--source {text}", (_Segment("source", False), _Segment(kind, False)), value)


def apply_source(data: dict, positions: Positions, override: Override) -> None:
    """Apply ``--source`` (see :func:`source_override`); its positions are ``<--source>:0:0``."""
    apply_overrides(data, positions, [override], Mark(SOURCE_FLAG, 0, 0))


# ----------------------------------------------------------------------------- ${ENV}

_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


def interpolate_string(text: str, environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """Replace ``${NAME}`` and ``${NAME:-default}`` in ``text``; ``$${`` gives a literal ``${``.

    Returns:
        The new text and a list of problems (unset variables, malformed ``${``); the
        problems never contain a variable's value.
    """
    out: list[str] = []
    problems: list[str] = []
    position = 0
    while True:
        dollar = text.find("$", position)
        if dollar < 0:
            out.append(text[position:])
            break
        out.append(text[position:dollar])
        if text.startswith("$${", dollar):
            out.append("${")
            position = dollar + 3
            continue
        if not text.startswith("${", dollar):
            out.append("$")
            position = dollar + 1
            continue
        match = _VARIABLE.match(text, dollar)
        if match is None:
            problems.append(
                f"malformed '${{' in {text!r}: write ${{NAME}} or ${{NAME:-default}} "
                "(NAME: letters, digits, _), or $${ for a literal '${'"
            )
            out.append(text[dollar:])
            break
        name, default = match.group("name"), match.group("default")
        if environ.get(name) or (name in environ and default is None):
            out.append(environ[name])
        elif default is not None:  # as in the shell, ':-' also replaces an empty value
            out.append(default)
        else:
            problems.append(f"environment variable {name} is not set")
            out.append(match.group(0))
        position = match.end()
    return "".join(out), problems


def interpolate(
    data: Any, positions: Positions, environ: Mapping[str, str], path: YamlPath = ()
) -> tuple[Any, list[RecipeIssue], set[YamlPath]]:
    """Interpolate every string value in ``data`` (keys are left alone).

    Returns:
        New data, issues located at the strings' positions, and the paths of those strings.
    """
    issues: list[RecipeIssue] = []
    tainted: set[YamlPath] = set()
    if isinstance(data, str):
        if "$" not in data:
            return data, issues, tainted
        text, problems = interpolate_string(data, environ)
        for problem in problems:
            issues.append(_issue(positions.nearest(path), "<recipe>", path, problem))
            tainted.add(path)
        return text, issues, tainted
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list):
        items = enumerate(data)
    else:
        return data, issues, tainted
    out: Any = {} if isinstance(data, dict) else []
    for key, value in items:
        new, sub_issues, sub_tainted = interpolate(value, positions, environ, path + (key,))
        issues += sub_issues
        tainted |= sub_tainted
        if isinstance(out, dict):
            out[key] = new
        else:
            out.append(new)
    return out, issues, tainted
