"""nnU-Net v2 raw dataset writer: ``imagesTr/{case}_{XXXX}.nii.gz``, ``labelsTr/{case}.nii.gz``, ``dataset.json``.

The layout is nnU-Net v2's "raw" dataset format (nnU-Net documentation,
``dataset_format.md``): one NIfTI file per channel named ``{case}_{channel:04d}.nii.gz``, one
integer label map per case in ``labelsTr`` on the very same grid (same affine), and a
``dataset.json`` with ``channel_names`` (``{"0": "CT"}``: nnU-Net picks CT normalisation by
that name), ``labels`` (``{"background": 0, name: value}``, values consecutive from 0),
``numTraining`` and ``file_ending``. The case id is the item id (a keyed pseudonym in a
de-identifying recipe). Images and labels share the geometry of
:func:`medflow.writers.nifti.nifti_image` (regular stacks; add ``resample`` for tilted or uneven
ones).

Per item (in the worker) the images and the label map are written; once after all items
``dataset.json`` is written from the items' records (their segments must agree: set
``source.labels.segments`` to give every item the same values).

With ``splits:`` in the recipe, the items of the test split (``test_split``, default ``test``) go
to ``imagesTs/{case}_{XXXX}.nii.gz`` (no label map) and ``numTraining`` counts the others. The
split reaches the writer through a per-item copy of its params (:meth:`NnunetParams.for_split`,
made by the engine's plan and task): it joins the item's *output* key only when the item is a test
case (so moving an item between train and test rewrites exactly that item, and never changes a
step's cache key); a moved item's files in the other folder are removed when it is rewritten.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, PrivateAttr, model_serializer

from medflow._lazy import lazy_import
from medflow.errors import FileSystemError, MedflowError
from medflow.sample import Sample
from medflow.workspace import create_temp_dir, release_temp
from medflow.writers.atomic import atomic_write, atomic_write_bytes, make_folder
from medflow.writers.nifti import nifti_image
from medflow.writers.registry import WriterParams, WrittenFile, register_writer

sitk = lazy_import("SimpleITK")


class NnunetParams(WriterParams):
    """nnU-Net v2 raw dataset: images per channel, label maps, dataset.json (write before a layout step)."""

    kind: Literal["nnunet"]
    folder: str = Field("nnunet", description="Dataset folder inside the output folder, e.g. Dataset001_Phantom.")
    dtype: Literal["int16", "float32"] = Field(
        "float32", description="Image dtype: float32, or int16 (values must be whole and within int16: HU).")
    compression: int = Field(6, ge=0, le=9, description="gzip level of the .nii.gz files (0: stored, 9: smallest).")
    channel_names: list[str] | None = Field(
        None, description="dataset.json channel_names in channel order; default the channel names, or the "
        "modality (CT, MR...) for one channel.")
    require_labels: bool = Field(True, description="Fail a training item that has no label map (nnU-Net trains "
                                 "on pairs).")
    test_split: str = Field("test", description="Items of this split (recipe's splits:) go to imagesTs, without "
                            "label map, and are not counted in numTraining.")
    _item_split: str | None = PrivateAttr(None)  # the item's split, set per item by the engine (for_split)

    def for_split(self, split: str | None) -> NnunetParams:
        """A copy of these params for one item of ``split`` (``None``: no splits). Joins the output key
        only when the item is a test case (see the module docstring)."""
        copy = self.model_copy()
        copy._item_split = split
        return copy

    @property
    def is_test(self) -> bool:
        """Is the item these params were made for (:meth:`for_split`) a test case (imagesTs)?"""
        return self._item_split is not None and self._item_split == self.test_split

    @model_serializer(mode="wrap")
    def _with_destination(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if self.is_test:  # the output paths depend on it: part of the writer's params in the output key
            data["destination"] = "imagesTs"
        return data


class NnunetRefused(MedflowError):
    """The item cannot be written in the nnU-Net layout."""

    def __init__(self, item_id: str, reason: str):
        self.item_id = item_id
        super().__init__(f"writer 'nnunet' refused item {item_id}: {reason}")


def _as_dtype(pixels: np.ndarray, dtype: str, item_id: str) -> np.ndarray:
    if dtype == "float32":
        return pixels.astype(np.float32, copy=False)
    if pixels.size and (not np.all(np.isfinite(pixels)) or not np.array_equal(pixels, np.round(pixels))):
        raise NnunetRefused(item_id, "dtype int16 needs whole values (e.g. HU after modality_lut), got fractions")
    info = np.iinfo(np.int16)
    if pixels.size and (pixels.min() < info.min or pixels.max() > info.max):
        raise NnunetRefused(item_id, f"values span [{pixels.min():g}, {pixels.max():g}], outside int16")
    return pixels.astype(np.int16)


def _write(image, target: Path, level: int) -> WrittenFile:
    """``image`` as ``target`` (.nii.gz at gzip ``level``), through a medflow temp folder and an atomic rename."""
    make_folder(target.parent)
    try:
        tmp = create_temp_dir(target.parent, target.name)
    except OSError as exc:
        raise FileSystemError(str(target), exc) from None
    try:
        tmp_file = tmp / "image.nii.gz"
        try:
            sitk.WriteImage(image, str(tmp_file), True, level)
        except RuntimeError as exc:
            raise FileSystemError(str(target), str(exc).strip().splitlines()[-1][:200]) from None
        with open(tmp_file, "rb") as source:
            digest = atomic_write(target, lambda f: shutil.copyfileobj(source, f))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        release_temp(tmp)
    return WrittenFile("", digest, target.stat().st_size)


def _finalize(records, params: NnunetParams, out_dir: Path) -> list[WrittenFile]:
    """dataset.json from the items' records: channel names, agreed labels, number of training cases."""
    labels: dict[int, str] = {}
    cases, channels, modality = 0, 1, ""
    prefix = Path(params.folder).as_posix()
    prefix = "" if prefix == "." else prefix + "/"
    for entry in records.items:
        images = [o["path"] for o in entry.get("outputs", []) if o["path"].startswith(f"{prefix}imagesTr/")]
        if entry.get("status") != "ok" or not images:
            continue
        cases += 1
        channels = len(images)
        modality = modality or str(entry.get("meta", {}).get("modality", ""))
        for segment in entry.get("meta", {}).get("labels", {}).get("segments", []):
            value, name = int(segment["value"]), segment["name"]
            if labels.setdefault(value, name) != name:
                raise MedflowError(
                    f"writer 'nnunet': label value {value} is {labels[value]!r} in one item and {name!r} in "
                    f"{entry['id']}; set source.labels.segments so every item gets the same values")
    if labels and sorted(labels) != list(range(1, max(labels) + 1)):
        raise MedflowError(f"writer 'nnunet': label values {sorted(labels)} are not consecutive from 1 (nnU-Net "
                           "needs 0..n); set source.labels.segments to number them")
    names = params.channel_names or ([modality or "image"] if channels == 1 else [str(c) for c in range(channels)])
    dataset = {
        "channel_names": {str(i): name for i, name in enumerate(names)},
        "labels": {"background": 0, **{labels[v]: v for v in sorted(labels)}},
        "numTraining": cases,
        "file_ending": ".nii.gz",
    }
    relative = Path(params.folder) / "dataset.json"
    data = (json.dumps(dataset, indent=2) + "\n").encode()
    digest = atomic_write_bytes(out_dir / relative, data)
    return [WrittenFile(relative.as_posix(), digest, len(data))]


