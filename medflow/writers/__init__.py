"""Writers: one module per output kind (or a few), each registering with :func:`register_writer`.

Importing this package registers nothing (``medflow.writers.atomic`` is imported by code that
writes no dataset at all). The registry imports a writer's module when its kind is first asked
for, through :data:`BUILTIN`; :func:`medflow.writers.registry.all_writers` imports every module
here except the helpers. Adding an output kind means adding one module and naming its kind in
:data:`BUILTIN` (``tests/test_startup.py`` checks the table against what the modules register;
a kind missing from it still works, found by importing every module).
"""

#: Every built-in writer kind -> the module of this package that registers it.
BUILTIN: dict[str, str] = {
    "dicom": "dicom",
    "dicomweb": "dicomweb",
    "index": "index",
    "nifti": "nifti",
    "nnunet": "nnunet",
    "npy": "tensors",
    "npz_shards": "tensors",
    "png": "png",
}

#: Modules of this package that register no writer (never imported to fill the registry).
HELPERS = frozenset({"registry", "atomic", "records"})
