"""Per-frame headers of one multi-frame file, as DICOM JSON dicts built when read.

Frame f's header is the file's header with only frame f's item in its Per-frame Functional
Groups Sequence (5200,9230) (PS3.3 C.7.6.16): the part the frames share (everything else) is
converted once, each frame's own item when that frame is first read. A chain whose steps
never read a header pays for no conversion; a cache entry keeps the shared part once, not
once per frame (200 frames of a Legacy Converted Enhanced CT: 8 MB of JSON as a list of
whole headers, ~160 KB this way).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from medflow.sources.pixels import header_json

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

PER_FRAME_TAG = "52009230"  # PerFrameFunctionalGroupsSequence in the DICOM JSON model
_PER_FRAME = 0x52009230
_PIXEL_GROUP = "0028"  # pixel description: group 0028, also inside functional group items
_SHARED_TAG = "52009229"  # SharedFunctionalGroupsSequence


class _FrameSource:
    """The shared part and the per-frame items of one file, converted on first need (any thread)."""

    def __init__(self, ds: Dataset | None = None, base: dict[str, Any] | None = None,
                 per_frame: dict[int, dict[str, Any]] | None = None, n_per_frame: int | None = None):
        self._ds = ds
        self._base = base
        self._per_frame_json: dict[int, dict[str, Any]] = dict(per_frame or {})
        self._per_frame_items = None
        self._n_per_frame = n_per_frame
        self._base_key: str | None = None
        self._lock = threading.RLock()

    def base(self) -> dict[str, Any]:
        with self._lock:  # gather threads may ask at once; pydicom converts raw elements in place
            if self._base is None:
                from pydicom.dataset import Dataset

                shared = Dataset()
                for element in self._ds:
                    if element.tag != _PER_FRAME:
                        shared.add(element)
                self._base = header_json(shared)
            return self._base

    def n_per_frame(self) -> int:
        if self._n_per_frame is None:
            self._n_per_frame = len(self._items())
        return self._n_per_frame

    def _items(self) -> list:
        with self._lock:
            if self._per_frame_items is None:
                self._per_frame_items = list(self._ds.get("PerFrameFunctionalGroupsSequence") or [])
            return self._per_frame_items

    def frame_item(self, frame: int) -> dict[str, Any] | None:
        """Frame ``frame``'s Per-frame Functional Groups item as JSON (None: the file has none)."""
        item = self._per_frame_json.get(frame)
        if item is None:
            if self.n_per_frame() == 0:
                return None
            items = self._items()
            if frame >= len(items):  # fewer items than frames: the frame has only the shared groups
                return None
            with self._lock:
                item = self._per_frame_json.get(frame)
                if item is None:
                    item = self._per_frame_json[frame] = header_json(items[frame])
        return item

    def header(self, frame: int) -> dict[str, Any]:
        header = dict(self.base())
        item = self.frame_item(frame)
        if item is not None:
            header[PER_FRAME_TAG] = {"vr": "SQ", "Value": [item]}
        return header

    def pixel_key(self, frame: int) -> str:
        """Equal for two frames whose group-0028 attributes (top level and in functional groups) are equal."""
        if self._base_key is None:
            base = self.base()
            described = {k: v for k, v in base.items() if k.startswith(_PIXEL_GROUP)}
            described["shared"] = _pixel_items(base.get(_SHARED_TAG))
            self._base_key = json.dumps(described, sort_keys=True)
        item = self.frame_item(frame)
        own = _pixel_items({"Value": [item]}) if item is not None else []
        text = self._base_key + json.dumps(own, sort_keys=True)
        return "frame:" + hashlib.sha256(text.encode()).hexdigest()[:32]


def _pixel_items(sequence: dict[str, Any] | None) -> list[dict[str, Any]]:
    items = (sequence or {}).get("Value") or []
    return [{k: v for k, v in item.items() if k.startswith(_PIXEL_GROUP)} for item in items]


class FrameHeaders(Sequence):
    """Headers of some frames of one multi-frame file (in the order given), each built on first access.

    Equal to the list of the same dicts; slicing gives a FrameHeaders sharing the converted
    parts. :meth:`to_json` / :meth:`from_json` keep the shared part once.
    """

    def __init__(self, ds: Dataset, frames: Sequence[int], _source: _FrameSource | None = None):
        self._source = _source or _FrameSource(ds)
        self._frames = [int(f) for f in frames]

    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return FrameHeaders(None, self._frames[index], self._source)
        return self._source.header(self._frames[index])

    def __eq__(self, other) -> bool:
        if isinstance(other, FrameHeaders | list | tuple) or hasattr(other, "pixel_description"):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrameHeaders({len(self)} frames)"

    def pixel_description(self, index: int) -> str:
        """A key equal for two frames whose pixel descriptions are equal (as :class:`LazyHeaders`'),
        from the shared part and the frame's own item only (no whole header built)."""
        return self._source.pixel_key(self._frames[index])

    def to_json(self) -> dict[str, Any]:
        """``{"frame_headers": {"base", "frames", "items"}}``: the shared part once, each frame's own item."""
        source = self._source
        items = [source.frame_item(f) for f in self._frames] if source.n_per_frame() else None
        return {"frame_headers": {"base": source.base(), "frames": list(self._frames), "items": items}}

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> FrameHeaders:
        data = entry["frame_headers"]
        frames, items = data["frames"], data.get("items")
        per_frame = dict(zip(frames, items, strict=True)) if items is not None else {}
        source = _FrameSource(base=data["base"], per_frame=per_frame, n_per_frame=len(per_frame))
        return cls(None, frames, source)
