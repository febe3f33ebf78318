"""The identifying values of the original files, per patient, for ``medflow audit --source``."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from medflow.deid.phi import IdentityValues


@dataclass
class SourceIdentity:
    """Identity values merged per original PatientID, and all of them merged for the search."""

    per_patient: dict[str, IdentityValues] = field(default_factory=dict)
    files: int = 0

    def merged(self) -> IdentityValues | None:
        merged = None
        for identity in self.per_patient.values():
            merged = identity if merged is None else _merge(merged, identity)
        return merged


def _merge(left: IdentityValues, right: IdentityValues) -> IdentityValues:
    result = left.merge(right)
    return left if result is None else result  # merge may return a new object or update in place


def _read(path: Path) -> pydicom.Dataset | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(path)
        except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError):
            pass
        try:  # a file without the Part 10 preamble (older exports): accepted if it names a SOP class
            ds = pydicom.dcmread(path, force=True)
            return ds if "SOPClassUID" in ds else None
        except Exception:  # noqa: BLE001 - pydicom raises many types on files that are not DICOM
            return None


def collect_identity(source: Path) -> SourceIdentity:
    """:meth:`IdentityValues.from_dataset` of every DICOM file under ``source``, merged per patient."""
    collected = SourceIdentity()
    paths = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for path in paths:
        ds = _read(path)
        if ds is None:
            continue
        collected.files += 1
        patient = str(ds.get("PatientID", "") or "").strip()
        identity = IdentityValues.from_dataset(ds)
        known = collected.per_patient.get(patient)
        collected.per_patient[patient] = identity if known is None else _merge(known, identity)
    return collected
