"""The ``index`` writer: one table of the dataset, Parquet (pyarrow) and CSV, written after all items.

One row per built item (``per_slice: true``: one per slice of the written array), from the items'
records and the plan's facts only (no pixel is read):

========================  ==========================================================================
column                    meaning
========================  ==========================================================================
``id``                    the item id
``patient``, ``study``,   PatientID, StudyInstanceUID, SeriesInstanceUID, AccessionNumber; keyed
``series``, ``accession`` pseudonyms in a de-identifying recipe (see :mod:`medflow.splits`)
``modality``, ``kind``    Modality; ``series``, ``multiframe`` or ``instance``
``description``, ``echo`` SeriesDescription (empty when de-identifying), EchoNumbers
``axes``, ``shape``,      of the written array (``shape`` as ``"1x1x512x512"``)
``dtype``
``n_slices``              slices of the ``zyx`` grid
``spacing_z/y/x``         mm; ``spacing_z`` empty for one slice or an uneven stack. Without patient
                          geometry (CR, DX, MG, US, SC): ``spacing_y/x`` as the file states it
                          (:func:`medflow.geometry.planar_spacing_record`), empty when it states none
                          or when a spatial step changed the image's rows x columns
``spacing_source``        ``geometry`` (the written grid's patient geometry), ``PixelSpacing``,
                          ``ImagerPixelSpacing``, ``ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor``
                          or empty (no spacing known)
``origin_x/y/z``          LPS mm of voxel (0, 0, 0)
``flags``                 ``;``-joined: ``no_geometry``, ``irregular``, ``tilted``, ``gap``, ``duplicates``,
                          ``regridded`` (no patient geometry and a spatial step changed rows x columns: the
                          file's spacing is in the manifest's ``meta.pixel_spacing``, the array's unknown)
``array``                 the item's ``.npy`` path (relative to the dataset folder), if any
``outputs``               every output path of the item, ``;``-joined
``split``, ``fold``       from ``splits:`` (``fold`` for k folds)
(table columns)           the joined user table's columns (a name taken above gets ``table_``)
``slice``, ``position_x/y/z``  with ``per_slice``: slice index and its ImagePositionPatient (LPS mm)
========================  ==========================================================================
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from medflow.geometry import from_record
from medflow.writers.atomic import atomic_write_bytes
from medflow.writers.records import DatasetRecords
from medflow.writers.registry import WriterParams, WrittenFile, register_writer

BASE_COLUMNS = (
    "id", "patient", "study", "series", "accession", "modality", "kind", "description", "echo",
    "axes", "shape", "dtype", "n_slices", "spacing_z", "spacing_y", "spacing_x", "spacing_source",
    "origin_x", "origin_y", "origin_z", "flags", "array", "outputs", "split", "fold",
)
SLICE_COLUMNS = ("slice", "position_x", "position_y", "position_z")
_INTS = {"n_slices", "fold", "slice"}
_FLOATS = {"spacing_z", "spacing_y", "spacing_x", "origin_x", "origin_y", "origin_z",
           "position_x", "position_y", "position_z"}


class IndexParams(WriterParams):
    """A table of the dataset (one row per item, or per slice) as Parquet and/or CSV."""

    dataset_input: ClassVar[str] = "records"

    kind: Literal["index"]
    name: str = Field("index", pattern=r"^[A-Za-z0-9_.-]+$", description="File name stem: index.parquet, index.csv.")
    folder: str = Field(".", description="Subfolder of the output folder for the index files.")
    formats: list[Literal["parquet", "csv"]] = Field(
        default_factory=lambda: ["parquet", "csv"], min_length=1,
        description="parquet (via pyarrow) and/or csv.")
    per_slice: bool = Field(False, description="One row per slice (with its position) instead of per item.")
    table: str | None = Field(
        None, description="CSV (relative to the recipe) joined by PatientID, AccessionNumber or StudyInstanceUID; "
        "its columns (e.g. class labels) are added. Default: splits.table, if any.")
    join_on: Literal["PatientID", "AccessionNumber", "StudyInstanceUID"] | None = Field(
        None, description="The table's key column; default the first of PatientID, AccessionNumber, "
        "StudyInstanceUID it has.")


def _flags(meta: dict[str, Any]) -> list[str]:
    geometry = meta.get("geometry")
    if not geometry:
        planar = meta.get("pixel_spacing") or {}
        return ["no_geometry"] + (["regridded"] if planar.get("spacing") and not planar.get("of_written_array") else [])
    flags = [] if geometry.get("regular", True) else ["irregular"]
    notes = " ".join(geometry.get("notes", [])).lower()
    flags += [flag for flag, word in (("tilted", "tilt"), ("gap", "gap"), ("duplicates", "duplicate")) if word in notes]
    return flags


def _in_plane_spacing(geometry: dict[str, Any] | None, planar: dict[str, Any] | None) -> dict[str, Any]:
    """``spacing_y``, ``spacing_x`` and ``spacing_source`` of the written array (see the module docstring)."""
    if geometry:
        return {"spacing_y": geometry["spacing"][1], "spacing_x": geometry["spacing"][2], "spacing_source": "geometry"}
    if planar and planar.get("spacing") and planar.get("of_written_array"):
        row, column = planar["spacing"]
        return {"spacing_y": row, "spacing_x": column, "spacing_source": planar["spacing_source"]}
    return {"spacing_y": None, "spacing_x": None, "spacing_source": ""}


def index_rows(records: DatasetRecords, params: IndexParams) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, rows) of the index: built items only, in id order."""
    table_name = params.table or ((records.splits or {}).get("spec", {}).get("table"))
    _, joined = records.tables.get(table_name, (None, {})) if table_name else (None, {})
    extra: list[str] = []
    for row in joined.values():
        extra += [c for c in row if c not in extra]
    rename = {c: (f"table_{c}" if c in BASE_COLUMNS or c in SLICE_COLUMNS else c) for c in extra}
    split_of = (records.splits or {}).get("items", {})
    rows = []
    for entry in sorted((e for e in records.items if e.get("status") == "ok"), key=lambda e: e["id"]):
        item_id, meta = entry["id"], entry.get("meta", {})
        subject = records.subjects.get(item_id, {})
        geometry, array = meta.get("geometry"), meta.get("array") or {}
        outputs = [o["path"] for o in entry.get("outputs", [])]
        split = split_of.get(item_id, "")
        row: dict[str, Any] = {
            "id": item_id, "modality": entry.get("modality", ""), "kind": entry.get("kind", ""),
            **{k: subject.get(k, "") for k in ("patient", "study", "series", "accession", "description", "echo")},
            "axes": array.get("axes", ""), "shape": "x".join(str(n) for n in array.get("shape", [])),
            "dtype": array.get("dtype", ""),
            "n_slices": geometry["n_slices"] if geometry else None,
            "spacing_z": geometry["spacing"][0] if geometry else None,
            **_in_plane_spacing(geometry, meta.get("pixel_spacing")),
            "origin_x": geometry["origin"][0] if geometry else None,
            "origin_y": geometry["origin"][1] if geometry else None,
            "origin_z": geometry["origin"][2] if geometry else None,
            "flags": ";".join(_flags(meta)), "array": next((p for p in outputs if p.endswith(".npy")), ""),
            "outputs": ";".join(outputs), "split": split,
            "fold": int(split[4:]) if split.startswith("fold") and split[4:].isdigit() else None,
        }
        row.update({rename[c]: v for c, v in joined.get(item_id, {}).items()})
        if not params.per_slice:
            rows.append(row)
            continue
        positions = from_record(geometry).slice_positions if geometry else [None] * int(
            (array.get("shape") or [1])[0])
        for index, position in enumerate(positions):
            rows.append({**row, "slice": index, **{
                f"position_{axis}": (position[i] if position else None) for i, axis in enumerate("xyz")}})
    columns = list(BASE_COLUMNS) + [rename[c] for c in extra]
    if params.per_slice:
        columns += list(SLICE_COLUMNS)
    return columns, rows


