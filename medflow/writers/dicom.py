"""Anonymized DICOM writer (``kind: dicom``): each original instance, de-identified, pixel data as stored.

For every file in ``Sample.source_files`` the writer reads the full original (pixel data as
stored: compressed transfer syntaxes are not decoded), de-identifies it with the configuration
the ``anonymize`` step recorded in ``meta["deid"]`` and the same key (loaded again from its
environment variable or file), and writes::

    <folder>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm
    <audit_folder>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.jsonl

The file is encoded by :func:`medflow.deid.encode.encode_file` (the bytes pydicom's
``save_as(enforce_file_format=True)`` writes, raw elements copied as read), or by pydicom's
writer for the datasets that function refuses (see :mod:`medflow.deid.encode`).

Names come from the *new* UIDs only, and only when they are DICOM UIDs (digits and dots,
PS3.5 9.1), so a tag value can never name a path outside the output folder. A sample that did
not go through ``anonymize`` is refused: this writer never writes identifying DICOM.
"""

from __future__ import annotations

import io
import re
import warnings
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal

from pydantic import Field

# The params model needs none of pydicom (~0.3 s to import) or the de-identification core: they
# are imported when an instance is written, not when a recipe is validated.
from medflow.deid.config import DeidConfig
from medflow.deid.errors import BurnedInTextError, DeidKeyError
from medflow.deid.keys import key_id, load_key
from medflow.errors import InputError, QuarantineItem, StepError
from medflow.sample import Sample
from medflow.writers.atomic import atomic_write_bytes
from medflow.writers.registry import WriterParams, WrittenFile, register_writer

if TYPE_CHECKING:
    import pydicom

WRITER = "writer dicom"
#: PS3.5 9.1: components of digits separated by dots, at most 64 characters.
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_UID_MAX = 64


class DicomParams(WriterParams):
    """De-identified DICOM instances (needs the ``anonymize`` step), named by their new UIDs."""

    kind: Literal["dicom"]
    folder: str = Field("dicom", description="Subfolder of the output folder for the .dcm files.")
    audit_folder: str = Field(
        "audit",
        description="Subfolder for the per-file audit (JSON Lines: attribute, action, keyed hash of the old value).",
    )


@register_writer("dicom", 1, DicomParams, reads_pixels=False)
def write_dicom(sample: Sample, params: DicomParams, out_dir: Path) -> list[WrittenFile]:
    """Write each source instance de-identified (anonymize step's config and key), pixel data unchanged."""
    deid = sample.meta.get("deid")
    if not isinstance(deid, dict) or "config" not in deid:
        raise StepError(
            WRITER, sample.item_id,
            "the item did not go through the 'anonymize' step; refusing to write DICOM that would carry "
            "identifying data (add '- step: anonymize' to the recipe's steps)",
        )
    if not sample.source_files:
        raise StepError(WRITER, sample.item_id, "the sample names no source files to de-identify and write")
    config = DeidConfig.model_validate(deid["config"])
    key = _key(deid, sample.item_id)
    written: list[WrittenFile] = []
    seen: set[str] = set()
    # An item read without pixels carries its parsed originals: each file is parsed once.
    originals = sample.originals if len(sample.originals) == len(sample.source_files) else (None,) * len(sample.source_files)
    try:
        for source, original in zip(sample.source_files, originals, strict=True):
            _write_instance(source, original, config, key, params, out_dir, sample.item_id, seen, written)
    except BaseException:
        for done in written:  # a failed item leaves no partial series in the dataset
            (out_dir / done.path).unlink(missing_ok=True)
        raise
    return written


def _write_instance(
    source: str, original: pydicom.Dataset | None, config: DeidConfig, key: bytes, params: DicomParams,
    out_dir: Path, item_id: str, seen: set[str], written: list[WrittenFile],
) -> None:
    """De-identify one original instance and write it and its audit, appending to ``written``."""
    import pydicom

    from medflow.deid.burned_in import apply_burned_in_policy
    from medflow.deid.profile import deidentify

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid values in real files are de-identified anyway
        if original is None:
            try:
                original = pydicom.dcmread(source)
            except Exception as exc:  # noqa: BLE001 - pydicom raises many types on bad files
                raise InputError(source, f"cannot read for the DICOM writer: {type(exc).__name__}: {exc}") from exc
        result = deidentify(original, config, key)
    try:  # the step decided on the headers; the full instance is checked again before writing
        decision = apply_burned_in_policy(result.burned_in_risk, result.burned_in_reason, config.burned_in, item_id)
    except BurnedInTextError as exc:
        raise StepError(WRITER, item_id, str(exc)) from None
    if decision != "write":
        raise QuarantineItem(WRITER, item_id, f"burned-in text risk: {result.burned_in_reason}")
    ds = result.dataset
    study, series, sop = (_uid_part(ds, k, source) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"))
    relative = PurePosixPath(params.folder, study, series, sop + ".dcm")
    if relative.as_posix() in seen:
        raise InputError(source, f"two instances of item {item_id} have the same SOPInstanceUID")
    seen.add(relative.as_posix())
    audit = PurePosixPath(params.audit_folder, study, series, sop + ".jsonl")
    for rel, data in ((relative, _encoded(ds, result.element_bytes)), (audit, result.audit_jsonl().encode("utf-8"))):
        target = out_dir / rel
        # belt and braces: the UID check already forbids this. The file name is a UID (no
        # separator) and os.replace never follows a link at the name, so the folder decides.
        if not _inside(str(out_dir), str(target.parent)):
            raise InputError(source, f"output path {rel} would leave the output folder")
        digest = atomic_write_bytes(target, data)
        written.append(WrittenFile(rel.as_posix(), digest, len(data)))


def _encoded(ds: pydicom.Dataset, element_bytes: dict[int, dict] | None = None) -> bytes:
    """The file bytes of ``ds``: :func:`medflow.deid.encode.encode_file`, the same bytes as pydicom's
    ``save_as(enforce_file_format=True)`` written directly; pydicom's writer where it refuses."""
    from medflow.deid.encode import NotEncodable, encode_file

    try:
        return encode_file(ds, element_bytes)
    except NotEncodable:  # deflated or private transfer syntax, ambiguous VRs...: see medflow.deid.encode
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()


def _key(deid: dict, item_id: str) -> bytes:
    source = deid.get("key_source") or {}
    try:
        if "file" in source:
            key = load_key(key_file=source["file"])
        else:
            key = load_key(env_var=source.get("env", "MEDFLOW_DEID_KEY"))
    except DeidKeyError as exc:
        raise StepError(WRITER, item_id, str(exc)) from None
    if key_id(key) != deid.get("key_id"):
        raise StepError(
            WRITER, item_id,
            "the de-identification key changed since the anonymize step ran (key_id differs); run again",
        )
    return key


@lru_cache(maxsize=4096)
def _inside(out_dir: str, folder: str) -> bool:
    """Whether ``folder`` (links resolved) lies inside ``out_dir``; memoized per folder, not per file."""
    root = Path(out_dir).resolve()
    return root in (Path(folder).resolve() / "x").parents


def _uid_part(ds: pydicom.Dataset, keyword: str, source: str) -> str:
    """The new UID ``keyword`` of ``ds`` as a path component; refused unless it is a valid DICOM UID."""
    value = str(ds.get(keyword, "") or "").strip("\x00 ")
    if not value or len(value) > _UID_MAX or not _UID.fullmatch(value):
        raise InputError(
            source,
            f"{keyword} after de-identification is not a valid DICOM UID (digits and dots, at most 64 "
            "characters); refusing to use it as a file name",
        )
    return value
