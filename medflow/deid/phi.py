"""Identifying values of a patient and study, and finding them (or PHI-like patterns) in free text.

:class:`IdentityValues` collects what identifies the patient and the study from a Dataset, at
any depth: names, IDs (with their digit runs), accession number, study ID, birth date, the
study's dates, addresses, phone numbers, institution, department, station and issuer names.
:func:`find_identifiers` finds those values in text in any wording the promises below list;
:func:`detect_patterns` finds date-, phone-, e-mail- and ID-like tokens that no header holds;
:func:`scrub_text` removes both and says which rules fired (never the values).

Matching promises (case-, accent- and separator-insensitive; ``[\\W_]`` separators):

* a name matches by each of its components (family, given, middle; every ideographic and
  phonetic group) as a whole word, so every component order and punctuation is covered
  ("DOE^JOHN" is found in "John Doe", "DOE, JOHN", "j. doe"); an initial is removed only next
  to another component of the same name; a name component of 1 letter is never matched alone;
* an ID matches whole, ignoring separators ("ACC-901234" as "acc 901234"), and by each of its
  digit runs of >= 4 digits, with up to two separator characters between digit groups
  ("12345678" in "12-345-678" and "MRN12345678"); runs of 6 or more digits match inside longer
  numbers too, shorter runs only as a whole number;
* a date ``YYYYMMDD`` matches in numeric forms (Y-M-D, D-M-Y, M-D-Y, any separator, 2- or
  4-digit year, with or without zero padding) and with English, German or French month names
  ("14 Mar 1957", "March 14, 1957", "14-Mar-1957", "1957 Mar 14");
* addresses, institution, department and station names match whole and by each word of at
  least 4 letters that is not a generic word (``_GENERIC``).

No regex is compiled per identity or per value: an identity becomes lookup tables (words,
separator-free values, digit runs, dates), built once per distinct identity (module cache), and
matched against text with a few regexes compiled at import.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from pydicom import Dataset
from pydicom.datadict import DicomDictionary, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.multival import MultiValue

from medflow.deid.rawelem import RawView, conversion_state, encodings_of, fast_path_allowed, view_vr

#: Attribute keyword -> identity category (rule ``identity:<category>``). PN values not listed
#: here are ``person-name``; DA values other than the birth date are ``date``.
KEYWORD_CATEGORY: dict[str, str] = {
    **dict.fromkeys(("PatientName", "OtherPatientNames", "PatientBirthName"), "patient-name"),
    **dict.fromkeys(("PatientMotherBirthName", "ResponsiblePerson"), "relative-name"),
    **dict.fromkeys(("PatientID", "OtherPatientIDs", "MedicalRecordLocator", "AdmissionID", "ServiceEpisodeID",
                     "ClinicalTrialSubjectID", "ClinicalTrialSubjectReadingID"), "patient-id"),
    **dict.fromkeys(("RequestedProcedureID", "ScheduledProcedureStepID", "PerformedProcedureStepID",
                     "PlacerOrderNumberImagingServiceRequest", "FillerOrderNumberImagingServiceRequest"),
                    "order-id"),
    "AccessionNumber": "accession-number",
    "StudyID": "study-id",
    "PatientBirthDate": "birth-date",
    **dict.fromkeys(("PatientAddress", "PersonAddress", "ReferringPhysicianAddress", "RegionOfResidence",
                     "PatientInstitutionResidence", "CurrentPatientLocation"), "address"),
    **dict.fromkeys(("PatientTelephoneNumbers", "PersonTelephoneNumbers", "ReferringPhysicianTelephoneNumbers",
                     "OrderCallbackPhoneNumber", "PatientTelecomInformation", "PersonTelecomInformation"), "phone"),
    **dict.fromkeys(("InstitutionName", "InstitutionAddress", "ResponsibleOrganization", "VerifyingOrganization",
                     "ClinicalTrialSiteName"), "institution"),
    "InstitutionalDepartmentName": "department",
    **dict.fromkeys(("StationName", "StationAETitle", "ScheduledStationName", "PerformedStationName",
                     "PerformedLocation", "ScheduledProcedureStepLocation"), "station"),
    **dict.fromkeys(("DeviceSerialNumber", "DetectorID", "GantryID", "PlateID", "CassetteID", "GeneratorID",
                     "DeviceID", "SecondaryCaptureDeviceID"), "device"),
    **dict.fromkeys(("IssuerOfPatientID", "UniversalEntityID", "LocalNamespaceEntityID", "IssuerOfAdmissionID",
                     "IssuerOfServiceEpisodeID"), "issuer"),
}
_NAME_CATEGORIES = frozenset({"patient-name", "relative-name", "person-name"})
_DATE_CATEGORIES = frozenset({"birth-date", "date"})
_WORD_CATEGORIES = frozenset({"address", "institution", "department", "station", "issuer"})
#: Words of addresses and institution names that identify nobody on their own.
_GENERIC = frozenset(
    "hospital clinic klinik klinikum clinique center centre medical medicine university universitat college "
    "institute institut department abteilung radiology radiologie imaging saint general regional national "
    "health healthcare care street strasse road lane avenue drive place square court house floor building "
    "city county state north south east west main upper lower private public children childrens memorial "
    "community foundation group practice praxis station scanner unit room ward".split()
)
_MONTHS = (
    ("january", "jan", "januar", "janvier", "enero"), ("february", "feb", "februar", "fevrier", "febrero"),
    ("march", "mar", "marz", "mars", "marzo"), ("april", "apr", "avril", "abril"),
    ("may", "mai", "mayo"), ("june", "jun", "juni", "juin", "junio"), ("july", "jul", "juli", "juillet", "julio"),
    ("august", "aug", "aout", "agosto"), ("september", "sep", "sept", "septembre", "septiembre"),
    ("october", "oct", "oktober", "octobre", "okt", "octubre"), ("november", "nov", "novembre", "noviembre"),
    ("december", "dec", "dezember", "dez", "decembre", "diciembre"),
)
_ANY_MONTH = "(?:" + "|".join(sorted({m for names in _MONTHS for m in names}, key=len, reverse=True)) + r")\.?"


@dataclass(frozen=True)
class Finding:
    """One identifying span ``text[start:end]`` and the rule that found it (no value)."""

    rule: str
    start: int
    end: int


@dataclass(frozen=True)
class IdentityValues:
    """Identifying values by category (``patient-name``, ``patient-id``, ``date``...), as written.

    Immutable, hashable, picklable and JSON-able, so that the identities of several files of
    a patient can be combined with :meth:`merge` (in another process if need be).
    """

    values: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        values = {str(k): frozenset(v) for k, v in self.values.items() if v}
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "_key", tuple((k, tuple(sorted(v))) for k, v in sorted(values.items())))

    @classmethod
    def from_dataset(cls, ds: Dataset, *, convert_all: bool = False) -> IdentityValues:
        """Collect the identifying values of ``ds`` at every depth (file meta excluded).

        ``convert_all`` reads every value through pydicom's conversion instead of decoding raw
        elements directly (the reference the tests compare the direct decoding with).
        """
        found: dict[str, set[str]] = {}
        if convert_all or not fast_path_allowed():
            _collect(ds, found, False)
            return cls({k: frozenset(v) for k, v in found.items() if v})
        _check_memo_state()
        parts: list[tuple[tuple[str, tuple[str, ...]], ...]] = []
        _collect(ds, found, True, parts)
        # the identity is the union of the parts when nothing else was found: files of a series
        # have the same parts, so they share one IdentityValues (immutable)
        key = tuple(parts) if not found else None
        if key is not None and (known := _IDENTITIES.get(key)) is not None:
            return known
        for contribution in parts:
            for category, texts in contribution:
                found.setdefault(category, set()).update(texts)
        identity = cls({k: frozenset(v) for k, v in found.items() if v})
        if key is not None:
            if len(_IDENTITIES) >= _MAX_IDENTITIES:
                _IDENTITIES.clear()
            _IDENTITIES[key] = identity
        return identity

    def merge(self, other: IdentityValues) -> IdentityValues:
        """The union of both identities, category by category."""
        merged = {k: set(v) for k, v in self.values.items()}
        for k, v in other.values.items():
            merged.setdefault(k, set()).update(v)
        return IdentityValues({k: frozenset(v) for k, v in merged.items()})

    def without(self, categories: Iterable[str]) -> IdentityValues:
        """This identity without ``categories`` (e.g. what a retain option asks to keep)."""
        drop = set(categories)
        return IdentityValues({k: v for k, v in self.values.items() if k not in drop})

    def to_json(self) -> str:
        """JSON text ``{"categories": {category: [sorted values]}}`` (keys sorted)."""
        return json.dumps({"categories": {k: sorted(v) for k, v in sorted(self.values.items())}}, sort_keys=True)

    @classmethod
    def from_json(cls, data: str | Mapping[str, object]) -> IdentityValues:
        """Inverse of :meth:`to_json`; accepts the JSON text or its parsed object."""
        obj = json.loads(data) if isinstance(data, str) else data
        categories = obj["categories"]  # type: ignore[index]
        return cls({str(k): frozenset(str(x) for x in v) for k, v in categories.items()})  # type: ignore[union-attr]

    @property
    def key(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """A canonical, hashable form (sorted categories and values)."""
        return self._key  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdentityValues) and self.key == other.key

    def __bool__(self) -> bool:
        return any(self.values.values())


def _texts(value: object) -> list[str]:
    values = value if isinstance(value, MultiValue | list | tuple) else [value]
    return [t for t in (str(v).strip(" \x00") for v in values if v is not None) if t]


_TAG_CATEGORY = {tag_for_keyword(k): c for k, c in KEYWORD_CATEGORY.items()}
#: Every public tag whose dictionary VR makes it worth reading (so other elements are not decoded).
_TAG_VR = {
    tag: entry[0] for tag, entry in DicomDictionary.items()
    if tag in _TAG_CATEGORY or entry[0] in ("PN", "DA", "DT", "SQ")
}


def _collect(
    ds: Dataset, found: dict[str, set[str]], fast: bool, parts: list[tuple[tuple[str, tuple[str, ...]], ...]] | None = None,
) -> None:
    """Add the identifying values of ``ds`` at every depth to ``found``.

    With ``parts``, what each memoized element of ``ds`` holds is appended to it instead.
    """
    encodings: list[str] | None = None
    elements = ds._dict
    # only the elements worth reading (a set intersection: no Python loop over the others)
    relevant = [(key, elements[key]) for key in elements.keys() & _TAG_VR.keys()] if fast else list(elements.items())
    for key, item in relevant:
        tag = int(key)
        vr = _TAG_VR.get(tag)
        if vr is None:
            continue
        if not fast or type(item) is not RawDataElement or item.value is None or len(item.value) > _MEMO_BYTES:
            _collect_element(ds, tag, item, vr, found, fast, encodings)
            continue
        if encodings is None:
            encodings = encodings_of(ds)
        # What a raw element contributes depends only on its bytes, how they are encoded and the
        # character set they are decoded with: the values of a series repeat file after file.
        memo_key = (tag, item.VR, item.length, item.value, item.is_implicit_VR, item.is_little_endian,
                    tuple(encodings))
        contribution = _CONTRIBUTIONS.get(memo_key)
        if contribution is None:
            part: dict[str, set[str]] = {}
            _collect_element(ds, tag, item, vr, part, fast, encodings)
            contribution = tuple((category, tuple(texts)) for category, texts in part.items())
            if len(_CONTRIBUTIONS) >= _MAX_CONTRIBUTIONS or _memo_bytes[0] >= _MAX_BYTES:
                _CONTRIBUTIONS.clear()
                _memo_bytes[0] = 0
            _CONTRIBUTIONS[memo_key] = contribution
            _memo_bytes[0] += len(item.value)
        if parts is not None:
            parts.append(contribution)
            continue
        for category, texts in contribution:
            found.setdefault(category, set()).update(texts)


def _collect_element(
    ds: Dataset, tag: int, item: object, vr: str, found: dict[str, set[str]], fast: bool, encodings: list[str] | None,
) -> None:
    """Add what the element ``tag`` of ``ds`` (``item`` in its ``_dict``) holds, at any depth, to ``found``."""
    # a raw element's value is decoded without converting the element (medflow.deid.rawelem)
    raw_vr = view_vr(item) if fast and vr != "SQ" and type(item) is RawDataElement else None  # type: ignore[arg-type]
    if raw_vr is not None:
        value = RawView(item, raw_vr, ds, encodings or encodings_of(ds)).value  # type: ignore[arg-type]
    else:
        value = ds[tag].value
    if vr == "SQ":
        for child in value or ():
            _collect(child, found, fast)
        return
    if value is None or value == "":
        return
    category = _TAG_CATEGORY.get(tag) or ("person-name" if vr == "PN" else "date")
    texts = _texts(value)
    if category in _DATE_CATEGORIES:
        texts = [t[:8] for t in texts if len(t) >= 8 and t[:8].isdigit()]
    if texts:
        found.setdefault(category, set()).update(texts)


#: Per-process memo of :func:`_collect`: raw element (tag, VR, length, bytes, encoding, character
#: sets) -> the (category, values) it holds at any depth. Only elements read with pydicom's
#: default conversion (``fast``) and at most :data:`_MEMO_BYTES` long; cleared when full.
_CONTRIBUTIONS: dict[tuple, tuple[tuple[str, tuple[str, ...]], ...]] = {}
_MAX_CONTRIBUTIONS = 8192
_MEMO_BYTES = 16384
_MAX_BYTES = 8 * 1024 * 1024  # value bytes of the keys, at most
_memo_bytes = [0]
#: The identity made from a file's parts (see :meth:`IdentityValues.from_dataset`), same rules.
_IDENTITIES: dict[tuple, IdentityValues] = {}
_MAX_IDENTITIES = 1024
_memo_state: list[tuple[object, ...]] = []


def _check_memo_state() -> None:
    """Forget :data:`_CONTRIBUTIONS` when pydicom's conversion settings changed since they were made."""
    state = conversion_state()
    if _memo_state != [state]:
        _CONTRIBUTIONS.clear()
        _IDENTITIES.clear()
        _memo_bytes[0] = 0
        _memo_state[:] = [state]