def _csv_bytes(columns: list[str], rows: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: ("" if row.get(c) is None else (repr(row[c]) if isinstance(row[c], float) else row[c]))
                         for c in columns})
    return buffer.getvalue().encode("utf-8")


def _parquet_bytes(columns: list[str], rows: list[dict[str, Any]]) -> bytes:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError("the index writer's parquet format needs pyarrow: pip install pyarrow "
                          "(or formats: [csv])") from exc

    def kind(column: str):
        return pa.int64() if column in _INTS else pa.float64() if column in _FLOATS else pa.string()

    def value(column: str, v: Any) -> Any:
        if v is None or v == "":
            return None if column in _INTS or column in _FLOATS else ("" if v == "" else None)
        return v if column in _INTS or column in _FLOATS else str(v)

    arrays = {c: pa.array([value(c, r.get(c)) for r in rows], type=kind(c)) for c in columns}
    table = pa.table(arrays)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


@register_writer("index", 2, IndexParams, per_item=False, reads_pixels=False)
def write_index(records: DatasetRecords, params: IndexParams, out_dir: Path) -> list[WrittenFile]:
    """Write a table of the dataset (id, patient/study/series keys, geometry, outputs, split, labels)."""
    columns, rows = index_rows(records, params)
    written = []
    for fmt in params.formats:
        relative = Path(params.folder) / f"{params.name}.{fmt}"
        data = _parquet_bytes(columns, rows) if fmt == "parquet" else _csv_bytes(columns, rows)
        digest = atomic_write_bytes(out_dir / relative, data)
        written.append(WrittenFile(relative.as_posix(), digest, len(data)))
    return written
