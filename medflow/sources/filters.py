"""Selection rules of a DICOM source: path globs and series-level filters.

Path globs (``SeriesFilter.include`` / ``exclude``) match the POSIX path of a file
relative to the source folder, case-sensitively, with these rules:

* ``**`` matches any run of characters, ``/`` included, so it crosses folders;
  ``**/`` also matches nothing, so ``**/*.dcm`` selects ``a.dcm`` at the top too;
* ``*`` matches any run of characters except ``/`` (it stays inside one folder);
* ``?`` matches one character except ``/``;
* ``[abc]`` / ``[!abc]`` match one character of (not of) a set, as in :mod:`fnmatch`.

A plain ``**`` matches every path. A file is selected when it matches at least one
include pattern and no exclude pattern.

Series descriptions are not paths: ``SeriesFilter.series_description`` patterns use
:func:`fnmatch.fnmatchcase` on case-folded text (``*`` matches anything).
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Iterable, Sequence


@functools.lru_cache(maxsize=256)
def compile_path_glob(pattern: str) -> re.Pattern[str]:
    """Compile one path glob (rules in the module docstring) into an anchored regex."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")  # zero or more whole folders
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif ch == "*":
            out.append("[^/]*")
            i += 1
        elif ch == "?":
            out.append("[^/]")
            i += 1
        elif ch == "[":
            j = i + 1
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":  # a leading "]" belongs to the set
                j += 1
            end = pattern.find("]", j)
            if end < 0:  # an unclosed bracket is a literal, as in fnmatch
                out.append(re.escape(ch))
                i += 1
                continue
            body = pattern[i + 1 : end]
            negate = body.startswith("!")
            body = "".join(c if c == "-" else re.escape(c) for c in (body[1:] if negate else body))
            out.append(f"[^{body}/]" if negate else f"[{body}]")  # a set never matches "/"
            i = end + 1
        else:
            out.append(re.escape(ch))
            i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def path_selected(rel_path: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """True when ``rel_path`` (POSIX, relative to the source root) matches an include
    pattern and no exclude pattern."""
    if not any(compile_path_glob(p).match(rel_path) for p in include):
        return False
    return not any(compile_path_glob(p).match(rel_path) for p in exclude)


def modality_selected(modality: str, wanted: Iterable[str] | None) -> bool:
    """Exact, case-insensitive match of Modality (0008,0060) against ``wanted``; ``None`` keeps all."""
    if wanted is None:
        return True
    return modality.strip().casefold() in {w.strip().casefold() for w in wanted}


def description_selected(description: str, patterns: Iterable[str] | None) -> bool:
    """Case-insensitive glob match of SeriesDescription (0008,103E); ``None`` keeps all."""
    if patterns is None:
        return True
    text = description.casefold()
    return any(fnmatch.fnmatchcase(text, p.casefold()) for p in patterns)
