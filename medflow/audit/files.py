"""Scanning one written file of a build: DICOM element by element, JSON string by string, else bytes.

Each function returns ``(attribute path, rule)`` pairs; the caller adds the file's display path.
"""

from __future__ import annotations

import gzip
import io
import json
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError

from medflow.audit.elements import iter_file_elements
from medflow.audit.scan import Scanner, rules

Hit = tuple[str, str]  # (attribute path, rule)
#: The DICOM stamp of a de-identified instance (PS3.15 E.1.1, PS3.3 C.12.1.1.2): 'YES'.
PATIENT_IDENTITY_REMOVED = 0x00120062
#: Free-text keys of the manifest (errors, reasons, notes) that are pattern-scanned as well.
MANIFEST_TEXT_KEYS = frozenset({"error", "reason", "reasons", "notes", "note", "message"})
_TEXT_SUFFIXES = frozenset({".json", ".jsonl", ".csv", ".tsv", ".txt", ".yaml", ".yml", ".md", ".log"})
_MAX_ARCHIVE_MEMBERS = 10_000


def is_dicom(path: Path) -> bool:
    """A Part 10 file: ``DICM`` after the 128-byte preamble."""
    try:
        with path.open("rb") as handle:
            return handle.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def scan_dicom(path: Path, scanner: Scanner) -> list[Hit]:
    """Every element at any depth (file meta, private, sequences, byte values) of one DICOM file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path)
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            return [("(file)", f"unreadable-dicom:{type(exc).__name__}"), *scan_bytes(path.read_bytes(), scanner)]
        hits: list[Hit] = []
        for element in iter_file_elements(ds):
            if isinstance(element.value, bytes):
                spans = scanner.data(element.value)
            else:
                spans = scanner.text(element.value, patterns=element.is_text)
            hits += [(element.path, rule) for rule in rules(spans)]
        stamp = str(ds.get(PATIENT_IDENTITY_REMOVED).value if PATIENT_IDENTITY_REMOVED in ds else "").strip()
        if stamp.upper() != "YES":
            hits.append(("PatientIdentityRemoved", "not-deidentified:PatientIdentityRemoved is not YES"))
    if not hits:  # safety net: text decoded with a wrong character set, bytes between elements
        hits += [("(file bytes)", rule) for rule in rules(scanner.data(path.read_bytes()))]
    return hits


def scan_json_value(value: Any, scanner: Scanner, path: str = "", *, free_text: bool = False) -> list[Hit]:
    """Strings (and keys) of a parsed JSON value; ``free_text`` strings are pattern-scanned too."""
    hits: list[Hit] = []
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            hits += [(f"{where} (key)", rule) for rule in rules(scanner.text(str(key), patterns=False))]
            hits += scan_json_value(item, scanner, where, free_text=free_text or key in MANIFEST_TEXT_KEYS)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            hits += scan_json_value(item, scanner, f"{path}[{index}]", free_text=free_text)
    elif isinstance(value, str):
        hits += [(path or "(value)", rule) for rule in rules(scanner.text(value, patterns=free_text))]
    return hits


def scan_jsonl(data: bytes, scanner: Scanner) -> list[Hit]:
    """A JSON Lines file (the per-file audit): each line's strings, by ``line N.key`` path."""
    hits: list[Hit] = []
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            hits += [(f"line {number}", rule) for rule in rules(scanner.text(line, patterns=False))]
            continue
        hits += scan_json_value(record, scanner, f"line {number}")
    return hits


def scan_bytes(data: bytes, scanner: Scanner) -> list[Hit]:
    """Any other file: its bytes, and the members of gzip and zip (npz) containers."""
    hits = [("(bytes)", rule) for rule in rules(scanner.data(data))]
    for label, member in _unpacked(data):
        hits += [(label, rule) for rule in rules(scanner.data(member))]
    return hits


def _unpacked(data: bytes) -> Iterator[tuple[str, bytes]]:
    if data[:2] == b"\x1f\x8b":
        try:
            yield "(gunzipped)", gzip.decompress(data)
        except (OSError, EOFError):
            yield "(gunzipped)", b""
    elif data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for info in archive.infolist()[:_MAX_ARCHIVE_MEMBERS]:
                    yield f"(member {info.filename})", info.filename.encode("utf-8") + b"\n" + archive.read(info)
        except (zipfile.BadZipFile, OSError):
            return


def scan_file(path: Path, scanner: Scanner) -> list[Hit]:
    """Dispatch on content: DICOM, JSON, JSON Lines, other text, or bytes."""
    if is_dicom(path):
        return scan_dicom(path, scanner)
    data = path.read_bytes()
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return scan_jsonl(data, scanner)
    if suffix == ".json":
        try:
            return scan_json_value(json.loads(data.decode("utf-8")), scanner)
        except (ValueError, UnicodeDecodeError):
            pass
    if suffix in _TEXT_SUFFIXES:
        text = data.decode("utf-8", "replace")
        return [("(text)", rule) for rule in rules(scanner.text(text, patterns=False))]
    return scan_bytes(data, scanner)
