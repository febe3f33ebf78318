"""PyTorch adapter for a built dataset; torch is imported here only, when used.

Each entry is a dict ``{"image", "label", "meta", "id"}``:

* ``image``: ``torch.from_numpy`` of a copy of the array (or ``transform(array)``); with
  ``unit="slice"`` one slice of the item's slice axis (``z``, else ``d``, else ``n``), and with
  ``context=k`` the ``k`` slices on each side too (edges repeat the first/last slice): stacked on the
  channel axis when the slice has one (``c * (2k + 1)`` channels, neighbours outermost), else on a
  new first axis of length ``2k + 1``.
* ``label``: the label array (the centre slice with ``unit="slice"``), ``None`` when the build wrote
  no labels.
* ``meta``: ``{"id", "split", "modality", "slice", "spacing"}`` (``spacing`` ``[z, y, x]`` mm or ``None``).
* ``id``: the item id.

PyTorch's default collate refuses ``None``: pass ``collate_fn=medflow.torch_dataset.collate`` to a
``DataLoader`` (it stacks images and labels when every entry has one, and keeps lists otherwise).
torch is not a medflow dependency: :func:`torch_dataset_class` raises an ImportError saying how to install it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

SLICE_AXES = ("z", "d", "n")


def slice_axis(axes: str) -> int:
    """The index of the slice axis in ``axes`` (``z``, else ``d``, else ``n``; case-insensitive).

    Raises:
        ValueError: the array has none of them.
    """
    lower = axes.lower()
    for name in SLICE_AXES:
        if name in lower:
            return lower.index(name)
    raise ValueError(f"axes {axes!r} have no slice axis ({', '.join(SLICE_AXES)})")


def take_slices(array: np.ndarray, axes: str, index: int, context: int = 0) -> np.ndarray:
    """Slice ``index`` of ``array`` along its slice axis, with ``context`` neighbours on each side.

    Returns a new, writable array: the slice (axes without the slice axis) for ``context=0``; else
    the ``2 * context + 1`` slices (edges repeated) concatenated on the ``c`` axis when there is one,
    or stacked on a new first axis.
    """
    axis = slice_axis(axes)
    n = array.shape[axis]
    picks = [min(max(i, 0), n - 1) for i in range(index - context, index + context + 1)]
    slices = [np.take(array, i, axis=axis) for i in picks]
    if context == 0:
        return np.array(slices[0], copy=True)
    rest = axes.lower().replace(axes.lower()[axis], "", 1)
    if "c" in rest:
        return np.concatenate(slices, axis=rest.index("c"))
    return np.stack(slices, axis=0)


@functools.cache
def torch_dataset_class() -> type:
    """The ``torch.utils.data.Dataset`` subclass (built on first use, after importing torch)."""
    try:
        import torch
        from torch.utils.data import Dataset
    except ImportError as exc:
        raise ImportError(
            "BuiltDataset.to_torch() needs PyTorch, which medflow does not install: "
            "pip install torch (see https://pytorch.org/get-started/)"
        ) from exc

    class _TorchDataset(Dataset):
        """Entry ``i`` -> ``{"image", "label", "meta", "id"}`` (see :mod:`medflow.torch_dataset`).

        Arrays are copied out of the memory map (writable, contiguous), so workers of a DataLoader
        never share or modify the dataset's files.
        """

        def __init__(self, built: Any, transform: Callable[[np.ndarray], Any] | None = None,
                     unit: str = "item", context: int = 0):
            if unit not in ("item", "slice"):
                raise ValueError(f"unit must be 'item' or 'slice' (got {unit!r})")
            if context < 0 or (context and unit != "slice"):
                raise ValueError(f"context needs unit='slice' and must be >= 0 (got {context})")
            self.built, self.transform, self.unit, self.context = built, transform, unit, context
            self.index: list[tuple[int, int | None]] = []
            for position, item in enumerate(built):
                if unit == "item":
                    self.index.append((position, None))
                    continue
                info = item.array_info
                axes = info.get("axes") or "zyx"
                shape = info.get("shape") or list(item.array.shape)
                self.index.extend((position, k) for k in range(shape[slice_axis(axes)]))

        def __len__(self) -> int:
            return len(self.index)

        def _axes(self, item: Any, array: np.ndarray) -> str:
            return item.array_info.get("axes") or "zyx"[-array.ndim:]

        def __getitem__(self, index: int) -> dict[str, Any]:
            position, k = self.index[int(index)]
            item = self.built[position]
            array, label = item.array, item.label
            if k is None:
                image = np.array(array, copy=True)
                label = None if label is None else np.array(label, copy=True)
            else:
                image = take_slices(array, self._axes(item, array), k, self.context)
                if label is not None:
                    label_axes = "zyx"[-label.ndim:] if label.ndim <= 3 else self._axes(item, array)
                    label = take_slices(label, label_axes, k)
            geometry = item.meta.get("geometry")
            meta = {"id": item.id, "split": item.split, "modality": item.modality, "slice": k,
                    "spacing": list(geometry["spacing"]) if geometry else None}
            return {
                "image": self.transform(image) if self.transform is not None else torch.from_numpy(image),
                "label": None if label is None else torch.from_numpy(label),
                "meta": meta,
                "id": item.id,
            }

    return _TorchDataset


def TorchDataset(  # noqa: N802 - a factory
    built: Any, transform: Callable[[np.ndarray], Any] | None = None, unit: str = "item", context: int = 0
) -> Any:
    """A ``torch.utils.data.Dataset`` over ``built`` (a :class:`medflow.dataset.BuiltDataset`)."""
    return torch_dataset_class()(built, transform, unit, context)


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Collate entries for a ``DataLoader``: images (and labels, when all have one) stacked; meta and ids as lists."""
    import torch

    images = [entry["image"] for entry in batch]
    labels = [entry["label"] for entry in batch]
    same = all(isinstance(x, torch.Tensor) for x in images) and len({tuple(x.shape) for x in images}) == 1
    return {
        "image": torch.stack(images) if same else images,
        "label": torch.stack(labels) if labels and all(x is not None for x in labels) else labels,
        "meta": [entry["meta"] for entry in batch],
        "id": [entry["id"] for entry in batch],
    }
