"""The recipe model (pydantic v2). The JSON Schema in ``schemas/`` is generated from it.

The ``steps:`` list is a discriminated union (on ``step``) over the step registry and
``outputs.writers`` one (on ``kind``) over the writer registry, so the model, the
schema and the registry can never disagree.

Two builds of one model (:func:`_build`): :func:`recipe_schema_model` spells both unions out
over every registered params model (for the JSON Schema: it imports every step and writer
module, pydicom and all); :func:`recipe_model`, which validates recipes, dispatches each
entry to the one params model its tag names (:class:`Registered`), so loading a recipe
imports only the steps and writers it uses. Both report the same errors.
"""

from __future__ import annotations

import functools
import math
import sys
import typing
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    ValidationError,
    ValidationInfo,
    create_model,
    model_validator,
)
from pydantic_core import PydanticCustomError

SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SeriesFilter(_Strict):
    """Which files and series of a DICOM folder enter the dataset."""

    include: list[str] = Field(
        default_factory=lambda: ["**"],
        description="Glob patterns (relative to the source folder, '**' crosses folders) a file must match.",
    )
    exclude: list[str] = Field(default_factory=list, description="Glob patterns of files to leave out.")
    modality: list[str] | None = Field(
        None, description="Keep only series whose Modality (0008,0060) is one of these, e.g. [CT, MR]."
    )
    series_description: list[str] | None = Field(
        None,
        description="Keep only series whose SeriesDescription (0008,103E) matches one of these glob "
        "patterns (case-insensitive).",
    )
    exclude_localizers: bool = Field(
        True, description="Leave out localizer/scout images (ImageType contains LOCALIZER)."
    )


