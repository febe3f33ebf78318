"""Errors of the de-identification core (members of medflow's one error family)."""

from __future__ import annotations

from medflow.errors import MedflowError


class DeidKeyError(MedflowError):
    """The pseudonymization key is missing, unreadable or too short."""


class DeidConfigError(MedflowError, ValueError):
    """A de-identification configuration is invalid (unknown option, keyword...)."""


class BurnedInTextError(MedflowError):
    """An instance at risk of burned-in identifying text met the ``fail`` policy."""

    def __init__(self, item: str, reason: str):
        self.item = item
        self.reason = reason
        super().__init__(f"{item}: burned-in text risk ({reason}); policy is 'fail'")
