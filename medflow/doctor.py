"""``medflow doctor [RECIPE]``: what this installation can do, and where a recipe would write.

Lines only, no side effect: versions of medflow and what it runs on, the optional extras
that are installed, pydicom's pixel decoders for each compressed transfer syntax, the CPU
cores ``workers: auto`` uses, the environment variables medflow reads (never their values
when they are secrets), and for a recipe: its source, output folder, cache (with the free space
of their disks), log and preview locations.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import sys
from pathlib import Path
from typing import Any

#: Distributions medflow needs, by import name (shown with their versions).
CORE = (
    ("pydantic", "pydantic"), ("numpy", "numpy"), ("pydicom", "pydicom"), ("SimpleITK", "SimpleITK"),
    ("opencv-python-headless", "cv2"), ("joblib", "joblib"), ("filelock", "filelock"), ("tqdm", "tqdm"),
    ("pylibjpeg", "pylibjpeg"), ("pylibjpeg-libjpeg", "libjpeg"), ("pylibjpeg-openjpeg", "openjpeg"),
)
#: Optional extras of pyproject.toml: (extra, [(distribution, import name)], what it enables).
EXTRAS = (
    ("torch", [("torch", "torch")], "medflow.dataset ... .to_torch(): a torch Dataset"),
    ("dask", [("distributed", "distributed")], "engine.backend: dask (a Dask distributed cluster)"),
)


def doctor_lines(loaded: Any | None = None) -> list[str]:
    """Every line of the report; ``loaded`` (a LoadedRecipe) adds where its build would go."""
    from medflow import __version__

    lines = [f"medflow {__version__} (Python {platform.python_version()}, {platform.system()} {platform.machine()})",
             f"  executable: {sys.executable}", "", "dependencies:"]
    lines += [f"  {name}: {_version(name, module)}" for name, module in CORE]
    lines += ["", "optional extras (pip install -e '.[NAME]'; '.[all]' for every one):"]
    for extra, needs, purpose in EXTRAS:
        found = [f"{name} {_version(name, module)}" for name, module in needs]
        state = "installed" if all("not installed" not in f for f in found) else "missing"
        lines.append(f"  [{extra}] {state}: {', '.join(found)} -> {purpose}")
    lines.append(f"  {_torch_build()}")
    lines += ["", "pixel decoders for compressed transfer syntaxes (pydicom's plugins, in the order medflow tries them):",
              *decoder_lines()]
    lines += ["", "environment:", cores_line(), *environment_lines()]
    if loaded is not None:
        lines += ["", f"recipe {loaded.path.name} ({loaded.recipe.name}):", *recipe_lines(loaded)]
    return lines


def _version(distribution: str, module: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        imported = importlib.import_module(module)
    except ImportError:
        return "not installed"
    return str(getattr(imported, "__version__", "installed"))


def _torch_build() -> str:
    """Which torch build is installed: CPU or CUDA (a CUDA build is several GB and needs no GPU here)."""
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "torch: not installed (CPU wheel: pip install torch==2.13.0, then pip install -e '.[torch]')"
    try:
        import torch

        cuda = torch.version.cuda
        version = torch.__version__
    except Exception as exc:  # noqa: BLE001 - a broken torch install is what doctor is for
        return f"torch: {version} installed but does not import ({type(exc).__name__}: {exc})"
    build = f"CUDA {cuda} build" if cuda else "CPU build"
    return f"torch: {version} ({build}; medflow needs only the CPU build: pip install torch==2.13.0)"


def decoder_lines() -> list[str]:
    """One line per compressed transfer syntax pydicom can decode: the plugins medflow tries, in order, or what is missing.

    medflow's order (:mod:`medflow.sources.decoders`) comes first; plugins it does not name follow.
    """
    import pydicom.uid
    from pydicom.pixels.decoders.base import get_decoder

    from medflow.sources.decoders import plugins_for

    lines, without = [], []
    for uid in pydicom.uid.AllTransferSyntaxes:
        if not uid.is_compressed:
            continue
        try:
            decoder = get_decoder(uid)
        except NotImplementedError:
            without.append(uid.name)
            continue
        ordered = plugins_for(uid)
        plugins = ", ".join([*ordered, *(name for name in decoder.available_plugins if name not in ordered)])
        if plugins:
            lines.append(f"  {uid.name} ({uid}): {plugins}")
        else:
            missing = "; ".join(decoder.missing_dependencies) or "no plugin"
            lines.append(f"  {uid.name} ({uid}): NO DECODER ({missing})")
    if without:
        lines.append(f"  no pydicom decoder at all (video and others): {len(without)} syntaxes, e.g. {without[0]}")
    return lines


def cores_line() -> str:
    """How many cores ``workers: auto`` and the thread counts use, and what limits them."""
    from medflow.threads import affinity_cores, cgroup_cpu_limit, usable_cores

    limit = cgroup_cpu_limit()
    limited = f"a cgroup CPU limit of {limit}" if limit is not None else "no cgroup CPU limit"
    return f"  CPU cores: {usable_cores()} used by workers: auto ({affinity_cores()} in its affinity, {limited})"


def environment_lines() -> list[str]:
    """The variables medflow reads; a key's value is never shown, only whether it is set."""
    shared = os.environ.get("MEDFLOW_SHARED_DATA")
    default = Path(__file__).resolve().parents[2] / "shared" / "data"  # pipelines/' default, ../../shared/data
    where = Path(shared) if shared else default
    shown = f"{shared}" if shared else f"not set (recipes default to {default})"
    return [
        f"  MEDFLOW_SHARED_DATA: {shown}; {'exists' if where.is_dir() else 'no such folder'}",
        f"  MEDFLOW_DEID_KEY: {'set' if os.environ.get('MEDFLOW_DEID_KEY') else 'not set'}",
        f"  MEDFLOW_DEBUG: {'set' if os.environ.get('MEDFLOW_DEBUG') else 'not set'}",
        _blas_line(),
        _heap_line(),
    ]


