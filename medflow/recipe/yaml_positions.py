"""Safe YAML loading that remembers where every key and value came from.

PyYAML's safe loader gives plain values but forgets positions, silently keeps the last
of two duplicate keys and happily expands "billion laughs" alias bombs. Here the
document is *composed* by a :class:`yaml.SafeLoader` subclass (no object is ever
constructed from a tag) and the node graph is walked by hand, which lets us:

- record the 1-based (line, col) of every mapping key and value, by path
  (``("steps", 2, "width")``, shown as ``steps[2].width``);
- report duplicate keys, unsupported tags (``!!python/...``, ``!!binary``...) and
  non-string keys as :class:`~medflow.errors.RecipeIssue` s instead of executing or
  guessing;
- cap the number of values after alias expansion and the nesting depth.

Mapping keys are always strings (the key's source text: ``on:`` stays ``"on"``).
Timestamps are not resolved: ``2024-01-01`` stays a string, so every value is JSON-able.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from medflow.errors import RecipeIssue

YamlPath = tuple[str | int, ...]

MAX_NODES = 100_000
"""Most values a document may expand to (aliases count each time they are used)."""
MAX_DEPTH = 64
"""Deepest nesting of mappings and lists a document may have."""

_YAML = "tag:yaml.org,2002:"
_TIMESTAMP = _YAML + "timestamp"
_MAP, _SEQ, _MERGE = _YAML + "map", _YAML + "seq", _YAML + "merge"


class RecipeYamlLoader(yaml.SafeLoader):
    """Safe loader used for every recipe and ``--set`` value; only composes nodes.

    The implicit timestamp resolver is removed so dates stay strings.
    """

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


# Scalar tags we construct, and the SafeConstructor method that does it.
_SCALAR_CONSTRUCTORS = {
    _YAML + "null": "construct_yaml_null",
    _YAML + "bool": "construct_yaml_bool",
    _YAML + "int": "construct_yaml_int",
    _YAML + "float": "construct_yaml_float",
    _YAML + "str": "construct_scalar",
    _YAML + "value": "construct_scalar",  # the '=' key of YAML 1.1; just a string here
    _TIMESTAMP: "construct_scalar",  # an explicit !!timestamp stays its text
}


@dataclass(frozen=True)
class Mark:
    """A place in a recipe file: ``file`` as the caller named it, 1-based line and col (0 = unknown)."""

    file: str
    line: int
    col: int


def format_path(path: Iterable[str | int]) -> str:
    """``("steps", 2, "width")`` -> ``"steps[2].width"``; the root is ``""``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


_PATH_TOKEN = re.compile(r"\[(\d+)\]|\.?([^.\[\]]+)")


def parse_path(text: str) -> YamlPath:
    """Inverse of :func:`format_path`; ``steps.2.width`` also reads as ``steps[2].width``."""
    parts: list[str | int] = []
    for index, name in _PATH_TOKEN.findall(text):
        if index:
            parts.append(int(index))
        else:
            parts.append(int(name) if name.isdigit() else name)
    return tuple(parts)


@dataclass
class Positions:
    """Where each key and value of a loaded document is, by path.

    ``values[path]`` is the start of the value node (for a mapping: its first key);
    ``keys[path]`` is the start of the key that names ``path`` in its parent mapping.
    """

    values: dict[YamlPath, Mark] = field(default_factory=dict)
    keys: dict[YamlPath, Mark] = field(default_factory=dict)

    def value(self, path: YamlPath | str) -> Mark | None:
        """Mark of the value at ``path`` (tuple or dotted text), or None."""
        return self.values.get(parse_path(path) if isinstance(path, str) else tuple(path))

    def key(self, path: YamlPath | str) -> Mark | None:
        """Mark of the key naming ``path`` in its mapping, or None."""
        return self.keys.get(parse_path(path) if isinstance(path, str) else tuple(path))

    def nearest(self, path: YamlPath) -> Mark | None:
        """Mark of the value at ``path``, else of its closest ancestor that has one."""
        path = tuple(path)
        for end in range(len(path), -1, -1):
            mark = self.values.get(path[:end])
            if mark is not None:
                return mark
        return None

    def update(self, other: Positions) -> None:
        """Take every position of ``other``, overriding ours at the same paths."""
        self.values.update(other.values)
        self.keys.update(other.keys)

    def restricted_to(self, data: Any) -> Positions:
        """Only the positions of paths that exist in ``data`` (drops overridden leftovers)."""
        live = set(iter_paths(data))
        return Positions(
            {p: m for p, m in self.values.items() if p in live},
            {p: m for p, m in self.keys.items() if p in live},
        )

    def replace_subtree(self, path: YamlPath, value: Any, mark: Mark) -> None:
        """Point ``path`` and everything under it (as now in ``value``) at ``mark``."""
        n = len(path)
        for table in (self.values, self.keys):
            for old in [p for p in table if p[:n] == path and len(p) > n]:
                del table[old]
        for sub in iter_paths(value):
            self.values[path + sub] = mark
            if sub or path not in self.keys:
                self.keys[path + sub] = mark


