"""Moving DA, TM and DT values by one keyed per-patient offset, so that intervals are preserved.

The offset (see :func:`medflow.deid.pseudonyms.time_offset_seconds`) is ``days * 86400 +
seconds`` with ``0 <= seconds < 86400``. A date with its time (a DA and the TM of the same
keyword stem in the same dataset, PS3.3 e.g. Study Date / Study Time) moves by the whole offset,
the date taking the carry when the time crosses midnight; a DT moves as a whole; a TM without its
date moves by ``seconds`` modulo 24 h; a DA without its time moves by ``days``. Values keep the
precision they were written with (PS3.5 6.2: DA ``YYYYMMDD``, TM ``HH[MM[SS[.F{1,6}]]]``, DT
``YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]][&ZZXX]``); a value that cannot be read is reported as ``None``
(the caller empties it).
"""

from __future__ import annotations

import datetime as _dt
import re
from functools import cache

from pydicom.datadict import DicomDictionary, keyword_dict

DAY = 86400
_TM = re.compile(r"(\d\d)(?::?(\d\d)(?::?(\d\d)(\.\d{1,6})?)?)?")
_DT = re.compile(r"(\d{4})(\d\d)?(\d\d)?(\d\d)?(\d\d)?(\d\d)?(\.\d{1,6})?([+-]\d{4})?")


@cache
def date_time_pairs() -> dict[int, int]:
    """DA tag -> TM tag of the same keyword stem (``StudyDate`` -> ``StudyTime``, ``Date`` -> ``Time``)."""
    pairs = {}
    for tag, entry in DicomDictionary.items():
        keyword = entry[4]
        if entry[0] != "DA" or "Date" not in keyword:
            continue
        head, _, tail = keyword.rpartition("Date")
        partner = keyword_dict.get(head + "Time" + tail)
        if partner is not None and DicomDictionary[partner][0] == "TM":
            pairs[tag] = partner
    return pairs


def parse_time(value: str) -> tuple[int, int, str] | None:
    """``(seconds of day, number of HHMMSS digits written, fraction)`` of a TM, or None."""
    m = _TM.fullmatch(value.strip())
    if m is None:
        return None
    hh, mm, ss, frac = m.groups()
    h, mi, s = int(hh), int(mm or 0), int(ss or 0)
    if h > 23 or mi > 59 or s > 60:
        return None
    digits = 2 + 2 * (mm is not None) + 2 * (ss is not None)
    return h * 3600 + mi * 60 + min(s, 59), digits, frac or ""


def _format_time(seconds: int, digits: int, frac: str) -> str:
    h, rest = divmod(seconds, 3600)
    return f"{h:02d}{rest // 60:02d}{rest % 60:02d}"[:digits] + (frac if digits == 6 else "")


def shift_time(value: str, seconds: int) -> tuple[str, int] | None:
    """A TM moved by ``seconds`` (>= 0): ``(new TM, days carried past midnight)``, or None."""
    parsed = parse_time(value)
    if parsed is None:
        return None
    t, digits, frac = parsed
    days, new = divmod(t + seconds, DAY)
    return _format_time(new, digits, frac), days


def shift_date_days(value: str, days: int) -> str | None:
    """A DA ``YYYYMMDD`` moved by whole ``days``; None when it is not a full, valid date."""
    text = value.strip()
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        date = _dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
        return (date + _dt.timedelta(days=days)).strftime("%Y%m%d")
    except (ValueError, OverflowError):
        return None


def shift_date_with_time(date: str, time: str | None, days: int, seconds: int) -> str | None:
    """A DA moved by the whole offset, given the TM written with it (None: no time, moves by days)."""
    carry = 0
    if time is not None:
        shifted = shift_time(time, seconds)
        if shifted is not None:
            carry = shifted[1]
    return shift_date_days(date, days + carry)


def shift_datetime_whole(value: str, days: int, seconds: int) -> str | None:
    """A DT moved as a whole by ``days * 86400 + seconds``; a DT without a full date is None.

    A DT written to the day moves by ``days`` only, like a DA without its time.
    """
    m = _DT.fullmatch(value.strip())
    if m is None or m.group(3) is None:
        return None
    year, month, day, hh, mi, ss, frac, zone = m.groups()
    if hh is None:
        date = shift_date_days(year + month + day, days)
        return None if date is None else date + (zone or "")
    time = hh + (mi or "") + (ss or "") + (frac if ss is not None and frac else "")
    shifted = shift_time(time, seconds)
    if shifted is None:
        return None
    date = shift_date_days(year + month + day, days + shifted[1])
    return None if date is None else date + shifted[0] + (zone or "")


__all__ = [
    "date_time_pairs",
    "parse_time",
    "shift_date_days",
    "shift_date_with_time",
    "shift_datetime_whole",
    "shift_time",
]
