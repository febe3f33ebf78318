"""Preview a recipe: run its steps on a few items and draw one PNG montage.

``medflow preview RECIPE [--items N] [--out preview.png]`` reads the first N items
(default 2) the build would read, applies the recipe's steps one by one in this process
(no writers, no manifest, nothing in the output folder) and draws one row per item, one
tile per stage: ``read``, then the result of each step.

Each tile shows the **middle slice** (index ``n // 2`` of the slices, after undoing a
layout such as NCHW or NCDHW) and, on a dark band above it:

1. the stage number and step name;
2. the value range of the whole item after that stage (``min .. max``) and its dtype;
3. the axes and shape, and which slice is shown;
4. how the values were mapped to the screen: ``uint8 as is`` (0..255), ``0..1 as is``
   (floats inside [0, 1], e.g. after a window or a colormap: 0 black, 1 white, no
   stretching), or ``min..max stretched`` (anything else, e.g. HU or z-scores: linearly
   stretched from the item's own min..max to black..white).

Channels: 1 -> gray; 3 -> shown as R, G, B **as stored**, whatever they are (RGB is
RGB; YCbCr, YCrCb, HSV, Lab or three windows are shown as their raw channels in the
R, G, B slots, and the band says so, e.g. ``y,cb,cr as RGB``: not a colour rendering); any other count -> the
first channel, labelled. Tiles are fitted into a ``TILE`` x ``TILE`` box (aspect kept;
nearest-neighbour when enlarging, area when shrinking). A step that fails draws a red
tile with the error and ends its row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from medflow.sample import Sample
from medflow.writers.png import as_slices, encode_png

TILE = 256  # px: side of the box each slice is fitted into
BAND = 70  # px: label band above each tile (4 lines)
HEADER = 24  # px: item title above each row
PAD = 8  # px: gap between tiles and around the montage
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BACKGROUND = (24, 24, 24)
_BAND_COLOR = (0, 0, 0)
_TEXT = (235, 235, 235)
_DIM_TEXT = (170, 200, 255)
_ERROR = (255, 90, 90)


@dataclass
class Tile:
    """One stage of one item: the display image (RGB uint8) and its label lines."""

    title: str
    lines: list[str]
    image: np.ndarray | None  # (h, w, 3) uint8 RGB, None for a failed stage
    error: str | None = None


@dataclass
class PreviewResult:
    """What :func:`preview` drew: the PNG path, the montage (RGB) and every tile."""

    path: Path
    montage: np.ndarray
    rows: list[tuple[str, list[Tile]]]
    errors: list[tuple[str, str]] = field(default_factory=list)  # (item id, message)


def display(sample: Sample) -> tuple[np.ndarray, list[str]]:
    """The middle slice of ``sample`` as an RGB uint8 image, and the three label lines describing it."""
    pixels = sample.pixels
    slices = as_slices(pixels, sample.axes)
    index = slices.shape[0] // 2
    image = np.asarray(slices[index])
    channels = image.shape[-1]
    names = tuple(sample.channels) if sample.channels else ()
    if channels == 3:
        shown = image
        channel_note = "" if names in ((), ("r", "g", "b")) else f", {','.join(names)} as RGB"
    else:
        shown = image[..., :1]
        channel_note = "" if channels == 1 else f", ch 0 of {channels}" + (f" ({names[0]})" if names else "")
    finite = pixels[np.isfinite(pixels)] if np.issubdtype(pixels.dtype, np.floating) else pixels
    lo = float(finite.min()) if finite.size else 0.0
    hi = float(finite.max()) if finite.size else 0.0
    if pixels.dtype == np.uint8:
        scaled, mapping = shown, "uint8 as is"
    elif np.issubdtype(pixels.dtype, np.floating) and lo >= 0.0 and hi <= 1.0:
        scaled, mapping = _to_uint8(shown, 0.0, 1.0), "0..1 as is"
    else:
        scaled, mapping = _to_uint8(shown, lo, hi), "min..max stretched"
    rgb = np.repeat(scaled, 3, axis=-1) if scaled.shape[-1] == 1 else scaled
    shape = "x".join(str(s) for s in pixels.shape)
    where = f"  mid z {index}/{slices.shape[0]}" if slices.shape[0] > 1 else ""
    lines = [
        f"range {_fmt(lo)} .. {_fmt(hi)}  {pixels.dtype}",
        f"{sample.axes} {shape}{where}",
        f"shown: {mapping}{channel_note}",
    ]
    return np.ascontiguousarray(rgb), lines


def _to_uint8(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    x = np.nan_to_num(values.astype(np.float64), nan=lo, posinf=hi, neginf=lo)
    if hi <= lo:
        return np.zeros(values.shape, np.uint8)
    return np.clip(np.rint((x - lo) / (hi - lo) * 255.0), 0, 255).astype(np.uint8)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def run_stages(loaded: Any, n_items: int = 2) -> tuple[list[tuple[str, list[Tile]]], list[tuple[str, str]]]:
    """Read the first ``n_items`` items of the recipe and run its steps; one tile per stage.

    Only the middle slice of each stage is kept (no full volumes accumulate). In a
    de-identifying recipe only what would be written is shown: no stage before the
    de-identifying step (original pixels and headers), nothing of a quarantined or filtered
    item, and messages name input files by their manifest tokens.
    """
    from medflow.engine.build import prepare
    from medflow.engine.privacy import PathRedactor
    from medflow.engine.task import apply_step
    from medflow.errors import FilteredItem, QuarantineItem

    prepared = prepare(loaded, record=False)
    steps = list(loaded.recipe.steps)
    first_shown = next((i + 1 for i, p in enumerate(steps) if p.deidentifies()), 0)
    redactor = PathRedactor(prepared.source_root) if prepared.deidentifies else None
    rows: list[tuple[str, list[Tile]]] = []
    errors: list[tuple[str, str]] = []
    for item in prepared.items[:n_items]:
        tiles: list[Tile] = []
        sample: Sample | None = None
        photometric = ""
        for index in range(len(steps) + 1):
            title = "0 read" if index == 0 else f"{index} {steps[index - 1].step}"
            try:
                sample = _read(item, prepared.reader_params) if index == 0 else apply_step(steps[index - 1], sample)
                if index == 0:
                    photometric = f", {sample.meta.get('photometric_interpretation') or '?'}"
                if index < first_shown:
                    continue  # before de-identification: never shown
                shown = _instance_display(sample) if item.kind == "instance" else sample
                if shown is None:
                    tiles.append(Tile(title, ["no pixel data", str(sample.meta.get("sop_class_uid", ""))], None))
                    continue
                image, lines = display(shown)
                tiles.append(Tile(title, lines, image))
            except (QuarantineItem, FilteredItem) as exc:
                word = "quarantined" if isinstance(exc, QuarantineItem) else "filtered"
                tiles.append(Tile(title, [f"{word}: nothing of this item is written or shown"], None,
                                  f"{word}: {_private(exc.reason, item, redactor)}"))
                break
            except Exception as exc:  # noqa: BLE001 - a preview shows the failure in its tile
                message = _private(f"{type(exc).__name__}: {exc}", item, redactor)
                tiles.append(Tile(title, [], None, message))
                errors.append((item.item_id, f"{title}: {message}"))
                break
        rows.append((f"{item.item_id}  ({item.modality or '?'}, {len(item.files)} file(s){photometric})", tiles))
    return rows, errors


def _private(message: str, item: Any, redactor: Any) -> str:
    return message if redactor is None else redactor.text(message, list(item.files))


def _instance_display(sample: Sample) -> Sample | None:
    """The pixels an instance item would be written with (first frame, decoded for display only)."""
    original = sample.originals[0] if sample.originals else None
    if original is None or "PixelData" not in original:
        return None
    from pydicom.pixels import pixel_array

    from medflow.sources.decoders import decode_with, transfer_syntax_of

    pixels = np.asarray(decode_with(partial(pixel_array, original), transfer_syntax_of(original)))
    frames = int(original.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        pixels = pixels[0]
    if pixels.ndim == 3:
        return Sample(sample.item_id, np.ascontiguousarray(pixels), "yxc", channels=("r", "g", "b")[: pixels.shape[-1]])
    return Sample(sample.item_id, np.ascontiguousarray(pixels), "yx")


def _read(item: Any, reader_params: dict[str, Any]) -> Sample:
    from medflow.errors import InputError

    if item.kind == "instance":
        from medflow.engine.instance import read_instance

        return read_instance(Path(item.root) / item.files[0], item.item_id, reader_params.get("filter"))
    from medflow.sources.series import read_item

    if item.broken_files:
        rel, reason = item.broken_files[0]
        raise InputError(str(Path(item.root) / rel), reason)
    return read_item(item, **reader_params)


def tile_origin(row: int, column: int) -> tuple[int, int]:
    """Top-left ``(y, x)`` in the montage of the image box of tile (row, column)."""
    y = PAD + row * (HEADER + BAND + TILE + PAD) + HEADER + BAND
    x = PAD + column * (TILE + PAD)
    return y, x


def montage_size(n_rows: int, n_columns: int) -> tuple[int, int]:
    """(height, width) of a montage of ``n_rows`` x ``n_columns`` tiles."""
    return PAD + n_rows * (HEADER + BAND + TILE + PAD), PAD + n_columns * (TILE + PAD)


def render(rows: list[tuple[str, list[Tile]]], n_columns: int) -> np.ndarray:
    """Draw the montage (RGB uint8): one row per item, one column per stage."""
    height, width = montage_size(max(len(rows), 1), max(n_columns, 1))
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = _BACKGROUND
    for r, (title, tiles) in enumerate(rows):
        y0, _ = tile_origin(r, 0)
        _text(canvas, title, (PAD, y0 - BAND - 7), 0.55, _DIM_TEXT, width - 2 * PAD)
        for c, tile in enumerate(tiles):
            y, x = tile_origin(r, c)
            canvas[y - BAND : y - 2, x : x + TILE] = _BAND_COLOR
            _text(canvas, tile.title, (x + 5, y - BAND + 16), 0.55, _TEXT, TILE - 10)
            for k, line in enumerate(tile.lines):
                _text(canvas, line, (x + 5, y - BAND + 33 + 15 * k), 0.42, _DIM_TEXT, TILE - 10)
            if tile.image is not None:
                fitted = _fit(tile.image)
                dy, dx = (TILE - fitted.shape[0]) // 2, (TILE - fitted.shape[1]) // 2
                canvas[y + dy : y + dy + fitted.shape[0], x + dx : x + dx + fitted.shape[1]] = fitted
            elif tile.error is None:  # nothing to draw (e.g. an object without pixel data)
                canvas[y : y + TILE, x : x + TILE] = (48, 48, 48)
            else:
                canvas[y : y + TILE, x : x + TILE] = (60, 0, 0)
                _wrapped(canvas, f"FAILED: {tile.error}", (x + 6, y + 20), TILE - 12)
    return canvas


def _fit(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    scale = TILE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interpolation = cv2.INTER_NEAREST if scale >= 1 else cv2.INTER_AREA
    return cv2.resize(image, size, interpolation=interpolation)


def _text(canvas: np.ndarray, text: str, origin: tuple[int, int], scale: float, color, max_width: int) -> None:
    """Draw ``text``; shrink the font (down to 0.35) and then cut the text to fit ``max_width`` px."""
    while scale > 0.35 and cv2.getTextSize(text, _FONT, scale, 1)[0][0] > max_width:
        scale -= 0.03
    while len(text) > 4 and cv2.getTextSize(text, _FONT, scale, 1)[0][0] > max_width:
        text = text[:-2] + "~"
    cv2.putText(canvas, text, origin, _FONT, scale, color, 1, cv2.LINE_AA)


def _wrapped(canvas: np.ndarray, text: str, origin: tuple[int, int], max_width: int) -> None:
    x, y = origin
    line = ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if cv2.getTextSize(trial, _FONT, 0.42, 1)[0][0] > max_width and line:
            _text(canvas, line, (x, y), 0.42, _ERROR, max_width)
            y += 16
            line = word
            if y > origin[1] + TILE - 30:
                break
        else:
            line = trial
    if line:
        _text(canvas, line, (x, y), 0.42, _ERROR, max_width)


def preview_path(loaded: Any) -> Path:
    """Where ``medflow preview`` writes without ``--out``: ``<outputs.dir>.preview.png``, beside the output folder.

    Not inside it (the output folder is the dataset people share), not in the current
    folder (an untracked file in the user's repository).
    """
    from medflow.engine.prepare import output_dir

    out = output_dir(loaded)
    return out.parent / f"{out.name}.preview.png"


def preview(loaded: Any, n_items: int = 2, out: str | Path | None = None) -> PreviewResult:
    """Run ``loaded``'s steps on its first ``n_items`` items and write the montage PNG to ``out``.

    ``out`` defaults to :func:`preview_path`. Nothing is written to the recipe's output
    folder (the cache folder may receive the input fingerprints and the embedded sample,
    as for ``medflow plan``).
    """
    from medflow.writers.atomic import atomic_write_bytes

    if n_items < 1:
        raise ValueError(f"n_items must be >= 1 (got {n_items})")
    rows, errors = run_stages(loaded, n_items)
    montage = render(rows, len(loaded.recipe.steps) + 1)
    path = Path(out) if out is not None else preview_path(loaded)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, encode_png(montage, 3))
    return PreviewResult(path, montage, rows, errors)


__all__ = ["PreviewResult", "Tile", "display", "montage_size", "preview", "preview_path", "render", "run_stages",
           "tile_origin"]
