"""Read a built dataset: ``medflow.dataset.open(build_dir)``.

>>> ds = open("build/quickstart")                  # doctest: +SKIP
>>> len(ds), ds[0].id, ds[0].array.shape           # doctest: +SKIP
>>> ds["series-id"].meta["window"]                 # doctest: +SKIP
>>> torch_ds = ds.to_torch()                       # doctest: +SKIP

The manifest (``manifest.json``) lists the items; only items built successfully
(status ``ok``) are in the dataset, in manifest order (sorted by id); the others are
in :attr:`BuiltDataset.not_ok`. Each item's array is its ``.npy`` output (an ``npy``
writer in the recipe), opened memory-mapped and read-only. ``verify=True`` checks
every output file's sha256 against the manifest. torch is imported only by
:meth:`BuiltDataset.to_torch` (see :mod:`medflow.torch_dataset`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medflow.errors import InputError
from medflow.writers.atomic import sha256_file

MANIFEST_NAME = "manifest.json"


class DatasetError(InputError):
    """A built dataset cannot be read: missing, corrupt or changed file (the message names it)."""


@dataclass(frozen=True)
class BuiltItem:
    """One built item.

    Attributes:
        id: the item id (never derived from patient tags).
        meta: the item's metadata from the manifest (modality, units, applied window...).
        outputs: the item's output files: dicts ``{"path", "sha256", "size"}``, ``path``
            relative to the dataset folder.
        root: the dataset folder.
        modality: the item's Modality, from the manifest.
    """

    id: str
    meta: dict[str, Any]
    outputs: list[dict[str, Any]]
    root: Path
    modality: str | None = None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def npy_path(self) -> Path:
        """Absolute path of the item's ``.npy`` output.

        Raises:
            DatasetError: the recipe wrote no ``.npy`` for this item.
        """
        for out in self.outputs:
            if out["path"].endswith(".npy"):
                return self.root / out["path"]
        kinds = ", ".join(sorted({Path(o["path"]).suffix or o["path"] for o in self.outputs})) or "none"
        raise DatasetError(
            str(self.root / MANIFEST_NAME),
            f"item {self.id} has no .npy output (outputs: {kinds}); add an npy writer to the recipe",
        )

    @property
    def array(self) -> np.ndarray:
        """The item's array, memory-mapped read-only (``np.load(mmap_mode="r")``).

        Raises:
            DatasetError: the file is missing or not a valid .npy (the message names it).
        """
        if "array" not in self._cache:
            path = self.npy_path
            if not path.is_file():
                raise DatasetError(str(path), f"output file of item {self.id} is missing")
            try:
                self._cache["array"] = np.load(path, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                raise DatasetError(str(path), f"not a readable .npy file ({exc})") from exc
        return self._cache["array"]

    def verify(self) -> None:
        """Check that every output file exists and has the manifest's sha256.

        Raises:
            DatasetError: naming the first missing or changed file.
        """
        for out in self.outputs:
            path = self.root / out["path"]
            if not path.is_file():
                raise DatasetError(str(path), f"output file of item {self.id} is missing")
            actual = sha256_file(path)
            if actual != out["sha256"]:
                raise DatasetError(
                    str(path),
                    f"sha256 {actual} differs from the manifest's {out['sha256']} (file changed or corrupt)",
                )


class BuiltDataset:
    """The items of a build, by position or by id (see :func:`open`)."""

    def __init__(self, root: Path, manifest: dict[str, Any]):
        self.root = root
        self.manifest = manifest
        self.items: list[BuiltItem] = []
        self.not_ok: list[dict[str, Any]] = []
        for entry in manifest.get("items", []):
            if entry.get("status") != "ok":
                self.not_ok.append({"id": entry.get("id"), "status": entry.get("status"), "error": entry.get("error")})
                continue
            self.items.append(
                BuiltItem(entry["id"], entry.get("meta", {}), entry.get("outputs", []), root, entry.get("modality"))
            )
        self._by_id = {item.id: item for item in self.items}

    @property
    def recipe(self) -> dict[str, Any]:
        """The resolved recipe the dataset was built with."""
        return self.manifest.get("recipe", {}).get("resolved", {})

    @property
    def ids(self) -> list[str]:
        return [item.id for item in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[BuiltItem]:
        return iter(self.items)

    def __getitem__(self, key: int | str) -> BuiltItem:
        """``ds[i]`` by position (negative allowed) or ``ds["item-id"]`` by id."""
        if isinstance(key, str):
            try:
                return self._by_id[key]
            except KeyError:
                raise KeyError(f"no item {key!r} in {self.root} ({len(self)} items)") from None
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            return self.items[key]
        raise TypeError(f"index a BuiltDataset with an int or an item id, not {type(key).__name__}")

    def verify(self) -> None:
        """Check every item's output files against the manifest's sha256 (see :meth:`BuiltItem.verify`)."""
        for item in self.items:
            item.verify()

    def to_torch(self, transform=None):
        """A ``torch.utils.data.Dataset`` over the items' arrays (see :mod:`medflow.torch_dataset`).

        Raises:
            ImportError: torch is not installed (it is not a medflow dependency).
        """
        from medflow.torch_dataset import TorchDataset

        return TorchDataset(self, transform=transform)

    def __repr__(self) -> str:
        return f"BuiltDataset({str(self.root)!r}, {len(self)} items)"


def open(build_dir: str | Path, *, verify: bool = False) -> BuiltDataset:  # noqa: A001 - the public name
    """Open the dataset built in ``build_dir`` (the recipe's ``outputs.dir``).

    Args:
        build_dir: the output folder holding ``manifest.json``.
        verify: also check every output file's sha256 against the manifest.

    Raises:
        DatasetError: no manifest, an unreadable manifest, or (with ``verify``) a
            missing or changed output file; the message names the file.
    """
    root = Path(build_dir)
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise DatasetError(str(path), "no manifest: is this a medflow build folder (outputs.dir of a recipe)?")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DatasetError(str(path), f"manifest is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("items"), list):
        raise DatasetError(str(path), "manifest has no 'items' list")
    dataset = BuiltDataset(root, manifest)
    if verify:
        dataset.verify()
    return dataset


__all__ = ["BuiltDataset", "BuiltItem", "DatasetError", "open"]
