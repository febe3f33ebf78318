"""Writers: importing this package registers every output kind.

Every module here that defines writers is imported, so adding an output kind means
adding one module.
"""

import importlib
import pkgutil

_HELPERS = {"registry", "atomic"}

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module not in _HELPERS and not _module.startswith("_"):
        importlib.import_module(f"{__name__}.{_module}")
