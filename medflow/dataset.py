"""Read a built dataset: ``medflow.dataset.open(build_dir)``.

>>> ds = open("build/quickstart")                  # doctest: +SKIP
>>> len(ds), ds[0].id, ds[0].array.shape           # doctest: +SKIP
>>> ds["series-id"].meta["window"]                 # doctest: +SKIP
>>> torch_ds = ds.to_torch()                       # doctest: +SKIP

The manifest (``manifest.json``) lists the items; only items built successfully
(status ``ok``) are in the dataset, in manifest order (sorted by id); the others are
in :attr:`BuiltDataset.not_ok`. Each item's array is its ``.npy`` output (an ``npy``
writer in the recipe), opened memory-mapped and read-only. ``verify=True`` checks
every output file's digest against the manifest (BLAKE3; sha256 in a manifest of an older
medflow). torch is imported only by
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
from medflow.geometry import from_record
from medflow.hashing import file_digest, recorded_digest
from medflow.sample import Geometry, Sample

MANIFEST_NAME = "manifest.json"


class DatasetError(InputError):
    """A built dataset cannot be read: missing, corrupt or changed file (the message names it)."""


@dataclass(frozen=True)
class BuiltItem:
    """One built item.

    Attributes:
        id: the item id (never derived from patient tags).
        meta: the item's metadata from the manifest (modality, units, applied window...).
        outputs: the item's output files: dicts ``{"path", "blake3", "size"}`` (``"sha256"``
            instead of ``"blake3"`` from an older medflow), ``path`` relative to the dataset folder.
        root: the dataset folder.
        modality: the item's Modality, from the manifest.
    """

    id: str
    meta: dict[str, Any]
    outputs: list[dict[str, Any]]
    root: Path
    modality: str | None = None
    split: str | None = None
    kind: str | None = None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def geometry(self) -> Geometry | None:
        """Exact LPS geometry (mm) of the written array's ``zyx`` grid, ``None`` without patient geometry.

        Origin, spacing, directions and every slice's position as the build wrote them (see
        :mod:`medflow.geometry`); ``item.meta["geometry"]`` is the same as JSON.
        """
        record = self.meta.get("geometry")
        return from_record(record) if record else None

    @property
    def array_info(self) -> dict[str, Any]:
        """Axes, shape, dtype and channel names of the written array (from the manifest, no file read)."""
        return dict(self.meta.get("array") or {})

    @property
    def label_path(self) -> Path | None:
        """The item's label ``.npy`` (an output under a ``labels`` folder or named ``*_label(s)``/``*_seg``), if any."""
        for out in self.outputs:
            if _is_label(out["path"]):
                return self.root / out["path"]
        return None

    @property
    def label(self) -> np.ndarray | None:
        """The item's label array, memory-mapped read-only; ``None`` when the build wrote no labels."""
        path = self.label_path
        if path is None:
            return None
        if "label" not in self._cache:
            self._cache["label"] = _load_npy(path, self.id)
        return self._cache["label"]

    @property
    def npy_path(self) -> Path:
        """Absolute path of the item's ``.npy`` output.

        Raises:
            DatasetError: the recipe wrote no ``.npy`` for this item.
        """
        for out in self.outputs:
            if out["path"].endswith(".npy") and not _is_label(out["path"]):
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
            self._cache["array"] = _load_npy(self.npy_path, self.id)
        return self._cache["array"]

    def verify(self) -> None:
        """Check that every output file exists and has the manifest's digest (with the algorithm it names).

        Raises:
            DatasetError: naming the first missing or changed file (or an entry with no digest).
        """
        for out in self.outputs:
            path = self.root / out["path"]
            if not path.is_file():
                raise DatasetError(str(path), f"output file of item {self.id} is missing")
            recorded = recorded_digest(out)
            if recorded is None:
                raise DatasetError(str(path), f"the manifest records no digest of this output of item {self.id}")
            algorithm, expected = recorded
            actual = file_digest(path, algorithm)
            if actual != expected:
                raise DatasetError(
                    str(path),
                    f"{algorithm} {actual} differs from the manifest's {expected} (file changed or corrupt)",
                )


def _is_label(path: str) -> bool:
    parts = Path(path).parts
    stem = Path(path).name.removesuffix(".npy")
    return path.endswith(".npy") and ("labels" in parts[:-1] or stem.endswith(("_label", "_labels", "_seg")))


def _load_npy(path: Path, item_id: str) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(str(path), f"output file of item {item_id} is missing")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DatasetError(str(path), f"not a readable .npy file ({exc})") from exc


