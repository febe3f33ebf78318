"""Writer registry: output kinds a recipe can list under ``outputs.writers``.

A writer module defines a params model (``kind: Literal["name"]``) and a function
``(sample, params, out_dir) -> list[WrittenFile]`` that writes the item's files
atomically and reports them. Writers run inside the worker, after the last step.
"""

from __future__ import annotations

import importlib
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from medflow.hashing import ALGORITHM
from medflow.sample import Sample
from medflow.writers import BUILTIN, HELPERS


class WriterParams(BaseModel):
    """Base of every writer's params model: unknown keys are errors.

    Every field named ``folder`` or ``*_folder`` is a subfolder of the output folder: a
    relative path that stays inside it (not absolute, no ``..``, no backslash), checked
    when the recipe loads so a writer can never write outside the output folder. Built on first
    use (``defer_build``): a recipe validates only the models of the writers it names.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    @field_validator("*")
    @classmethod
    def _folder_inside_output(cls, value: Any, info: ValidationInfo) -> Any:
        name = info.field_name or ""
        if isinstance(value, str) and (name == "folder" or name.endswith("_folder")):
            check_subfolder(value)
        return value


def check_subfolder(value: str) -> str:
    """``value`` if it names a folder inside the output folder, else ``ValueError`` saying why."""
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts or "\\" in value or PureWindowsPath(value).drive:
        raise ValueError(f"must be a relative folder inside the output folder without '..' (got {value!r})")
    return value


@dataclass(frozen=True)
class WrittenFile:
    """One file a writer produced: path relative to the output folder, content digest, size in bytes.

    ``digest`` is :mod:`medflow.hashing`'s (what :func:`~medflow.writers.atomic.atomic_write` returns).
    """

    path: str
    digest: str
    size: int

    def record(self) -> dict[str, Any]:
        """The manifest's entry: ``{"path", "blake3", "size"}`` (the digest named after its algorithm)."""
        return {"path": self.path, ALGORITHM: self.digest, "size": self.size}


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
    reads_pixels: bool = True  # False: writes from the original instances only (see StepSpec.reads_pixels)
    finalize: Callable[..., list[WrittenFile]] | None = None  # per-item writer's dataset-level part (records)


_WRITERS: dict[str, WriterSpec] = {}


def register_writer(
    kind: str,
    version: int,
    params: type[WriterParams],
    *,
    per_item: bool = True,
    open_stream: Callable[..., Any] | None = None,
    reads_pixels: bool = True,
    finalize: Callable[..., list[WrittenFile]] | None = None,
):
    """Decorator registering a writer function under ``kind``.

    ``per_item=False`` marks a writer that runs once after all items (e.g. shards);
    its function is then ``(item_files, params, out_dir) -> list[WrittenFile]``.
    ``open_stream(sample_skeleton, params, out_dir) -> stream`` lets the engine write an
    item slab by slab: ``stream.write(slab_sample)`` in z order, then ``stream.close()``
    returns the WrittenFile list (bytes identical to the plain function's) or
    ``stream.abort()`` removes everything. ``finalize(records, params, out_dir)`` (a
    :class:`medflow.writers.records.DatasetRecords`) lets a per-item writer also write files
    about the whole dataset once after all items (e.g. nnU-Net's ``dataset.json``).
    """

    def decorate(function):
        if kind in _WRITERS or (kind in BUILTIN and not function.__module__.startswith(f"{__package__}.")):
            raise ValueError(f"writer {kind!r} is registered twice")
        field = params.model_fields.get("kind")
        if field is None or typing.get_args(field.annotation) != (kind,):
            raise ValueError(f"writer {kind!r}: params model must declare kind: Literal[{kind!r}]")
        summary = (function.__doc__ or "").strip().splitlines()[0]
        _WRITERS[kind] = WriterSpec(kind, version, params, function, summary, per_item, open_stream, reads_pixels,
                                    finalize)
        return function

    return decorate


def get_writer(kind: str) -> WriterSpec:
    """The registered writer ``kind``; KeyError if unknown. Imports only the module registering it."""
    if kind in BUILTIN and kind not in _WRITERS:  # medflow's own: no plugin can own it, none is loaded
        importlib.import_module(f"{__package__}.{BUILTIN[kind]}")
    if kind not in _WRITERS:
        _load_plugins()
        if kind not in _WRITERS:  # a kind missing from BUILTIN: look in every module
            _ensure_loaded()
    return _WRITERS[kind]


def writer_kinds() -> list[str]:
    """Every writer kind, sorted, without importing the writer modules (plugins are loaded)."""
    _load_plugins()
    return sorted(set(BUILTIN) | set(_WRITERS))


def all_writers() -> list[WriterSpec]:
    """Every registered writer, sorted by kind (imports every writer module)."""
    _ensure_loaded()
    return [_WRITERS[k] for k in sorted(_WRITERS)]


def _ensure_loaded() -> None:
    import pkgutil  # every module: `steps`, `schema` and unknown names only

    import medflow.writers as package

    for module in sorted(m.name for m in pkgutil.iter_modules(package.__path__)):
        if module not in HELPERS and not module.startswith("_"):
            importlib.import_module(f"{__package__}.{module}")
    _load_plugins()


def _load_plugins() -> None:
    from medflow.plugins import load_plugins

    load_plugins("medflow.writers", _WRITERS, "params_model", builtin=BUILTIN)  # third-party writers, once