class Labels(_Strict):
    """Label files paired with the images (see medflow/sources/pairing.py and medflow/sources/labels/)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    from_: Literal["seg", "rtstruct", "mask"] = Field(
        alias="from", description="'seg': DICOM Segmentation; 'rtstruct': RT Structure Set contours (a voxel is in "
        "when its centre is inside, even-odd rule for holes); 'mask': NIfTI/NRRD files matched by 'pattern' or "
        "'table'.")
    folder: str | None = Field(None, description="Folder searched for label files, relative to the recipe file; "
                               "default the source folder (for a sample: its own label objects).")
    pattern: str | None = Field(None, description="mask: glob under 'folder' per item, with {series_uid}, "
                                "{study_uid}, {patient_id}, {accession}, {series_folder}, {item_id}; seg/rtstruct: "
                                "glob of the label files to consider (relative to 'folder').")
    table: str | None = Field(None, description="mask: CSV file (relative to the recipe) with one row per mask: its "
                              "path (relative to 'folder', never leaving it) in column 'path_column' and its image's "
                              "key in column 'join_on'. Instead of 'pattern'.")
    join_on: Literal["SeriesInstanceUID", "StudyInstanceUID", "PatientID", "AccessionNumber"] | None = Field(
        None, description="mask table: the column holding the key a row is matched on (required with 'table'); "
                          "a key that matches several image items is ambiguous.")
    path_column: str = Field("mask", min_length=1, description="mask table: the column holding each mask's path.")
    segments: list[str] | None = Field(None, description="Segment/ROI names; name i gets label value i+1 in every "
                                       "item (same names merge, others are left out). Default: SEG numbers, "
                                       "RTSTRUCT ROI order, mask values.")
    overlap: Literal["error", "last"] = Field("error", description="A voxel in two segments: 'error' fails the "
                                              "item; 'last': the segment with the higher value wins.")
    missing: Literal["fail", "keep"] = Field("fail", description="An item without (or with ambiguous) labels: "
                                             "'fail' it, or 'keep' it without labels.")

    @model_validator(mode="after")
    def _one_way_to_find_masks(self) -> Labels:
        if self.from_ != "mask":
            if self.table is not None or self.join_on is not None:
                raise ValueError("'table' and 'join_on' pair masks only (from: mask)")
            return self
        if (self.pattern is None) == (self.table is None):
            raise ValueError("from: mask needs exactly one of 'pattern' (a glob per item) or 'table' (a CSV of masks)")
        if self.table is not None and self.join_on is None:
            raise ValueError("'table' needs 'join_on': the column holding SeriesInstanceUID, StudyInstanceUID, "
                             "PatientID or AccessionNumber")
        if self.table is None and self.join_on is not None:
            raise ValueError("'join_on' goes with 'table'")
        return self


class DicomSource(_Strict):
    """A folder of DICOM files, read recursively; items are series (and multi-frame instances)."""

    dicom: str = Field(description="Folder of DICOM files, relative to the recipe file or absolute.")
    filter: SeriesFilter = Field(default_factory=SeriesFilter, description="What enters the dataset.")
    duplicates: Literal["first", "error"] = Field(
        "first",
        description="Slices at the same position: 'first' keeps the one with the lowest "
        "(InstanceNumber, SOPInstanceUID) and reports the rest; 'error' fails the item.",
    )
    mismatched_size: Literal["fail", "split"] = Field(
        "fail",
        description="Files of one series (same orientation and echo) whose Rows/Columns differ from most of "
        "the series: 'fail' the item naming them and their sizes; 'split' builds one item per size.",
    )
    labels: Labels | None = Field(None, description="Pair label files (SEG, RTSTRUCT, masks) with the images.")


class SampleSource(_Strict):
    """An embedded synthetic dataset that medflow writes as real DICOM files."""

    sample: Literal["ct-phantom"] = Field(
        description="Name of the embedded dataset: 'ct-phantom' (2 patients, 3 CT series, fake PHI)."
    )
    filter: SeriesFilter = Field(default_factory=SeriesFilter, description="What enters the dataset.")
    labels: Labels | None = Field(None, description="Pair the sample's organ labels (a DICOM SEG and an RTSTRUCT "
                                  "per series) with the images.")


def _dicomweb_source() -> type[BaseModel]:
    """``DicomwebSource`` (in its own module: it imports the DICOMweb client code and builds five models)."""
    from medflow.recipe.dicomweb_source import DicomwebSource

    return DicomwebSource


def __getattr__(name: str) -> Any:
    if name == "DicomwebSource":  # imported on first use: a folder or sample recipe never needs it
        return _dicomweb_source()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _source_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        if "sample" in value:
            return "sample"
        if "dicom" in value:
            return "dicom"
        if "dicomweb" in value:
            return "dicomweb"
        return None
    if type(value) is SampleSource:
        return "sample"
    dicomweb = sys.modules.get("medflow.recipe.dicomweb_source")  # not imported: no DicomwebSource exists
    return "dicomweb" if dicomweb is not None and type(value) is dicomweb.DicomwebSource else "dicom"


#: The kinds of ``source``: its tag (the key naming it) -> its model, or what imports the model.
_SOURCE_KINDS: dict[str, type[BaseModel] | Callable[[], type[BaseModel]]] = {
    "dicom": DicomSource, "sample": SampleSource, "dicomweb": _dicomweb_source,
}


def _source(members: dict[str, Any]) -> Any:
    """The ``source`` field's type: a union over ``members`` (tag -> type), tagged by :func:`_source_tag`."""
    return Annotated[
        Union[tuple(Annotated[member, Tag(tag)] for tag, member in members.items())],  # noqa: UP007
        Discriminator(
            _source_tag,
            custom_error_type="source_kind",
            custom_error_message="source needs exactly one of the keys 'dicom' (a folder), 'sample' (an embedded "
            "dataset) or 'dicomweb' (a DICOMweb server)",
        ),
    ]


class _SourceKinds(Mapping[str, type[BaseModel]]):
    """:data:`_SOURCE_KINDS` with each model imported when first looked up."""

    def __getitem__(self, tag: str) -> type[BaseModel]:
        kind = _SOURCE_KINDS[tag]
        return kind if isinstance(kind, type) else kind()

    def __iter__(self) -> Iterator[str]:
        return iter(_SOURCE_KINDS)

    def __len__(self) -> int:
        return len(_SOURCE_KINDS)


