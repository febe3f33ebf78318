"""Intensity steps: modality LUT, VOI window, multi-window channels, normalization.

Contract with the DICOM reader (``medflow.sources.series``): a Sample arrives with float32
``pixels`` equal to the modality transform of the stored values (``stored * RescaleSlope +
RescaleIntercept``, 1/0 when absent, or the Modality LUT Sequence output when a header has
one and no RescaleSlope), axes ``zyx``, one DICOM JSON header (PS3.18 F.2, without Pixel
Data) per slice or frame in ``headers``, and ``meta["photometric_interpretation"]``. The
DICOM JSON helpers here read the few VOI / Modality LUT attributes the steps need; LUT Data
(0028,3006) must be present in the headers (not left out as bulk data).

Presets are data: ``medflow/data/window_presets.csv`` (name, center, width, source, default,
note); the numbers actually applied are recorded in ``meta["window"]`` / ``meta["windows"]``.
"""

from __future__ import annotations

import base64
import csv
import functools
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from medflow.errors import StepError
from medflow.ops.intensity import (
    WINDOW_FUNCTIONS,
    apply_lut,
    invert_range,
    scale_lut_output,
    stack_context,
)
from medflow.sample import Sample
from medflow.steps.registry import StepParams, register

PRESETS_FILE = Path(__file__).resolve().parents[1] / "data" / "window_presets.csv"
WindowFunction = Literal["LINEAR", "LINEAR_EXACT", "SIGMOID"]
_HU = {"unit": "HU"}
_OUT = {"unit": "output value"}
_NONE = {"unit": "none"}

# ---------------------------------------------------------------- presets


@dataclass(frozen=True)
class WindowPreset:
    """One row of ``medflow/data/window_presets.csv`` (center and width in HU)."""

    name: str
    center: float
    width: float
    source: str
    default: bool
    note: str