# -- folding and matching -------------------------------------------------------------------------
#: Letters that NFKD does not decompose but that people write without the stroke.
_STROKES = {"ø": "o", "Ø": "o", "đ": "d", "Đ": "d", "ł": "l", "Ł": "l", "ı": "i", "ð": "d", "Ð": "d"}


@lru_cache(maxsize=4096)
def _fold_char(c: str) -> str:
    base = _STROKES.get(c) or unicodedata.normalize("NFKD", c)[:1] or c
    low = base.lower()
    return low if len(low) == 1 else base


def fold(text: str) -> str:
    """Lower case without accents, one character per character (positions are kept)."""
    if text.isascii():
        return text.lower()
    return "".join(map(_fold_char, text))


_WORD = re.compile(r"[^\W\d_]+")
_ALNUM = re.compile(r"[^\W_]+")
_DIGITS = re.compile(r"\d+(?:[\W_]{1,2}\d+)*")  # digits with up to two separators between groups
_DSEP = r"[\s./\-_,]"
_MONTH_NUMBER = {name: i + 1 for i, names in enumerate(_MONTHS) for name in names}
_MONTH = "(" + "|".join(sorted(_MONTH_NUMBER, key=len, reverse=True)) + r")\.?"
_ORD = r"(?:st|nd|rd|th)?"
#: Date-like candidates with their (first, second, third) part order: a run of YYYYMMDD, numbers
#: with separators, and forms with a month name. Parsed, then compared with the identity's dates.
_DATE_FORMS = (
    (re.compile(r"(?<!\d)(\d{8})(?!\d)"), "compact"),
    (re.compile(rf"(?<!\d)(\d{{1,4}}){_DSEP}{{1,3}}(\d{{1,2}}){_DSEP}{{1,3}}(\d{{1,4}})(?!\d)"), "numeric"),
    (re.compile(rf"(?<![\da-z])(\d{{1,2}}){_ORD}{_DSEP}{{0,3}}{_MONTH}{_DSEP}{{0,3}}(\d{{4}}|\d\d)(?![\da-z])"), "dmy"),
    (re.compile(rf"(?<![\da-z]){_MONTH}{_DSEP}{{0,3}}(\d{{1,2}}){_ORD}{_DSEP}{{0,3}}(\d{{4}}|\d\d)(?![\da-z])"), "mdy"),
    (re.compile(rf"(?<![\da-z])(\d{{4}}){_DSEP}{{0,3}}{_MONTH}{_DSEP}{{0,3}}(\d{{1,2}})(?![\da-z])"), "ymd"),
)


