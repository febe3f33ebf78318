"""Steps: one module per family, each registering its steps with :func:`medflow.steps.registry.register`.

Importing this package registers nothing. The registry imports a family's module when one of
its steps is first asked for (by name, through :data:`BUILTIN`), so a recipe of three steps
loads those steps' code and not, say, the de-identification step's pydicom and tables;
:func:`medflow.steps.registry.all_steps` imports every module here. Adding a step family means
adding one module and naming its steps in :data:`BUILTIN` (``tests/test_startup.py`` checks the
table against what the modules register; a step missing from it still works, found by importing
every module).
"""

#: Every built-in step name -> the module of this package that registers it.
BUILTIN: dict[str, str] = {
    "anonymize": "anonymize",
    "color_space": "color",
    "colormap": "color",
    "crop_pad": "spatial",
    "denoise": "correction",
    "layout": "layout",
    "modality_lut": "intensity",
    "multi_window": "intensity",
    "n4_bias_correction": "correction",
    "normalize": "normalize",
    "orient": "spatial",
    "resample": "spatial",
    "resize": "spatial",
    "window": "intensity",
}