def source_kinds() -> Mapping[str, type[BaseModel]]:
    """The kinds of ``source`` by their key (the union's tags), e.g. ``{'dicom': DicomSource, ...}``.

    A source names exactly one kind key; ``--source`` and ``--set source.<kind>=...`` switch kinds
    with it (see :mod:`medflow.recipe.compose`). A kind's model is imported when looked up.
    """
    return _SourceKinds()


class Expectation(_Strict):
    """What every item's final array must be; an item that differs fails with the difference named."""

    layout: str | None = Field(
        None, description="Axis names of the final array, e.g. NCHW, NHWC, NCDHW, or zyx (case-insensitive)."
    )
    dtype: Literal["float32", "float16", "float64", "uint8", "uint16", "int16", "int32"] | None = Field(
        None, description="dtype of the final array."
    )
    value_range: tuple[float, float] | None = Field(
        None, description="Every value must lie in [low, high] (inclusive, in output units); NaN always fails."
    )
    channels: int | None = Field(None, ge=1, description="Number of channels (size of the C axis).")


class Engine(_Strict):
    """How the build runs."""

    workers: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="Parallel worker processes; 'auto' = the CPU cores this process may use (its affinity, "
        "capped by a container's or cgroup's CPU limit); 1 = in this process."
    )
    cache_dir: str | None = Field(
        None, description="Cache folder, relative to the recipe file; default '.medflow/cache' next to outputs.dir "
        "(in its parent folder, never inside the dataset: the cache holds original headers).",
    )
    keep_going: bool = Field(
        True, description="Build every item even when some fail (failures are listed and the exit code is 1)."
    )
    fold_pointwise: bool = Field(
        True,
        description="Run the leading pointwise steps (window, colormap, color space...) through per-slice "
        "lookup tables over the stored values: bit-identical output, much faster. false: run them on every pixel.",
    )
    stream: bool = Field(
        True,
        description="Stream an item slab by slab from the reader to the writers when every step and writer "
        "allows it: same bytes, memory bounded by a few slices. false: whole volumes.",
    )
    cache_stored_values: bool | Literal["auto"] = Field(
        "auto",
        description="Keep each item's stored pixel values in the cache (about the size of the inputs' pixel "
        "data) so that a change of a step's parameters rebuilds without decoding the DICOM files again. "
        "'auto': only where reading the files again costs more than reading that copy (compressed, deflated, "
        "big-endian or multi-frame files, series read whole); not for native single-frame slices, streamed "
        "straight from the files' pixel data either way. true: always. false: never (saves the space). Never "
        "kept before a de-identifying step.",
    )
    backend: Literal["local", "dask"] = Field(
        "local",
        description="'local': this machine (in-process for 1 worker, else loky processes); 'dask': a Dask "
        "distributed cluster at 'address' (needs the 'dask' extra; outputs and cache on shared storage).",
    )
    address: str | None = Field(
        None, description="Dask scheduler address for backend 'dask', e.g. tcp://scheduler:8786."
    )