def _remove_moved(dataset: Path, case: str, other: str, labels: bool) -> None:
    """Remove this case's images from ``other`` (and its label map when it became a test case): an item
    that moved between training and test must not stay in both folders."""
    folder = dataset / other
    if folder.is_dir():
        prefix, suffix = f"{case}_", ".nii.gz"
        for path in folder.iterdir():
            middle = path.name[len(prefix):-len(suffix)] if path.name.endswith(suffix) else ""
            if path.name.startswith(prefix) and len(middle) == 4 and middle.isdigit():
                path.unlink(missing_ok=True)
    if labels:
        (dataset / "labelsTr" / f"{case}.nii.gz").unlink(missing_ok=True)


@register_writer("nnunet", 1, NnunetParams, finalize=_finalize)
def write_nnunet(sample: Sample, params: NnunetParams, out_dir: Path) -> list[WrittenFile]:
    """Write the item as nnU-Net v2 raw data: imagesTr/{case}_{XXXX}.nii.gz per channel, labelsTr/{case}.nii.gz
    (a test case: imagesTs/{case}_{XXXX}.nii.gz only)."""
    if sample.axes not in ("zyx", "zyxc"):
        raise NnunetRefused(sample.item_id, f"needs a 'zyx' or 'zyxc' volume, got {sample.describe()} "
                                            "(write nnunet before a layout step)")
    test = params.is_test
    if sample.label is None and params.require_labels and not test:
        raise NnunetRefused(sample.item_id, "the item has no label map (source.labels pairs them)")
    if not test and not sample.label_matches():
        raise NnunetRefused(sample.item_id, f"label map {sample.label.shape} is not on the image grid "
                                            f"{sample.pixels.shape[:3]}")
    case = sample.item_id
    root = Path(params.folder)
    images = "imagesTs" if test else "imagesTr"
    _remove_moved(out_dir / root, case, "imagesTr" if test else "imagesTs", labels=test)
    pixels = sample.pixels if sample.axes == "zyxc" else sample.pixels[..., None]
    written = []
    for channel in range(pixels.shape[-1]):
        channel_sample = sample.replace(pixels=_as_dtype(pixels[..., channel], params.dtype, case), axes="zyx",
                                        channels=(), label=None)
        image, _ = nifti_image(channel_sample)
        relative = root / images / f"{case}_{channel:04d}.nii.gz"
        done = _write(image, out_dir / relative, params.compression)
        written.append(WrittenFile(relative.as_posix(), done.digest, done.size))
    if sample.label is not None and not test:
        label_sample = sample.replace(pixels=sample.label.astype(np.uint8 if sample.label.max(initial=0) < 256
                                                                 else np.uint16), axes="zyx", channels=(), label=None)
        image, _ = nifti_image(label_sample)
        relative = root / "labelsTr" / f"{case}.nii.gz"
        done = _write(image, out_dir / relative, params.compression)
        written.append(WrittenFile(relative.as_posix(), done.digest, done.size))
    return written
