"""Discovery of a DICOM folder: which files are images, and how they group into items.

Only headers are read here (once per file); pixels are read by
:func:`medflow.sources.series.read_item` when an item is built.

Rules, in the order they are applied to each file under ``root`` (walked
recursively, folders in sorted order, symlinked folders not followed):

1. The POSIX path relative to ``root`` must pass ``filter.include`` /
   ``filter.exclude`` (see :mod:`medflow.sources.filters`); files left out here are
   not read and not reported.
2. Hidden files and folders (name starting with ``.``) and media directory files
   (``DICOMDIR``, Philips ``DIRFILE``, or any file whose MediaStorageSOPClassUID is
   Media Storage Directory Storage) are skipped and reported.
3. The header is read with ``pydicom.dcmread(stop_before_pixels=True)``
   (:func:`read_image_header`). A file is an image when that read stops *at* a
   Pixel Data element (7FE0,0010): the next four bytes of the file are that tag.
   A file that ends before any pixel data is reported as ``"truncated header: ..."``
   when it is visibly cut (no data set element at all, a last element shorter than
   its declared length, or image attributes Rows/Columns without pixel data),
   otherwise as ``"no pixel data (<SOP class>)"`` (SR, presentation states...).
   Files without the ``DICM`` marker at byte 128 are only tried as a raw data set
   when they start like one (a group 0002 or 0008 tag); anything else is
   ``"not a DICOM file"``.
4. ``filter.exclude_localizers``: ImageType (0008,0008) containing ``LOCALIZER`` is
   skipped as ``"localizer"``. ``filter.modality`` (exact, case-insensitive) and
   ``filter.series_description`` (glob, case-insensitive) skip the files of series
   they do not select.

Grouping: a file with NumberOfFrames > 1 is an item of its own (kind
``"multiframe"``, id from SeriesInstanceUID and SOPInstanceUID). So is a single-frame
file without ImagePositionPatient or ImageOrientationPatient in a series of several files
(CR, DX, MG, US, secondary captures: 2-D images that no geometry can stack; id from
SeriesInstanceUID and SOPInstanceUID). Other single-frame files
group by SeriesInstanceUID (kind ``"series"``); a series is split into several
items when its files differ in ImageOrientationPatient (by more than
``ORIENTATION_TOLERANCE`` = 1e-3 in a direction cosine), in Rows/Columns, or in
EchoNumbers (multi-echo acquisitions store every position once per echo). A split item's id hashes the
distinguishing values too (e.g. ``EchoNumbers=2``), so each is stable on its own.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG
from typing import TYPE_CHECKING, Any

from medflow.errors import InputError
from medflow.sources.base import ItemRef, item_fingerprint, make_item_id
from medflow.sources.filters import description_selected, modality_selected, path_selected
from medflow.sources.fingerprint import FingerprintMemo
from medflow.sources.prescan import SERIES, ChunkMap, prescan
from medflow.threads import usable_cores

if TYPE_CHECKING:  # pydicom is imported where a header is parsed: memoized discovery never needs it
    from pydicom.dataset import Dataset

    from medflow.recipe.model import SeriesFilter  # pydantic: not for a worker that only reads headers

_DEFLATED_EXPLICIT_VR_LE = "1.2.840.10008.1.2.1.99"
MEDIA_DIRECTORY_NAMES = frozenset({"DICOMDIR", "DIRFILE"})
MEDIA_STORAGE_DIRECTORY_UID = "1.2.840.10008.1.3.10"

# (7FE0,0010) Pixel Data, (7FE0,0008) Float Pixel Data, (7FE0,0009) Double Float Pixel Data,
# as the 4 tag bytes appear in little- and big-endian files.
_PIXEL_DATA_TAG_BYTES = {b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10"}
_FLOAT_PIXEL_DATA_TAG_BYTES = {
    b"\xe0\x7f\x08\x00",
    b"\x7f\xe0\x00\x08",
    b"\xe0\x7f\x09\x00",
    b"\x7f\xe0\x00\x09",
}
# A data set written without preamble starts with a group 0002 or 0008 element.
_RAW_DATASET_STARTS = (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08")
_UNDEFINED_LENGTH = 0xFFFFFFFF
# Objects that may carry pixel data but are never images to build (PS3.4 B.5): segmentations,
# structure sets, SR, presentation states, key object selections; by SOP class, else by Modality.
NOT_IMAGES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT Structure Set",
    "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR", "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR", "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR",
    "1.2.840.10008.5.1.4.1.1.11.1": "Grayscale Softcopy Presentation State",
    "1.2.840.10008.5.1.4.1.1.88.59": "Key Object Selection Document",
}
NOT_IMAGE_MODALITIES = frozenset({"SEG", "RTSTRUCT", "SR", "PR", "KO"})
# Direction cosines closer than this (about 0.06 degrees) are the same orientation.
ORIENTATION_TOLERANCE = 1e-3
#: Threads hashing a discovery's new files at most (reading from the page cache stops scaling before).
DIGEST_THREADS = 8


class HeaderProblem(Exception):
    """A file is not a usable image; ``reason`` is one line for the user.

    ``series_uid`` is the SeriesInstanceUID read from a cut-off header, when it got
    that far: the broken file then fails its own series instead of silently leaving
    a hole in it.
    """

    def __init__(self, reason: str, series_uid: str | None = None):
        self.reason = reason
        self.series_uid = series_uid
        super().__init__(reason)


@dataclass
class Discovery:
    """What :func:`discover_dicom` found.

    Attributes:
        items: the items, sorted by ``item_id``.
        skipped: ``(relative POSIX path, one-line reason)`` for every file (or hidden
            folder, with a trailing ``/``) that was looked at and left out.
    """

    items: list[ItemRef] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: relative path -> content digest of the items' files, when known without asking the memo
    #: (a snapshot of an unchanged folder: :mod:`medflow.sources.discovery_snapshot`)
    digests: dict[str, str] | None = None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _os_reason(exc: OSError) -> str:
    """An OS error in a few words: ``dangling or looping symbolic link (ELOOP)``, ``permission denied (EACCES)``."""
    import errno

    if exc.errno in (errno.ELOOP, errno.ENOENT):
        return f"dangling or looping symbolic link ({errno.errorcode[exc.errno]})"
    name = errno.errorcode.get(exc.errno or 0, "")
    text = (exc.strerror or str(exc)).lower()
    return f"{text} ({name})" if name else text


def _truncation(ds: Dataset, size: int) -> str | None:
    """Why a header that ended without pixel data looks cut short, or ``None``."""
    if len(ds) == 0:
        return f"truncated header: file ends at byte {size} before any data set element"
    last_tag = list(ds.keys())[-1]
    elem = ds.get_item(last_tag)
    if (
        isinstance(elem, _raw_data_element())
        and elem.length != _UNDEFINED_LENGTH
        and elem.value is not None
        and len(elem.value) < elem.length
    ):
        return f"truncated header: file ends at byte {size} inside element {last_tag}"
    if "Rows" in ds and "Columns" in ds:
        return (
            f"truncated header: file ends at byte {size} before the pixel data "
            "(Rows/Columns present; or the pixel data was stripped)"
        )
    return None


# VRs a Pixel Data element can carry in an explicit VR encoding (PS3.5 A.4, 8.2; UN after a
# dictionary-less copy). The VR is read from the element itself, not from the transfer syntax:
# some writers encode the data set in implicit VR under an explicit VR transfer syntax, and
# pydicom reads those by looking at the bytes too.
_PIXEL_DATA_VRS = {b"OB", b"OW", b"UN"}
_ITEM_TAG = (0xFFFE, 0xE000)
_SEQUENCE_DELIMITER_TAG = (0xFFFE, 0xE0DD)


def _raw_data_element() -> type:
    from pydicom.dataelem import RawDataElement

    return RawDataElement


def _declared_int(ds: Dataset, keyword: str, default: int | None) -> int | None:
    value = ds.get(keyword)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _native_pixel_bytes(ds: Dataset) -> tuple[int, str] | None:
    """Bytes of native (uncompressed) pixel data the header declares, with the factors named.

    PS3.5 8.1.1: Rows x Columns x NumberOfFrames x SamplesPerPixel values of BitsAllocated
    bits each, bit-packed when BitsAllocated is 1; PS3.3 C.7.6.3.1.2: YBR_FULL_422 stores two
    chroma values per two pixels (2 values per pixel instead of 3). ``None`` when an
    attribute is missing or not a number (the decoder names it).
    """
    rows = _declared_int(ds, "Rows", None)
    cols = _declared_int(ds, "Columns", None)
    bits = _declared_int(ds, "BitsAllocated", None)
    samples = _declared_int(ds, "SamplesPerPixel", 1)
    frames = _declared_int(ds, "NumberOfFrames", 1) or 1
    if None in (rows, cols, bits, samples) or bits <= 0 or (bits != 1 and bits % 8):
        return None
    values_per_pixel = samples
    if samples == 3 and str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
        values_per_pixel = 2
    values = rows * cols * frames * values_per_pixel
    expected = (values + 7) // 8 if bits == 1 else values * (bits // 8)
    what = (
        f"Rows {rows} x Columns {cols} x NumberOfFrames {frames} x SamplesPerPixel {samples} "
        f"at BitsAllocated {bits}"
    )
    return expected, what


def _native_length_problem(ds: Dataset, length: int) -> str | None:
    """Why ``length`` bytes of native pixel data cannot hold the declared image, or ``None``.

    Checked before anything is allocated: a header declaring 65535 x 65535 pixels over
    512 x 512 of data must fail in one line, not in a 16 GiB allocation. More data than
    declared is accepted (a trailing pad byte, PS3.5 7.1.1; pydicom ignores the excess).
    """
    declared = _native_pixel_bytes(ds)
    if declared is None or length >= declared[0]:
        return None
    expected, what = declared
    return (
        f"pixel data too short for the declared image: {what} needs {expected} bytes, "
        f"Pixel Data (7FE0,0010) holds {length} (PS3.5 8.1.1)"
    )


def _pixel_data_problem(fp, size: int, ds: Dataset, little_endian: bool) -> str | None:
    """Check the Pixel Data element at ``fp``'s position against the file and the header.

    A few reads and seeks, no decoding and no allocation of pixel arrays.

    Native data: the declared length must fit in the file and hold the image the header
    declares (:func:`_native_length_problem`). Encapsulated data (undefined length,
    PS3.5 A.4): every item must fit, the sequence delimitation item (FFFE,E0DD) must be
    present (JPEG decoders otherwise decode a cut-off last fragment without complaint), and
    the frame count must agree with NumberOfFrames: at least one fragment per frame (a
    fragment holds data of one frame at most), as many Basic Offset Table entries as frames
    when that table is not empty, and likewise for an Extended Offset Table (7FE0,0001).
    """
    start = fp.tell()
    head = fp.read(8)
    if len(head) < 8:
        return "truncated pixel data: file ends inside the Pixel Data element header"
    endian = "<" if little_endian else ">"
    if head[4:6] in _PIXEL_DATA_VRS:  # explicit VR: 2 bytes VR, 2 reserved, 4 bytes length
        extra = fp.read(4)
        if len(extra) < 4:
            return "truncated pixel data: file ends inside the Pixel Data element header"
        (length,), value_start = struct.unpack(endian + "L", extra), start + 12
    else:  # implicit VR: 4 bytes length
        (length,), value_start = struct.unpack(endian + "L", head[4:8]), start + 8
    if length != _UNDEFINED_LENGTH:
        if value_start + length > size:
            return f"truncated pixel data: {size - value_start} of {length} bytes present"
        return _native_length_problem(ds, length)
    return _encapsulated_problem(fp, value_start, size, ds)


def _encapsulated_problem(fp, value_start: int, size: int, ds: Dataset) -> str | None:
    """The encapsulated half of :func:`_pixel_data_problem` (items are always little endian)."""
    fp.seek(value_start)
    items: list[int] = []  # item lengths: the Basic Offset Table, then the fragments
    while True:
        item = fp.read(8)
        if len(item) < 8:
            return "truncated pixel data: file ends before the sequence delimiter (FFFE,E0DD)"
        group, element, length = struct.unpack("<HHL", item)
        if (group, element) == _SEQUENCE_DELIMITER_TAG:
            break
        if (group, element) != _ITEM_TAG:
            return f"corrupt pixel data: tag ({group:04X},{element:04X}) among the fragments"
        if length == _UNDEFINED_LENGTH or fp.tell() + length > size:
            return "truncated pixel data: a fragment runs past the end of the file"
        items.append(length)
        fp.seek(length, 1)
    frames = _declared_int(ds, "NumberOfFrames", 1) or 1
    fragments = len(items) - 1
    if fragments < frames:
        return (
            f"encapsulated pixel data holds {max(fragments, 0)} fragment(s) for NumberOfFrames {frames}: "
            "frames are missing (PS3.5 A.4: a fragment holds data of one frame at most)"
        )
    if items[0] and items[0] // 4 != frames:
        return (
            f"Basic Offset Table lists {items[0] // 4} frame(s), NumberOfFrames says {frames} (PS3.5 A.4)"
        )
    extended = ds.get("ExtendedOffsetTable")
    if isinstance(extended, bytes) and extended and len(extended) // 8 != frames:
        return (
            f"Extended Offset Table (7FE0,0001) lists {len(extended) // 8} frame(s), "
            f"NumberOfFrames says {frames} (PS3.3 C.7.6.3.1.8)"
        )
    return None


#: Attribute of a data set from :func:`read_image_header`: the file offset of its Pixel Data
#: element (absent for a deflated file, whose offsets are the inflated data set's).
PIXEL_DATA_OFFSET = "_medflow_pixel_data_offset"


def read_image_header(path: Path, check_pixel_data: bool = False) -> Dataset:
    """Read the header of an image file (everything before Pixel Data), once.

    Args:
        path: the file.
        check_pixel_data: also check that the pixel data is wholly present and agrees
            with the declared Rows, Columns, NumberOfFrames, SamplesPerPixel and
            BitsAllocated (:func:`_pixel_data_problem`); a few seeks, no decoding, nothing
            allocated in proportion to the declared size.

    Returns:
        The data set without pixel data (file meta in ``ds.file_meta``; the offset of the
        Pixel Data element as its :data:`PIXEL_DATA_OFFSET` attribute).

    Raises:
        HeaderProblem: not DICOM, a media directory, truncated, unreadable, no
            (integer) pixel data, or (``check_pixel_data``) pixel data that cannot hold
            the declared image; ``reason`` says which, on one line.
    """
    problem = None
    try:
        with open(path, "rb") as fp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's value warnings would flood a big scan
            size = os.fstat(fp.fileno()).st_size
            head = fp.read(132)
            fp.seek(0)
            has_marker = len(head) == 132 and head[128:132] == b"DICM"
            if not has_marker and not head.startswith(_RAW_DATASET_STARTS):
                # before importing pydicom: a README or LICENSE beside the series costs no import
                raise HeaderProblem("not a DICOM file")
            import pydicom
            from pydicom.errors import InvalidDicomError

            try:
                ds = pydicom.dcmread(fp, stop_before_pixels=True, force=not has_marker)
            except InvalidDicomError as exc:
                raise HeaderProblem("not a DICOM file") from exc
            meta = getattr(ds, "file_meta", None)
            stream, stream_size = fp, size
            if str(getattr(meta, "TransferSyntaxUID", "")) == _DEFLATED_EXPLICIT_VR_LE:
                # pydicom inflated the whole data set into memory (ds.buffer) and left it at the
                # element after the header: positions there are the inflated data set's. Not
                # kept: the header would hold the whole file, pixels included (~0.5 MB a slice).
                stream = ds.buffer
                stream_size = len(stream.getvalue())
                ds.buffer = None
            pixel_pos = stream.tell()
            next_tag = stream.read(4)
            if stream is fp and next_tag in _PIXEL_DATA_TAG_BYTES:
                setattr(ds, PIXEL_DATA_OFFSET, pixel_pos)
            if check_pixel_data and next_tag in _PIXEL_DATA_TAG_BYTES:
                stream.seek(pixel_pos)
                little_endian = ds.original_encoding[1] is not False
                problem = _pixel_data_problem(stream, stream_size, ds, little_endian)
    except HeaderProblem:
        raise
    except OSError as exc:
        raise HeaderProblem(f"cannot read file: {_one_line(exc)}") from exc
    except Exception as exc:  # pydicom raises many types on malformed headers
        raise HeaderProblem(f"unreadable header: {_one_line(exc)}") from exc

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if not has_marker and "SOPClassUID" not in ds and "Rows" not in ds:
                raise HeaderProblem("not a DICOM file")
            media_class = str(getattr(meta, "MediaStorageSOPClassUID", ""))
            if media_class == MEDIA_STORAGE_DIRECTORY_UID or "DirectoryRecordSequence" in ds:
                raise HeaderProblem("DICOM media directory (DICOMDIR), not an image")
            if next_tag in _FLOAT_PIXEL_DATA_TAG_BYTES:
                raise HeaderProblem("float pixel data (7FE0,0008/0009) is not supported")
            if next_tag not in _PIXEL_DATA_TAG_BYTES:
                truncated = _truncation(ds, size)
                if truncated:
                    raise HeaderProblem(truncated, str(ds.get("SeriesInstanceUID", "")) or None)
                sop_class = ds.get("SOPClassUID")
                name = getattr(sop_class, "name", None) or str(sop_class or "unknown SOP class")
                if name.endswith("Image Storage"):
                    # An image SOP class always carries pixel data: this file was cut short.
                    raise HeaderProblem(
                        f"truncated: file ends at byte {size} before the pixel data of a {name} instance",
                        str(ds.get("SeriesInstanceUID", "")) or None,
                    )
                raise HeaderProblem(f"no pixel data ({name})")
            if problem:
                raise HeaderProblem(problem, str(ds.get("SeriesInstanceUID", "")) or None)
    except HeaderProblem:
        raise
    except Exception as exc:  # the values judged here are converted now: a malformed one raises anything
        raise HeaderProblem(f"unreadable header attribute: {_one_line(exc)}") from exc
    return ds


@dataclass(frozen=True, slots=True)
class _FileInfo:
    rel: str
    modality: str
    series_uid: str
    sop_uid: str
    description: str
    image_type: tuple[str, ...]
    n_frames: int
    orientation: tuple[float, ...] | None
    size: tuple[int, int]
    echo: str
    has_position: bool = True
    sop_class: str = ""


def _file_info(rel: str, ds: Dataset) -> _FileInfo:
    try:
        iop = ds.get("ImageOrientationPatient")
        orientation = tuple(float(v) for v in iop) if iop else None
        rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        echo = ds.get("EchoNumbers")
        echo_text = "\\".join(str(v) for v in echo) if isinstance(echo, list | tuple) else str(echo or "")
        image_type = ds.get("ImageType") or ()
        image_type = (image_type,) if isinstance(image_type, str) else tuple(image_type)
        return _FileInfo(
            rel=rel,
            modality=str(ds.get("Modality") or "").strip(),
            series_uid=str(ds.get("SeriesInstanceUID") or "").strip(),
            sop_uid=str(ds.get("SOPInstanceUID") or "").strip(),
            description=str(ds.get("SeriesDescription") or ""),
            image_type=tuple(str(v).strip().upper() for v in image_type),
            n_frames=int(ds.get("NumberOfFrames") or 1),
            orientation=orientation,
            size=(rows, cols),
            echo=echo_text,
            has_position=bool(ds.get("ImagePositionPatient")),
            sop_class=str(ds.get("SOPClassUID") or "").strip(),
        )
    except Exception as exc:  # pydicom converts values lazily and raises many types on malformed ones
        raise HeaderProblem(f"unreadable header attribute: {_one_line(exc)}", _series_uid_or_none(ds)) from exc


def _series_uid_or_none(ds: Dataset) -> str | None:
    """The file's SeriesInstanceUID when it can be read (its series then fails naming the file), else None."""
    try:
        return str(ds.get("SeriesInstanceUID") or "").strip() or None
    except Exception:
        return None