def iter_paths(data: Any, prefix: YamlPath = ()) -> Iterator[YamlPath]:
    """Every path in a plain-data tree, the root (``prefix``) included."""
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from iter_paths(value, prefix + (key,))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from iter_paths(value, prefix + (index,))


@dataclass
class LoadedYaml:
    """A loaded document: plain data, positions, and what went wrong.

    ``fatal`` is set when the data cannot be trusted at all (syntax error, too large);
    ``tainted`` holds the paths whose value was dropped (e.g. an unsupported tag), so
    later checks do not pile a second message on the same spot.
    """

    data: Any
    positions: Positions
    issues: list[RecipeIssue] = field(default_factory=list)
    fatal: bool = False
    empty: bool = False
    tainted: set[YamlPath] = field(default_factory=set)


class _Abort(Exception):
    def __init__(self, node: Node, message: str):
        self.node = node
        self.message = message


def _show_tag(tag: str) -> str:
    return "!!" + tag[len(_YAML) :] if tag.startswith(_YAML) else tag


class _Builder:
    """Walks a composed node graph into plain data, recording positions and issues."""

    def __init__(self, loader: RecipeYamlLoader, file: str, max_nodes: int, max_depth: int):
        self.loader = loader
        self.file = file
        self.max_nodes = max_nodes
        self.max_depth = max_depth
        self.count = 0
        self.positions = Positions()
        self.issues: list[RecipeIssue] = []
        self.tainted: set[YamlPath] = set()
        self.open: set[int] = set()  # collection nodes being built (recursive alias check)

    def mark(self, node: Node) -> Mark:
        return Mark(self.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def issue(self, node: Node, path: YamlPath, message: str, taint: bool = True) -> None:
        mark = self.mark(node)
        self.issues.append(RecipeIssue(mark.file, mark.line, mark.col, format_path(path), message))
        if taint:
            self.tainted.add(path)

    def build(self, node: Node, path: YamlPath, depth: int = 0) -> Any:
        self.count += 1
        if self.count > self.max_nodes:
            raise _Abort(
                node,
                f"document expands to more than {self.max_nodes} values "
                "(aliases nested too deeply?); refusing to load it",
            )
        if depth > self.max_depth:
            raise _Abort(node, f"document is nested more than {self.max_depth} levels deep")
        self.positions.values[path] = self.mark(node)
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if id(node) in self.open:
            raise _Abort(node, "recursive alias: this node contains itself")
        self.open.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                if node.tag != _SEQ:
                    self.issue(node, path, f"unsupported YAML tag '{_show_tag(node.tag)}'")
                    return None
                return [self.build(child, path + (i,), depth + 1) for i, child in enumerate(node.value)]
            if node.tag != _MAP:
                self.issue(node, path, f"unsupported YAML tag '{_show_tag(node.tag)}'")
                return None
            return self.mapping(node, path, depth)
        finally:
            self.open.discard(id(node))

    def scalar(self, node: ScalarNode, path: YamlPath) -> Any:
        method = _SCALAR_CONSTRUCTORS.get(node.tag)
        if method is None:
            self.issue(node, path, f"unsupported YAML tag '{_show_tag(node.tag)}'")
            return None
        try:
            return getattr(self.loader, method)(node)
        except Exception:  # e.g. `!!int abc`: the constructor's own error is unhelpful
            self.issue(node, path, f"cannot read {node.value!r} as '{_show_tag(node.tag)}'")
            return None

    def mapping(self, node: MappingNode, path: YamlPath, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        own = [(k, v) for k, v in node.value if k.tag != _MERGE]
        # `<<: *base` merge keys first, so the mapping's own keys override them.
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                result.update(self.merge(value_node, path, depth))
        self.positions.values[path] = self.mark(node)
        first_line: dict[str, int] = {}
        for key_node, value_node in own:
            if not isinstance(key_node, ScalarNode):
                self.issue(key_node, path, "mapping keys must be plain strings", taint=False)
                continue
            key = key_node.value
            if key in first_line:
                self.issue(
                    key_node,
                    path + (key,),
                    f"duplicate key '{key}' (first at line {first_line[key]})",
                    taint=False,
                )
            else:
                first_line[key] = key_node.start_mark.line + 1
            self.positions.keys[path + (key,)] = self.mark(key_node)
            result[key] = self.build(value_node, path + (key,), depth + 1)
        return result

    def merge(self, value_node: Node, path: YamlPath, depth: int) -> dict[str, Any]:
        sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
        merged: dict[str, Any] = {}
        for source in reversed(sources):  # earlier mappings in a `<<` list win
            if not isinstance(source, MappingNode):
                self.issue(source, path, "'<<' merge needs a mapping or a list of mappings", taint=False)
                continue
            merged.update(self.build(source, path, depth) or {})
        return merged


def _syntax_issue(error: yaml.YAMLError, file: str, text: str) -> RecipeIssue:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        message = f"YAML syntax error: {error.problem}"
        if error.context:
            where = f" started at line {error.context_mark.line + 1}" if error.context_mark else ""
            message += f" ({error.context}{where})"
        return RecipeIssue(file, mark.line + 1, mark.column + 1, "", message)
    position = getattr(error, "position", None)
    if isinstance(error, yaml.reader.ReaderError) and position is not None:
        line, col = line_col(text, position)
        return RecipeIssue(
            file,
            line,
            col,
            "",
            f"YAML syntax error: {error.reason} (character {error.character!r} not allowed)",
        )
    return RecipeIssue(file, 1, 1, "", f"YAML syntax error: {error}")


def line_col(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of character ``offset`` in ``text``."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _too_deep(text: str, max_depth: int) -> yaml.Mark | None:
    """Where nesting first exceeds ``max_depth``, from the parser's events (the composer recurses)."""
    depth = 0
    loader = RecipeYamlLoader(text)
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > max_depth:
                    return event.start_mark
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        return None
    finally:
        loader.dispose()


def _collections_at_most(text: str) -> int:
    """An upper bound of the number of mappings and lists in ``text``, hence of its nesting depth.

    Every mapping or list starts at an indicator of its own: ``-`` (block list entry), ``:`` or
    ``?`` (the first key of a mapping, block or single-pair flow), ``[`` or ``{`` (flow).
    Counting them everywhere (comments and scalars too) only overestimates.
    """
    return sum(text.count(indicator) for indicator in "-:?[{")


def _compose(text: str, file: str, max_nodes: int, max_depth: int) -> LoadedYaml:
    """Compose and build the document (its nesting already known to be at most ``max_depth``).

    Raises:
        yaml.YAMLError: composing failed (building reports its problems as issues).
    """
    loader = RecipeYamlLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return LoadedYaml(None, Positions(), empty=True)
        builder = _Builder(loader, file, max_nodes, max_depth)
        try:
            data = builder.build(node, ())
        except _Abort as abort:
            mark = builder.mark(abort.node)
            issue = RecipeIssue(file, mark.line, mark.col, "", abort.message)
            return LoadedYaml(None, Positions(), [issue], fatal=True)
        return LoadedYaml(data, builder.positions, builder.issues, tainted=builder.tainted)
    finally:
        loader.dispose()


def load_yaml(text: str, file: str, *, max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH) -> LoadedYaml:
    """Load one YAML document safely, with positions; never raises for bad input.

    Args:
        text: the document.
        file: name to report in positions and issues (as the caller gave it).
        max_nodes: most values after alias expansion (billion-laughs guard).
        max_depth: deepest nesting.

    Returns:
        The data (``None`` for an empty document), positions and issues.
    """
    if _collections_at_most(text) <= max_depth:  # cannot nest too deep: no checking parse first
        try:
            return _compose(text, file, max_nodes, max_depth)
        except yaml.YAMLError:
            pass  # invalid: the checking parse first, as for any document, finds the issue reported
    try:
        too_deep = _too_deep(text, max_depth)
    except yaml.YAMLError as error:
        return LoadedYaml(None, Positions(), [_syntax_issue(error, file, text)], fatal=True)
    if too_deep is not None:
        issue = RecipeIssue(
            file,
            too_deep.line + 1,
            too_deep.column + 1,
            "",
            f"document is nested more than {max_depth} levels deep",
        )
        return LoadedYaml(None, Positions(), [issue], fatal=True)
    try:
        return _compose(text, file, max_nodes, max_depth)
    except yaml.YAMLError as error:
        return LoadedYaml(None, Positions(), [_syntax_issue(error, file, text)], fatal=True)


def read_yaml_file(path: Any, file: str, **limits: int) -> LoadedYaml:
    """Read and :func:`load_yaml` a file; unreadable or non-UTF-8 files become issues.

    Raises:
        OSError: the file cannot be opened (callers word the message: recipe or base).
    """
    with open(path, "rb") as handle:
        raw = handle.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        good = raw[: error.start].decode("utf-8-sig", "replace")
        line, col = line_col(good, len(good))
        issue = RecipeIssue(file, line, col, "", f"file is not UTF-8 text (byte 0x{raw[error.start]:02x})")
        return LoadedYaml(None, Positions(), [issue], fatal=True)
    return load_yaml(text, file, **limits)


def parse_flow_value(text: str) -> Any:
    """Parse a ``--set`` value: one YAML scalar or flow collection, safely.

    ``350`` -> 350, ``[a, b]`` -> ["a", "b"], ``"x"`` -> "x", ``{k: 1}`` -> {"k": 1}.

    Raises:
        ValueError: not valid YAML, a block collection, or an unsupported tag.
    """
    loader = RecipeYamlLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as error:
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise ValueError(f"not a valid YAML value ({problem})") from None
        if node is None:
            return None
        if isinstance(node, (MappingNode, SequenceNode)) and not node.flow_style:
            raise ValueError(
                "must be a YAML scalar or flow value like [a, b] or {k: v}; quote text containing ': '"
            )
        builder = _Builder(loader, "<--set>", MAX_NODES, MAX_DEPTH)
        try:
            value = builder.build(node, ())
        except _Abort as abort:
            raise ValueError(abort.message) from None
        if builder.issues:
            raise ValueError(builder.issues[0].message)
        return value
    finally:
        loader.dispose()
