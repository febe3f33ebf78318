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


class WorkspaceError(UsageError):
    """The output or cache folder cannot be used by this build (not medflow's, busy, not writable).

    Raised before any work starts: the CLI prints it in one line and exits 2.
    """

    def __init__(self, path: str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def describe_os_error(exc: OSError) -> str:
    """The cause of an OS error in a few words with its errno name: ``permission denied (EACCES)``."""
    import errno as errno_names

    name = errno_names.errorcode.get(exc.errno or 0, "")
    text = exc.strerror or str(exc) or type(exc).__name__
    text = text[:1].lower() + text[1:]
    return f"{text} ({name})" if name else text


class FileSystemError(MedflowError):
    """An OS error on a file medflow reads or writes, in one line naming the path and the cause.

    ``cannot write /data/out/manifest.json: no space left on device (ENOSPC)``. An item's
    write failing fails that item; the CLI prints one raised outside an item and exits 1.
    """

    def __init__(self, path: str, cause: OSError | str, action: str = "write"):
        self.path = str(path)
        self.errno = cause.errno if isinstance(cause, OSError) else None
        self.cause = describe_os_error(cause) if isinstance(cause, OSError) else cause
        super().__init__(f"cannot {action} {self.path}: {self.cause}")


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived during a build; ``signum`` says which (exit 128 + signum)."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signum)