# Bump when the facts read from a header, or the rules that read them, change.
_HEADER_MEMO = "discovery-header-v6"  # v6: "read" as JSON text
# Bump when the rules that make items of the files' facts change (a snapshot of another version is not used).
_ITEM_RULES = 1


def _memoized_file_info(rel: str, path: str | Path, memo: FingerprintMemo, scanned: dict | None = None) -> _FileInfo:
    """The file's header facts, from the memo while the file is unchanged (no re-parse on rebuilds).

    ``scanned``: the facts :func:`header_facts` gave for the file as it is now (a prescan on
    worker processes, :mod:`medflow.sources.prescan`), used as the memo's would be.

    Raises:
        HeaderProblem: as :func:`read_image_header`; also for a file that cannot even be
            looked at (dangling or looping symbolic link, permission denied).
    """
    cached = scanned
    if cached is None:
        try:
            cached = memo.get_extra(path, _HEADER_MEMO)
        except OSError as exc:
            raise HeaderProblem(f"cannot read file: {_os_reason(exc)}") from None
    if cached is None:
        cached = header_facts(path)
        memo.set_extra(path, _HEADER_MEMO, cached)
    if "problem" in cached:
        raise HeaderProblem(cached["problem"], cached.get("series_uid"))
    try:
        return _shared_info(rel, cached)
    except (TypeError, struct.error):  # a value of the wrong type (a damaged memo entry): kept as it is
        return _shared_info(rel, cached, share=False)


