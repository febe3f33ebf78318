"""Searching text, bytes, names and JSON for residual identifying values; never keeping the value.

Two detectors from :mod:`medflow.deid.phi`:

* ``identity`` (only with ``--source``): :func:`find_identifiers` against the identifying values
  collected from the original files (names, IDs, dates, addresses, ...), on every string and, as
  text decoded byte for byte (Latin-1) and as UTF-8, on every byte value;
* ``pattern`` (always): :func:`detect_patterns` (dates in free text, phone numbers, e-mail
  addresses, MRN-like numbers, ...) on DICOM text VRs, file and folder names and the free-text
  fields of the manifest.

What medflow itself generates is not a finding, for either detector: patient pseudonyms (``MF-``
+ 16 base32 characters) and keyed UIDs (``2.25.`` + 39 decimal digits), both keyed HMAC output in
which a digit run of an ID can occur by chance; the edition of Table E.1-1 in
DeidentificationMethod; hex digests (content digests, cache keys, audit hashes), hashed input paths and
item ids in the manifest; UIDs used as file names. Shifted dates sit in DA/DT/TM elements, which are not pattern-scanned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from medflow.deid.phi import IdentityValues, detect_patterns, find_identifiers

#: Values medflow writes on purpose: pseudonyms and keyed UIDs (see medflow.deid.pseudonyms), the
#: table edition in DeidentificationMethod ("PS3.15 E.1-1 2025b/c (current on 2025-06-24) Basic
#: Profile", see medflow.deid.table.edition), hashed input paths and item ids.
_GENERATED = re.compile(
    r"MF-[A-Z2-7]{16}|2\.25\.[0-9]{1,39}|PS3\.15 E\.1-1 \S{1,16} \(current on \d{4}-\d{2}-\d{2}\)"
    # a de-identifying build's manifest: input paths as <file:sha256[:16]>, item ids as <kind>-<16 hex>
    r"|<file:[0-9a-f]{16}>|(?<![\w-])[a-z][a-z0-9]{0,15}-[0-9a-f]{16}(?![\w-])"
    # hex digests (content digests of files, cache keys, keyed audit hashes): at least one letter a-f
    r"|(?<![0-9a-z])(?=[0-9]*[a-f])[0-9a-f]{16,64}(?![0-9a-z])"
)
#: A DICOM UID (PS3.5 9.1), as used for file and folder names of a build.
_UID_NAME = re.compile(r"[0-9]+(?:\.[0-9]+)+")


@dataclass(frozen=True, order=True)
class AuditFinding:
    """One residual identifying value: in which file, where in it, which rule; never the value."""

    file: str
    path: str
    rule: str

    def line(self) -> str:
        return f"{self.file}: {self.path}: {self.rule}"


@dataclass(frozen=True)
class Span:
    rule: str
    start: int
    end: int


def _allowed(text: str, extra: re.Pattern[str] | None = None) -> list[tuple[int, int]]:
    spans = [m.span() for m in _GENERATED.finditer(text)]
    if extra is not None:
        spans += [m.span() for m in extra.finditer(text)]
    return spans


def _outside(span: Span, allowed: list[tuple[int, int]]) -> bool:
    return not any(start <= span.start and span.end <= end for start, end in allowed)


class Scanner:
    """The detectors of one audit: ``identity`` is ``None`` without ``--source``."""

    def __init__(self, identity: IdentityValues | None):
        self.identity = identity

    def text(self, text: str, *, patterns: bool, allow: re.Pattern[str] | None = None) -> list[Span]:
        """Spans of identifying values in ``text``: identity always (when known), patterns on request."""
        if not text:
            return []
        found = []
        if self.identity is not None:
            found += [Span(f.rule, f.start, f.end) for f in find_identifiers(text, self.identity)]
        if patterns:
            found += [Span(f.rule, f.start, f.end) for f in detect_patterns(text)]
        if not found:
            return []
        allowed = _allowed(text, allow)
        return [s for s in found if _outside(s, allowed)]

    def data(self, data: bytes) -> list[Span]:
        """Identity values in bytes, read as Latin-1 (any single-byte text) and as UTF-8.

        Offsets are those of the decoded text; the caller only needs the rules.
        """
        if self.identity is None or not data:
            return []
        spans = self.text(data.decode("latin-1"), patterns=False)
        if re.search(rb"[\x80-\xff]", data):
            spans += self.text(data.decode("utf-8", "ignore"), patterns=False)
        return spans

    def name(self, component: str) -> list[Span]:
        """A file or folder name: identity and patterns, UIDs used as names allowed."""
        return self.text(component, patterns=True, allow=_UID_NAME)


def rules(spans: list[Span]) -> list[str]:
    """The distinct rules of ``spans``, in order of first appearance."""
    return list(dict.fromkeys(s.rule for s in spans))


def redact(text: str, spans: list[Span]) -> str:
    """``text`` with every span replaced by ``<rule>`` (overlapping spans merged)."""
    out, position = [], 0
    for span in sorted(spans, key=lambda s: (s.start, -s.end)):
        if span.end <= position:
            continue
        start = max(span.start, position)
        out.append(text[position:start])
        out.append(f"<{span.rule}>")
        position = span.end
    out.append(text[position:])
    return "".join(out)