def _date_readings(kind: str, groups: tuple[str | None, ...]) -> list[tuple[str, int, int]]:
    """Every (year as written, month, day) a date-like match can mean."""
    g = [x for x in groups if x is not None]
    if kind == "compact":  # YYYYMMDD, DDMMYYYY, MMDDYYYY
        a = g[0]
        return [(a[:4], int(a[4:6]), int(a[6:])), (a[4:], int(a[2:4]), int(a[:2])), (a[4:], int(a[:2]), int(a[2:4]))]
    if kind == "numeric":
        a, b, c = g
        out = []
        if len(a) == 4 or (len(a) == 2 and len(c) == 2):
            out.append((a, int(b), int(c)))
        if len(c) in (2, 4):
            out += [(c, int(b), int(a)), (c, int(a), int(b))]
        return out
    if kind == "dmy":
        return [(g[2], _MONTH_NUMBER[g[1]], int(g[0]))]
    if kind == "mdy":
        return [(g[2], _MONTH_NUMBER[g[0]], int(g[1]))]
    return [(g[0], _MONTH_NUMBER[g[1]], int(g[2]))]


class _Matcher:
    """The lookup tables of one identity (no regex is compiled per identity), with a memo."""

    def __init__(self, identity: IdentityValues):
        self.words: dict[str, str] = {}  # folded whole word -> category
        self.initials: dict[str, frozenset[str]] = {}  # name word -> initials of the same name
        self.squashed: dict[str, tuple[str, bool, bool]] = {}  # value without separators -> category...
        self.long_runs: dict[str, str] = {}  # digit runs >= 6: found inside longer numbers too
        self.short_runs: dict[str, str] = {}  # digit runs of 4-5: found only as a whole number
        self.dates: dict[tuple[str, int, int], str] = {}
        for category, values in identity.values.items():
            for value in values:
                self._add(category, value)
        self.memo: dict[tuple[str, bool], tuple[str, list[str]]] = {}

    def _add_id(self, category: str, value: str) -> None:
        folded = fold(value)
        squashed = "".join(_ALNUM.findall(folded))
        if len(squashed) >= 3:
            self.squashed.setdefault(squashed, (category, squashed[0].isalpha(), squashed[-1].isalpha()))
        digits = "".join(ch for ch in folded if ch.isdigit())
        runs = re.findall(r"\d{4,}", folded) + ([digits] if len(digits) >= 6 and category == "phone" else [])
        for run in runs:
            (self.long_runs if len(run) >= 6 else self.short_runs).setdefault(run, category)

    def _add(self, category: str, value: str) -> None:
        if category in _DATE_CATEGORIES:
            y, m, d = value[:4], int(value[4:6]), int(value[6:8])
            self.dates.setdefault((y, m, d), category)
            self.dates.setdefault((y[2:], m, d), category)
        elif category in _NAME_CATEGORIES:
            for group in value.split("="):
                components = [c.strip() for c in group.split("^")[:3] if c.strip()]
                if len(components) == 1 and any(ch.isdigit() for ch in components[0]):
                    self._add_id(category, components[0])  # an ID written in a name field
                    continue
                words_of = [_WORD.findall(fold(c)) for c in components]
                initials = frozenset(w[0][0] for w in words_of if w)
                for comp, words in zip(components, words_of, strict=True):
                    if len(words) > 1:
                        self._add_id(category, comp)
                    for w in words:
                        if len(w) >= (2 if len(words) == 1 else 3):
                            self.words.setdefault(w, category)
                            self.initials[w] = self.initials.get(w, frozenset()) | initials
        else:
            self._add_id(category, value)
            if category in _WORD_CATEGORIES:
                for w in _WORD.findall(fold(value)):
                    if len(w) >= 4 and w not in _GENERIC:
                        self.words.setdefault(w, category)

    def find(self, text: str) -> list[Finding]:
        folded = fold(text)
        out: list[Finding] = []
        if self.words:
            tokens = list(_WORD.finditer(folded))
            for i, m in enumerate(tokens):
                category = self.words.get(m.group())
                if category is None:
                    continue
                start, end = m.span()
                initials = self.initials.get(m.group(), frozenset())
                # "J. Doe", "Doe J": a one-letter initial of the same name right next to it goes too
                if i and len(tokens[i - 1].group()) == 1 and tokens[i - 1].group() in initials \
                        and start - tokens[i - 1].end() <= 3:
                    start = tokens[i - 1].start()
                if i + 1 < len(tokens) and len(tokens[i + 1].group()) == 1 and tokens[i + 1].group() in initials \
                        and tokens[i + 1].start() - end <= 3:
                    end = tokens[i + 1].end() + (folded[tokens[i + 1].end() : tokens[i + 1].end() + 1] == ".")
                out.append(Finding(f"identity:{category}", start, end))
        if self.squashed:
            self._find_squashed(folded, out)
        if self.long_runs or self.short_runs:
            self._find_digits(folded, out)
        if self.dates:
            for regex, kind in _DATE_FORMS:
                for m in regex.finditer(folded):
                    for y, mo, d in _date_readings(kind, m.groups()):
                        category = self.dates.get((y, mo, d))
                        if category is not None:
                            out.append(Finding(f"identity:{category}", m.start(), m.end()))
                            break
        return out

    def _find_squashed(self, folded: str, out: list[Finding]) -> None:
        runs = list(_ALNUM.finditer(folded))
        squashed = "".join(m.group() for m in runs)
        where = [i for m in runs for i in range(m.start(), m.end())]  # squashed index -> text index
        for value, (category, letter_head, letter_tail) in self.squashed.items():
            at = squashed.find(value)
            while at >= 0:
                start, end = where[at], where[at + len(value) - 1] + 1
                head_ok = not (letter_head and start and folded[start - 1].isalpha())
                tail_ok = not (letter_tail and end < len(folded) and folded[end].isalpha())
                if head_ok and tail_ok:
                    out.append(Finding(f"identity:{category}", start, end))
                at = squashed.find(value, at + 1)

    def _find_digits(self, folded: str, out: list[Finding]) -> None:
        for m in _DIGITS.finditer(folded):
            where = [m.start() + i for i, ch in enumerate(m.group()) if ch.isdigit()]
            digits = "".join(folded[i] for i in where)
            for run, category in self.long_runs.items():
                at = digits.find(run)
                while at >= 0:
                    out.append(Finding(f"identity:{category}", where[at], where[at + len(run) - 1] + 1))
                    at = digits.find(run, at + 1)
            if digits in self.short_runs:
                out.append(Finding(f"identity:{self.short_runs[digits]}", m.start(), m.end()))
            for group in re.finditer(r"\d+", m.group()):
                category = self.short_runs.get(group.group())
                if category is not None:
                    out.append(Finding(f"identity:{category}", m.start() + group.start(), m.start() + group.end()))


