"""De-identified instances pushed to a DICOMweb server with STOW-RS (``kind: dicomweb``).

The writer writes exactly what the ``dicom`` writer writes (same de-identification, same files
``<folder>/<Study>/<Series>/<SOP>.dcm`` and audits; list ``dicomweb`` *instead of* ``dicom``),
then stores those files on the server in batches and proves every push by content: the
instance is retrieved as stored (``transfer-syntax=*``) and its digest (:mod:`medflow.hashing`)
must be the local file's.
A status is not proof: Orthanc answers 200 to a STOW of a SOPInstanceUID it already holds and
keeps its old file unless ``OverwriteInstances`` is on. Instances already on the server with the
same bytes are not sent again (a rerun is idempotent); one held with other bytes fails the item.

Each instance's result is a receipt ``<receipt_folder>/<Study>/<Series>/<SOP>.json`` (server,
new UIDs, blake3 digest, result), listed with its digest among the item's outputs in the manifest.
"""

from __future__ import annotations

import io
import json
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import Field

from medflow.errors import StepError
from medflow.hashing import ALGORITHM, digest_bytes
from medflow.sample import Sample
from medflow.sources.dicomweb_http import DicomwebAuth, DicomwebConnection, DicomwebEndpoint, DicomwebError
from medflow.writers.atomic import atomic_write_bytes
from medflow.writers.dicom import DicomParams, write_dicom
from medflow.writers.registry import WriterParams, WrittenFile, register_writer

WRITER = "writer dicomweb"


class DicomwebWriterParams(WriterParams):
    """STOW-RS the de-identified instances (the ``dicom`` writer's files) to a DICOMweb server."""

    kind: Literal["dicomweb"]
    url: str = DicomwebEndpoint.model_fields["url"]
    auth: DicomwebAuth | None = DicomwebEndpoint.model_fields["auth"]
    timeout_seconds: float = DicomwebEndpoint.model_fields["timeout_seconds"]
    retries: int = DicomwebEndpoint.model_fields["retries"]
    backoff_seconds: float = DicomwebEndpoint.model_fields["backoff_seconds"]
    batch_size: int = Field(50, ge=1, le=1000, description="Instances per STOW-RS request.")
    folder: str = Field("dicom", description="Subfolder of the output folder for the .dcm files (as the dicom writer).")
    audit_folder: str = Field("audit", description="Subfolder for the per-file audit (as the dicom writer).")
    receipt_folder: str = Field("dicomweb", description="Subfolder for the per-instance push receipts (JSON).")


def _endpoint(params: DicomwebWriterParams) -> DicomwebEndpoint:
    return DicomwebEndpoint(url=params.url, auth=params.auth, timeout_seconds=params.timeout_seconds,
                            retries=params.retries, backoff_seconds=params.backoff_seconds)


@register_writer("dicomweb", 1, DicomwebWriterParams, reads_pixels=False)
def write_dicomweb(sample: Sample, params: DicomwebWriterParams, out_dir: Path) -> list[WrittenFile]:
    """Write the de-identified instances (as the dicom writer) and STOW-RS them, each push proven by content."""
    written = write_dicom(
        sample, DicomParams(kind="dicom", folder=params.folder, audit_folder=params.audit_folder), out_dir
    )
    instances = [w for w in written if w.path.endswith(".dcm")]
    try:
        receipts = _push(sample.item_id, params, out_dir, instances)
    except BaseException:
        for done in written:  # a failed push leaves no partial item behind (the next run pushes again)
            (out_dir / done.path).unlink(missing_ok=True)
        raise
    return written + receipts


def _push(item_id: str, params: DicomwebWriterParams, out_dir: Path, instances: list[WrittenFile]) -> list[WrittenFile]:
    try:
        connection = DicomwebConnection(_endpoint(params))
    except Exception as exc:  # UsageError: a credential variable is unset
        raise StepError(WRITER, item_id, str(exc)) from None
    uids = {w.path: PurePosixPath(w.path).parts[-3:] for w in instances}
    todo = []
    for written in instances:
        study, series, sop = uids[written.path]
        held = _held(connection, item_id, study, series, sop.removesuffix(".dcm"))
        if held is None:
            todo.append(written)
        elif held != written.digest:
            raise StepError(WRITER, item_id, _conflict(connection.url))
    import pydicom  # here: validating a recipe should not pay its ~0.3 s import

    for start in range(0, len(todo), params.batch_size):
        batch = todo[start:start + params.batch_size]
        datasets = [pydicom.dcmread(io.BytesIO((out_dir / w.path).read_bytes())) for w in batch]
        try:
            connection.store(datasets)
        except DicomwebError as exc:
            raise StepError(WRITER, item_id, str(exc)) from None
        for written in batch:
            study, series, sop = uids[written.path]
            held = _held(connection, item_id, study, series, sop.removesuffix(".dcm"))
            if held is None:
                raise StepError(WRITER, item_id, f"DICOMweb server {connection.url} answered the STOW-RS but does "
                                                 "not hold the instance afterwards")
            if held != written.digest:
                raise StepError(WRITER, item_id, _conflict(connection.url))
    receipts = []
    for written in instances:
        study, series, sop = uids[written.path]
        receipt = {"server": connection.url, "study": study, "series": series, "sop": sop.removesuffix(".dcm"),
                   ALGORITHM: written.digest, "result": "stored: the server holds these bytes (retrieved and compared)"}
        data = json.dumps(receipt, sort_keys=True, indent=1).encode() + b"\n"
        rel = PurePosixPath(params.receipt_folder, study, series, sop.removesuffix(".dcm") + ".json")
        receipts.append(WrittenFile(rel.as_posix(), atomic_write_bytes(out_dir / rel, data), len(data)))
    return receipts


def _held(connection: DicomwebConnection, item_id: str, study: str, series: str, sop: str) -> str | None:
    """Digest of the instance as the server stores it (the local files' algorithm), or None when it holds none."""
    try:
        return digest_bytes(connection.retrieve(study, series, sop))
    except DicomwebError as exc:
        if exc.kind == "object" and "HTTP 404" in str(exc):
            return None
        raise StepError(WRITER, item_id, str(exc)) from None


def _conflict(url: str) -> str:
    return (f"DICOMweb server {url} holds other bytes under this instance's SOPInstanceUID and kept them "
            "(a server that does not overwrite, e.g. Orthanc without OverwriteInstances); nothing was overwritten")
