"""Value-level actions of PS3.15 Table E.1-1 and how medflow resolves the composite ones.

Action letters (PS3.15 E.1.1, Table E.1-1 legend): D dummy value, Z zero length, X remove,
K keep (for a sequence: keep and clean its items), C clean, U keyed UID. The composites depend on
the attribute's Type in the IOD (X for Type 3, Z for Type 2, D for Type 1), which a generic
de-identifier cannot know without the IOD, so medflow resolves them conservatively, always to an
action that removes the value and keeps the attribute present when any Type could require it:

* ``X/Z``   -> ``Z``   (present, empty)
* ``Z/D``, ``X/D``, ``X/Z/D`` -> ``D`` (a dummy value of the VR, see :data:`DUMMY`)
* ``X/Z/U*`` -> a sequence is kept and its items de-identified (contained UIDs get ``U``);
  a UID value gets ``U``.

Sequences: ``X`` removes and ``Z`` leaves an empty sequence (Type 2); every other action (``D``,
the composites, ``K``, ``C``, ``U``) keeps the sequence and applies the whole profile to each of
its items, at any depth: medflow cannot invent a dummy item that fits the IOD, and an emptied
Type 1 or Type 3 sequence is invalid (PS3.5 7.5: a Type 3 sequence, when present, has items).
An input sequence without items stays as it is, except under ``X/D`` (Type 1 or 3), where it goes.

SR content items (PS3.3 C.17.3.2.1, Table C.17-2...): the value attribute that an item's
ValueType names (:data:`CONTENT_ITEM_VALUE`) is Type 1; it is never removed or emptied but gets
a dummy of its VR, or its cleaned value where the profile cleans it.
"""

from __future__ import annotations

import datetime as _dt

#: Composite action -> the action medflow applies (for non-sequence values).
COMPOSITE = {"X/Z": "Z", "Z/D": "D", "X/D": "D", "X/Z/D": "D", "X/Z/U*": "U"}

#: A dummy value per VR for action D ("non-zero length ... consistent with the VR").
DUMMY: dict[str, object] = {
    "AE": "ANONYMOUS",
    "AS": "000D",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "DS": "0",
    "IS": "0",
    "LO": "ANONYMIZED",
    "LT": "ANONYMIZED",
    "SH": "ANONYMIZED",
    "ST": "ANONYMIZED",
    "UT": "ANONYMIZED",
    "UC": "ANONYMIZED",
    "UR": "ANONYMIZED",
    "PN": "ANONYMIZED^",  # a family name component: without "^" dciodvfy sees the retired PN form
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "SV": 0,
    "UL": 0,
    "US": 0,
    "UV": 0,
    "AT": 0,
    "OB": b"\x00\x00",
    "OD": b"\x00" * 8,
    "OF": b"\x00" * 4,
    "OL": b"\x00" * 4,
    "OV": b"\x00" * 8,
    "OW": b"\x00\x00",
    "UN": b"\x00\x00",
}

#: VRs whose value is free or semi-free text that "clean" scrubs of known identifiers.
TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UT", "UC", "PN"})
#: Text that is not free text but a code: cleaned of identity only (PHI patterns would destroy
#: codes such as SNOMED "399208008"), never with :func:`medflow.deid.phi.detect_patterns`.
CODE_KEYWORDS = frozenset({
    "CodeValue", "LongCodeValue", "URNCodeValue", "CodingSchemeDesignator", "CodingSchemeVersion",
    "ContextIdentifier", "MappingResource", "ContextGroupExtensionCreatorUID",
})
#: ValueType (0040,A040) -> tag of the content item's Type 1 value (PS3.3 C.17.3, C.18).
CONTENT_ITEM_VALUE = {
    "TEXT": 0x0040A160,  # TextValue
    "PNAME": 0x0040A123,  # PersonName
    "DATE": 0x0040A121,  # Date
    "TIME": 0x0040A122,  # Time
    "DATETIME": 0x0040A120,  # DateTime
    "UIDREF": 0x0040A124,  # UID
    "CODE": 0x0040A168,  # ConceptCodeSequence
    "NUM": 0x0040A300,  # MeasuredValueSequence
    "COMPOSITE": 0x00081199, "IMAGE": 0x00081199, "WAVEFORM": 0x00081199,  # ReferencedSOPSequence
}
VALUE_TYPE = 0x0040A040
DATE_VRS = frozenset({"DA", "DT"})
TEMPORAL_VRS = frozenset({"DA", "DT", "TM"})
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})


def dummy_for(vr: str) -> object:
    """The dummy value of ``vr`` (``OB or OW``-style ambiguous VRs use the first)."""
    return DUMMY.get(vr.split(" ")[0], b"\x00\x00")


def empty_for(vr: str) -> object:
    """The zero-length value of ``vr`` as pydicom expects it."""
    if vr == "SQ":
        return []
    if vr in BINARY_VRS or " or " in vr:
        return b""
    if vr in TEXT_VRS or vr in {"AE", "AS", "CS", "DA", "DT", "TM", "DS", "IS", "UR", "UI"}:
        return ""
    return None


def shift_date(value: str, days: int) -> str | None:
    """Shift a DA value ``YYYYMMDD`` by whole ``days``; ``None`` when it is not a full date."""
    text = value.strip()
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        date = _dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None
    return (date + _dt.timedelta(days=days)).strftime("%Y%m%d")


def shift_datetime(value: str, days: int) -> str | None:
    """Shift the date part (first 8 characters) of a DT value; the rest is kept as written."""
    text = value.strip()
    shifted = shift_date(text[:8], days) if len(text) >= 8 else None
    return None if shifted is None else shifted + text[8:]