def _shared_info(rel: str, facts: dict, share: bool = True) -> _FileInfo:
    """The :class:`_FileInfo` of a file's header ``facts``, the values files of a series repeat as one object.

    Discovery holds one per file until the items are made (~0.6 KB a file less). Orientations
    are matched by their bytes, so -0.0 stays -0.0. The table is bounded as :func:`_shared`'s.
    ``share=False``: every value as it is.

    Raises:
        TypeError, struct.error: a value cannot be shared (not hashable, not a float).
    """
    table = _info_values
    if len(table) > 4096:
        table.clear()
    one = table.setdefault if share else _as_it_is
    orientation = facts["orientation"]
    if orientation is not None:
        orientation = tuple(orientation)
        if share and len(orientation) == 6:
            orientation = one(_SIX_FLOATS.pack(*orientation), orientation)
    image_type, size = tuple(facts["image_type"]), tuple(facts["size"])
    modality, series_uid, description = facts["modality"], facts["series_uid"], facts["description"]
    echo, sop_class = facts["echo"], facts.get("sop_class", "")
    return _FileInfo(rel, one(modality, modality), one(series_uid, series_uid), facts["sop_uid"],
                     one(description, description), one(image_type, image_type), facts["n_frames"], orientation,
                     one(size, size), one(echo, echo), facts["has_position"], one(sop_class, sop_class))


