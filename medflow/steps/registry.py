"""The step registry: name -> (params model, version, pure function).

A step module defines a params model (subclass of :class:`StepParams` with a
``step: Literal["name"]`` field, the discriminator of the recipe's ``steps:`` list)
and a function ``(Sample, params) -> Sample``, and registers both with
:func:`register`. Adding a step touches only its own module (plus its name in
``medflow.steps.BUILTIN``). Modules are imported when first needed: :func:`get_step`
imports the one module of the step asked for, :func:`step_names` none.
"""

from __future__ import annotations

import importlib
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from medflow.sample import Sample
from medflow.steps import BUILTIN


class StepParams(BaseModel):
    """Base of every step's params model: unknown keys are errors.

    Built on first use (``defer_build``): a step module defines several models and a recipe
    validates only those of the steps it names.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    def canonical_params(self) -> dict[str, Any]:
        """The params that define the step's output (JSON-able, without ``step``)."""
        return self.model_dump(mode="json", exclude={"step"})

    def pointwise(self) -> bool:
        """With these params, is each output value a function of the same input pixel's value only?

        Lets the engine fold the step into a lookup table. Defaults to the registered
        flag; a step overrides this when it holds only for some params.
        """
        return get_step(self.step).pointwise

    def slicewise(self) -> bool:
        """With these params, does output slice z depend only on input slice z (axis z first)?

        Lets the engine stream an item slab by slab. Pointwise steps are slicewise;
        other steps override this when true for some params (e.g. NCHW layout).
        """
        return self.pointwise()

    def channels_first(self) -> bool:
        """Does this step put the channel axis before y, x (e.g. an NCHW layout)?

        A pointwise chain before such a step is gathered channel by channel (planes the step
        only views); otherwise whole pixels, channels last. Either way the values are equal.
        """
        return False

    def reads_only_pixel_description(self) -> bool:
        """With these params, is the step blind to everything per slice but its pixel description?

        ``True`` promises: apart from the pixels, the step's output (meta, axes, channels) depends
        only on these params, the input's meta, axes and channels, and the headers' pixel-description
        attributes (group 0028, PS3.3 C.7.6.3), never on pixel values; and it keeps the input's
        headers, geometry, source files, private tables and labels as they are. The engine may then
        describe a streamed slab from an earlier slab's description (the same rescale and pixel
        description per slice) instead of running the chain again. Defaults to the registered flag
        (``False`` unless declared).
        """
        return get_step(self.step).reads_only_pixel_description

    def deidentifies(self) -> bool:
        """Does this step de-identify the item? The engine then keeps identity out of what it writes."""
        return False

    def load_secret(self) -> bytes | None:
        """The step's secret key (e.g. a de-identification key), loaded from where the recipe says.

        The engine calls this before any work, so a missing or weak key stops the build at once.

        Raises:
            MedflowError: the secret is missing or unusable (message names where it was looked for).
        """
        return None


StepFunction = Callable[[Sample, Any], Sample]


@dataclass(frozen=True)
class StepSpec:
    """A registered step.

    Attributes:
        name: stable name used in recipes.
        version: bump whenever the output for the same input and params changes;
            it joins the cache key.
        params_model: the pydantic model of the step's params.
        function: pure ``(Sample, params) -> Sample``.
        summary: one line saying what the step does.
        pointwise: output value of each pixel depends only on that pixel's value
            (lets the engine fold the step into a lookup table).
        checkpoint: the engine caches the Sample after this step (expensive steps).
        reads_pixels: the step looks at ``Sample.pixels``. A chain whose steps and writers
            all say ``False`` (de-identify -> DICOM) never decodes pixel data: each input
            file is its own item, read once and written with its pixel data as stored.
        reads_only_pixel_description: of a slice, the step reads only its pixels and its
            headers' group 0028, and changes no header, geometry or file list (see
            :meth:`StepParams.reads_only_pixel_description`).
    """

    name: str
    version: int
    params_model: type[StepParams]
    function: StepFunction
    summary: str
    pointwise: bool = False
    checkpoint: bool = False
    reads_pixels: bool = True
    reads_only_pixel_description: bool = False


_REGISTRY: dict[str, StepSpec] = {}


def register(
    name: str,
    version: int,
    params: type[StepParams],
    *,
    pointwise: bool = False,
    checkpoint: bool = False,
    reads_pixels: bool = True,
    reads_only_pixel_description: bool = False,
) -> Callable[[StepFunction], StepFunction]:
    """Decorator registering ``function`` as step ``name`` at ``version``.

    The function's docstring's first line is the step's summary.

    Raises:
        ValueError: duplicate name, bad version, or a params model whose ``step``
            field is not ``Literal[name]``.
    """

    def decorate(function: StepFunction) -> StepFunction:
        if name in _REGISTRY or (name in BUILTIN and not function.__module__.startswith(f"{__package__}.")):
            raise ValueError(f"step {name!r} is registered twice")
        if not isinstance(version, int) or version < 1:
            raise ValueError(f"step {name!r}: version must be an integer >= 1")
        annotation = params.model_fields.get("step")
        if annotation is None or typing.get_args(annotation.annotation) != (name,):
            raise ValueError(f"step {name!r}: params model must declare step: Literal[{name!r}]")
        summary = (function.__doc__ or "").strip().splitlines()[0] if function.__doc__ else ""
        if not summary:
            raise ValueError(f"step {name!r}: the function needs a docstring (its first line is the summary)")
        _REGISTRY[name] = StepSpec(name, version, params, function, summary, pointwise, checkpoint, reads_pixels,
                                   reads_only_pixel_description)
        return function

    return decorate


def get_step(name: str) -> StepSpec:
    """The registered step ``name``; KeyError if unknown. Imports only the module registering it."""
    if name in BUILTIN and name not in _REGISTRY:  # medflow's own: no plugin can own it, none is loaded
        importlib.import_module(f"{__package__}.{BUILTIN[name]}")
    if name not in _REGISTRY:
        _load_plugins()
        if name not in _REGISTRY:  # a step missing from BUILTIN: look in every module
            _ensure_loaded()
    return _REGISTRY[name]


def step_names() -> list[str]:
    """Every step name, sorted, without importing the step modules (plugins are loaded)."""
    _load_plugins()
    return sorted(set(BUILTIN) | set(_REGISTRY))


def all_steps() -> list[StepSpec]:
    """Every registered step, sorted by name (imports every step module)."""
    _ensure_loaded()
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def _ensure_loaded() -> None:
    import pkgutil  # every module: `steps`, `schema` and unknown names only

    import medflow.steps as package

    for module in sorted(m.name for m in pkgutil.iter_modules(package.__path__)):
        if module != "registry" and not module.startswith("_"):
            importlib.import_module(f"{__package__}.{module}")
    _load_plugins()


def _load_plugins() -> None:
    from medflow.plugins import load_plugins

    load_plugins("medflow.steps", _REGISTRY, "params_model", builtin=BUILTIN)  # third-party steps, once


__all__ = ["Literal", "StepParams", "StepSpec", "all_steps", "get_step", "register", "step_names"]
