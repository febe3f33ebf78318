"""Third-party steps and writers, registered through entry points (``medflow.steps``, ``medflow.writers``).

A plugin package names a module (or a no-argument function) in one of the two groups; loading
it registers steps with :func:`medflow.steps.registry.register` or writers with
:func:`medflow.writers.registry.register_writer`, exactly like medflow's own. Then:

- they are in ``medflow steps`` and in ``medflow schema`` (the recipe model is built over the
  registries);
- their params carry ``plugin: <package>==<version>`` when dumped, so a step's manifest entry
  names the package and its version, and upgrading the package changes the cache key (a new
  version of a plugin may compute other bytes under the same step version);
- a plugin that fails to load is reported by name on stderr, once per process, and the others
  are loaded anyway (what it registered before failing is withdrawn).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Collection
from importlib import metadata
from types import ModuleType
from typing import Any

GROUPS = ("medflow.steps", "medflow.writers")

_LOADED: set[str] = set()
#: (group, entry point name, package, one-line error) of every plugin that failed to load.
FAILURES: list[tuple[str, str, str, str]] = []
#: (group, registered name) -> (package, version)
PROVENANCE: dict[tuple[str, str], tuple[str, str]] = {}


def load_plugins(group: str, registry: dict[str, Any], field: str, builtin: Collection[str] = ()) -> None:
    """Load the entry points of ``group`` once per process into ``registry``.

    ``field`` names the spec attribute holding the params model (``params_model``); each model a
    plugin registers is replaced by a subclass that records the plugin's package and version.
    ``builtin``: medflow's own names, which a plugin never owns (the registries load medflow's
    modules lazily, so a plugin importing one registers its names on the way: they stay medflow's).
    """
    if group in _LOADED:
        return
    _LOADED.add(group)
    for entry in sorted(_entry_points(group), key=lambda e: e.name):
        package, version = _distribution(entry)
        before = set(registry)
        try:
            loaded = entry.load()
            if callable(loaded) and not isinstance(loaded, ModuleType):
                loaded()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop medflow
            for name in set(registry) - before - set(builtin):
                del registry[name]
            message = f"{type(exc).__name__}: {exc}".splitlines()[0]
            FAILURES.append((group, entry.name, package, message))
            print(f"medflow: plugin '{entry.name}' ({package} {version}, {group}) failed to load and is "
                  f"skipped: {message}", file=sys.stderr)
            continue
        for name in sorted(set(registry) - before - set(builtin)):
            spec = registry[name]
            model = _with_provenance(getattr(spec, field), group, name, package, version)
            registry[name] = dataclasses.replace(spec, **{field: model})
            PROVENANCE[(group, name)] = (package, version)


@functools.cache
def _all_entry_points() -> metadata.EntryPoints:
    """Every installed entry point, read once for both groups (one pass over the installed packages)."""
    return metadata.entry_points()


def _entry_points(group: str) -> list[metadata.EntryPoint]:
    return list(_all_entry_points().select(group=group))


def _distribution(entry: metadata.EntryPoint) -> tuple[str, str]:
    dist = entry.dist
    if dist is None:
        return entry.module, "unknown"
    return dist.metadata["Name"] or entry.module, dist.version


def _with_provenance(model: type, group: str, name: str, package: str, version: str) -> type:
    """``model`` whose dumps add ``plugin: package==version`` (importable here, so workers can unpickle it)."""
    from pydantic import model_serializer

    attribute = f"_plugin_{group.rsplit('.', 1)[-1]}_{name}"
    stamp = f"{package}=={version}"

    def _serialize(self, handler):
        data = handler(self)
        if isinstance(data, dict):
            data["plugin"] = stamp
        return data

    namespace = {"__module__": __name__, "__qualname__": attribute, "__doc__": model.__doc__,
                 "_plugin_stamp": model_serializer(mode="wrap")(_serialize)}
    subclass = type(model.__name__, (model,), namespace)
    globals()[attribute] = subclass
    return subclass


def __getattr__(name: str) -> Any:
    """Plugin params classes for unpickling in a worker: loading the registries creates them."""
    if name.startswith("_plugin_"):
        from medflow.steps.registry import all_steps
        from medflow.writers.registry import all_writers

        all_steps(), all_writers()
        if name in globals():
            return globals()[name]
    raise AttributeError(name)