def header_facts(path: str | Path) -> dict:
    """What discovery keeps of a file's header (JSON-able, memoized), read once.

    Either the :class:`_FileInfo` fields (without ``rel``) and ``read``, what reading the file
    needs as JSON text (:func:`read_facts_of` parses it; ``None`` for multi-frame files), or ``{"problem": reason,
    "series_uid": uid or None}`` for a file that is not a readable image (the reason of
    :class:`HeaderProblem`). Never raises for a file's content or an unreadable file.
    """
    try:
        regular = S_ISREG(os.stat(path).st_mode)
    except OSError as exc:
        return {"problem": f"cannot read file: {_os_reason(exc)}", "series_uid": None}
    if not regular:  # a FIFO would block the open forever, a device never end
        return {"problem": "not a regular file", "series_uid": None}
    raw = _raw_header_facts(path)
    if raw is not None:
        fields, read = raw
        return _shared({**fields, "read": _as_text(read)})  # dataclasses.asdict(_FileInfo) without "rel", as below
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # values are converted here: invalid ones would flood a big scan
            ds = read_image_header(path)
            info = _file_info("", ds)
            read = _read_facts(ds) if info.n_frames == 1 else None
    except HeaderProblem as problem:
        return {"problem": problem.reason, "series_uid": problem.series_uid}
    facts = dataclasses.asdict(info)
    del facts["rel"]
    facts["read"] = _as_text(read)
    return _shared(facts)


