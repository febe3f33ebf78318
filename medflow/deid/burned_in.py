"""Risk of identifying text burned into the pixels, and the recipe's policy for it.

PS3.3 C.7.6.1.1.1 Burned In Annotation (0028,0301) says whether the image has burned-in text;
when it is absent, modalities and SOP classes that are usually screen captures or documents
(ultrasound, secondary capture, "other", encapsulated documents) are treated as at risk too.
"""

from __future__ import annotations

from typing import Literal

from pydicom import Dataset

from medflow.deid.errors import BurnedInTextError
from medflow.deid.rawelem import value_of

RISKY_MODALITIES = frozenset({"US", "SC", "OT"})
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
ENCAPSULATED_DOCUMENT_PREFIX = "1.2.840.10008.5.1.4.1.1.104"
BURNED_IN_ANNOTATION, MODALITY, SOP_CLASS_UID = 0x00280301, 0x00080060, 0x00080016


def burned_in_risk(ds: Dataset, trust_flag: bool = True) -> tuple[bool, str]:
    """(at risk, reason) for one instance, from its header only.

    BurnedInAnnotation YES is always a risk. NO is honoured for this instance when
    ``trust_flag`` (the sender states there is no burned-in text); absent, or distrusted,
    the modality and SOP class decide.
    """
    flag = str(value_of(ds, BURNED_IN_ANNOTATION, "") or "").strip().upper()
    if flag == "YES":
        return True, "BurnedInAnnotation is YES"
    if flag == "NO" and trust_flag:
        return False, ""
    modality = str(value_of(ds, MODALITY, "") or "").strip().upper()
    if modality in RISKY_MODALITIES:
        return True, f"modality {modality} often carries burned-in text"
    sop_class = str(value_of(ds, SOP_CLASS_UID, "") or "")
    if sop_class.startswith(SECONDARY_CAPTURE_PREFIX):
        return True, f"secondary capture SOP class {sop_class}"
    if sop_class.startswith(ENCAPSULATED_DOCUMENT_PREFIX):
        return True, f"encapsulated document SOP class {sop_class}"
    return False, ""


def apply_burned_in_policy(
    at_risk: bool, reason: str, policy: Literal["quarantine", "fail", "allow"], item: str
) -> Literal["write", "quarantine"]:
    """What the caller does with an instance: ``write`` it or ``quarantine`` it.

    Raises:
        BurnedInTextError: at risk and policy ``fail``.
    """
    if not at_risk or policy == "allow":
        return "write"
    if policy == "fail":
        raise BurnedInTextError(item, reason)
    return "quarantine"