def _blas_line() -> str:
    from medflow import startup

    value = os.environ.get("OPENBLAS_NUM_THREADS")
    if startup.blas_threads_chosen is False:
        return f"  OPENBLAS_NUM_THREADS: {value} (medflow's default: numpy's BLAS starts no helper thread)"
    return f"  OPENBLAS_NUM_THREADS: {value if value is not None else 'not set'}"


def _heap_line() -> str:
    from medflow import startup

    names = ", ".join(f"{name}={os.environ.get(name, 'not set')}" for name in startup.HEAP_SETTINGS)
    why = {"set": " (medflow's default: freed memory stays in the heap for the next item)",
           "chosen": " (yours: medflow's default is not applied)", "not glibc": " (not glibc: nothing to set)",
           "refused": " (glibc's mallopt refused them: not applied)"}
    return f"  {names}{why.get(startup.heap_settings, '')}"


def recipe_lines(loaded: Any) -> list[str]:
    """Where the build of ``loaded`` reads and writes."""
    from medflow.engine.prepare import cache_dir, output_dir
    from medflow.preview import preview_path

    source = loaded.recipe.source
    kind = next((k for k in ("dicom", "sample") if getattr(source, k, None)), "?")
    value = getattr(source, kind, "?")
    if kind == "dicom":
        folder = Path(value) if Path(value).is_absolute() else loaded.base_dir / value
        state = "exists" if folder.is_dir() else "NO SUCH FOLDER (use --source PATH)"
        source_line = f"  source: dicom folder {os.path.normpath(folder)} ({state})"
    else:
        source_line = f"  source: {kind} {value} (embedded, written as DICOM into the cache)"
    out, cache = output_dir(loaded), cache_dir(loaded)
    kept = {True: "yes", False: "no"}.get(loaded.recipe.engine.cache_stored_values,
                                          "auto (of files costly to read again)")
    return [
        source_line,
        f"  output: {out} ({_free_space(out)})",
        f"  manifest and build log: {out / 'manifest.json'}, {out / 'build.log'}",
        f"  cache: {cache} ({_free_space(cache)}; stored values kept: {kept}, see engine.cache_stored_values)",
        f"  preview: {preview_path(loaded)}",
    ]


def _free_space(folder: Path) -> str:
    """``N GB free`` on the file system that holds (or would hold) ``folder``."""
    import shutil

    for existing in (folder, *folder.parents):
        try:
            return f"{shutil.disk_usage(existing).free / 1e9:,.1f} GB free"
        except OSError:
            continue
    return "free space unknown"