_SHARED_FIELDS = ("modality", "series_uid", "description", "image_type", "orientation", "size", "echo", "sop_class")
_shared_values: dict = {}  # value (or packed floats) -> the one object kept for it


_info_values: dict = {}  # the same, for the values of the _FileInfo of a file


def forget_shared_values() -> None:
    """Empty the tables of :func:`_shared` and :func:`_shared_info`: called when a discovery's walk, or a worker's chunk, ends."""
    _shared_values.clear()
    _info_values.clear()


_SIX_FLOATS = struct.Struct("6d")  # an orientation's bytes: its key in _info_values


def _as_it_is(_key: Any, value: Any) -> Any:
    return value


def _shared(facts: dict) -> dict:
    """``facts`` with the values files of a series repeat (UIDs, orientation, ...) as one object.

    The memo keeps the facts of every file of the source for the whole build: ~1 KB a file
    less. Orientation tuples are matched by their bytes, so -0.0 stays -0.0. Bounded: the
    table starts again past 4,096 distinct values.
    """
    if len(_shared_values) > 4096:
        _shared_values.clear()
    for name in _SHARED_FIELDS:
        value = facts.get(name)
        if value is None:
            continue
        try:
            key = struct.pack(f"{len(value)}d", *value) if name == "orientation" else value
            facts[name] = _shared_values.setdefault(key, value)
        except (struct.error, TypeError):  # not floats, or not hashable: kept as it is
            continue
    return facts


