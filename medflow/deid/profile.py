"""De-identify one pydicom Dataset per PS3.15 Annex E (Basic Profile + options), keyed and audited.

:func:`deidentify` is pure: it builds a new Dataset (the input is not changed; PixelData bytes
are shared, not copied, unless masked) and returns it with an audit record per attribute it
acted on. Every element is visited, in sequences at any depth and in the file meta information.

Beyond Table E.1-1 (which lists what to change; everything else is kept), medflow applies these
conservative rules, because identity can sit anywhere in any IOD:

* every kept text value (LO, SH, UC, UR, and ST, LT, UT, PN where kept or cleaned), at any depth,
  goes through :class:`medflow.deid.phi.Scrubber`: the input's own identifying values
  (:class:`~medflow.deid.phi.IdentityValues`, collected at every depth) are removed in any
  wording, and PHI-like patterns (dates, phones, e-mails, long IDs) too, except in codes
  (CodeValue, CodingSchemeDesignator...: identity only) and in values a retain option keeps
  (identity only, less what the option retains); recipe ``keep`` rules stay verbatim;
* UI values that are not registered DICOM UIDs (and not a ``*ClassUID`` / transfer syntax) are
  replaced by keyed UIDs, unless retain-uids;
* DA, DT and TM values not listed are emptied, moved by the patient's offset with
  retain-longitudinal-modified-dates (a DA with the TM of its keyword stem moves with it, see
  :mod:`medflow.deid.temporal`), kept with full dates; listed ones follow the table the same way;
* PN values are emptied; LT, ST and UT free text is removed, or scrubbed with clean-descriptors or
  clean-structured-content;
* sequences keep their items, de-identified by the whole profile, under every action but ``X``
  (removed) and ``Z`` (empty); the Type 1 value of an SR content item is never removed
  (see :mod:`medflow.deid.actions`);
* whole overlay groups (60xx) and curve groups (50xx) are removed when the table removes their
  data (that is, without clean-graphics).

PatientID becomes a keyed pseudonym and the top-level PatientName gets the same string (a
non-zero-length replacement that the table's ``Z`` permits).

The files of a series repeat most of their values: the walker keeps, per process, the outcome of
each raw element in its context (:mod:`medflow.deid.walkmemo`), with the element's encoded bytes,
so a repeated value costs a lookup; the output bytes and the audit are the same as without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from pydicom import Dataset, Sequence
from pydicom import config as pydicom_config
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import FileMetaDataset

import medflow
from medflow.deid.burned_in import burned_in_risk
from medflow.deid.config import DeidConfig
from medflow.deid.pixels import is_native, mask_native_pixels
from medflow.deid.pseudonyms import pseudonymizer
from medflow.deid.rawelem import add_sequence, new_dataset
from medflow.deid.table import edition, load_cid7050
from medflow.deid.walker import PIXEL_DATA, AuditRecord, Walker, clone_element

CODE_VALUE = 0x00080100
CODING_SCHEME_DESIGNATOR = 0x00080102
CODE_MEANING = 0x00080104
PATIENT_IDENTITY_REMOVED = 0x00120062
DEIDENTIFICATION_METHOD = 0x00120063
DEIDENTIFICATION_METHOD_CODE_SEQUENCE = 0x00120064
LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED = 0x00280303
_STAMPED = (PATIENT_IDENTITY_REMOVED, DEIDENTIFICATION_METHOD, DEIDENTIFICATION_METHOD_CODE_SEQUENCE,
            LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED)


@dataclass
class DeidResult:
    """The de-identified dataset and what the caller needs to write, audit and quarantine it.

    ``crosswalk`` maps the original PatientID to its pseudonym: it is identifying, so callers
    write it only when the recipe asks, outside the dataset, mode 0600.
    """

    dataset: Dataset
    audit: list[AuditRecord]
    burned_in_risk: bool
    burned_in_reason: str
    notes: list[str] = field(default_factory=list)
    crosswalk: dict[str, str] = field(default_factory=dict)
    date_offset_days: int | None = None
    pixels_masked: bool = False
    time_offset_seconds: int | None = None
    #: Top-level tag -> the memo's cache of that output element's encoded bytes, for
    #: :func:`medflow.deid.encode.encode_file` of ``dataset`` as returned (see :mod:`medflow.deid.walkmemo`).
    element_bytes: dict[int, dict] = field(default_factory=dict, repr=False, compare=False)

    def audit_jsonl(self) -> str:
        """The audit records as JSON Lines (one object per line, keys sorted).

        The same text as ``json.dumps(record.as_dict(), sort_keys=True)`` per line
        (:meth:`AuditRecord.json_line`).
        """
        return "".join([r.__dict__.get("_json_line") or r.json_line() for r in self.audit])


def _file_meta(meta: FileMetaDataset, run: Walker) -> FileMetaDataset:
    out = new_dataset(FileMetaDataset)
    for _, elem in run.visit(meta, ("file-meta",), run.meta_element):
        out._dict[elem.tag] = elem  # FileMetaDataset.add of a group 2 element (no sequence, not private)
    if None not in meta.original_encoding:  # raw elements are written as read (see Walker.dataset)
        out.set_original_encoding(*meta.original_encoding, meta.original_character_set)
    return out


def _mask(ds: Dataset, run: Walker, transfer_syntax: str | None) -> bool:
    config = run.config
    asked = {"clean-pixel-data", "clean-recognizable-visual-features"} & config.options
    if not asked or PIXEL_DATA not in ds:
        return False
    if not config.mask_regions:
        run.notes.append(
            f"{', '.join(sorted(asked))}: no mask_regions given, pixel data unchanged; burned-in text "
            "and recognizable features must be reviewed by a person"
        )
        return False
    if not is_native(transfer_syntax):
        run.notes.append(
            f"{', '.join(sorted(asked))}: pixel data is compressed ({transfer_syntax}); medflow does not "
            "re-encode it, so the mask regions were NOT applied"
        )
        return False
    elem = ds[PIXEL_DATA]
    try:
        masked = mask_native_pixels(
            elem.value,
            rows=int(ds.Rows),
            columns=int(ds.Columns),
            samples=int(ds.get("SamplesPerPixel", 1)),
            planar=int(ds.get("PlanarConfiguration", 0) or 0),
            bits_allocated=int(ds.BitsAllocated),
            frames=int(ds.get("NumberOfFrames", 1) or 1),
            big_endian=transfer_syntax == "1.2.840.10008.1.2.2",
            regions=config.mask_regions,
        )
    except (ValueError, AttributeError) as exc:
        run.notes.append(f"mask regions NOT applied: {exc}")
        return False
    run.record(elem, "PixelData", "C", "mask")
    ds[PIXEL_DATA] = run.with_value(elem, masked)
    if "clean-recognizable-visual-features" in asked:
        run.notes.append("clean-recognizable-visual-features: only the given regions were masked; "
                         "faces or other features elsewhere are not detected")
    return True


def _put(ds: Dataset, tag: int, value: object) -> None:
    """``ds.<keyword> = value`` without pydicom's per-value validation (the values are ours)."""
    if tag in ds._dict:  # as Dataset.__setattr__ does: the element keeps its VR
        elem = ds[tag]
        elem.value = value
        ds[tag] = elem
    elif type(value) is str and (made := _stamp_element(tag, value)) is not None:
        elem = clone_element(made)  # the same few values in every file: made once, copied
        ds._dict[elem.tag] = elem  # Dataset.__setitem__ of a public element that is no sequence or pixel data
    else:
        ds[tag] = DataElement(tag, dictionary_VR(tag), value, validation_mode=pydicom_config.IGNORE)


