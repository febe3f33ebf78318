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

Sequences: ``X`` removes; ``Z`` and ``D`` leave an empty sequence (medflow cannot invent a
dummy item that fits the IOD); ``K``, ``C`` and ``X/Z/U*`` keep the sequence and apply the
profile to every item, at any depth.
"""

from __future__ import annotations

import datetime as _dt
import re

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
    "PN": "ANONYMIZED",
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


class Scrubber:
    """Removes known identifying strings (case-insensitive) from free text.

    Built once per dataset from that dataset's own identifying values (names and their
    components, IDs, accession number, birth date, addresses...). Strings shorter than 3
    characters are ignored. A string that starts (ends) with a letter only matches where no
    letter precedes (follows) it, so a name "ANN" does not eat into "scanner"; strings of digits
    match anywhere ("MRN98765432" loses its MRN).
    """

    MIN_LEN = 3

    def __init__(self, tokens: set[str]):
        usable = sorted({t.strip() for t in tokens if len(t.strip()) >= self.MIN_LEN}, key=len, reverse=True)
        parts = []
        for token in usable:
            head = r"(?<![^\W\d_])" if token[0].isalpha() else ""
            tail = r"(?![^\W\d_])" if token[-1].isalpha() else ""
            parts.append(head + re.escape(token) + tail)
        self._pattern = re.compile("|".join(parts), re.IGNORECASE) if parts else None

    def __call__(self, text: str) -> str:
        return text if self._pattern is None else self._pattern.sub("", text)