def _as_text(read: list | None) -> str | None:
    """Reading facts as JSON text: the memo keeps them for every file of the source, and only the
    items that run read them (:func:`read_facts_of`): ~1 KB less a file than as Python objects."""
    return None if read is None else json.dumps(read, separators=(",", ":"))


def _raw_header_facts(path: Path):
    """``(_FileInfo fields, reading facts)`` from the header bytes, without pydicom, or ``None``.

    :func:`medflow.sources.rawheader.scan_file` returns the very facts of the pydicom path
    below for the plain native files it is sure of (their pixel key is of another kind, see
    there) and declines every other file, which pydicom then reads and judges.
    """
    from medflow.sources.rawheader import scan_file

    return scan_file(path)


def _read_facts(ds: Dataset):
    from medflow.sources.series import read_facts

    try:
        return read_facts(ds)
    except Exception:  # any malformed value: the reader parses the file and names the problem
        return None


def read_facts_of(path: Path, memo: FingerprintMemo):
    """The reading facts discovery memoized for ``path`` (:func:`medflow.sources.series.read_facts`), or None."""
    text = read_facts_text_of(path, memo)
    return None if text is None else json.loads(text)


def read_facts_text_of(path: Path | str, memo: FingerprintMemo) -> str | None:
    """:func:`read_facts_of` as the JSON text the memo keeps (the memo's own string: no copy), or None."""
    try:
        cached = memo.get_extra(path, _HEADER_MEMO)
    except OSError:
        return None
    text = cached.get("read") if isinstance(cached, dict) else None
    return text if isinstance(text, str) else None


def _walk(root: Path, flt: SeriesFilter, skipped: list[tuple[str, str]]):
    """Yield ``(relative POSIX path, absolute path as a str)`` of candidate files, in sorted order."""

    def unreadable(error: OSError) -> None:
        where = Path(error.filename).relative_to(root).as_posix() if error.filename else "."
        skipped.append((where + "/", f"cannot list folder: {error.strerror or error}"))

    every_file = list(flt.include) == ["**"] and not flt.exclude  # the default: no pattern to match
    top = os.fspath(root)
    start = len(top) if top.endswith(os.sep) else len(top) + 1  # the file system's root ends with its separator
    for dirpath, dirnames, filenames in os.walk(top, onerror=unreadable):
        # os.walk joins each folder onto ``top``: its relative path without pathlib (~10 us a folder)
        prefix = "" if dirpath == top else dirpath[start:].replace(os.sep, "/") + "/"
        hidden = sorted(d for d in dirnames if d.startswith("."))
        for name in hidden:
            skipped.append((f"{prefix}{name}/", "hidden folder, not searched"))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            rel = prefix + name
            if not every_file and not path_selected(rel, flt.include, flt.exclude):
                continue
            if name.startswith("."):
                skipped.append((rel, "hidden file"))
            elif name.upper() in MEDIA_DIRECTORY_NAMES:
                skipped.append((rel, "DICOM media directory (DICOMDIR), not an image"))
            else:
                yield rel, os.path.join(dirpath, name)  # a str: pathlib costs more than the memo look-up


def _select(info: _FileInfo, flt: SeriesFilter) -> str | None:
    """Reason a readable image file is left out by the series-level filter, or ``None``."""
    if info.size[0] <= 0 or info.size[1] <= 0:
        return "no Rows/Columns (0028,0010/0011)"
    if info.sop_class in NOT_IMAGES or info.modality.upper() in NOT_IMAGE_MODALITIES:
        what = NOT_IMAGES.get(info.sop_class) or info.modality
        return f"{what}: excluded, not an image (labels are read with source.labels)"
    if flt.exclude_localizers and "LOCALIZER" in info.image_type:
        return "localizer"
    if not modality_selected(info.modality, flt.modality):
        return f"modality {info.modality or '(none)'} not selected by the filter"
    if not description_selected(info.description, flt.series_description):
        return "series description not selected by the filter"
    return None