@lru_cache(maxsize=256)
def _stamp_element(tag: int, value: str) -> DataElement | None:
    """The element ``_put`` makes for ``value``; None where Dataset.__setitem__ does more than store it."""
    elem = DataElement(tag, dictionary_VR(tag), value, validation_mode=pydicom_config.IGNORE)
    return None if elem.VR == "SQ" or tag >> 16 & 1 or tag >> 16 == 0x7FE0 else elem


def _code_item(code: str, meaning: str) -> Dataset:
    item = new_dataset()
    _put(item, CODE_VALUE, code)
    _put(item, CODING_SCHEME_DESIGNATOR, "DCM")
    _put(item, CODE_MEANING, meaning)
    return item


def _stamp(out: Dataset, run: Walker, masked: bool) -> None:
    """PatientIdentityRemoved, DeidentificationMethod(+CodeSequence), (0028,0303)."""
    codes = load_cid7050()
    claimed = sorted(o for o in run.options if masked or o not in ("clean-pixel-data", "clean-recognizable-visual-features"))
    _put(out, PATIENT_IDENTITY_REMOVED, "YES")
    _put(out, DEIDENTIFICATION_METHOD,
         [f"medflow {medflow.__version__}", f"PS3.15 E.1-1 {edition()} Basic Profile", *claimed])
    codes_sequence = Sequence([_code_item(*codes[o]) for o in ["basic", *claimed]])
    if DEIDENTIFICATION_METHOD_CODE_SEQUENCE in out._dict:
        _put(out, DEIDENTIFICATION_METHOD_CODE_SEQUENCE, codes_sequence)
    else:  # _put of a new sequence element: Dataset.add's bookkeeping, without its slow attribute checks
        add_sequence(out, DataElement(DEIDENTIFICATION_METHOD_CODE_SEQUENCE, "SQ", codes_sequence,
                                      validation_mode=pydicom_config.IGNORE))
    if run.full_dates:
        temporal = "UNMODIFIED"
    elif run.offset is not None:
        temporal = "MODIFIED"
    else:
        temporal = "REMOVED"
    _put(out, LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED, temporal)
    for tag, value in run.replace.items():
        if tag not in out:
            out.add(DataElement(tag, dictionary_VR(tag), value))


