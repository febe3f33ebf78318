"""Pseudo-color lookup tables: 8-bit quantization, 256-entry RGB LUTs, DICOM palettes.

Every table here is RGB (channel order r, g, b), never OpenCV's BGR.
Applying a table is pointwise: it works on an array of any shape and appends
one axis of length 3.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medflow._lazy import lazy_import
from medflow.errors import InputError

cv2 = lazy_import("cv2")

#: Every OpenCV colormap (``cv2.COLORMAP_<NAME>``), by lower-case name.
COLORMAP_NAMES: tuple[str, ...] = (
    "autumn", "bone", "cividis", "cool", "deepgreen", "hot", "hsv", "inferno", "jet", "magma",
    "ocean", "parula", "pink", "plasma", "rainbow", "spring", "summer", "turbo", "twilight",
    "twilight_shifted", "viridis", "winter",
)  # fmt: skip

_CHUNK = 1 << 20  # elements per block: bounds the float64 temporaries of quantize_to_uint8


def quantize_to_uint8(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Quantize values in ``[lo, hi]`` to 8-bit LUT indices.

    ``index = clip(rint((x - lo) / (hi - lo) * 255), 0, 255)``, evaluated in float64;
    ``rint`` rounds half to even. So ``lo -> 0``, ``hi -> 255``, values outside the
    range are clipped, and ``k / 255`` (``k`` in 0..255, even rounded to float32)
    maps back to exactly ``k``: the 256 bins are centred on ``lo + k (hi - lo) / 255``.

    Args:
        x: values, any real dtype, any shape.
        lo, hi: the input range, ``lo < hi`` (e.g. ``0, 1`` for a window output).

    Returns:
        uint8 array of ``x``'s shape.

    Raises:
        ValueError: ``lo >= hi``, non-finite bounds, or NaN in ``x``.
    """
    lo, hi = float(lo), float(hi)
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"input range must be finite and increasing, got [{lo}, {hi}]")
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"cannot quantize dtype {x.dtype}: real numbers expected")
    flat = x.reshape(-1)
    out = np.empty(flat.shape, dtype=np.uint8)
    scale = 255.0 / (hi - lo)
    for start in range(0, flat.size, _CHUNK):
        block = flat[start : start + _CHUNK].astype(np.float64)
        if np.isnan(block).any():
            raise ValueError("cannot quantize NaN values to 8 bits")
        out[start : start + _CHUNK] = np.clip(np.rint((block - lo) * scale), 0, 255)
    return out.reshape(x.shape)