def _orientation_group(
    orientation: tuple[float, ...] | None, seen: list[tuple[float, ...]]
) -> tuple[float, ...] | None:
    """The first orientation in ``seen`` equal to ``orientation`` within
    ORIENTATION_TOLERANCE per direction cosine (appending it when new).

    A tolerance, not rounding: rounding would split values that straddle a rounding
    boundary (0.12344 vs 0.12346) however close they are.
    """
    if orientation is None:
        return None
    for known in seen:
        if len(known) != len(orientation):
            continue
        if max(abs(a - b) for a, b in zip(known, orientation, strict=True)) <= ORIENTATION_TOLERANCE:
            return known
    seen.append(orientation)
    return orientation


def _split_label(key, varying: list[int]) -> str:
    orientation, (rows, cols), echo = key
    parts = []
    if 0 in varying:
        parts.append(
            "ImageOrientationPatient="
            + ("\\".join(f"{v:.4f}" for v in orientation) if orientation else "none")
        )
    if 1 in varying:
        parts.append(f"Rows={rows},Columns={cols}")
    if 2 in varying:
        parts.append(f"EchoNumbers={echo or 'none'}")
    return ";".join(parts)


def _make_item(root: Path, infos: list[_FileInfo], kind, id_parts: list[str], notes, memo) -> ItemRef:
    infos = sorted(infos, key=lambda i: i.rel)
    first = infos[0]
    files = tuple(i.rel for i in infos)
    base = os.fspath(root)
    return ItemRef(
        item_id=make_item_id(first.modality, *id_parts),
        root=base,
        files=files,
        kind=kind,
        modality=first.modality,
        series_description=first.description,
        fingerprint=item_fingerprint([(rel, memo.digest(os.path.join(base, rel))) for rel in files]),
        notes=tuple(notes),
    )


