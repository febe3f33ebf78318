"""What a file that discovery left out is, read from its one-line reason: one rule for every reader.

The run summary, the manifest's counts and the input accounting all ask the same question of a
skipped file; they ask it here, so the four words (filtered, skipped, unreadable, withheld) mean
the same thing everywhere.
"""

from __future__ import annotations

from typing import Literal

SkipKind = Literal["not_input", "filtered", "not_built", "problem"]

#: Not DICOM objects at all: not inputs of the accounting.
_NOT_INPUT = ("not a dicom file", "hidden", "cannot list folder", "not a regular file")
#: DICOM objects this recipe does not build, by design (withheld with the reason, not a failure).
_NOT_BUILT = ("no pixel", "dicomdir", "media directory", "excluded", "duplicate")


def skip_kind(reason: str) -> SkipKind:
    """``not_input`` (not DICOM, hidden), ``filtered`` (the recipe's filter), ``not_built`` (no pixels,
    DICOMDIR, a label object, a duplicate) or ``problem`` (truncated, unreadable...: a failure)."""
    text = reason.lower()
    if text.startswith(_NOT_INPUT):
        return "not_input"
    if "filter" in text or text.startswith("localizer"):
        return "filtered"
    if any(word in text for word in _NOT_BUILT):
        return "not_built"
    return "problem"
