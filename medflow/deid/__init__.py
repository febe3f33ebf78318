"""De-identification core: PS3.15 Annex E Basic Profile with every option, keyed pseudonyms, audit.

The public API (the ``anonymize`` step and the DICOM writer wrap it)::

    from medflow.deid import DeidConfig, deidentify, load_key
    key = load_key(env_var="MEDFLOW_DEID_KEY")
    result = deidentify(ds, DeidConfig(options={"retain-patient-characteristics"}), key)
    action = apply_burned_in_policy(result.burned_in_risk, result.burned_in_reason, "quarantine", item)
"""

from medflow.deid.burned_in import apply_burned_in_policy, burned_in_risk
from medflow.deid.config import DeidConfig, DeidRules
from medflow.deid.errors import BurnedInTextError, DeidConfigError, DeidKeyError
from medflow.deid.keys import key_id, load_key
from medflow.deid.phi import Finding, IdentityValues, detect_patterns, find_identifiers, scrub_text
from medflow.deid.profile import AuditRecord, DeidResult, deidentify, plan_deidentification
from medflow.deid.pseudonyms import keyed_uid, patient_pseudonym
from medflow.deid.table import ALL_OPTIONS, compile_actions, edition, load_table

__all__ = [
    "ALL_OPTIONS",
    "AuditRecord",
    "BurnedInTextError",
    "DeidConfig",
    "DeidConfigError",
    "DeidKeyError",
    "DeidResult",
    "DeidRules",
    "Finding",
    "IdentityValues",
    "apply_burned_in_policy",
    "burned_in_risk",
    "compile_actions",
    "deidentify",
    "detect_patterns",
    "edition",
    "find_identifiers",
    "key_id",
    "keyed_uid",
    "load_key",
    "load_table",
    "patient_pseudonym",
    "plan_deidentification",
    "scrub_text",
]
