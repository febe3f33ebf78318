"""Writer registry: output kinds a recipe can list under ``outputs.writers``.

A writer module defines a params model (``kind: Literal["name"]``) and a function
``(sample, params, out_dir) -> list[WrittenFile]`` that writes the item's files
atomically and reports them. Writers run inside the worker, after the last step.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from medflow.sample import Sample


class WriterParams(BaseModel):
    """Base of every writer's params model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class WrittenFile:
    """One file a writer produced: path relative to the output folder, sha256, size in bytes."""

    path: str
    sha256: str
    size: int


WriterFunction = Callable[[Sample, typing.Any, Path], list[WrittenFile]]


@dataclass(frozen=True)
class WriterSpec:
    kind: str
    version: int
    params_model: type[WriterParams]
    function: WriterFunction
    summary: str
    per_item: bool = True
    open_stream: Callable[..., Any] | None = None


_WRITERS: dict[str, WriterSpec] = {}


def register_writer(
    kind: str,
    version: int,
    params: type[WriterParams],
    *,
    per_item: bool = True,
    open_stream: Callable[..., Any] | None = None,
):
    """Decorator registering a writer function under ``kind``.

    ``per_item=False`` marks a writer that runs once after all items (e.g. shards);
    its function is then ``(item_files, params, out_dir) -> list[WrittenFile]``.
    ``open_stream(sample_skeleton, params, out_dir) -> stream`` lets the engine write an
    item slab by slab: ``stream.write(slab_sample)`` in z order, then ``stream.close()``
    returns the WrittenFile list (bytes identical to the plain function's) or
    ``stream.abort()`` removes everything.
    """

    def decorate(function):
        if kind in _WRITERS:
            raise ValueError(f"writer {kind!r} is registered twice")
        field = params.model_fields.get("kind")
        if field is None or typing.get_args(field.annotation) != (kind,):
            raise ValueError(f"writer {kind!r}: params model must declare kind: Literal[{kind!r}]")
        summary = (function.__doc__ or "").strip().splitlines()[0]
        _WRITERS[kind] = WriterSpec(kind, version, params, function, summary, per_item, open_stream)
        return function

    return decorate


def get_writer(kind: str) -> WriterSpec:
    _ensure_loaded()
    return _WRITERS[kind]


def all_writers() -> list[WriterSpec]:
    _ensure_loaded()
    return [_WRITERS[k] for k in sorted(_WRITERS)]


def _ensure_loaded() -> None:
    import medflow.writers  # noqa: F401