class SplitsSpec(BaseModel):
    """Reproducible splits of the items: ratios or k folds, grouped by patient, optionally stratified."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ratios: dict[str, float] | None = Field(
        None, description="Split name -> fraction of the groups, e.g. {train: 0.8, val: 0.1, test: 0.1}; "
        "the fractions sum to 1.", json_schema_extra={"unit": "fraction"})
    folds: int | None = Field(
        None, ge=2, description="k folds instead of ratios: splits fold0..fold{k-1}; "
        "ds.split('train', fold=i) is every fold but i.")
    group_by: Literal["patient", "study"] = Field(
        "patient", description="Items of one group (PatientID, or StudyInstanceUID) always share a split.")
    stratify: str | None = Field(
        None, description="Balance the splits over this column: a column of 'table' (e.g. a class label) "
        "or 'modality'.")
    seed: int = Field(0, description="Seed of the group order; same seed, same items -> same splits.")
    table: str | None = Field(
        None, description="CSV file (relative to the recipe) with a PatientID, AccessionNumber or "
        "StudyInstanceUID column, joined to the items; its other columns are labels.")
    join_on: Literal["PatientID", "AccessionNumber", "StudyInstanceUID"] | None = Field(
        None, description="The table's key column; default the first of PatientID, AccessionNumber, "
        "StudyInstanceUID it has.")
    column: str | None = Field(
        None, description="Use the user's own split from this column of 'table' instead of computing one; "
        "a group found in two splits is leakage.")
    on_leakage: Literal["error", "warn"] = Field(
        "error", description="User-supplied split with leakage: 'error' stops before any pixel is read; "
        "'warn' builds and records the leak in the manifest.")

    @model_validator(mode="after")
    def _one_method(self) -> SplitsSpec:
        methods = [name for name in ("ratios", "folds", "column") if getattr(self, name) is not None]
        if len(methods) != 1:
            raise ValueError(f"give exactly one of ratios, folds or column (got {methods or 'none'})")
        if self.ratios is not None:
            if not self.ratios or any(v <= 0 for v in self.ratios.values()):
                raise ValueError(f"ratios must be positive (got {dict(self.ratios)})")
            if not math.isclose(sum(self.ratios.values()), 1.0, abs_tol=1e-6):
                raise ValueError(f"ratios must sum to 1 (got {sum(self.ratios.values()):g})")
        if (self.column or (self.stratify and self.stratify != "modality")) and not self.table:
            raise ValueError("column and stratify (other than 'modality') need a table")
        return self


def wants_dataset_facts(recipe: Any) -> bool:
    """Does the recipe need the dataset's facts (patients, joined tables, splits: :mod:`medflow.splits`)?

    It does when it has ``splits:`` or an ``index`` writer; the engine imports medflow.splits then only.
    """
    return getattr(recipe, "splits", None) is not None or any(
        getattr(w, "kind", None) == "index" for w in recipe.outputs.writers)


#: Type of the error standing for a registered entry's own errors (see :func:`member_errors`).
MEMBER_ERRORS = "medflow_member_errors"


@dataclass(frozen=True)
class Registered:
    """A discriminated union over a registry, resolved one entry at a time.

    An entry (a mapping) is validated against the params model its ``discriminator`` value
    names, looked up by that name, so only the models a recipe uses are imported and built.
    Errors are the ones pydantic gives for the spelled-out union (``model_attributes_type``,
    ``union_tag_not_found``, ``union_tag_invalid`` with the same messages and context), and
    the member's own errors ride in one :data:`MEMBER_ERRORS` error: :func:`member_errors`
    puts them back where the union would have reported them (``loc + (tag,) + their loc``).

    Attributes:
        discriminator: the tag key (``step``, ``kind``).
        names: every tag, sorted, without importing the members.
        model: the params model of one tag (imports its module).
    """

    discriminator: str
    names: Callable[[], list[str]]
    model: Callable[[str], type[BaseModel]]
    builtin: Callable[[], Collection[str]] = tuple

    def knows(self, tag: str) -> bool:
        """Is ``tag`` a member? A built-in tag is, without loading the plugins :attr:`names` loads."""
        return tag in self.builtin() or tag in self.names()

    def member(self, value: Any) -> type[BaseModel] | None:
        """The params model ``value``'s tag names, or None (no mapping, no tag, unknown tag)."""
        tag = value.get(self.discriminator) if isinstance(value, dict) else None
        return self.model(tag) if isinstance(tag, str) and self.knows(tag) else None

    def validate(self, value: Any, info: ValidationInfo) -> BaseModel:
        key = self.discriminator
        if isinstance(value, BaseModel) and isinstance(getattr(value, key, None), str):
            tag = getattr(value, key)
            if self.knows(tag) and isinstance(value, self.model(tag)):
                return value
            value = value.model_dump(by_alias=True)
        if not isinstance(value, dict):
            raise PydanticCustomError(
                "model_attributes_type", "Input should be a valid dictionary or object to extract fields from"
            )
        if key not in value:
            raise PydanticCustomError(
                "union_tag_not_found", "Unable to extract tag using discriminator {discriminator}",
                {"discriminator": f"'{key}'"},
            )
        tag = str(value[key])
        if not self.knows(tag):
            names = self.names()
            raise PydanticCustomError(
                "union_tag_invalid",
                "Input tag '{tag}' found using {discriminator} does not match any of the expected tags: "
                "{expected_tags}",
                {"discriminator": f"'{key}'", "tag": tag, "expected_tags": ", ".join(f"'{n}'" for n in names)},
            )
        try:
            return self.model(tag).model_validate(value, context=info.context)
        except ValidationError as error:
            errors = error.errors(include_url=False)
            raise PydanticCustomError(
                MEMBER_ERRORS, "{tag}: {count} error(s): {summary}",
                {"tag": tag, "errors": errors, "count": len(errors),
                 "summary": "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)},
            ) from None


def member_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``ValidationError.errors()`` with each :data:`MEMBER_ERRORS` error replaced by the errors it holds,
    located as the spelled-out union locates them: ``('steps', 1, 'window', 'width')``.

    The error's loc lacks the tag for a :class:`Registered` union (it is added) and already has it
    for a :class:`Deferred` member (its ``under`` context is empty).
    """
    out: list[dict[str, Any]] = []
    for error in errors:
        if error["type"] != MEMBER_ERRORS:
            out.append(error)
            continue
        prefix = (*error["loc"], *error["ctx"].get("under", (error["ctx"]["tag"],)))
        out += [{**inner, "loc": (*prefix, *inner["loc"])} for inner in error["ctx"]["errors"]]
    return out


def registered_of(annotation: Any) -> Registered | None:
    """The :class:`Registered` marker of an ``Annotated`` annotation, or None."""
    if typing.get_origin(annotation) is Annotated:
        return next((m for m in typing.get_args(annotation)[1:] if isinstance(m, Registered)), None)
    return None


def _registered(discriminator: str, names: Callable[[], list[str]], model: Callable[[str], type[BaseModel]],
                builtin: Callable[[], Collection[str]]):
    marker = Registered(discriminator, names, model, builtin)
    return Annotated[Any, PlainValidator(marker.validate), marker]


@dataclass(frozen=True)
class Deferred:
    """A member of a tagged union whose model is imported and built only when a value takes it.

    The union picks the member by tag as for a model member (its tag is in the errors' ``loc``);
    the member's own errors ride in one :data:`MEMBER_ERRORS` error, put back where the model
    member's would be by :func:`member_errors`.

    Attributes:
        tag: the member's tag in the union.
        discriminator: the union's tag function (``value -> tag or None``).
        model: the member's model (imports its module).
    """

    tag: str
    discriminator: Callable[[Any], str | None]
    model: Callable[[], type[BaseModel]]

    def claims(self, value: Any) -> bool:
        """Would the union give ``value`` to this member?"""
        return self.discriminator(value) == self.tag

    def validate(self, value: Any, info: ValidationInfo) -> BaseModel:
        try:
            return self.model().model_validate(value, context=info.context)
        except ValidationError as error:
            errors = error.errors(include_url=False)
            raise PydanticCustomError(
                MEMBER_ERRORS, "{tag}: {count} error(s): {summary}",
                {"tag": self.tag, "under": (), "errors": errors, "count": len(errors),
                 "summary": "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)},
            ) from None


def deferred_of(annotation: Any) -> Deferred | None:
    """The :class:`Deferred` marker of an ``Annotated`` annotation, or None."""
    if typing.get_origin(annotation) is Annotated:
        return next((m for m in typing.get_args(annotation)[1:] if isinstance(m, Deferred)), None)
    return None


def _deferred(tag: str, discriminator: Callable[[Any], str | None], model: Callable[[], type[BaseModel]]):
    marker = Deferred(tag, discriminator, model)
    return Annotated[Any, PlainValidator(marker.validate), marker]


def _step_model(name: str) -> type[BaseModel]:
    from medflow.steps.registry import get_step

    return get_step(name).params_model


def _writer_model(kind: str) -> type[BaseModel]:
    from medflow.writers.registry import get_writer

    return get_writer(kind).params_model


def _step_names() -> list[str]:
    from medflow.steps.registry import step_names

    return step_names()


def _builtin_steps() -> Collection[str]:
    from medflow.steps import BUILTIN

    return BUILTIN


def _builtin_writers() -> Collection[str]:
    from medflow.writers import BUILTIN

    return BUILTIN


def _writer_kinds() -> list[str]:
    from medflow.writers.registry import writer_kinds

    return writer_kinds()


def _union_of(models: list[type[BaseModel]], discriminator: str):
    if len(models) == 1:
        return models[0]
    return Annotated[Union[tuple(models)], Field(discriminator=discriminator)]  # noqa: UP007


@functools.cache
def recipe_model() -> type[BaseModel]:
    """The Recipe model that validates recipes; each step and writer is checked against its own params
    model only (imports the modules of the steps and writers a recipe names, no other), and a source
    kind's model is imported when a recipe names it (:class:`Deferred`)."""
    source = _source({tag: kind if isinstance(kind, type) else _deferred(tag, _source_tag, kind)
                      for tag, kind in _SOURCE_KINDS.items()})
    return _build(source, _registered("step", _step_names, _step_model, _builtin_steps),
                  _registered("kind", _writer_kinds, _writer_model, _builtin_writers))


@functools.cache
def recipe_schema_model() -> type[BaseModel]:
    """The Recipe model with ``steps:`` and ``outputs.writers`` spelled out as discriminated unions over
    every registered params model: its JSON Schema is ``schemas/recipe.schema.json``."""
    from medflow.steps.registry import all_steps
    from medflow.writers.registry import all_writers

    return _build(_source(dict(source_kinds())), _union_of([spec.params_model for spec in all_steps()], "step"),
                  _union_of([spec.params_model for spec in all_writers()], "kind"))


def _build(source_type: Any, step_type: Any, writer_type: Any) -> type[BaseModel]:
    """The Recipe model: its ``source`` of ``source_type``, ``steps:`` entries of ``step_type`` and its
    writers of ``writer_type``."""
    Outputs = create_model(
        "Outputs",
        __config__=ConfigDict(extra="forbid", frozen=True),
        __doc__="Where and how the dataset is written.",
        dir=(str, Field(description="Output folder, relative to the recipe file or absolute.")),
        expect=(
            Expectation | None,
            Field(None, description="Checks applied to every item's final array before it is written."),
        ),
        writers=(
            list[writer_type],
            Field(
                default_factory=lambda: [{"kind": "npy"}],
                validate_default=True,
                min_length=1,
                description="Output kinds to write; default one .npy per item.",
            ),
        ),
    )
    Recipe = create_model(
        "Recipe",
        __config__=ConfigDict(extra="forbid", frozen=True, title="medflow recipe"),
        __doc__="A medflow recipe: a source, a list of steps and the outputs to write.",
        medflow=(Literal[1], Field(description="Recipe schema version; this medflow reads version 1.")),
        name=(str, Field(min_length=1, description="Short name of the dataset this recipe builds.")),
        description=(str, Field("", description="What the dataset is for; free text.")),
        source=(source_type, Field(description="Where the items come from.")),
        steps=(list[step_type], Field(default_factory=list, description="Steps applied to each item, in order.")),
        outputs=(Outputs, Field(description="Where and how the dataset is written.")),
        engine=(Engine, Field(default_factory=Engine, description="How the build runs.")),
        splits=(SplitsSpec | None, Field(None, description="Reproducible patient-level splits, recorded in the "
                                         "manifest and the index; they join no item's cache key.")),
    )
    return Recipe


def recipe_json_schema() -> dict[str, Any]:
    """JSON Schema of the recipe (draft 2020-12), as checked into ``schemas/recipe.schema.json``."""
    schema = recipe_schema_model().model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://medflow.dev/schemas/recipe.schema.json"
    # `extends:` is resolved before validation; editors must still accept it.
    schema["properties"]["extends"] = {
        "description": "Base recipe(s) to deep-merge under this one, relative to this file; lists are replaced.",
        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
    }
    schema["properties"]["abstract"] = {
        "description": "A base recipe, extended by others and never built: it validates without the keys its "
        "children add (name, source, outputs.dir...). Default: true for files in a folder named 'base'.",
        "type": "boolean",
    }
    return schema