def apply_lut(indices: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Gather ``lut[indices]``: each index becomes one row (r, g, b) of the table.

    Args:
        indices: integer array, any shape, values in ``0 .. len(lut) - 1``
            (uint8 for a 256-entry LUT).
        lut: table of shape ``(n, 3)``, any dtype.

    Returns:
        array of shape ``indices.shape + (3,)`` and ``lut``'s dtype.

    Raises:
        ValueError: non-integer indices, bad table shape, or an index out of range.
    """
    indices = np.asarray(indices)
    lut = np.asarray(lut)
    if lut.ndim != 2 or lut.shape[1] != 3 or lut.shape[0] == 0:
        raise ValueError(f"a LUT must have shape (n, 3), got {lut.shape}")
    if not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"LUT indices must be integers, got dtype {indices.dtype}")
    if indices.size and (indices.min() < 0 or indices.max() >= lut.shape[0]):
        raise ValueError(
            f"LUT index out of range: indices span [{indices.min()}, {indices.max()}], "
            f"the table has {lut.shape[0]} entries"
        )
    return np.take(lut, indices, axis=0)


@functools.cache
def opencv_colormap_lut(name: str) -> np.ndarray:
    """The 256-entry RGB table of OpenCV colormap ``name`` (``cv2.COLORMAP_<NAME>``).

    Built by applying ``cv2.applyColorMap`` to ``0..255`` and reordering OpenCV's
    BGR output to RGB, so ``lut[i]`` is the colour OpenCV gives to gray level ``i``.

    Returns:
        uint8 array of shape (256, 3), columns r, g, b; read-only, built once per name.

    Raises:
        ValueError: unknown name, or a name this OpenCV build does not provide.
    """
    if name not in COLORMAP_NAMES:
        raise ValueError(f"unknown OpenCV colormap {name!r}; known: {', '.join(COLORMAP_NAMES)}")
    code = getattr(cv2, f"COLORMAP_{name.upper()}", None)
    if code is None:
        raise ValueError(f"OpenCV {cv2.__version__} has no colormap {name!r}")
    gray = np.arange(256, dtype=np.uint8).reshape(256, 1)
    bgr = cv2.applyColorMap(gray, code).reshape(256, 3)
    return _frozen(np.ascontiguousarray(bgr[:, ::-1]))


@functools.cache
def blue_red_lut() -> np.ndarray:
    """The seed pipeline's blue-to-red map: ``lut[i] = (R, G, B) = (i, 0, 255 - i)``.

    Entry 0 is pure blue (0, 0, 255), entry 255 pure red (255, 0, 0); in between R
    rises and B falls by exactly 1 per entry and G is 0. With 256 entries the linear
    ramp lands on integers, so no rounding is involved (entry 128 is (128, 0, 127)).

    Returns:
        uint8 array of shape (256, 3), columns r, g, b; read-only, built once.
    """
    i = np.arange(256, dtype=np.uint8)
    return _frozen(np.stack([i, np.zeros_like(i), 255 - i], axis=1))


def _frozen(table: np.ndarray) -> np.ndarray:
    """``table`` made read-only: a cached table is shared by every caller."""
    table.setflags(write=False)
    return table


def load_lut_file(path: str | Path) -> np.ndarray:
    """Read and validate a user LUT file: 256 rows of (r, g, b) integers in 0..255.

    Formats, chosen by extension:

    * ``.csv``: 256 non-empty lines of three comma-separated integers (spaces
      around values allowed, blank lines ignored, no header);
    * ``.npy``: an integer array of shape (256, 3) (read with ``allow_pickle=False``).

    Returns:
        uint8 array of shape (256, 3), columns r, g, b.

    Raises:
        InputError: naming the file, for a missing or unreadable file, an unknown
            extension, a wrong shape, a non-integer value, or a value outside 0..255.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), "LUT file not found")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        table = _read_lut_csv(path)
    elif suffix == ".npy":
        table = _read_lut_npy(path)
    else:
        raise InputError(str(path), f"unknown LUT file type {suffix!r}: use .csv or .npy")
    if table.shape != (256, 3):
        raise InputError(
            str(path), f"a LUT must have 256 rows of 3 values (r, g, b), got shape {table.shape}"
        )
    bad = np.argwhere((table < 0) | (table > 255))
    if bad.size:
        row, col = (int(v) for v in bad[0])
        raise InputError(
            str(path),
            f"value {int(table[row, col])} at row {row + 1}, column {col + 1} is outside 0..255 "
            f"({len(bad)} value(s) out of range)",
        )
    return table.astype(np.uint8)


def _read_lut_csv(path: Path) -> np.ndarray:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(str(path), f"cannot read LUT file: {exc}") from exc
    rows: list[list[int]] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) != 3:
            raise InputError(
                str(path),
                f"line {line_no}: expected 3 comma-separated integers (r, g, b), got {len(cells)} values",
            )
        row = []
        for col, cell in enumerate(cells, start=1):
            try:
                row.append(int(cell, 10))
            except ValueError:
                raise InputError(
                    str(path), f"line {line_no}, column {col}: {cell!r} is not an integer"
                ) from None
        rows.append(row)
    if len(rows) != 256:
        raise InputError(str(path), f"a LUT must have 256 rows of 3 values (r, g, b), got {len(rows)} rows")
    return np.asarray(rows, dtype=np.int64)


def _read_lut_npy(path: Path) -> np.ndarray:
    try:
        table = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(str(path), f"cannot read .npy LUT file: {exc}") from exc
    if not isinstance(table, np.ndarray) or table.dtype.kind not in "ui":
        dtype = getattr(table, "dtype", type(table).__name__)
        raise InputError(str(path), f"LUT values must be integers 0..255 (e.g. uint8), got dtype {dtype}")
    return table.astype(np.int64)


# --- DICOM palette color LUTs (PS3.3 C.7.6.3.1.5-6, C.7.9) -------------------------------

_DESCRIPTOR_TAGS = {"red": "00281101", "green": "00281102", "blue": "00281103"}
_DATA_TAGS = {"red": "00281201", "green": "00281202", "blue": "00281203"}
_SEGMENTED_TAGS = {"red": "00281221", "green": "00281222", "blue": "00281223"}
_PIXEL_REPRESENTATION = "00280103"


@dataclass(frozen=True)
class PaletteLUT:
    """A DICOM palette color LUT.

    Attributes:
        first_mapped: the stored pixel value mapped to entry 0 (descriptor value 2).
        bits: bits per entry (descriptor value 3): 8 or 16.
        table: uint16 array of shape (n_entries, 3), columns r, g, b, entries in
            ``0 .. 2**bits - 1``.
    """

    first_mapped: int
    bits: int
    table: np.ndarray

    @property
    def full_scale(self) -> int:
        """Largest entry value, ``2**bits - 1`` (the palette's full intensity)."""
        return (1 << self.bits) - 1