_MATCHERS: dict[tuple, _Matcher] = {}
_MAX_MATCHERS = 256
_MAX_MEMO = 4096


def _matcher(identity: IdentityValues) -> _Matcher:
    key = identity.key
    found = _MATCHERS.get(key)
    if found is None:
        if len(_MATCHERS) >= _MAX_MATCHERS:
            _MATCHERS.pop(next(iter(_MATCHERS)))
        found = _MATCHERS[key] = _Matcher(identity)
    return found


# -- patterns that need no header ----------------------------------------------------------------
_PATTERN_RULES = ("pattern:date", "pattern:email", "pattern:phone", "pattern:id")
_PATTERNS = re.compile(
    "|".join(
        f"({p})"
        for p in (
            # date-like: numeric with separators, compact YYYYMMDD, with a month name
            r"(?<![\d.])(?:\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./](?:\d{4}|\d{2}))(?![\d.]?\d)"
            r"|(?<!\d)(?:1[89]|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?!\d)"
            rf"|(?<![\da-z])\d{{1,2}}(?:st|nd|rd|th)?[\s./\-,]{{0,3}}{_ANY_MONTH}(?:[\s./\-,]{{0,3}}\d{{2,4}})?(?![\da-z])"
            rf"|(?<![\da-z]){_ANY_MONTH}[\s./\-,]{{0,3}}\d{{1,4}}(?:st|nd|rd|th)?(?:[\s./\-,]{{1,3}}\d{{2,4}})?(?![\da-z])"
            rf"|(?<![\da-z])\d{{4}}[\s./\-,]{{1,3}}{_ANY_MONTH}[\s./\-,]{{1,3}}\d{{1,2}}(?![\da-z])",
            r"[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+",
            r"(?<![\w.])(?:\+|00)?\(?\d{2,5}\)?(?:[\s.\-/]\(?\d{2,8}\)?){1,4}(?![\w])",
            r"\d{6,}"
            r"|(?<![a-z0-9])(?:mrn|pid|id|nhs|ssn|acc|accession|patient[\s_-]?id|pat[\s_-]?id|case|record|chart)"
            r"[\s#:.=_\-]{0,3}(?:no\.?|nr\.?|number|#)?[\s#:.=_\-]{0,3}[a-z]{0,3}\d{3,}[a-z0-9\-]*"
            r"|(?<![a-z0-9])[a-z]{1,4}[\-_#]?\d{5,}(?![0-9])",
        )
    )
)


