"""Tensor writers: one ``.npy`` per item, and ``.npz`` shards over all items."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from medflow.hashing import new_hasher
from medflow.sample import Sample
from medflow.writers.atomic import TempFile, atomic_write
from medflow.writers.registry import WriterParams, WrittenFile, register_writer


class NpyParams(WriterParams):
    """One ``.npy`` file per item: ``<folder>/<item_id>.npy``."""

    kind: Literal["npy"]
    folder: str = Field("tensors", description="Subfolder of the output folder for the .npy files.")


class NpyStream:
    """Writes one item's .npy slab by slab; the bytes equal :func:`write_npy`'s on the whole array.

    The header (final shape: the slab shape with the item's slice count as first axis)
    goes out with the first slab; the file appears under its name only on ``close``.
    """

    def __init__(self, skeleton: Sample, params: NpyParams, out_dir: Path):
        self.relative = Path(params.folder) / f"{skeleton.item_id}.npy"
        self.path = out_dir / self.relative
        self.n_first = skeleton.pixels.shape[0]
        self.file = TempFile(self.path)
        self.digest = new_hasher()
        self.written = 0
        self.slab_shape: tuple[int, ...] | None = None

    def parts(self, slab: Sample) -> list:
        """The bytes ``slab`` appends to the file, in order (the .npy header with the first slab).

        Call in slab order; then :meth:`write_parts` and :meth:`hash_parts` on them, in the same
        order each (they may run on two threads: file writes and hashing release the GIL).
        """
        import io

        array = np.ascontiguousarray(slab.pixels)
        out = []
        if self.slab_shape is None:
            self.slab_shape = array.shape[1:]
            header = np.lib.format.header_data_from_array_1_0(array)
            header["shape"] = (self.n_first,) + array.shape[1:]
            buffer = io.BytesIO()
            np.lib.format.write_array_header_1_0(buffer, header)
            out.append(buffer.getvalue())
        elif array.shape[1:] != self.slab_shape:
            raise ValueError(f"slab shape {array.shape} does not continue {self.slab_shape}")
        out.append(memoryview(array).cast("B"))
        self.written += array.shape[0]
        return out

    def write_parts(self, parts: list) -> None:
        for data in parts:
            self.file.write(data)

    def hash_parts(self, parts: list) -> None:
        for data in parts:
            self.digest.update(data)

    def write(self, slab: Sample) -> None:
        parts = self.parts(slab)
        self.hash_parts(parts)
        self.write_parts(parts)

    def close(self) -> list[WrittenFile]:
        if self.written != self.n_first:
            self.abort()
            raise ValueError(f"wrote {self.written} slices of {self.n_first}")
        self.file.commit()
        return [WrittenFile(self.relative.as_posix(), self.digest.hexdigest(), self.path.stat().st_size)]

    def abort(self) -> None:
        self.file.abort()


@register_writer("npy", 1, NpyParams, open_stream=NpyStream)
def write_npy(sample: Sample, params: NpyParams, out_dir: Path) -> list[WrittenFile]:
    """Write the item's final array as one .npy file (memory-mappable)."""
    relative = Path(params.folder) / f"{sample.item_id}.npy"
    array = np.ascontiguousarray(sample.pixels)
    digest = atomic_write(out_dir / relative, lambda f: np.lib.format.write_array(f, array, allow_pickle=False))
    return [WrittenFile(relative.as_posix(), digest, (out_dir / relative).stat().st_size)]


class NpzShardsParams(WriterParams):
    """``.npz`` shards grouping several items' arrays, keyed by item id (needs an ``npy`` writer)."""

    kind: Literal["npz_shards"]
    items_per_shard: int = Field(64, ge=1, description="Number of items per shard file.")
    folder: str = Field("shards", description="Subfolder of the output folder for the shard files.")
    compressed: bool = Field(False, description="Use zip deflate compression (smaller, slower).")


@register_writer("npz_shards", 1, NpzShardsParams, per_item=False)
def write_npz_shards(item_files: list[tuple[str, Path]], params: NpzShardsParams, out_dir: Path) -> list[WrittenFile]:
    """Group the items' .npy outputs into .npz shards, items sorted by id."""
    written = []
    ordered = sorted(item_files)
    for shard_index in range(0, len(ordered), params.items_per_shard):
        chunk = ordered[shard_index : shard_index + params.items_per_shard]
        relative = Path(params.folder) / f"shard-{shard_index // params.items_per_shard:05d}.npz"
        arrays = {item_id: np.load(path, mmap_mode="r") for item_id, path in chunk}
        digest = atomic_write(out_dir / relative, lambda f, arrays=arrays: _save_npz(f, params.compressed, arrays))
        written.append(WrittenFile(relative.as_posix(), digest, (out_dir / relative).stat().st_size))
    return written


def _save_npz(fileobj, compressed: bool, arrays) -> None:
    """Write an .npz (zip of .npy members) with fixed member timestamps, so equal arrays give equal bytes.

    ``np.savez`` stamps each member with the current time, which would break
    "same recipe, same inputs -> same bytes".
    """
    import io
    import zipfile

    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", compression=method, allowZip64=True) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)
    fileobj.write(buffer.getbuffer())