def palette_lut_from_headers(header: Mapping[str, Any]) -> PaletteLUT:
    """The palette color LUT of one DICOM header in the DICOM JSON model (PS3.18 F.2).

    Reads (0028,1101-1103) Red/Green/Blue Palette Color Lookup Table Descriptor and
    either (0028,1201-1203) Palette Color Lookup Table Data (PS3.3 C.7.6.3.1.6) or
    (0028,1221-1223) Segmented Palette Color Lookup Table Data (PS3.3 C.7.9.2).
    Descriptor: number of entries (0 means 65536), first stored value mapped
    (signed when PixelRepresentation is 1), bits per entry (8 or 16). Data must be
    inline (``InlineBinary``, little endian, or ``Value``); an entry of 8 bits may be
    packed one per byte or one per 16-bit word. Alpha tables are ignored.

    Raises:
        ValueError: naming the tag, when the palette is absent, incomplete or inconsistent.
    """
    descriptors = {color: _descriptor(header, color) for color in _DESCRIPTOR_TAGS}
    n_entries, first, bits = descriptors["red"]
    for color in ("green", "blue"):
        if descriptors[color][:2] != (n_entries, first):
            raise ValueError(
                f"palette descriptors disagree: red {descriptors['red']}, {color} {descriptors[color]}"
            )
    if header.get(_PIXEL_REPRESENTATION, {}).get("Value", [0])[0] == 1 and first >= 1 << 15:
        first -= 1 << 16  # the descriptor is US on the wire; the value is signed here
    columns = []
    for color in ("red", "green", "blue"):
        color_bits = descriptors[color][2]
        if _DATA_TAGS[color] in header:
            raw = _element_bytes(
                header, _DATA_TAGS[color], f"{color.title()} Palette Color Lookup Table Data"
            )
            column = _unpack_entries(raw, n_entries, color_bits, color)
        elif _SEGMENTED_TAGS[color] in header:
            name = f"Segmented {color.title()} Palette Color Lookup Table Data"
            raw = _element_bytes(header, _SEGMENTED_TAGS[color], name)
            words = (
                np.frombuffer(raw[: len(raw) - len(raw) % 2], dtype="<u2")
                if color_bits == 16
                else np.frombuffer(raw, np.uint8)
            )
            column = expand_segmented_lut(words)
            if len(column) != n_entries:
                raise ValueError(f"{name} expands to {len(column)} entries, the descriptor says {n_entries}")
        else:
            raise ValueError(
                f"no {color} palette data: neither ({_DATA_TAGS[color][:4]},{_DATA_TAGS[color][4:]}) nor "
                f"({_SEGMENTED_TAGS[color][:4]},{_SEGMENTED_TAGS[color][4:]}) is present"
            )
        if column.size and column.max() > (1 << color_bits) - 1:
            raise ValueError(
                f"{color} palette entry {int(column.max())} exceeds the descriptor's {color_bits} bits"
            )
        columns.append(column.astype(np.uint16))
    bits_set = {descriptors[c][2] for c in descriptors}
    if len(bits_set) != 1:
        raise ValueError(f"palette descriptors disagree on bits per entry: {descriptors}")
    return PaletteLUT(first_mapped=first, bits=bits, table=np.stack(columns, axis=1))


def palette_indices(stored: np.ndarray, palette: PaletteLUT) -> np.ndarray:
    """Entry index of each stored pixel value (PS3.3 C.7.6.3.1.5).

    Value ``first_mapped + k`` gives entry ``k``; values below ``first_mapped`` give
    the first entry and values at or above ``first_mapped + n_entries`` the last.

    Args:
        stored: stored pixel values, any shape; integer dtype, or float holding integers.

    Returns:
        int64 array of ``stored``'s shape, in ``0 .. n_entries - 1``.

    Raises:
        ValueError: non-integer or non-finite values.
    """
    stored = np.asarray(stored)
    if not np.issubdtype(stored.dtype, np.integer):
        if not np.issubdtype(stored.dtype, np.floating) or not np.all(np.isfinite(stored)):
            raise ValueError(f"palette indices must be finite stored pixel values, got dtype {stored.dtype}")
        if not np.array_equal(stored, np.round(stored)):
            raise ValueError(
                "a palette colour LUT needs stored pixel values (integers), got fractional values: "
                "apply dicom_palette before any intensity step"
            )
    return np.clip(stored.astype(np.int64) - palette.first_mapped, 0, len(palette.table) - 1)