def deidentify(ds: Dataset, config: DeidConfig, key: bytes, *, convert_all: bool = False) -> DeidResult:
    """De-identify ``ds`` per ``config`` with the secret ``key``; the input is not modified.

    Elements are read raw where pydicom would convert them the default way and kept elements
    stay raw, written back as read (:mod:`medflow.deid.rawelem`); ``convert_all`` converts
    every element with pydicom first instead (the reference the tests compare with: the output
    bytes and the audit are the same).

    Returns:
        DeidResult with the new dataset (file meta included when the input has one), the audit
        records, the burned-in risk of the *input*, notes on what could not be done
        automatically, the patient crosswalk, the date offset in days and the whole date-time
        offset in seconds used (if any).

    Raises:
        ValueError: a key shorter than 16 bytes.
    """
    run = Walker(ds, config, pseudonymizer(key), convert_all=convert_all)
    out = run.dataset(ds, "", top=True)
    meta = getattr(ds, "file_meta", None)
    transfer_syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else None
    if meta is not None:
        out.file_meta = _file_meta(meta, run)
    masked = _mask(out, run, transfer_syntax)
    _stamp(out, run, masked)
    if getattr(ds, "preamble", None) is not None:
        out.preamble = b"\x00" * 128  # a preamble can hold a TIFF header with identity
    if hasattr(ds, "original_encoding") and hasattr(out, "set_original_encoding"):
        implicit, little = ds.original_encoding
        if implicit is not None:
            out.set_original_encoding(implicit, little, ds.original_character_set)
    risk, reason = burned_in_risk(ds, trust_flag=config.trust_burned_in_annotation)
    if masked and risk:
        risk, reason = False, f"{reason}; masked with the configured regions"
    if "clean-graphics" in config.options:
        run.notes.append("clean-graphics: overlay bitmaps and curve data are kept without inspection; "
                         "their text attributes are scrubbed of this dataset's identifiers")
    if run.clean_free_text:
        run.notes.append("free text is scrubbed of this dataset's own identifying values and of date, phone, "
                         "e-mail and ID patterns; other identifiers (e.g. names of people not in the header) "
                         "are not detected")
    crosswalk = {run.patient_id: run.pseudo.patient(run.patient_id)}
    seconds = None if run.offset is None else run.offset * 86400 + run.seconds
    element_bytes = run.element_bytes
    for tag in (*_STAMPED, *run.replace, *((PIXEL_DATA,) if masked else ())):
        element_bytes.pop(tag, None)  # changed after the walk: not the memoized outcome's element
    return DeidResult(out, run.audit, risk, reason, run.notes, crosswalk, run.offset, masked, seconds, element_bytes)


def plan_deidentification(ds: Dataset, config: DeidConfig) -> list[tuple[str, str, str]]:
    """Dry run: ``(path, keyword, what would be done)`` per attribute, without a key.

    Runs the same code as :func:`deidentify` with a throwaway key and keeps only the paths
    and actions (no value, no hash).
    """
    result = deidentify(ds, config, b"\x00" * 32)
    return [(r.path, r.keyword, f"{r.action} -> {r.applied}") for r in result.audit]


__all__ = ["AuditRecord", "DeidResult", "deidentify", "plan_deidentification"]
