"""Every element of a DICOM dataset, at any depth, as a dotted attribute path and a searchable value.

The walk covers the file meta information, public and private elements, sequence items at any
depth, repeating groups (overlays 60xx, curves 50xx) and elements whose VR is unknown (UN). Text
values come out as ``str`` (multiple values joined by ``\\`` as in the file); byte values (OB, OW,
UN, ...) as ``bytes``: the caller searches them for identifying strings as bytes, and only text
VRs (:data:`TEXT_VRS`) for identifying patterns.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue

#: PS3.5 6.2 VRs that hold character strings a person wrote or a device filled in. DA, DT and TM
#: are left out on purpose: a de-identified build legitimately holds shifted dates and times there,
#: and they are not free text. UI is left out too: generated ``2.25.`` UIDs are digits by design.
TEXT_VRS = frozenset({"AE", "AS", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
#: Coded-entry and template attributes (PS3.3 8.8, 8.1): identifiers of concepts, not of people; a
#: code such as "113100" (CID 7050) or an SCT concept id would otherwise look like an ID number.
CODE_KEYWORDS = frozenset({"CodeValue", "LongCodeValue", "URNCodeValue", "CodingSchemeDesignator",
                           "CodingSchemeVersion", "MappingResource", "TemplateIdentifier", "ContextIdentifier",
                           "ContextGroupVersion", "MappingResourceName"})


@dataclass(frozen=True)
class Element:
    """One element: where it is (``path``), its tag text, VR and value (str for text, bytes for bytes)."""

    path: str
    tag: str
    vr: str
    value: str | bytes

    @property
    def is_text(self) -> bool:
        """Free or coded text a person or device wrote: pattern-scanned (codes of concepts are not)."""
        keyword = self.path.rsplit(".", 1)[-1]
        return self.vr in TEXT_VRS and isinstance(self.value, str) and keyword not in CODE_KEYWORDS


def tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _name(elem: DataElement) -> str:
    """The keyword of a public element; ``(gggg,eeee)`` for private and unknown ones."""
    if elem.tag.is_private or not elem.keyword:
        return tag_text(int(elem.tag))
    return elem.keyword


def _text(value: object) -> str:
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(_text(v) for v in value)
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("latin-1")
    return "" if value is None else str(value)


def iter_elements(ds: Dataset, prefix: str = "") -> Iterator[Element]:
    """Yield every element of ``ds`` (items of sequences included, depth first, in file order).

    Sequence elements themselves are not yielded, only what their items hold; an element whose
    value pydicom cannot convert is yielded with its raw bytes (never skipped).
    """
    for tag in list(ds.keys()):
        try:
            elem = ds[tag]
        except Exception:  # noqa: BLE001 - a value pydicom cannot convert: search its raw bytes
            raw = ds.get_item(tag)
            value = getattr(raw, "value", b"")
            if not isinstance(value, bytes | bytearray):
                value = _text(value).encode("utf-8", "replace")
            yield Element(prefix + tag_text(int(tag)), tag_text(int(tag)), "UN", bytes(value))
            continue
        yield from _element(elem, prefix + _name(elem))


def _element(elem: DataElement, name: str) -> Iterator[Element]:
    tag = tag_text(int(elem.tag))
    if elem.VR == "SQ":
        for index, item in enumerate(elem.value or []):
            yield from iter_elements(item, f"{name}[{index}].")
    elif isinstance(elem.value, bytes | bytearray):
        yield Element(name, tag, elem.VR, bytes(elem.value))
    else:
        yield Element(name, tag, elem.VR, _text(elem.value))


def iter_file_elements(ds: Dataset) -> Iterator[Element]:
    """Every element of a read file: the file meta information (``file_meta.`` paths), then the dataset."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        yield from iter_elements(meta, "file_meta.")
    preamble = getattr(ds, "preamble", None)
    if preamble:
        yield Element("(preamble)", "(preamble)", "OB", bytes(preamble))
    yield from iter_elements(ds)
