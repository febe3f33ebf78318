"""PyTorch adapter for a built dataset; torch is imported here only, when used.

torch is not a medflow dependency: :func:`torch_dataset_class` raises an ImportError
saying how to install it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np


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
        """Item ``i`` -> ``transform(array)`` if a transform is given, else ``torch.from_numpy(array)``.

        The array is copied out of the memory map (a writable, contiguous array), so
        workers of a DataLoader never share or modify the dataset's files.
        """

        def __init__(self, built: Any, transform: Callable[[np.ndarray], Any] | None = None):
            self.built = built
            self.transform = transform

        def __len__(self) -> int:
            return len(self.built)

        def __getitem__(self, index: int) -> Any:
            array = np.array(self.built[int(index)].array, copy=True)
            if self.transform is not None:
                return self.transform(array)
            return torch.from_numpy(array)

    return _TorchDataset


def TorchDataset(built: Any, transform: Callable[[np.ndarray], Any] | None = None) -> Any:  # noqa: N802 - a factory
    """A ``torch.utils.data.Dataset`` over ``built`` (a :class:`medflow.dataset.BuiltDataset`)."""
    return torch_dataset_class()(built, transform)
