"""What a dataset-level writer that reads records gets: the items' manifest entries and the plan's facts.

A writer opts in with ``dataset_input: ClassVar[str] = "records"`` on its params model; its function
is then ``(DatasetRecords, params, out_dir) -> list[WrittenFile]`` (other dataset-level writers get
the items' ``.npy`` files, see :func:`medflow.engine.record.run_dataset_writers`). No pixels here:
every value comes from the workers' small records and from what was known before any pixel was read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DatasetRecords:
    """The build's items and facts, as the manifest will say them.

    Attributes:
        items: the manifest's item entries (``id``, ``kind``, ``modality``, ``outputs``, ``status``,
            ``meta`` with ``geometry`` and ``array``), in plan order.
        subjects: item id -> recorded keys (``patient``, ``study``, ``series``, ``accession``, ``echo``,
            ``description``): pseudonyms in a de-identifying recipe.
        tables: table path as written in the recipe -> (key column, item id -> joined row, key mapped).
        splits: the manifest's ``splits`` record, or ``None``.
    """

    items: list[dict[str, Any]]
    subjects: dict[str, dict[str, str]] = field(default_factory=dict)
    tables: dict[str, tuple[str, dict[str, dict[str, str]]]] = field(default_factory=dict)
    splits: dict[str, Any] | None = None

    @classmethod
    def of(cls, items: list[dict[str, Any]], facts: Any) -> DatasetRecords:
        """From manifest entries and a :class:`medflow.splits.DatasetFacts` (or ``None``)."""
        if facts is None:
            return cls(items)
        subjects = {item_id: dict(s.recorded) for item_id, s in facts.subjects.items()}
        return cls(items, subjects, dict(facts.tables), facts.splits)

    def to_json(self) -> dict[str, Any]:
        """Everything the writer reads, JSON-able: its cache key hashes this."""
        return {"items": self.items, "subjects": self.subjects,
                "tables": {k: [c, rows] for k, (c, rows) in self.tables.items()}, "splits": self.splits}
