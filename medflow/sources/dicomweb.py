"""The ``dicomweb`` source: studies on a PACS, found with QIDO-RS and fetched with WADO-RS into the cache.

After :func:`fetch` the rest of the engine sees files: a folder laid out as
``<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`` whose files are the bytes the
server stores (``transfer-syntax=*``). An item's fingerprint is therefore the one the same files
give in a folder with that layout, and a PACS build and a folder build give the same bytes.

The cache keeps (all under ``<cache>/dicomweb/``, owner-only, they are original instances)::

    objects/<sha256[:2]>/<sha256>.dcm   content-addressed instances
    index/<server>.json                 per series: its QIDO record's digest, per instance its sha256
    views/<server+query>/...            the folder discovery reads: hard links to objects

A rebuild asks the server for the studies and their series; only a series that is new or whose
QIDO record changed (e.g. NumberOfSeriesRelatedInstances) is asked for its instances, and only
instances that are new or whose QIDO record changed are fetched (``--verify`` asks every series
again). A failure to reach the server, a refusal (401/403) or a rejected query stops the build
before anything is built (exit 2); an instance that cannot be fetched fails its item (exit 1)
and is fetched by the next run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from medflow.errors import UsageError
from medflow.hashing import file_digest
from medflow.sources.base import item_fingerprint
from medflow.sources.dicomweb_http import DicomwebConnection, DicomwebEndpoint, DicomwebError, value
from medflow.writers.atomic import atomic_write_bytes, make_folder

STORE_FORMAT = 1
_UID_CHARS = frozenset("0123456789.")
_RETRIEVE_URL = "00081190"
_STUDY, _SERIES, _SOP, _MODALITY = "0020000D", "0020000E", "00080018", "00080060"


class DicomwebStudyQuery(BaseModel):
    """Which studies to take (QIDO-RS study-level matching, PS3.18 8.3.4; all given keys must match)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    PatientID: str | None = Field(None, description="PatientID (0010,0020); '*' and '?' are wildcards.")
    StudyDate: str | None = Field(
        None,
        description="StudyDate (0008,0020): YYYYMMDD, or a range YYYYMMDD-YYYYMMDD, -YYYYMMDD, YYYYMMDD-.",
        pattern=r"^(\d{8}|\d{8}-\d{8}|-\d{8}|\d{8}-)$",
    )
    ModalitiesInStudy: list[str] | None = Field(
        None, description="Studies holding a series of any of these modalities (0008,0061), e.g. [CT, MR]."
    )
    StudyInstanceUID: list[str] | None = Field(None, description="Exactly these studies (0020,000D).")

    @field_validator("StudyInstanceUID")
    @classmethod
    def _uids(cls, uids: list[str] | None) -> list[str] | None:
        for uid in uids or []:
            if not uid or len(uid) > 64 or set(uid) - _UID_CHARS:
                raise ValueError(f"not a DICOM UID (digits and dots, at most 64 characters): {uid!r}")
        return uids


class DicomwebServer(DicomwebEndpoint):
    """A DICOMweb server to build from: where, which studies, how many parallel retrievals."""

    query: DicomwebStudyQuery = Field(
        default_factory=DicomwebStudyQuery, description="Which studies to take; empty: every study on the server."
    )
    workers: int = Field(4, ge=1, le=64, description="Instances retrieved in parallel (WADO-RS requests at once).")


@dataclass
class Fetched:
    """What :func:`fetch` did: the folder to discover, and what could not be (or would be) fetched."""

    root: Path
    url: str
    failed: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    pending: list[tuple[str, str, int, int]] = field(default_factory=list)  # (modality, series key, new, changed)
    fetched: int = 0
    series_asked: int = 0
    series_total: int = 0

    def plan_lines(self) -> list[str]:
        """What a run would fetch (for ``medflow plan`` and ``--dry-run``); series by an opaque key."""
        new = sum(p[2] for p in self.pending)
        changed = sum(p[3] for p in self.pending)
        lines = [f"dicomweb {self.url}: {self.series_total} series; would fetch {new + changed} instance(s) "
                 f"({new} new, {changed} changed) of {len(self.pending)} series"]
        lines += [f"  fetch {modality} series {key}: {n} new, {c} changed" for modality, key, n, c in self.pending]
        return lines

    def apply(self, discovery: Any) -> Any:
        """Fail the items of series with instances that were not fetched; list the rest as unreadable.

        An item missing some of its instances is never built with a hole: it fails naming them
        (and its fingerprint says they are missing, so no earlier record of it is reused).
        """
        if not self.failed:
            return discovery
        by_series: dict[str, list[tuple[str, str]]] = {}
        for rel, reason in self.failed:
            by_series.setdefault(rel.rsplit("/", 1)[0], []).append((rel, reason))
        items = []
        for item in discovery.items:
            folders = {rel.rsplit("/", 1)[0] for rel in item.files}
            missing = [entry for folder in sorted(folders) for entry in by_series.pop(folder, [])]
            if missing and item.kind != "instance":
                hashes = [(rel, file_digest(Path(item.root) / rel)) for rel in item.files]
                item = dataclasses.replace(
                    item, broken_files=item.broken_files + tuple(missing),
                    fingerprint=item_fingerprint(hashes + [(rel, "not-fetched") for rel, _ in missing]),
                )
            elif missing:
                by_series.setdefault("\0", []).extend(missing)
            items.append(item)
        discovery.items = items
        discovery.skipped = list(discovery.skipped) + [
            (rel, f"cannot read: {reason}") for entries in by_series.values() for rel, reason in entries
        ]
        return discovery


