"""The build manifest (``manifest.json`` in the output folder): the lock of a build.

Everything that defines the dataset is in it: medflow, Python and library versions,
the recipe hash and resolved recipe, per item its input files and their sha256, the
applied steps with versions and params, the outputs with sha256, status and error.
Same recipe + same inputs -> identical manifest, except the ``run`` field, which
holds everything about this particular run (timestamps, workers, what came from the cache).
"""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import medflow
from medflow.writers.atomic import atomic_write_bytes

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
_LIBRARIES = ("numpy", "pydicom", "SimpleITK", "opencv-python-headless", "pydantic", "PyYAML", "joblib")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries whose behaviour shapes the output."""
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def environment() -> dict[str, Any]:
    """Versions of medflow, Python, the libraries, and every installed plugin step or writer."""
    from medflow.plugins import PROVENANCE

    return {
        "medflow": medflow.__version__,
        "python": platform.python_version(),
        "libraries": library_versions(),
        "plugins": {f"{group}:{name}": f"{package}=={version}"
                    for (group, name), (package, version) in sorted(PROVENANCE.items())},
    }


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> str:
    """Write ``manifest.json`` atomically (sorted keys, stable bytes); returns its sha256."""
    data = json.dumps(manifest, sort_keys=True, indent=1, ensure_ascii=False).encode("utf-8") + b"\n"
    return atomic_write_bytes(Path(out_dir) / MANIFEST_NAME, data, durable=True)


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    """The previous build's manifest, or ``None`` if absent or unreadable."""
    try:
        data = json.loads((Path(out_dir) / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return data if data.get("manifest_version") == MANIFEST_VERSION else None


def previous_items(manifest: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    if not manifest:
        return {}
    return {item["id"]: item for item in manifest.get("items", [])}
