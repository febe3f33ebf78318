"""Import heavy libraries (OpenCV, SimpleITK) only when first used.

Loading the step registry (every ``medflow`` command does) must not cost the
seconds those libraries take to import: ``cv2 = lazy_import("cv2")`` binds a
module whose real import runs on first attribute access (stdlib ``LazyLoader``).
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_import(name: str) -> ModuleType:
    """The module ``name``, imported for real on first attribute access."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


def is_loaded(name: str) -> bool:
    """Whether ``name`` has been imported for real (a module bound by :func:`lazy_import` and never used has not)."""
    module = sys.modules.get(name)
    return module is not None and not isinstance(module, importlib.util._LazyModule)
