"""One error family for medflow.

The command line turns each error into a message and an exit code:
recipe and usage errors exit 2 before any work; item errors are recorded
against their item and the build goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class MedflowError(Exception):
    """Base of every error medflow raises on purpose."""


@dataclass
class RecipeIssue:
    """One problem in a recipe, located in its YAML file.

    ``line`` and ``col`` are 1-based; 0 means "unknown" (e.g. a key that is missing
    entirely is reported at its parent mapping).
    """

    file: str
    line: int
    col: int
    path: str
    message: str

    def format(self) -> str:
        path = self.path or "<recipe>"
        return f"{self.file}:{self.line}:{self.col}: {path}: {self.message}"


@dataclass
class RecipeError(MedflowError):
    """A recipe is invalid; carries every issue found, not only the first."""

    issues: list[RecipeIssue] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(issue.format() for issue in self.issues)


class UsageError(MedflowError):
    """The command line is invalid (bad --set, unknown option value...)."""


class InputError(MedflowError):
    """An input file cannot be used; the message names the file."""

    def __init__(self, file: str, reason: str):
        self.file = str(file)
        self.reason = reason
        super().__init__(f"{self.file}: {reason}")


class StepError(MedflowError):
    """A step failed on one item; the message names the step and the item."""

    def __init__(self, step: str, item: str, reason: str):
        self.step = step
        self.item = item
        self.reason = reason
        super().__init__(f"step '{step}' failed on item {item}: {reason}")


class QuarantineItem(MedflowError):
    """A step decided that this item must not enter the dataset (e.g. risk of burned-in text).

    Not a failure: the item is listed as quarantined in the summary and the manifest,
    nothing of it is written, and the build's exit code is unaffected.
    """

    def __init__(self, step: str, item: str, reason: str):
        self.step = step
        self.item = item
        self.reason = reason
        super().__init__(f"quarantined by step '{step}': {reason}")


class FilteredItem(MedflowError):
    """The recipe's source filter leaves this item out (found only once its file is read).

    Not a failure: the item is listed as filtered (withheld, with the reason) in the
    summary and the manifest; nothing of it is written.
    """

    def __init__(self, item: str, reason: str):
        self.item = item
        self.reason = reason
        super().__init__(f"filtered: {reason}")


class CacheError(MedflowError):
    """A cache entry is unreadable or corrupt (callers delete and recompute it)."""