def find_identifiers(text: str, identity: IdentityValues) -> list[Finding]:
    """Spans of ``text`` holding one of ``identity``'s values (module docstring: how), by start."""
    if not text or not identity:
        return []
    return sorted(_matcher(identity).find(text), key=lambda f: (f.start, -f.end))


def detect_patterns(text: str) -> list[Finding]:
    """Date-, e-mail-, phone- (7 to 15 digits) and ID-like spans of ``text``, header or not."""
    if not text or not any(c.isdigit() or c == "@" for c in text):
        return []
    out = []
    for m in _PATTERNS.finditer(fold(text)):
        rule = _PATTERN_RULES[m.lastindex - 1]
        if rule == "pattern:phone" and not 7 <= sum(c.isdigit() for c in m.group()) <= 15:
            continue
        out.append(Finding(rule, m.start(), m.end()))
    return out


def _remove(text: str, findings: list[Finding]) -> str:
    findings.sort(key=lambda f: (f.start, -f.end))
    pieces, cursor = [], 0
    for f in findings:
        if f.start > cursor:
            pieces.append(text[cursor : f.start])
        cursor = max(cursor, f.end)
    pieces.append(text[cursor:])
    return "".join(pieces)


class Scrubber:
    """:func:`scrub_text` bound to one identity, memoised (the walker's per-value hot path)."""

    def __init__(self, identity: IdentityValues):
        self._matcher = _matcher(identity) if identity else None
        self._memo = self._matcher.memo if self._matcher is not None else {}

    def __call__(self, text: str, patterns: bool = True) -> tuple[str, tuple[str, ...]]:
        """``(cleaned text, sorted rule names)``; see :func:`scrub_text`."""
        hit = self._memo.get((text, patterns))
        if hit is not None:
            return hit
        findings = self._matcher.find(text) if self._matcher is not None and text else []
        if patterns:
            findings += detect_patterns(text)
        result = (_remove(text, findings), tuple(sorted({f.rule for f in findings}))) if findings else (text, ())
        if len(self._memo) >= _MAX_MEMO:
            self._memo.clear()
        self._memo[(text, patterns)] = result
        return result


def scrub_text(text: str, identity: IdentityValues, *, patterns: bool = True) -> tuple[str, list[str]]:
    """``text`` without what :func:`find_identifiers` (and, if ``patterns``, :func:`detect_patterns`) find.

    Returns:
        The cleaned text (found spans removed, the rest as written) and the sorted names of the
        rules that removed something, e.g. ``["identity:patient-name", "pattern:date"]``.
    """
    cleaned, rules = Scrubber(identity)(text, patterns)
    return cleaned, list(rules)


__all__ = ["Finding", "IdentityValues", "Scrubber", "detect_patterns", "find_identifiers", "fold", "scrub_text"]