@functools.cache
def load_window_presets(path: Path = PRESETS_FILE) -> dict[str, tuple[WindowPreset, ...]]:
    """Presets by name, each name's default first. Lines starting with ``#`` are comments.

    Raises:
        ValueError: a malformed row, a width <= 0, or a name without exactly one default
            (the message names the file and line).
    """
    presets: dict[str, list[WindowPreset]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        lines = [(n, line) for n, line in enumerate(handle, 1) if line.strip() and not line.startswith("#")]
    reader = csv.DictReader(line for _, line in lines)
    for (number, _), row in zip(lines[1:], reader, strict=True):
        try:
            preset = WindowPreset(
                name=row["name"].strip(),
                center=float(row["center"]),
                width=float(row["width"]),
                source=row["source"].strip(),
                default=row["default"].strip().lower() == "yes",
                note=(row.get("note") or "").strip(),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}:{number}: malformed window preset row ({exc})") from exc
        if preset.width <= 0 or not preset.name or not preset.source:
            raise ValueError(f"{path}:{number}: preset needs a name, a source and a width > 0")
        presets.setdefault(preset.name, []).append(preset)
    for name, rows in presets.items():
        if sum(p.default for p in rows) != 1:
            raise ValueError(f"{path}: preset {name!r} needs exactly one row with default=yes")
    return {name: tuple(sorted(rows, key=lambda p: not p.default)) for name, rows in presets.items()}


def resolve_preset(name: str, source: str | None = None) -> WindowPreset:
    """The preset ``name`` (its default row, or the row from ``source``).

    Raises:
        ValueError: unknown name or source, with the known ones and a "did you mean".
    """
    presets = load_window_presets()
    if name not in presets:
        import difflib  # an unknown preset only

        close = difflib.get_close_matches(name, presets, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown window preset {name!r}{hint}; known: {', '.join(sorted(presets))}")
    rows = presets[name]
    if source is None:
        return rows[0]
    for row in rows:
        if row.source == source:
            return row
    raise ValueError(
        f"window preset {name!r} has no source {source!r}; available: {', '.join(r.source for r in rows)}"
    )


# ---------------------------------------------------------------- DICOM JSON helpers


def _values(element_owner: dict[str, Any], tag: str) -> list[Any] | None:
    element = element_owner.get(tag)
    return element.get("Value") if isinstance(element, dict) else None


def _number(header: dict[str, Any], tag: str, default: float) -> float:
    values = _values(header, tag)
    return float(values[0]) if values else default


def _lut_from_item(item: dict[str, Any], signed_input: bool, where: str) -> tuple[tuple[int, ...], int, int]:
    """(entries, first value mapped, bits per entry) of a LUT item (PS3.3 C.11.1.1.1 / C.11.2.1.1)."""
    descriptor = _values(item, "00283002")
    if not descriptor or len(descriptor) != 3:
        raise ValueError(f"{where}: LUT Descriptor (0028,3002) must have 3 values, got {descriptor}")
    n_entries, first, bits = (int(v) for v in descriptor)
    n_entries = n_entries or 65536  # PS3.3 C.11.1.1.1: 0 means 2**16 entries
    if item["00283002"].get("vr") != "SS" and signed_input and first >= 2**15:
        first -= 2**16  # first value mapped is SS for signed input, often mis-encoded as US
    data = item.get("00283006") or {}
    if "Value" in data:
        lut = np.asarray(data["Value"], dtype=np.int64)
    elif "InlineBinary" in data:  # OW, little endian (PS3.18 F.2.7)
        raw = base64.b64decode(data["InlineBinary"])
        dtype = "<u2" if len(raw) >= 2 * n_entries else "u1"
        lut = np.frombuffer(raw, dtype=dtype).astype(np.int64)
    elif "BulkDataURI" in data:
        raise ValueError(f"{where}: LUT Data (0028,3006) is a BulkDataURI; the reader must inline it")
    else:
        raise ValueError(
            f"{where}: LUT Data (0028,3006) is missing from the header (a reader leaving out binary "
            "values above its bulk-data threshold drops it: LUT Data must be kept)"
        )
    if lut.size < n_entries:
        raise ValueError(f"{where}: LUT Data has {lut.size} entries, LUT Descriptor says {n_entries}")
    return tuple(int(v) for v in lut[:n_entries]), first, bits


def _photometric(sample: Sample) -> str:
    value = sample.meta.get("photometric_interpretation")
    if value is None and sample.headers:
        found = _values(sample.headers[0], "00280004")
        value = found[0] if found else None
    return str(value or "").strip().upper()


def _per_slice(
    sample: Sample, step: str, keys: list[Hashable], apply: Callable[[np.ndarray, Any], np.ndarray]
) -> np.ndarray:
    """Apply ``apply(pixels, key)`` with each slice's own key; once if all keys agree."""
    distinct = list(dict.fromkeys(keys))
    if len(distinct) == 1:
        return apply(sample.pixels, distinct[0])
    if not sample.axes.startswith("z") or sample.pixels.shape[0] != len(keys):
        raise StepError(
            step, sample.item_id,
            f"slices carry different header values but the pixels ({sample.describe()}) "
            f"do not have one z slice per header ({len(keys)} headers)",
        )
    return np.stack([apply(sample.pixels[i], key) for i, key in enumerate(keys)])


def _require_grayscale(sample: Sample, step: str) -> None:
    """VOI transforms apply to MONOCHROME1/2 images only (PS3.3 C.11.2, as pydicom enforces)."""
    photometric = _photometric(sample)
    if photometric not in ("", "MONOCHROME1", "MONOCHROME2"):
        raise StepError(step, sample.item_id, f"a VOI window applies to MONOCHROME1/MONOCHROME2 images, "
                        f"this one is {photometric} ({sample.describe()})")


def _invert_if_monochrome1(
    out: np.ndarray, sample: Sample, enabled: bool, y_range: tuple[float, float], meta: dict[str, Any]
) -> tuple[np.ndarray, bool]:
    """Invert a VOI output of a MONOCHROME1 image (after the VOI transform, never before)."""
    if not (enabled and _photometric(sample) == "MONOCHROME1"):
        return out, False
    meta["photometric_interpretation"] = "MONOCHROME2"
    return invert_range(out, *y_range), True


# ---------------------------------------------------------------- window


@dataclass(frozen=True)
class _Voi:
    """One VOI transform read from a header: a window or a VOI LUT."""

    kind: Literal["window", "lut"]
    center: float = 0.0
    width: float = 0.0
    function: str = "LINEAR"
    lut: tuple[int, ...] = ()
    first_mapped: int = 0
    bits: int = 0
    explanation: str = ""

    def apply(self, x: np.ndarray, y_min: float, y_max: float) -> np.ndarray:
        if self.kind == "window":
            return WINDOW_FUNCTIONS[self.function](x, self.center, self.width, y_min, y_max)
        return scale_lut_output(apply_lut(x, np.asarray(self.lut), self.first_mapped), self.bits, y_min, y_max)

    def record(self, index: int) -> dict[str, Any]:
        if self.kind == "window":
            return {"center": self.center, "width": self.width, "function": self.function,
                    "source": f"header (0028,1050)/(0028,1051) index {index}"}
        return {"function": "LUT", "source": f"header VOI LUT Sequence (0028,3010) item {index}",
                "lut_entries": len(self.lut), "first_mapped": self.first_mapped, "bits": self.bits,
                "explanation": self.explanation}


def _voi_holder(header: dict[str, Any]) -> dict[str, Any]:
    """Where a header's VOI attributes are: the top level, or for enhanced multi-frame objects
    the Frame VOI LUT Sequence (0028,9132) of the frame's Per-frame Functional Groups
    (5200,9230) (one item: the reader gives each frame its own header), else of the Shared
    Functional Groups (5200,9229) (PS3.3 C.7.6.16.2.10)."""
    if "00281050" in header or "00283010" in header:
        return header
    for groups_tag in ("52009230", "52009229"):
        groups = _values(header, groups_tag) or []
        frame_voi = _values(groups[0], "00289132") if groups else None
        if frame_voi:
            return frame_voi[0]
    return header


def _header_voi(header: dict[str, Any], index: int, prefer: str, function: str | None) -> _Voi:
    """The VOI transform of one header (PS3.3 C.11.2), raising ValueError naming the tag."""
    top, header = header, _voi_holder(header)
    centers, widths = _values(header, "00281050"), _values(header, "00281051")
    items = _values(header, "00283010") or []
    has_window, has_lut = bool(centers and widths), bool(items)
    if prefer == "lut" and not has_lut:
        raise ValueError("the header has no VOI LUT Sequence (0028,3010)")
    # 'auto' prefers the LUT, as pydicom's apply_voi_lut(prefer_lut=True)
    if has_lut and prefer != "window":
        if index >= len(items):
            raise ValueError(f"VOI LUT Sequence (0028,3010) has {len(items)} item(s); header_index is {index}")
        signed = int(_number(top, "00280103", 0)) == 1 or _number(top, "00281052", 0.0) < 0
        lut, first, bits = _lut_from_item(items[index], signed, "VOI LUT Sequence (0028,3010)")
        if max(lut) > 2**bits - 1:
            raise ValueError(f"VOI LUT Data exceeds 2**{bits}-1, the range its LUT Descriptor declares")
        explanation = _values(items[index], "00283003")
        return _Voi("lut", lut=lut, first_mapped=first, bits=bits, explanation=str(explanation[0]) if explanation else "")
    if not has_window:
        wanted = "WindowCenter/WindowWidth (0028,1050)/(0028,1051)" if prefer == "window" else \
            "WindowCenter/WindowWidth (0028,1050)/(0028,1051) or a VOI LUT Sequence (0028,3010)"
        raise ValueError(f"the header has no {wanted}")
    if index >= min(len(centers), len(widths)):
        raise ValueError(
            f"WindowCenter (0028,1050) has {len(centers)} and WindowWidth (0028,1051) {len(widths)} "
            f"value(s); header_index is {index}"
        )
    header_function = _values(header, "00281056")
    chosen = function or (str(header_function[0]).strip().upper() if header_function else "LINEAR")
    if chosen not in WINDOW_FUNCTIONS:
        raise ValueError(f"VOILUTFunction (0028,1056) {chosen!r} is not one of {sorted(WINDOW_FUNCTIONS)}")
    center, width = float(centers[index]), float(widths[index])
    minimum = 1 if chosen == "LINEAR" else 0
    if width < minimum or width <= 0:
        raise ValueError(f"WindowWidth (0028,1051) {width} is invalid for {chosen} (PS3.3 C.11.2.1.2)")
    return _Voi("window", center=center, width=width, function=chosen)


class WindowParams(StepParams):
    """VOI window (DICOM PS3.3 C.11.2): exactly one of level+width, preset, or from_header."""

    step: Literal["window"]
    level: float | None = Field(None, description="Window center (level), input units (HU for CT).",
                                json_schema_extra=_HU)
    width: float | None = Field(None, gt=0, description="Window width, input units (HU for CT); "
                                "LINEAR needs >= 1.", json_schema_extra=_HU)
    preset: str | None = Field(None, description="Named window from medflow/data/window_presets.csv "
                               "(brain, subdural, stroke, bone, lung, mediastinum, abdomen, liver, soft-tissue...).",
                               json_schema_extra=_NONE)
    preset_source: str | None = Field(None, description="Which source's numbers to use for the preset "
                                      "(e.g. radiopaedia, rsna-ich); default: the preset's default row.",
                                      json_schema_extra=_NONE)
    from_header: bool = Field(False, description="Use the header's WindowCenter/Width (0028,1050/1051) "
                              "with its VOILUTFunction (0028,1056), or its VOI LUT Sequence (0028,3010).",
                              json_schema_extra=_NONE)
    header_index: int = Field(0, ge=0, description="Which value of multi-valued WindowCenter/Width, or "
                              "which VOI LUT Sequence item (0-based).", json_schema_extra={"unit": "index"})
    header_prefer: Literal["auto", "window", "lut"] = Field(
        "auto", description="When a header has both: 'auto' and 'lut' use the VOI LUT Sequence (as "
        "pydicom's apply_voi_lut), 'window' the WindowCenter/Width.", json_schema_extra=_NONE)
    function: WindowFunction | None = Field(
        None, description="VOI LUT function (PS3.3 C.11.2.1.2/C.11.2.1.3). Default: LINEAR, or the "
        "header's VOILUTFunction with from_header.", json_schema_extra=_NONE)
    output_range: tuple[float, float] = Field((0.0, 1.0), description="Output [y_min, y_max]; float32.",
                                              json_schema_extra=_OUT)
    invert_monochrome1: bool = Field(True, description="For MONOCHROME1 images, invert the VOI output "
                                     "(y -> y_max + y_min - y) so that high values are bright.",
                                     json_schema_extra=_NONE)

    @model_validator(mode="after")
    def _one_source(self) -> WindowParams:
        given = {"level/width": self.level is not None or self.width is not None,
                 "preset": self.preset is not None, "from_header": self.from_header}
        chosen = [name for name, on in given.items() if on]
        if len(chosen) != 1:
            raise ValueError("give exactly one of level+width, preset, or from_header: true "
                             f"(got {', '.join(chosen) or 'none'})")
        if given["level/width"] and (self.level is None or self.width is None):
            raise ValueError("level and width go together")
        if self.preset_source is not None and self.preset is None:
            raise ValueError("preset_source needs preset")
        if not self.from_header and ("header_index" in self.model_fields_set or
                                     "header_prefer" in self.model_fields_set):
            raise ValueError("header_index and header_prefer need from_header: true")
        if self.preset is not None:
            resolve_preset(self.preset, self.preset_source)
        if (self.function or "LINEAR") == "LINEAR" and self.width is not None and self.width < 1:
            raise ValueError(f"width must be >= 1 for the LINEAR function (got {self.width})")
        if self.output_range[0] >= self.output_range[1]:
            raise ValueError(f"output_range must be increasing (got {list(self.output_range)})")
        return self

    def canonical_params(self) -> dict[str, Any]:
        """Params plus a preset's numbers: editing the presets file changes the cache key."""
        params = super().canonical_params()
        if self.preset is not None:
            preset = resolve_preset(self.preset, self.preset_source)
            params["preset_resolved"] = {"center": preset.center, "width": preset.width, "source": preset.source}
        return params

    def reads_only_pixel_description(self) -> bool:
        # from_header also reads an enhanced image's functional groups (5200,9229)/(5200,9230)
        return not self.from_header


@register("window", 2, WindowParams, pointwise=True, reads_only_pixel_description=True)
def window(sample: Sample, params: WindowParams) -> Sample:
    """Map intensities through a VOI window (recipe, preset or header) to float32 in output_range.

    With ``from_header`` each slice uses its own header's values (applied once when all
    slices agree). MONOCHROME1 images are inverted after the VOI transform.
    """
    _require_grayscale(sample, "window")
    y_min, y_max = params.output_range
    meta = dict(sample.meta)
    if params.from_header:
        if not sample.headers:
            raise StepError("window", sample.item_id, "from_header: the sample has no DICOM headers")
        try:
            vois = [_header_voi(h, params.header_index, params.header_prefer, params.function)
                    for h in sample.headers]
            out = _per_slice(sample, "window", vois, lambda x, voi: voi.apply(x, y_min, y_max))
        except ValueError as exc:
            raise StepError("window", sample.item_id, str(exc)) from exc
        records = [v.record(params.header_index) for v in dict.fromkeys(vois)]
        record = records[0] if len(records) == 1 else {"source": "header", "per_slice": [
            v.record(params.header_index) for v in vois]}
    else:
        function = params.function or "LINEAR"
        if params.preset is not None:
            preset = resolve_preset(params.preset, params.preset_source)
            center, width = preset.center, preset.width
            source = f"preset {preset.name} ({preset.source})"
        else:
            center, width, source = float(params.level), float(params.width), "recipe"
        out = WINDOW_FUNCTIONS[function](sample.pixels, center, width, y_min, y_max)
        record = {"center": center, "width": width, "function": function, "source": source}
    out, inverted = _invert_if_monochrome1(out, sample, params.invert_monochrome1, (y_min, y_max), meta)
    meta["window"] = {**record, "output_range": [y_min, y_max], "inverted_monochrome1": inverted}
    meta["units"] = "window output"
    return sample.replace(pixels=out, meta=meta)


# ---------------------------------------------------------------- modality LUT


class ModalityLutParams(StepParams):
    """Modality LUT Sequence (PS3.3 C.11.1) where the reader's modality transform was not it."""

    step: Literal["modality_lut"]


_LUT_TYPE_UNITS = {"HU": "HU", "OD": "optical density", "US": "unspecified", "MGML": "mg/ml",
                   "Z_EFF": "effective atomic number", "ED": "electron density", "EDW": "electron density (water)",
                   "HU_MOD": "modified HU", "PCT": "percent"}


def _modality_key(header: dict[str, Any]) -> tuple | None:
    """The LUT still to apply to a slice, or None (no sequence, or the reader applied it)."""
    items = _values(header, "00283000")
    if not items or "00281053" not in header:
        return None  # no LUT, or a LUT without RescaleSlope: the reader applied it
    signed = int(_number(header, "00280103", 0)) == 1
    lut, first, _bits = _lut_from_item(items[0], signed, "Modality LUT Sequence (0028,3000)")
    lut_type = _values(items[0], "00283004")
    return (lut, first, str(lut_type[0]) if lut_type else "",
            _number(header, "00281053", 1.0), _number(header, "00281052", 0.0))


@register("modality_lut", 1, ModalityLutParams, pointwise=True, reads_only_pixel_description=True)
def modality_lut(sample: Sample, params: ModalityLutParams) -> Sample:
    """Apply a Modality LUT Sequence (0028,3000) the reader did not; else a no-op with a note.

    Contract with the reader (``medflow.sources.series``): per slice it applies
    RescaleSlope/Intercept, or, when the header has a Modality LUT Sequence and no
    RescaleSlope (the form PS3.3 C.11.1 allows), the LUT itself. So the modality transform is
    complete except for headers carrying both (C.11.1 forbids it): there the LUT wins, as in
    pydicom's ``apply_modality_lut``, and this step recovers the stored values exactly as
    ``rint((pixels - intercept) / slope)`` and looks them up (C.11.1.1.1). Place it right
    after the reader. ``meta["modality_lut"]`` records what happened to how many slices.
    """
    meta = dict(sample.meta)
    try:
        keys = [_modality_key(h) for h in sample.headers]
    except ValueError as exc:
        raise StepError("modality_lut", sample.item_id, str(exc)) from exc
    by_reader = sum(bool(_values(h, "00283000")) and k is None for h, k in zip(sample.headers, keys, strict=True))
    record: dict[str, Any] = {"slices_lut_applied_by_reader": by_reader, "slices_lut_applied_here": 0}
    if not any(keys):
        record["note"] = ("nothing to do: the reader applied the Modality LUT Sequence" if by_reader else
                          "nothing to do: no Modality LUT Sequence (0028,3000), the reader's "
                          "RescaleSlope/Intercept is the modality transform")
        meta["modality_lut"] = record
        return sample.replace(meta=meta)

    def apply(x: np.ndarray, key: tuple | None) -> np.ndarray:
        if key is None:
            return np.asarray(x, dtype=np.float32)
        lut, first, _type, slope, intercept = key
        stored = (np.asarray(x, dtype=np.float64) - intercept) / slope
        rounded = np.rint(stored)
        if np.abs(stored - rounded).max(initial=0.0) > 0.01:
            raise StepError("modality_lut", sample.item_id,
                            "pixels are not slope*stored+intercept of integer stored values; "
                            "modality_lut must come right after the reader")
        return apply_lut(rounded, np.asarray(lut), first)

    out = _per_slice(sample, "modality_lut", keys, apply)
    types = sorted({k[2] for k in keys if k})
    record["slices_lut_applied_here"] = sum(k is not None for k in keys)
    record["note"] = "RescaleSlope/Intercept and a Modality LUT Sequence in one header (PS3.3 C.11.1 " \
                     "forbids it): the LUT was applied, as pydicom does"
    meta["modality_lut"] = record
    if len(types) == 1 and all(keys):
        meta["units"] = _LUT_TYPE_UNITS.get(types[0], types[0] or "unspecified")
    return sample.replace(pixels=out, meta=meta)


# ---------------------------------------------------------------- multi_window


class WindowSpec(BaseModel):
    """One channel of multi_window: a preset (optionally from a given source) or level+width+name."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)  # built with multi_window's

    name: str | None = Field(None, description="Channel name (default: the preset name).", json_schema_extra=_NONE)
    level: float | None = Field(None, description="Window center, input units (HU for CT).", json_schema_extra=_HU)
    width: float | None = Field(None, gt=0, description="Window width, input units (HU for CT).",
                                json_schema_extra=_HU)
    preset: str | None = Field(None, description="Named window from medflow/data/window_presets.csv.",
                               json_schema_extra=_NONE)
    preset_source: str | None = Field(None, description="Source row of the preset (e.g. rsna-ich).",
                                      json_schema_extra=_NONE)

    @model_validator(mode="after")
    def _one_source(self) -> WindowSpec:
        explicit = self.level is not None or self.width is not None
        if explicit == (self.preset is not None):
            raise ValueError("a window is either a preset or level+width+name")
        if explicit and (self.level is None or self.width is None or not self.name):
            raise ValueError("an explicit window needs level, width and name")
        if self.preset_source is not None and self.preset is None:
            raise ValueError("preset_source needs preset")
        if self.preset is not None:
            resolve_preset(self.preset, self.preset_source)
        return self

    def resolve(self) -> dict[str, Any]:
        """``{"name", "center", "width", "source"}`` of this window."""
        if self.preset is None:
            return {"name": self.name, "center": self.level, "width": self.width, "source": "recipe"}
        preset = resolve_preset(self.preset, self.preset_source)
        return {"name": self.name or preset.name, "center": preset.center, "width": preset.width,
                "source": f"preset {preset.name} ({preset.source})"}


class MultiWindowParams(StepParams):
    """Several VOI windows of the same slice as channels, optionally with neighbouring slices (2.5D)."""

    step: Literal["multi_window"]
    windows: list[str | WindowSpec] = Field(
        min_length=1, description="Windows in channel order: a preset name, or {preset, preset_source, name} "
        "or {level, width, name}.", json_schema_extra=_HU)
    function: WindowFunction = Field("LINEAR", description="VOI LUT function (PS3.3 C.11.2.1.2/C.11.2.1.3) "
                                     "used for every window.", json_schema_extra=_NONE)
    output_range: tuple[float, float] = Field((0.0, 1.0), description="Output [y_min, y_max]; float32.",
                                              json_schema_extra=_OUT)
    invert_monochrome1: bool = Field(True, description="Invert each window output of a MONOCHROME1 image.",
                                     json_schema_extra=_NONE)
    context_slices: int = Field(0, ge=0, description="2.5D: also stack the k slices before and after each "
                                "slice (edge slices replicated); channels = (2k+1) x windows.",
                                json_schema_extra={"unit": "slices"})

    def resolved(self) -> list[dict[str, Any]]:
        specs = [WindowSpec(preset=w) if isinstance(w, str) else w for w in self.windows]
        return [spec.resolve() for spec in specs]

    @model_validator(mode="after")
    def _check(self) -> MultiWindowParams:
        windows = self.resolved()  # raises on an unknown preset
        names = [w["name"] for w in windows]
        if len(set(names)) != len(names):
            raise ValueError(f"window names must be unique (got {names})")
        if self.function == "LINEAR" and any(w["width"] < 1 for w in windows):
            raise ValueError("every width must be >= 1 for the LINEAR function")
        if self.output_range[0] >= self.output_range[1]:
            raise ValueError(f"output_range must be increasing (got {list(self.output_range)})")
        return self

    def pointwise(self) -> bool:
        # without 2.5D context each pixel's channels are windows of that pixel's value alone
        return self.context_slices == 0


    def canonical_params(self) -> dict[str, Any]:
        """Params plus every window's numbers: editing the presets file changes the cache key."""
        return {**super().canonical_params(), "windows_resolved": self.resolved()}


@register("multi_window", 1, MultiWindowParams, reads_only_pixel_description=True)
def multi_window(sample: Sample, params: MultiWindowParams) -> Sample:
    """Stack several VOI windows (e.g. brain/subdural/soft tissue) as channels, axes zyx -> zyxc.

    Channel names are the window names; with ``context_slices: k`` the channels are ordered
    slice-offset first (z-k .. z+k), then window, named ``<window>@z<offset>`` (e.g.
    ``brain@z-1``), and slices past either end repeat the edge slice.
    """
    if sample.axes not in ("zyx", "yx"):
        raise StepError("multi_window", sample.item_id, f"needs axes 'zyx' or 'yx', got {sample.describe()}")
    _require_grayscale(sample, "multi_window")
    if params.context_slices and sample.axes != "zyx":
        raise StepError("multi_window", sample.item_id, "context_slices needs a 'zyx' slice stack")
    y_min, y_max = params.output_range
    meta = dict(sample.meta)
    windows = params.resolved()
    channels = []
    for w in windows:
        y = WINDOW_FUNCTIONS[params.function](sample.pixels, w["center"], w["width"], y_min, y_max)
        y, inverted = _invert_if_monochrome1(y, sample, params.invert_monochrome1, (y_min, y_max), meta)
        channels.append(y)
    out = np.stack(channels, axis=-1)
    names = tuple(w["name"] for w in windows)
    k = params.context_slices
    if k:
        out = stack_context(out, k)
        names = tuple(f"{name}@z{offset:+d}" for offset in range(-k, k + 1) for name in names)
    meta["windows"] = [{**w, "function": params.function} for w in windows]
    meta["window_output"] = {"output_range": [y_min, y_max], "inverted_monochrome1": inverted,
                             "context_slices": k}
    meta["units"] = "window output"
    return sample.replace(pixels=out, axes=sample.axes + "c", channels=names, meta=meta)