def discover_dicom(
    root: Path, filter: SeriesFilter, memo: FingerprintMemo, mismatched_size: str = "fail",  # noqa: A002
    map_chunks: ChunkMap | None = None, snapshots: Path | None = None, keep_snapshot: bool = True,
) -> Discovery:
    """Find the image items of a DICOM folder (rules in the module docstring).

    Args:
        root: the source folder.
        filter: which files and series enter the dataset.
        memo: the files' content digests (memoized) the items' fingerprints are made of.
        mismatched_size: files of one series (and orientation, echo) with other Rows/Columns than
            most: ``"fail"`` the item naming them, or ``"split"`` into one item per size.
        map_chunks: worker processes to read many new files on (:mod:`medflow.sources.prescan`);
            the result is the same without.
        snapshots: a folder of discovery snapshots (:mod:`medflow.sources.discovery_snapshot`):
            the result for an unchanged listing is read from there (no memo look-up), and
            kept there when ``keep_snapshot``. ``None``: neither.

    Returns:
        A :class:`Discovery` with the items sorted by ``item_id`` and every skipped
        file with its reason (a skipped file is never an error).

    Raises:
        InputError: ``root`` is not a folder.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise InputError(os.fspath(root), "DICOM source is not a folder")
    skipped: list[tuple[str, str]] = []
    series: dict[str, list[_FileInfo]] = defaultdict(list)
    multiframe: dict[str, _FileInfo] = {}
    broken: dict[str, list[tuple[str, str]]] = defaultdict(list)
    candidates = list(_walk(root, filter, skipped))
    snapshot = None
    if snapshots is not None:
        from medflow.sources.discovery_snapshot import Snapshot

        settings = {"filter": filter.model_dump(mode="json"), "mismatched_size": mismatched_size,
                    "header_facts": _HEADER_MEMO, "item_rules": _ITEM_RULES}
        snapshot = Snapshot.of_listing(snapshots, root, settings, candidates, skipped)
        found = snapshot.load(os.fspath(root)) if snapshot is not None else None
        if found is not None:
            return Discovery(*found)
    scanned = prescan([path for _, path in candidates], memo, map_chunks, SERIES, _HEADER_MEMO)
    for rel, path in candidates:
        try:
            info = _memoized_file_info(rel, path, memo, scanned.get(path))
        except HeaderProblem as problem:
            if problem.series_uid:
                broken[problem.series_uid].append((rel, problem.reason))
            else:
                skipped.append((rel, problem.reason))
            continue
        reason = _select(info, filter)
        if reason:
            skipped.append((rel, reason))
        elif info.n_frames > 1:
            key = f"{info.series_uid}\\{info.sop_uid}"
            if key in multiframe:
                skipped.append((rel, f"duplicate: same SOPInstanceUID as {multiframe[key].rel}"))
            else:
                multiframe[key] = info
        else:
            # without SeriesInstanceUID (0020,000E) a file cannot join a series: an item of its own
            series[info.series_uid or f"(no series)\\{info.sop_uid or rel}"].append(info)

    forget_shared_values()  # the memo holds what was shared; nothing of the source stays here after
    base = os.fspath(root)  # the items' files, hashed on every core before each item asks for its own
    memo.digest_many([os.path.join(base, info.rel) for group in (*series.values(), multiframe.values())
                      for info in group], min(usable_cores(), DIGEST_THREADS))
    items = [
        _make_item(root, [info], "multiframe", [info.series_uid, info.sop_uid], (), memo)
        for info in multiframe.values()
    ]
    for series_uid, infos in series.items():
        if len(infos) > 1:
            flat = [info for info in infos if info.orientation is None or not info.has_position]
            for info in flat:  # CR, DX, MG, US, SC: images that no geometry can stack
                note = "2-D image without patient geometry (ImagePositionPatient/ImageOrientationPatient): an item of its own"
                items.append(_make_item(root, [info], "series", [series_uid, info.sop_uid], (note,), memo))
            infos = [info for info in infos if info not in flat]
            if not infos:
                continue
        groups: dict[tuple, list[_FileInfo]] = defaultdict(list)
        orientations: list[tuple[float, ...]] = []
        for info in infos:
            groups[(_orientation_group(info.orientation, orientations), info.size, info.echo)].append(info)
        odd_sizes: dict[tuple, list[tuple[str, str]]] = {}
        if mismatched_size == "fail":
            groups, odd_sizes = _refuse_odd_sizes(groups)
        if len(groups) == 1:
            [(key, members)] = groups.items()
            items.append(_with_odd(root, _make_item(root, members, "series", [series_uid], (), memo),
                                   odd_sizes.get(key, []), memo))
            continue
        keys = list(groups)
        varying = [k for k in range(3) if len({key[k] for key in keys}) > 1]
        for key, members in groups.items():
            label = _split_label(key, varying)
            note = f"series split into {len(groups)} items by differing attributes; this one: {label}"
            item = _make_item(root, members, "series", [series_uid, label], (note,), memo)
            items.append(_with_odd(root, item, odd_sizes.get(key, []), memo))
    items = [_attach_broken(root, item, broken, memo) for item in items]
    for series_uid, files in broken.items():
        if series_uid not in series:
            skipped.extend(files)  # no readable file of that series: the file stands alone
    items.sort(key=lambda item: item.item_id)
    if snapshot is not None and keep_snapshot:
        snapshot.save(items, skipped, lambda rel: memo.digest(os.path.join(base, rel)))
    return Discovery(items=items, skipped=skipped)


def _refuse_odd_sizes(
    groups: dict[tuple, list[_FileInfo]],
) -> tuple[dict[tuple, list[_FileInfo]], dict[tuple, list[tuple[str, str]]]]:
    """Merge groups that differ only in Rows/Columns: the most common size keeps the files, the others fail it.

    A slice of another size in a series is an error to report, not a reason to build two
    volumes silently. Returns the merged groups and, per group key, ``(file, reason)`` of its
    odd-sized files (the item then fails naming them and their sizes).
    """
    by_rest: dict[tuple, list[tuple]] = defaultdict(list)
    for key in groups:
        by_rest[(key[0], key[2])].append(key)
    merged: dict[tuple, list[_FileInfo]] = {}
    odd: dict[tuple, list[tuple[str, str]]] = {}
    for keys in by_rest.values():
        main = max(keys, key=lambda k: (len(groups[k]), k[1]))
        merged[main] = groups[main]
        rows, cols = main[1]
        for key in keys:
            if key is main:
                continue
            for info in groups[key]:
                reason = (f"Rows x Columns {info.size[0]}x{info.size[1]} differ from the {rows}x{cols} of the other "
                          f"{len(groups[main])} file(s) of its series (source.mismatched_size: split builds each size "
                          "as its own item)")
                odd.setdefault(main, []).append((info.rel, reason))
    return merged, odd


def _with_odd(root: Path, item: ItemRef, odd: list[tuple[str, str]], memo) -> ItemRef:
    """``item`` failing on its odd-sized files (they join its broken files and its fingerprint)."""
    if not odd:
        return item
    all_files = sorted(set(item.files) | {rel for rel, _ in odd})
    return dataclasses.replace(
        item,
        broken_files=tuple(sorted((*item.broken_files, *odd))),
        fingerprint=item_fingerprint([(rel, memo.digest(root / rel)) for rel in all_files]),
    )


def _attach_broken(root: Path, item: ItemRef, broken: dict[str, list[tuple[str, str]]], memo) -> ItemRef:
    """Give a series item the cut-off files of its series, so the item fails naming them."""
    if item.kind != "series" or not broken:
        return item
    series_uid = str(read_image_header(root / item.files[0]).get("SeriesInstanceUID", ""))
    files = broken.get(series_uid)
    if not files:
        return item
    all_files = sorted(set(item.files) | {rel for rel, _ in (*item.broken_files, *files)})
    return dataclasses.replace(
        item,
        broken_files=tuple(sorted((*item.broken_files, *files))),
        fingerprint=item_fingerprint([(rel, memo.digest(root / rel)) for rel in all_files]),
    )


def read_headers_for(item: ItemRef) -> list[Dataset]:
    """Headers (no pixel data) of an item's files, in ``item.files`` order.

    Raises:
        InputError: a file is missing or no longer a readable image (absolute path named).
    """
    headers = []
    for rel in item.files:
        path = Path(item.root) / rel
        try:
            headers.append(read_image_header(path))
        except HeaderProblem as problem:
            raise InputError(os.fspath(path), problem.reason) from problem
    return headers
