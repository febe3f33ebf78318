"""The per-item task of a chain that never reads pixels: one DICOM file, parsed once.

For recipes whose steps and writers all declare ``reads_pixels=False`` (de-identify ->
DICOM): the file is read into memory in one call and parsed from there into pydicom's dataset
(:mod:`medflow.sources.dcmparse`; pixel data kept as stored bytes, never decoded), the recipe's
series-level filters are applied to its header (values read without converting the elements), and the steps and writers run on a Sample that carries the parsed original
(:attr:`medflow.sample.Sample.originals`) and no pixels. Nothing is cached: there is no expensive intermediate, and the originals
carry identity. The item's record lives in the manifest (see :func:`medflow.engine.plan.plan_item`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from medflow.deid.rawelem import value_of
from medflow.errors import FilteredItem, InputError
from medflow.sample import Sample
from medflow.sources.filters import description_selected, modality_selected

MODALITY, SERIES_DESCRIPTION, IMAGE_TYPE, SOP_CLASS_UID = 0x00080060, 0x0008103E, 0x00080008, 0x00080016
#: The array of a Sample read without pixels: empty, so no step or writer can mistake it for an image.
NO_PIXELS = np.zeros((0, 0), dtype=np.uint8)


def read_instance(path: Path, item_id: str, source_filter: dict[str, Any] | None) -> Sample:
    """Parse one DICOM file (pixel data as stored) into a pixel-less Sample.

    Raises:
        InputError: the file cannot be parsed as DICOM (names the file).
        FilteredItem: the recipe's modality / series description / localizer filter leaves it out.
    """
    from medflow.sources.dcmparse import read_file_bytes

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid values in real files are handled downstream
        try:
            # read whole, then parse from memory: one read call instead of one per element
            # (the files of this chain are parsed in full anyway, pixel data as stored)
            with open(path, "rb") as fh:
                data = fh.read()
            ds = read_file_bytes(data)  # pydicom.dcmread(io.BytesIO(data)), element loop made faster
        except Exception as exc:  # noqa: BLE001 - pydicom raises many types on bad files
            raise InputError(str(path), f"unreadable DICOM: {type(exc).__name__}: {_one_line(exc)}") from None
    if "SOPInstanceUID" not in ds or "SOPClassUID" not in ds:
        raise InputError(str(path), "unreadable DICOM: no SOPClassUID/SOPInstanceUID (not a composite instance)")
    reason = filtered_out(ds, source_filter or {})
    if reason is not None:
        raise FilteredItem(item_id, reason)
    modality = str(value_of(ds, MODALITY, "") or "")
    meta = {
        "modality": modality,
        "sop_class_uid": str(value_of(ds, SOP_CLASS_UID)),
        "pixels": "not read (the recipe's steps and writers do not use pixels)",
    }
    return Sample(item_id, NO_PIXELS, "yx", meta=meta, source_files=(str(path),), originals=(ds,))


def filtered_out(ds: Any, source_filter: dict[str, Any]) -> str | None:
    """Why the recipe's filter leaves this instance out, or ``None``.

    Localizers are left out only when the recipe says so explicitly (``exclude_localizers:
    true``): a chain that writes instances back accounts for every object it was given.
    """
    # values read without converting the elements in ds (the de-identification memo reads them raw)
    modality = str(value_of(ds, MODALITY, "") or "")
    if not modality_selected(modality, source_filter.get("modality")):
        return f"modality {modality or '(none)'} not selected by the filter"
    description = str(value_of(ds, SERIES_DESCRIPTION, "") or "")
    if not description_selected(description, source_filter.get("series_description")):
        return "series description not selected by the filter"
    if source_filter.get("exclude_localizers_explicit"):
        image_type = [str(v).upper() for v in (value_of(ds, IMAGE_TYPE) or [])]
        if "LOCALIZER" in image_type:
            return "localizer (filter.exclude_localizers)"
    return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
