"""Pixel data and headers of DICOM files: raw native reads, pydicom decoding, header JSON.

The reader's low level, used by :mod:`medflow.sources.series`:

* :func:`read_native` reads the stored values of a native (uncompressed, little-endian)
  single-frame grayscale file straight from its bytes into a caller's buffer, with the
  file's header bytes in the same open; anything else is decoded by pydicom
  (:func:`decode_file`, :func:`iter_frames`).
* :func:`header_json` is a header as a DICOM JSON model dict (PS3.18 F.2), bulk binary values
  left out; :class:`LazyHeaders` builds these only when a step or a writer reads one.
"""

from __future__ import annotations

import base64
import hashlib
import os
import queue
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medflow.errors import InputError
from medflow.sources.decoders import decode_with, plugins_for, transfer_syntax_of

if TYPE_CHECKING:  # pydicom is imported where it is used: a build of native files never needs it
    from pydicom.dataset import Dataset

_DEFLATED_EXPLICIT_VR_LE = "1.2.840.10008.1.2.1.99"

BULK_DATA_THRESHOLD = 1024  # bytes of a binary value above which a header leaves it out
_BULK_MARKER = "medflow:bulk-data-left-out"


# Binary values that steps need whatever their size: LUT Data (Modality/VOI LUT Sequences)
# and the palette color lookup tables (plain and segmented), PS3.3 C.11.1, C.11.2, C.7.6.3.1.5-6.
_KEEP_BINARY_TAGS = frozenset({"00283006", "00281201", "00281202", "00281203", "00281221", "00281222", "00281223"})
# base64 length of a value of BULK_DATA_THRESHOLD bytes
_INLINE_LIMIT = 4 * ((BULK_DATA_THRESHOLD + 2) // 3)


def header_json(ds: Dataset) -> dict[str, Any]:
    """DICOM JSON model dict (PS3.18 F.2) without pixel data and without bulk binary values.

    Binary values over ``BULK_DATA_THRESHOLD`` bytes are left out, except the LUT and
    palette data in ``_KEEP_BINARY_TAGS``, which steps need.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = ds.to_json_dict(
            bulk_data_threshold=1 << 26,
            bulk_data_element_handler=lambda _elem: _BULK_MARKER,
            suppress_invalid_tags=True,
        )
    return _prune_bulk(data)


def _prune_bulk(node: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for tag, element in node.items():
        if tag.upper().startswith("7FE0") or element.get("BulkDataURI") == _BULK_MARKER:
            continue
        inline = element.get("InlineBinary")
        if inline is not None and len(inline) > _INLINE_LIMIT and tag.upper() not in _KEEP_BINARY_TAGS:
            continue
        if element.get("vr") == "SQ" and "Value" in element:
            element = {**element, "Value": [_prune_bulk(item) for item in element["Value"]]}
        out[tag] = element
    return out


def _is_deflated(ds: Dataset) -> bool:
    return str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "")) == _DEFLATED_EXPLICIT_VR_LE


def _whole_dataset(path: Path) -> Dataset:
    # force: the header already passed read_image_header, which reads preamble-less data sets too
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, force=True)


# Native little-endian transfer syntaxes whose Pixel Data is the raw stored values (PS3.5 A.1, A.2).
NATIVE_LITTLE_ENDIAN = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"


def native_frame(path: Path, ds: Dataset, out: np.ndarray | None = None) -> np.ndarray | None:
    """The one frame of a native little-endian 8/16-bit grayscale file, read straight from its bytes.

    Only when Pixel Data is the file's last element with exactly Rows x Columns values
    (checked on the element's own tag and length, PS3.5 7.1.2): then pydicom's native
    decoder returns these very bytes as the stored dtype when no value has bits set above
    BitsStored (checked; else pydicom's correction of those bits applies), so this is the
    same array without parsing the header again. ``None`` for anything else: the caller
    decodes with pydicom. ``out``: a C-contiguous (Rows, Columns) array of the stored dtype
    to read into (its content is undefined when ``None`` is returned).
    """
    if out is None:
        spec = _native_spec(ds)
        if spec is None:
            return None
        out = np.empty(spec[:2], dtype=spec[2])
    return out if read_native(path, ds, out) is not None else None


def _native_spec(ds: Dataset) -> tuple[int, int, np.dtype, int] | None:
    """(Rows, Columns, stored dtype, BitsStored) of a file :func:`read_native` can read, else None."""
    meta = getattr(ds, "file_meta", None)
    if str(getattr(meta, "TransferSyntaxUID", "")) not in NATIVE_LITTLE_ENDIAN:
        return None
    return frame_spec(ds)


def frame_spec(ds: Dataset) -> tuple[int, int, np.dtype, int] | None:
    """(Rows, Columns, stored dtype, BitsStored) of a single-frame 8/16-bit grayscale header, else None.

    The dtype is little endian: a native file's bytes, and what pydicom decodes to here.
    """
    try:
        bits = int(ds.get("BitsAllocated") or 0)
        if int(ds.get("SamplesPerPixel") or 1) != 1 or int(ds.get("NumberOfFrames") or 1) != 1 or bits not in (8, 16):
            return None
        rows, cols = int(ds.Rows), int(ds.Columns)
        signed = int(ds.get("PixelRepresentation") or 0) == 1
        stored_bits = int(ds.get("BitsStored") or bits)
    except (AttributeError, TypeError, ValueError):
        return None
    return rows, cols, np.dtype(("<i" if signed else "<u") + str(bits // 8)), stored_bits


def read_native(path: Path, ds: Dataset | dict[str, Any], out: np.ndarray) -> bytes | None:
    """Read a native file's one frame into ``out`` (see :func:`native_frame`); returns its header bytes.

    The header bytes are the file up to the Pixel Data element (what
    :func:`raw_header_dataset` parses back into ``ds``'s elements), read in the same open:
    one open and two reads per file. ``None`` (``out`` undefined) when the file is not such a
    file: the caller decodes with pydicom. ``ds``: the parsed header, or the facts discovery
    kept of it (:func:`medflow.sources.series.read_facts`).
    """
    if isinstance(ds, dict):  # discovery's facts (medflow.sources.series.read_facts)
        spec = (ds["rows"], ds["cols"], np.dtype(ds["dtype"]), ds["stored_bits"])
    else:
        spec = _native_spec(ds)
    if spec is None:
        return None
    rows, cols, dtype, stored_bits = spec
    if out.shape != (rows, cols) or out.dtype != dtype or not out.flags.c_contiguous:
        return None
    length = rows * cols * dtype.itemsize
    padded = length + (length & 1)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        start = size - padded
        if start < 12:
            return None
        head = f.read(start)
        if len(head) != start:
            return None
        tail = head[-12:]
        explicit = tail[:4] == _PIXEL_DATA_TAG and tail[4:6] in (b"OW", b"OB") and tail[6:8] == b"\0\0"
        implicit = tail[4:8] == _PIXEL_DATA_TAG
        if explicit and int.from_bytes(tail[8:12], "little") == padded:
            header = head[:-12]
        elif implicit and int.from_bytes(tail[8:12], "little") == padded:
            header = head[:-8]
        else:
            return None
        if f.readinto(memoryview(out).cast("B")) != length:
            return None
    bits = dtype.itemsize * 8
    if stored_bits < bits and out.size:
        # pydicom corrects the bits above BitsStored (sign extension or masking): only when
        # every value already lies in BitsStored's range are the raw bytes its answer
        signed = dtype.kind == "i"
        lo, hi = (-(1 << (stored_bits - 1)), (1 << (stored_bits - 1)) - 1) if signed else (0, (1 << stored_bits) - 1)
        if int(out.max()) > hi or (signed and int(out.min()) < lo):  # unsigned values are never below 0
            return None
    return header


def read_header_bytes(path: Path, pixel_offset: int) -> bytes | None:
    """The file's bytes before its Pixel Data element at ``pixel_offset`` (what
    :func:`raw_header_dataset` parses back); ``None`` when no Pixel Data element starts there."""
    with open(path, "rb") as f:
        head = f.read(pixel_offset + 4)
    if len(head) != pixel_offset + 4 or head[pixel_offset:] != _PIXEL_DATA_TAG:
        return None
    return head[:pixel_offset]


def raw_header_dataset(raw: bytes) -> Dataset:
    """The data set of a file's header bytes (as :func:`read_native` returns them), as
    :func:`medflow.sources.discovery.read_image_header` reads it from the file."""
    import io

    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True, force=True)


def decode_file(path: Path, ds: Dataset) -> np.ndarray:
    """All frames of one file as pydicom decodes them, in native byte order (see :func:`iter_frames` for the route).

    The decoding plugins are medflow's, in its order (:mod:`medflow.sources.decoders`).
    """
    native = native_frame(path, ds)
    if native is not None:
        return native
    return decode_encoded(path, transfer_syntax_of(ds))


def decode_encoded(path: Path, transfer_syntax: str) -> np.ndarray:
    """As :func:`decode_file` for a file in ``transfer_syntax``, without its parsed header (pydicom reads it)."""
    from pydicom.pixels import pixel_array

    if transfer_syntax == _DEFLATED_EXPLICIT_VR_LE:
        return in_native_order(decode_with(partial(pixel_array, _whole_dataset(path)), transfer_syntax))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # this attempt's complaints are not the file's verdict
            return in_native_order(decode_with(partial(pixel_array, path), transfer_syntax))
    except Exception:  # retried below with pydicom's data set reader
        pass
    return in_native_order(decode_with(partial(pixel_array, _whole_dataset(path)), transfer_syntax))


def in_native_order(array: np.ndarray) -> np.ndarray:
    """``array`` with the same values in this machine's byte order (pydicom keeps a big endian file's)."""
    if array.dtype.isnative:
        return array
    return array.astype(array.dtype.newbyteorder("="))


def iter_frames(path: Path, ds: Dataset, indices: Sequence[int] | None = None) -> Iterator[np.ndarray]:
    """Decoded frames of one file, in file order (or those of ``indices``, in their order), one at a time
    where pydicom can stream them.

    pydicom's file-level reader (``iter_pixels(path)``) streams frame by frame, but it does
    not inflate a Deflated Explicit VR Little Endian data set (PS3.5 A.5) and it trusts the
    transfer syntax's VR encoding, whereas ``dcmread`` detects a data set written in
    implicit VR under an explicit VR transfer syntax. So deflated files, and files whose
    streamed read fails before its first frame, are read whole with ``dcmread`` and decoded
    from that data set, exactly as ``Dataset.pixel_array`` does; a failure there is the
    file's error. The decoding plugins are medflow's, in its order
    (:mod:`medflow.sources.decoders`); frames come in native byte order.
    """
    for frame in _frames(path, ds, None if indices is None else list(indices)):
        yield in_native_order(frame)


def _frames(path: Path, ds: Dataset, indices: list[int] | None) -> Iterator[np.ndarray]:
    from pydicom.pixels import iter_pixels

    first_error: Exception | None = None
    for plugin in plugins_for(transfer_syntax_of(ds)) or ("",):  # "": pydicom's own choice
        sources = [_whole_dataset] if _is_deflated(ds) else [lambda path: path, _whole_dataset]
        for source in sources:
            frames = iter_pixels(source(path), decoding_plugin=plugin, indices=indices)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # this attempt's complaints are not the file's verdict
                    first = next(frames)
            except StopIteration:
                return
            except Exception as exc:  # retried with pydicom's data set reader, then the next plugin
                if source is sources[-1]:
                    first_error = first_error or exc  # the data set reader's verdict is the file's error
                continue
            yield first
            yield from frames
            return
    assert first_error is not None
    raise first_error


def decode_error(path: Path, exc: Exception) -> InputError:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return InputError(os.fspath(path), f"cannot decode pixel data: {text[:300]}")




def header_pixel_key(ds: Dataset) -> str:
    """A key equal for two headers whose group-0028 attributes (pixel description) are equal.

    An element whose value pydicom cannot convert (a damaged VR, say) enters by its raw VR and
    bytes: equal keys still mean equal elements, and the steps that never read it still run.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parts = [_element_key(ds, tag) for tag in ds.keys() if tag >> 16 == 0x0028]
    return "ds:" + hashlib.sha256(repr(parts).encode()).hexdigest()[:32]  # short: the memo keeps one per file


def _element_key(ds: Dataset, tag) -> tuple:
    try:
        element = ds[tag]
        return int(tag), element.VR, repr(element.value)
    except Exception:  # noqa: BLE001 - pydicom raises many types converting a malformed value
        raw = ds.get_item(tag)
        return int(tag), "unconverted", str(getattr(raw, "VR", "")), bytes(getattr(raw, "value", b"") or b"")


class LazyHeaders(Sequence):
    """Per-slice headers as DICOM JSON dicts, each built from its source on first access.

    A source is a parsed :class:`~pydicom.dataset.Dataset`, a file's raw header bytes
    (:func:`read_native`), the file's path (parsed when read) or an already built dict;
    ``keys`` are known :meth:`pixel_description` keys (discovery's). A chain whose steps never read a header
    (most pixel chains) never pays for the conversion; the values are the same as
    :func:`header_json` of the file's header. Slicing gives a LazyHeaders sharing the built
    dicts. Equal to a list with the same dicts.
    """

    def __init__(self, sources: list[Any], raw: list[bytes | None] | None = None,
                 built: list[dict[str, Any] | None] | None = None, keys: list[str | None] | None = None):
        self._sources = list(sources)
        self._raw = list(raw) if raw is not None else [None] * len(self._sources)
        self._built = list(built) if built is not None else [None] * len(self._sources)
        self._keys = list(keys) if keys is not None else [None] * len(self._sources)

    def __len__(self) -> int:
        return len(self._sources)

    def __getitem__(self, index):
        if isinstance(index, slice):
            picked = range(*index.indices(len(self._sources)))
            return LazyHeaders([self._sources[i] for i in picked], [self._raw[i] for i in picked],
                               [self._built[i] for i in picked], [self._keys[i] for i in picked])
        built = self._built[index]
        if built is None:
            source = self._sources[index]
            if isinstance(source, Path):
                source = self._raw[index] or _read_header(source)
            if isinstance(source, dict):
                built = source
            else:
                if isinstance(source, bytes | bytearray):
                    source = raw_header_dataset(bytes(source))
                built = header_json(source)
            self._built[index] = built
        return built

    def __eq__(self, other) -> bool:
        if isinstance(other, LazyHeaders | list | tuple):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    def __repr__(self) -> str:
        return f"LazyHeaders({len(self)} headers)"

    def pixel_description(self, index: int) -> str | None:
        """A key equal for two slices whose group-0028 attributes are equal, without building the header.

        ``None`` when the slice's source is an already built dict: the caller then reads it.
        A key is ``"ds:"`` + a digest of pydicom's description (:func:`header_pixel_key`) or
        discovery's ``"raw:"`` + a digest of the group's bytes (:mod:`medflow.sources.rawheader`);
        the prefixes keep the two kinds apart, so equal keys always mean equal descriptions (equal
        descriptions with keys of different kinds only cost a second table).
        """
        if self._keys[index] is not None:
            return self._keys[index]
        source = self._sources[index]
        if isinstance(source, Path):
            source = self._raw[index] or source
        if isinstance(source, Path):
            source = self._sources[index] = _read_header(source)
        elif isinstance(source, bytes | bytearray):  # parsed (not converted to JSON) once, kept
            source = self._sources[index] = raw_header_dataset(bytes(source))
        if not _is_dataset(source):
            return None
        self._keys[index] = header_pixel_key(source)
        return self._keys[index]

    def set_raw(self, index: int, raw: bytes | None) -> None:
        """Remember slice ``index``'s header bytes (read with its pixels) for :meth:`to_json`."""
        self._raw[index] = raw

    def to_json(self) -> dict[str, Any]:
        """``{"raw_headers": [base64...]}`` when every slice's header bytes are known, else ``{"headers": [...]}``.

        The raw form costs no conversion; :meth:`from_json` reads either. Known
        :meth:`pixel_description` keys ride along (``"pixel_keys"``), so a rebuild from the
        entry groups the slices by table without parsing a header.
        """
        if self._raw and all(r is not None for r in self._raw):
            entry: dict[str, Any] = {"raw_headers": [base64.b64encode(r).decode("ascii") for r in self._raw]}
            if all(k is not None for k in self._keys):
                entry["pixel_keys"] = list(self._keys)
            return entry
        return {"headers": list(self)}

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> Sequence[dict[str, Any]]:
        """The headers of a :meth:`to_json` entry, or of a multi-frame item's
        (:meth:`medflow.sources.frame_headers.FrameHeaders.to_json`)."""
        if "frame_headers" in entry:
            from medflow.sources.frame_headers import FrameHeaders

            return FrameHeaders.from_json(entry)
        raw = entry.get("raw_headers")
        if raw is None:
            return entry.get("headers") or []
        blobs = [base64.b64decode(r) for r in raw]
        keys = entry.get("pixel_keys")
        return cls(blobs, blobs, keys=keys if keys is not None and len(keys) == len(blobs) else None)


def _is_dataset(value: Any) -> bool:
    """``value`` is a pydicom Dataset (never true while pydicom is not imported)."""
    module = sys.modules.get("pydicom.dataset")
    return module is not None and isinstance(value, module.Dataset)


def _read_header(path: Path) -> Dataset:
    from medflow.sources.discovery import HeaderProblem, read_image_header

    try:
        return read_image_header(path)
    except HeaderProblem as problem:
        raise InputError(os.fspath(path), problem.reason) from problem


class BufferPool:
    """At most ``limit`` arrays of one shape and dtype; :meth:`get` waits while all are in use."""

    def __init__(self, shape: tuple[int, ...], dtype, limit: int):
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self._free: queue.LifoQueue[np.ndarray] = queue.LifoQueue()
        self._made = 0
        self._limit = max(1, limit)
        self._lock = threading.Lock()

    def get(self) -> np.ndarray:
        try:
            return self._free.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._made < self._limit:
                self._made += 1
                return np.empty(self.shape, dtype=self.dtype)
        return self._free.get()

    def put(self, buffer: np.ndarray) -> None:
        self._free.put(buffer)
