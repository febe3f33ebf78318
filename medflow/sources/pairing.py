"""Pairing label files with image items (discovery's half of labels; reading is in ``sources/labels``).

Rules, for a recipe whose source has ``labels:``:

* ``from: seg`` / ``from: rtstruct``: every DICOM Segmentation / RT Structure Set under the
  label folder (``labels.folder``, default the source folder; for the embedded sample, its
  label objects) is a candidate. A label object pairs with the image item whose
  SeriesInstanceUID it references (SEG ReferencedSeriesSequence, PS3.3 C.8.20.2; RTSTRUCT
  ReferencedFrameOfReferenceSequence > RTReferencedStudySequence > RTReferencedSeriesSequence,
  C.8.8.5). A label object that references no series pairs by FrameOfReferenceUID, and only
  when exactly one image item of the dataset has that frame of reference (several would be
  ambiguous: one frame of reference holds many series). ``labels.pattern``, when given, is a
  glob (relative to the label folder) a label object's path must match.
* ``from: mask``: ``labels.pattern`` is formatted per item with ``{series_uid}``,
  ``{study_uid}``, ``{patient_id}``, ``{accession}``, ``{series_folder}`` (the folder of the
  item's first file, relative to the source folder) and ``{item_id}``; the result is a glob
  under the label folder that must match exactly one file. Or ``labels.table``: a CSV with one
  row per mask, its path relative to the label folder and its item's key in the ``join_on``
  column (rules in :mod:`medflow.sources.labels.mask_table`).
* A mask path, from a pattern or a table, must stay inside the label folder once resolved
  (``..``, an absolute path or a symlink leading out is refused: :func:`mask_location`).
* An item with several candidates (two SEGs of one series, a pattern matching two files) or
  none fails naming them, unless ``labels.missing: keep`` (no labels: built without them).
  Label objects that pair with no item are listed as skipped, with the reason.

A paired item's fingerprint covers its label files, so changing a label rebuilds the item.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import glob
import os
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom

from medflow.sources.base import ItemRef, item_fingerprint
from medflow.sources.fingerprint import FingerprintMemo

SOP_CLASSES = {"seg": "1.2.840.10008.5.1.4.1.1.66.4", "rtstruct": "1.2.840.10008.5.1.4.1.1.481.3"}
_MEMO = "pairing-header-v1"


def label_options(labels: Any) -> dict[str, Any]:
    """The label options that change what is read (they join the read's cache key)."""
    return {"from": labels.from_, "segments": list(labels.segments) if labels.segments is not None else None,
            "overlap": labels.overlap}


def pair_labels(discovery, root: Path, source: Any, memo: FingerprintMemo, resolve: Callable[[str], Path]):
    """``discovery`` with each item's label files attached (see the module docstring).

    Returns the same Discovery object, its items replaced and its ``skipped`` list updated.
    """
    labels = source.labels
    root = Path(root)
    if labels.folder is not None:
        label_root = resolve(labels.folder)
    elif getattr(source, "sample", None):
        from medflow.sources.sample_labels import materialize_sample_labels

        label_root = materialize_sample_labels(source.sample, root.parent)
    else:
        label_root = root
    label_root = label_root.resolve()
    if labels.from_ == "mask" and labels.table is not None:
        found, problems, unpaired = _pair_mask_table(discovery.items, root, label_root, labels, memo,
                                                     resolve(labels.table))
    elif labels.from_ == "mask":
        found, problems = _pair_masks(discovery.items, root, label_root, labels.pattern, memo)
        unpaired = []
    else:
        found, problems, unpaired = _pair_dicom(discovery.items, root, label_root, labels.from_, memo, labels.pattern)
    paired_files = {rel for files in found.values() for rel in files}
    if labels.from_ == "mask":  # a mask in the source folder is "not DICOM" to discovery: say what it is instead
        paired_files |= {rel for rel, _ in unpaired}
    discovery.skipped = [(rel, reason) for rel, reason in discovery.skipped if rel not in paired_files]
    discovery.skipped += unpaired
    items = []
    for item in discovery.items:
        files = found.get(item.item_id, ())
        problem = problems.get(item.item_id)
        if problem and labels.missing == "keep" and not files:
            item = dataclasses.replace(item, notes=item.notes + (f"labels: {problem}; built without labels",))
        elif problem:
            where = files[0] if files else (item.files[0] if item.files else ".")
            item = dataclasses.replace(item, broken_files=item.broken_files + ((where, f"labels: {problem}"),))
        if files and not problem:
            hashes = [(rel, memo.digest(root / rel)) for rel in item.files]
            hashes += [(f"label:{rel}", memo.digest(root / rel)) for rel in files]
            item = dataclasses.replace(item, labels=tuple(files), fingerprint=item_fingerprint(hashes))
        items.append(item)
    discovery.items = items
    return discovery


def _rel(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _label_facts(path: Path, memo: FingerprintMemo) -> dict[str, Any] | None:
    try:
        cached = memo.get_extra(path, _MEMO)
    except OSError:
        return None
    if cached is not None:
        return cached or None
    facts: dict[str, Any] = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=None)
        facts = {"sop_class": str(ds.get("SOPClassUID", "")), "series": sorted(_referenced_series(ds)),
                 "for": sorted(_frames_of_reference(ds))}
    except Exception:  # noqa: BLE001 - not DICOM: not a label object
        facts = {}
    memo.set_extra(path, _MEMO, facts)
    return facts or None


def _referenced_series(ds) -> set[str]:
    series = {str(s.SeriesInstanceUID) for s in ds.get("ReferencedSeriesSequence", []) if "SeriesInstanceUID" in s}
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame.get("RTReferencedStudySequence", []):
            series |= {str(s.SeriesInstanceUID) for s in study.get("RTReferencedSeriesSequence", [])}
    return series


def _frames_of_reference(ds) -> set[str]:
    frames = {str(ds.FrameOfReferenceUID)} if ds.get("FrameOfReferenceUID") else set()
    frames |= {str(f.FrameOfReferenceUID) for f in ds.get("ReferencedFrameOfReferenceSequence", [])
               if f.get("FrameOfReferenceUID")}
    return frames


def _item_uids(item: ItemRef, memo: FingerprintMemo) -> dict[str, str]:
    path = Path(item.root) / item.files[0]
    cached = memo.get_extra(path, _MEMO + "-image")
    if cached is not None:
        return cached
    from medflow.sources.discovery import HeaderProblem, read_image_header

    try:
        ds = read_image_header(path)
    except HeaderProblem:
        return {}
    facts = {key: str(ds.get(key, "") or "") for key in
             ("SeriesInstanceUID", "FrameOfReferenceUID", "StudyInstanceUID", "PatientID", "AccessionNumber")}
    memo.set_extra(path, _MEMO + "-image", facts)
    return facts


def _pair_dicom(items: list[ItemRef], root: Path, label_root: Path, kind: str, memo: FingerprintMemo,
                pattern: str | None = None):
    sop_class = SOP_CLASSES[kind]
    candidates: list[tuple[str, dict[str, Any]]] = []
    for dirpath, dirnames, filenames in os.walk(label_root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            if pattern and not fnmatch.fnmatch(_rel(path, label_root), pattern):
                continue
            facts = _label_facts(path, memo)
            if facts and facts["sop_class"] == sop_class:
                candidates.append((_rel(path, root), facts))
    uids = {item.item_id: _item_uids(item, memo) for item in items if item.files}
    by_series: dict[str, list[str]] = defaultdict(list)
    by_for: dict[str, list[str]] = defaultdict(list)
    for item_id, facts in uids.items():
        by_series[facts.get("SeriesInstanceUID", "")].append(item_id)
        by_for[facts.get("FrameOfReferenceUID", "")].append(item_id)
    found: dict[str, list[str]] = defaultdict(list)
    unpaired: list[tuple[str, str]] = []
    how: dict[str, str] = {}
    for rel, facts in candidates:
        targets = sorted({i for uid in facts["series"] for i in by_series.get(uid, [])})
        if not targets and not facts["series"]:
            targets = sorted({i for uid in facts["for"] for i in by_for.get(uid, []) if uid})
            if len(targets) > 1:
                unpaired.append((rel, f"{kind} references no series and {len(targets)} image items share its "
                                      "frame of reference: ambiguous, not paired"))
                continue
            if targets:
                how[targets[0]] = "paired by frame of reference only"
        if not targets:
            unpaired.append((rel, f"{kind} references no image item of this dataset: not paired"))
            continue
        for item_id in targets:
            found[item_id].append(rel)
    problems: dict[str, str] = {}
    for item in items:
        files = found.get(item.item_id, [])
        if not files:
            problems[item.item_id] = f"no {kind} references this item's series"
        elif len(files) > 1:
            problems[item.item_id] = (f"{len(files)} {kind} objects reference this item's series ("
                                      + ", ".join(files) + "): ambiguous")
    return {k: tuple(v) for k, v in found.items()}, problems, unpaired


def _pair_masks(items: list[ItemRef], root: Path, label_root: Path, pattern: str | None, memo: FingerprintMemo):
    found: dict[str, tuple[str, ...]] = {}
    problems: dict[str, str] = {}
    for item in items:
        if not item.files:
            continue
        facts = _item_uids(item, memo)
        fields = {
            "series_uid": facts.get("SeriesInstanceUID", ""), "study_uid": facts.get("StudyInstanceUID", ""),
            "patient_id": facts.get("PatientID", ""), "accession": facts.get("AccessionNumber", ""),
            "series_folder": Path(item.files[0]).parent.as_posix(), "item_id": item.item_id,
        }
        try:
            relative = (pattern or "").format(**fields)
        except (KeyError, IndexError, ValueError) as exc:
            problems[item.item_id] = f"labels.pattern {pattern!r} cannot be formatted: {exc}"
            continue
        matches = sorted(glob.glob(glob.escape(os.fspath(label_root)) + "/" + relative, recursive=True))
        outside = next((problem for m in matches for problem in [mask_location(Path(m), label_root)] if problem), None)
        if outside:
            problems[item.item_id] = f"labels.pattern {relative!r}: {outside}"
        elif len(matches) == 1:
            found[item.item_id] = (_rel(Path(matches[0]), root),)
        elif not matches:
            problems[item.item_id] = f"no mask file matches {relative!r} under the label folder"
        else:
            problems[item.item_id] = (f"{len(matches)} mask files match {relative!r}: "
                                      + ", ".join(_rel(Path(m), root) for m in matches[:5]) + ": ambiguous")
    return found, problems


def mask_location(path: Path, label_root: Path) -> str | None:
    """Why the mask file ``path`` may not be read, or ``None`` when it may.

    The rule for every mask path (pattern or table): once resolved (``..`` and symlinks
    followed), it lies inside the label folder ``label_root`` (itself resolved), and it is a
    file. A table path is never absolute.
    """
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(label_root):
        return f"resolves to {real}, outside the label folder {label_root}: refused (masks are read from labels.folder)"
    if not real.exists():
        return f"no such file in the label folder {label_root}"
    if not real.is_file():
        return "not a file"
    return None


def _pair_mask_table(items: list[ItemRef], root: Path, label_root: Path, labels: Any, memo: FingerprintMemo,
                     table: Path):
    from medflow.sources.labels.mask_table import pair_by_table, read_mask_table

    rows, malformed = read_mask_table(table, labels.join_on, labels.path_column)

    def locate(text: str) -> tuple[str | None, str | None]:
        if Path(text).is_absolute() or Path(text).expanduser() != Path(text):
            return None, "an absolute path: table paths are relative to the label folder"
        path = label_root / text
        problem = mask_location(path, label_root)
        return (None, problem) if problem else (_rel(path, root), None)

    keys = {item.item_id: _item_uids(item, memo).get(labels.join_on, "").strip() for item in items if item.files}
    found, problems, unpaired = pair_by_table(keys, rows, labels.join_on, locate)
    unpaired += [(_rel(table, root), f"not a DICOM file: the labels table; line {line}: {why}: row ignored")
                 for line, why in malformed]
    return found, problems, unpaired