def apply_palette(stored: np.ndarray, palette: PaletteLUT) -> np.ndarray:
    """Map stored pixel values through a palette: ``palette.table[palette_indices(stored)]``.

    Returns:
        uint16 array of shape ``stored.shape + (3,)``: raw palette entries (r, g, b)
        in ``0 .. palette.full_scale``.
    """
    return np.take(palette.table, palette_indices(stored, palette), axis=0)


def expand_segmented_lut(words: np.ndarray) -> np.ndarray:
    """Expand Segmented Palette Color Lookup Table Data (PS3.3 C.7.9.2).

    Segments, each starting with an opcode word:

    * ``0`` discrete (C.7.9.2.1): length ``n``, then ``n`` entry values copied as they are;
    * ``1`` linear (C.7.9.2.2): length ``n`` and end value ``y1``: ``n`` entries going
      linearly from the previous entry ``y0`` (exclusive) to ``y1`` (inclusive),
      ``y0 + (y1 - y0) * k / n`` for ``k = 1..n``, rounded half to even;
    * ``2`` indirect (C.7.9.2.3) is refused: toolkits disagree on the unit of its
      offset, and a wrong guess would silently give wrong colours.

    Args:
        words: the data as unsigned integers (16-bit words, or bytes for 8-bit entries).

    Returns:
        int64 array of the expanded entries.

    Raises:
        ValueError: unknown or indirect opcode, truncated data, or a linear segment
            with no previous entry.
    """
    words = np.asarray(words).astype(np.int64)
    out: list[np.ndarray] = []
    last: int | None = None  # the last entry produced so far, start of a linear segment
    position = 0
    # A single trailing word is padding to an even length, not a segment.
    while position + 1 < len(words):
        opcode = int(words[position])
        if opcode == 0:
            length = _word(words, position + 1)
            values = words[position + 2 : position + 2 + length]
            if len(values) != length:
                raise ValueError("segmented LUT: discrete segment runs past the end of the data")
            out.append(values)
            if length:
                last = int(values[-1])
            position += 2 + length
        elif opcode == 1:
            length, y1 = _word(words, position + 1), _word(words, position + 2)
            if last is None:
                raise ValueError("segmented LUT: linear segment with no previous entry (PS3.3 C.7.9.2.2)")
            steps = np.arange(1, length + 1, dtype=np.float64)
            out.append(np.rint(last + (y1 - last) * steps / length).astype(np.int64))
            if length:
                last = y1
            position += 3
        elif opcode == 2:
            raise ValueError(
                f"segmented LUT: indirect segment (opcode 2) at word {position} is not supported"
            )
        else:
            raise ValueError(f"segmented LUT: unknown segment opcode {opcode} at word {position}")
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _word(words: np.ndarray, index: int) -> int:
    if index >= len(words):
        raise ValueError("segmented LUT: segment header runs past the end of the data")
    return int(words[index])


def _descriptor(header: Mapping[str, Any], color: str) -> tuple[int, int, int]:
    tag = _DESCRIPTOR_TAGS[color]
    name = f"({tag[:4]},{tag[4:]}) {color.title()} Palette Color Lookup Table Descriptor"
    element = header.get(tag)
    if element is None:
        raise ValueError(f"no palette color LUT: {name} is absent")
    value = element.get("Value")
    if value is None and "InlineBinary" in element:
        value = np.frombuffer(base64.b64decode(element["InlineBinary"]), dtype="<u2").tolist()
    if not value or len(value) != 3:
        raise ValueError(f"{name} must have 3 values, got {value!r}")
    n_entries, first, bits = (int(v) for v in value)
    if bits not in (8, 16):
        raise ValueError(f"{name}: bits per entry must be 8 or 16, got {bits}")
    return (n_entries or 1 << 16, first, bits)


def _element_bytes(header: Mapping[str, Any], tag: str, name: str) -> bytes:
    element = header[tag]
    label = f"({tag[:4]},{tag[4:]}) {name}"
    if "InlineBinary" in element:
        return base64.b64decode(element["InlineBinary"])
    if "Value" in element:
        return np.asarray(element["Value"], dtype="<u2").tobytes()
    if "BulkDataURI" in element:
        raise ValueError(f"{label} is bulk data ({element['BulkDataURI']}); the reader must keep it inline")
    raise ValueError(f"{label} has no value")


def _unpack_entries(raw: bytes, n_entries: int, bits: int, color: str) -> np.ndarray:
    if len(raw) >= 2 * n_entries:
        column = np.frombuffer(raw[: 2 * n_entries], dtype="<u2")
    elif bits == 8 and len(raw) in (n_entries, n_entries + 1):
        column = np.frombuffer(raw[:n_entries], dtype=np.uint8)
    else:
        raise ValueError(f"{color} palette data has {len(raw)} bytes for {n_entries} entries of {bits} bits")
    return column.astype(np.int64)
