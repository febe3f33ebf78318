"""De-identification core: PS3.15 Annex E Basic Profile with every option, keyed pseudonyms, audit.

The public API (the ``anonymize`` step and the DICOM writer wrap it)::

    from medflow.deid import DeidConfig, deidentify, load_key
    key = load_key(env_var="MEDFLOW_DEID_KEY")
    result = deidentify(ds, DeidConfig(options={"retain-patient-characteristics"}), key)
    action = apply_burned_in_policy(result.burned_in_risk, result.burned_in_reason, "quarantine", item)
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the module defining it. Imported on first use (PEP 562): the recipe models need
#: only ``config``, ``table`` and ``keys``, while the core pulls in pydicom (~0.3 s), which
#: ``medflow validate``, ``steps`` and ``schema`` should not pay.
_EXPORTS = {
    "apply_burned_in_policy": "burned_in", "burned_in_risk": "burned_in",
    "DeidConfig": "config", "DeidRules": "config",
    "BurnedInTextError": "errors", "DeidConfigError": "errors", "DeidKeyError": "errors",
    "key_id": "keys", "load_key": "keys",
    "Finding": "phi", "IdentityValues": "phi", "detect_patterns": "phi", "find_identifiers": "phi",
    "scrub_text": "phi",
    "AuditRecord": "profile", "DeidResult": "profile", "deidentify": "profile", "plan_deidentification": "profile",
    "keyed_uid": "pseudonyms", "patient_pseudonym": "pseudonyms",
    "ALL_OPTIONS": "table", "compile_actions": "table", "edition": "table", "load_table": "table",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__all__ = sorted(_EXPORTS)