def _digest(record: dict[str, Any]) -> str:
    """Digest of a QIDO record without its RetrieveURL (the server's address is not the object)."""
    data = {k: v for k, v in record.items() if k != _RETRIEVE_URL}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _fatal(exc: DicomwebError) -> UsageError:
    return UsageError(str(exc))


def _study_filters(query: DicomwebStudyQuery) -> list[dict[str, str]]:
    """QIDO filters, one set per modality (a list of modalities is a union of searches)."""
    base: dict[str, str] = {}
    if query.PatientID is not None:
        base["PatientID"] = query.PatientID
    if query.StudyDate is not None:
        base["StudyDate"] = query.StudyDate
    if query.StudyInstanceUID:
        base["StudyInstanceUID"] = ",".join(query.StudyInstanceUID)  # UID list matching, PS3.18 8.3.4.1
    if not query.ModalitiesInStudy:
        return [base]
    return [{**base, "ModalitiesInStudy": modality} for modality in query.ModalitiesInStudy]


def _is_uid(text: str) -> bool:
    return bool(text) and len(text) <= 64 and not set(text) - _UID_CHARS


class _Store:
    """The content-addressed objects, the per-server index and the views (see the module docstring)."""

    def __init__(self, root: Path, server: DicomwebServer):
        self.root = root
        url = server.url.rstrip("/")
        self.index_path = root / "index" / (hashlib.sha256(url.encode()).hexdigest()[:20] + ".json")
        view = json.dumps({"url": url, "query": server.query.model_dump(mode="json")}, sort_keys=True)
        self.view = root / "views" / hashlib.sha256(view.encode()).hexdigest()[:20]
        self.index: dict[str, Any] = {"format": STORE_FORMAT, "series": {}}
        try:
            data = json.loads(self.index_path.read_text())
            if data.get("format") == STORE_FORMAT:
                self.index = data
        except (OSError, ValueError):
            pass  # no index (or a damaged one): everything is asked for again

    def object_path(self, sha: str) -> Path:
        return self.root / "objects" / sha[:2] / f"{sha}.dcm"

    def has(self, sha: str | None) -> bool:
        return bool(sha) and self.object_path(sha).is_file()

    def put(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self.object_path(sha)
        if not path.is_file():
            make_folder(path.parent)
            atomic_write_bytes(path, data, mode=0o600)
        return sha

    def save_index(self) -> None:
        make_folder(self.index_path.parent)
        atomic_write_bytes(self.index_path, json.dumps(self.index, sort_keys=True).encode(), mode=0o600)

    def link_view(self, wanted: dict[str, str]) -> None:
        """Make the view hold exactly ``wanted`` (relative path -> object sha256), as hard links."""
        make_folder(self.view)
        for dirpath, _dirs, files in os.walk(self.view, topdown=False):
            for name in files:
                path = Path(dirpath, name)
                rel = path.relative_to(self.view).as_posix()
                sha = wanted.get(rel)
                if sha is None or not _same_file(path, self.object_path(sha)):
                    path.unlink()
            if Path(dirpath) != self.view and not os.listdir(dirpath):
                os.rmdir(dirpath)
        for rel, sha in sorted(wanted.items()):
            path = self.view / rel
            if path.exists():
                continue
            make_folder(path.parent)
            try:
                os.link(self.object_path(sha), path)
            except OSError:  # a file system without hard links: a copy (same bytes)
                atomic_write_bytes(path, self.object_path(sha).read_bytes(), mode=0o600)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def fetch(server: DicomwebServer, store_root: Path, *, verify: bool = False, dry_run: bool = False) -> Fetched:
    """Bring the studies ``server.query`` names into the cache; return the folder to discover.

    ``dry_run`` (``medflow plan``, ``--dry-run``, ``preview``) asks the server but fetches nothing:
    :attr:`Fetched.pending` lists what a run would fetch, the view holds what is already cached.

    Raises:
        UsageError: cannot reach the server, credentials missing or refused, query rejected (exit 2).
    """
    connection = DicomwebConnection(server)
    for folder in (store_root, store_root / "objects"):
        make_folder(folder)
        os.chmod(folder, 0o700)  # original instances: the owner's only
    store = _Store(store_root, server)
    result = Fetched(store.view, connection.url)
    try:
        studies: dict[str, None] = {}
        for filters in _study_filters(server.query):
            for record in connection.search("studies", "studies", filters=filters):
                uid = value(record, _STUDY)
                if _is_uid(uid):
                    studies.setdefault(uid, None)
        wanted, todo = _plan_series(connection, store, list(studies), verify, result)
    except DicomwebError as exc:
        raise _fatal(exc) from None
    if not dry_run:
        failed_series = _retrieve_all(connection, store, server.workers, todo, wanted, result) if todo else set()
        for series, entry in store.index["series"].items():
            pending = entry.pop("pending_digest", None)
            if pending is not None and series not in failed_series:
                entry["digest"] = pending  # every instance of the series is cached now
        store.save_index()
    store.link_view(wanted)
    return result


def _plan_series(
    connection: DicomwebConnection, store: _Store, studies: list[str], verify: bool, result: Fetched,
) -> tuple[dict[str, str], list[tuple[str, str, str, str]]]:
    """The view's files already cached, and the (study, series, sop, digest) still to fetch."""
    wanted: dict[str, str] = {}
    todo: list[tuple[str, str, str, str]] = []
    index = store.index["series"]
    for study in studies:
        for record in connection.search("series", "series of a study", study=study,
                                        fields=["NumberOfSeriesRelatedInstances", "Modality"]):
            series = value(record, _SERIES)
            if not _is_uid(series):
                continue
            result.series_total += 1
            digest = _digest(record)
            entry = index.get(series)
            known = entry is not None and entry.get("study") == study
            if known and not verify and entry.get("digest") == digest and all(
                store.has(i.get("sha256")) for i in entry["instances"].values()
            ):
                wanted.update({f"{study}/{series}/{sop}.dcm": i["sha256"] for sop, i in entry["instances"].items()})
                continue
            result.series_asked += 1
            old = entry["instances"] if known else {}
            instances: dict[str, Any] = {}
            new = changed = 0
            for inst in connection.search("instances", "instances of a series", study=study, series=series):
                sop = value(inst, _SOP)
                if not _is_uid(sop):
                    continue
                inst_digest = _digest(inst)
                before = old.get(sop)
                if before and before.get("digest") == inst_digest and store.has(before.get("sha256")):
                    instances[sop] = before
                    wanted[f"{study}/{series}/{sop}.dcm"] = before["sha256"]
                else:
                    todo.append((study, series, sop, inst_digest))
                    new, changed = (new + 1, changed) if before is None else (new, changed + 1)
            # the series digest is recorded only once every instance is cached (see fetch)
            index[series] = {"study": study, "digest": None if (new or changed) else digest,
                             "instances": instances, "pending_digest": digest}
            if new or changed:
                key = hashlib.sha256(series.encode()).hexdigest()[:12]
                result.pending.append((value(record, _MODALITY) or "xx", key, new, changed))
    return wanted, todo


def _retrieve_all(
    connection: DicomwebConnection, store: _Store, workers: int, todo: list[tuple[str, str, str, str]],
    wanted: dict[str, str], result: Fetched,
) -> set[str]:
    """Retrieve ``todo`` in parallel into the store; failures are kept per instance (returns their series).

    Once the server cannot be reached (after the retries), the remaining instances fail with
    that reason at once instead of each waiting through its own retries.
    """
    gone: list[str] = []
    lock = threading.Lock()

    def one(task: tuple[str, str, str, str]) -> tuple[tuple[str, str, str, str], str | None, str | None]:
        study, series, sop, _digest_ = task
        if gone:
            return task, None, gone[0]
        try:
            data = connection.retrieve(study, series, sop)
        except DicomwebError as exc:
            if exc.kind in ("connect", "auth"):
                with lock:
                    gone.append(str(exc))
            return task, None, str(exc)
        problem = _check_instance(data, sop)
        if problem:
            return task, None, problem
        return task, store.put(data), None

    from concurrent.futures import ThreadPoolExecutor  # here: concurrent.futures pulls in logging (start-up)

    failed_series: set[str] = set()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for (study, series, sop, digest), sha, error in pool.map(one, todo):
            rel = f"{study}/{series}/{sop}.dcm"
            if error is not None:
                result.failed.append((rel, f"not fetched from the DICOMweb server: {error}"))
                failed_series.add(series)
                continue
            store.index["series"][series]["instances"][sop] = {"sha256": sha, "digest": digest}
            wanted[rel] = sha
            result.fetched += 1
    return failed_series


def _check_instance(data: bytes, sop: str) -> str | None:
    """Why the retrieved bytes are not the instance asked for, or None."""
    import io

    import pydicom

    try:
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on bad bytes
        return f"the server sent bytes that are not DICOM ({type(exc).__name__})"
    got = str(header.get("SOPInstanceUID", "") or "")
    if got != sop:
        return "the server sent another instance than the one asked for (SOPInstanceUID differs)"
    return None