class BuiltDataset:
    """The items of a build, by position or by id (see :func:`open`)."""

    def __init__(self, root: Path, manifest: dict[str, Any], items: list[BuiltItem] | None = None):
        self.root = root
        self.manifest = manifest
        self.items: list[BuiltItem] = []
        self.not_ok: list[dict[str, Any]] = []
        split_of = (manifest.get("splits") or {}).get("items", {})
        for entry in manifest.get("items", []) if items is None else []:
            if entry.get("status") != "ok":
                self.not_ok.append({"id": entry.get("id"), "status": entry.get("status"), "error": entry.get("error")})
                continue
            self.items.append(
                BuiltItem(entry["id"], entry.get("meta", {}), entry.get("outputs", []), root, entry.get("modality"),
                          split_of.get(entry["id"]), entry.get("kind"))
            )
        if items is not None:
            self.items = list(items)
        self._by_id = {item.id: item for item in self.items}

    @property
    def splits(self) -> dict[str, Any] | None:
        """The manifest's ``splits`` record (method, counts, per item split, leakage), ``None`` without splits."""
        return self.manifest.get("splits")

    def split(self, name: str, fold: int | None = None) -> BuiltDataset:
        """The items of one split: ``ds.split("train")``; with k folds ``ds.split("train", fold=0)`` is every
        fold but fold 0 and ``ds.split("val", fold=0)`` fold 0 (``ds.split("fold0")`` too).

        Raises:
            DatasetError: the build has no ``splits:`` or no split of that name.
        """
        from medflow.splits import item_in_split

        record = self.splits
        manifest_path = str(self.root / MANIFEST_NAME)
        if not record:
            raise DatasetError(manifest_path, "the build has no splits (add a splits: section to the recipe)")
        try:
            chosen = [item for item in self.items if item_in_split(record, item.id, name, fold)]
        except ValueError as exc:
            raise DatasetError(manifest_path, str(exc)) from None
        if not chosen and fold is None and name not in set(record.get("items", {}).values()):
            known = ", ".join(sorted(set(record.get("items", {}).values())))
            raise DatasetError(manifest_path, f"no split {name!r} (splits: {known})")
        return BuiltDataset(self.root, self.manifest, chosen)

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
        """Check every item's output files against the manifest's digests (see :meth:`BuiltItem.verify`)."""
        for item in self.items:
            item.verify()

    def to_torch(self, transform=None, *, unit: str = "item", context: int = 0, split: str | None = None,
                 fold: int | None = None):
        """A ``torch.utils.data.Dataset`` of ``{"image", "label", "meta", "id"}`` (see :mod:`medflow.torch_dataset`).

        Args:
            transform: applied to the image array (numpy) instead of ``torch.from_numpy``.
            unit: ``"item"`` (whole arrays) or ``"slice"`` (one entry per slice of every item).
            context: with ``unit="slice"``, also the ``context`` slices on each side (2.5-D; edges repeat).
            split, fold: only the items of that split (see :meth:`split`).

        Raises:
            ImportError: torch is not installed (it is not a medflow dependency).
        """
        from medflow.torch_dataset import TorchDataset

        built = self.split(split, fold) if split is not None else self
        return TorchDataset(built, transform=transform, unit=unit, context=context)

    def __repr__(self) -> str:
        return f"BuiltDataset({str(self.root)!r}, {len(self)} items)"


def open(build_dir: str | Path, *, verify: bool = False) -> BuiltDataset:  # noqa: A001 - the public name
    """Open the dataset built in ``build_dir`` (the recipe's ``outputs.dir``).

    Args:
        build_dir: the output folder holding ``manifest.json``.
        verify: also check every output file's digest against the manifest.

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


def read_series(path: str | Path, *, item: int | str | None = None, duplicates: str = "first") -> Sample:
    """Read one DICOM series (or multi-frame instance, or 2-D image) with medflow's exact geometry.

    The same reader a build uses: slices ordered by their position along the slice normal, every
    slice's own ImagePositionPatient kept (tilted, uneven and gapped stacks described exactly),
    values ``stored * RescaleSlope + RescaleIntercept`` as float32.

    Args:
        path: a DICOM file, or a folder (read recursively) holding one item.
        item: which item when the folder holds several: its position in id order or its id.
        duplicates: ``"first"`` keeps the slice with the lowest (InstanceNumber, SOPInstanceUID) at a
            position; ``"error"`` raises.

    Returns:
        A :class:`~medflow.sample.Sample`: ``pixels`` (axes ``"zyx"``, or ``"zyxc"`` for color),
        ``geometry`` (:class:`~medflow.sample.Geometry`, LPS mm; ``None`` without patient geometry),
        ``headers`` (DICOM JSON per slice, z order) and ``meta``.

    Raises:
        InputError: nothing readable at ``path``, several items and no ``item``, or an unreadable file.
    """
    from medflow.recipe.model import SeriesFilter
    from medflow.sources.discovery import discover_dicom
    from medflow.sources.fingerprint import FingerprintMemo
    from medflow.sources.series import read_item

    path = Path(path).resolve()
    root, include = (path.parent, [path.name]) if path.is_file() else (path, ["**"])
    if not root.is_dir():
        raise InputError(str(path), "no such file or folder")
    found = discover_dicom(root, SeriesFilter(include=include, exclude_localizers=False), FingerprintMemo(None))
    items = sorted(found.items, key=lambda i: i.item_id)
    if not items:
        raise InputError(str(path), "no DICOM image found")
    if item is None and len(items) > 1:
        listed = ", ".join(f"{i.item_id} ({i.modality} {i.series_description!r})" for i in items)
        raise InputError(str(path), f"{len(items)} items here, choose one with item=: {listed}")
    if isinstance(item, str):
        chosen = next((i for i in items if i.item_id == item), None)
        if chosen is None:
            raise InputError(str(path), f"no item {item!r} (items: {', '.join(i.item_id for i in items)})")
    else:
        chosen = items[item or 0]
    return read_item(chosen, duplicates=duplicates)


__all__ = ["BuiltDataset", "BuiltItem", "DatasetError", "open", "read_series"]
