"""Steps: one module per family; importing this package registers every step.

Every module in this package (other than ``registry``) is imported here, so
adding a step family means adding one module and nothing else.
"""

import importlib
import pkgutil

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module != "registry" and not _module.startswith("_"):
        importlib.import_module(f"{__name__}.{_module}")
