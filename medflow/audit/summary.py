"""What the build says it did: the per-file audit records and the manifest's withheld inputs."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Item statuses that mean: nothing of this item was written.
WITHHELD_STATUSES = frozenset({"quarantined", "failed", "not built"})


@dataclass
class AuditSummary:
    """Counts over the JSONL audit files: per attribute keyword, how often each action was applied."""

    files: int = 0
    records: int = 0
    unreadable_lines: int = 0
    actions: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    def add(self, data: bytes) -> None:
        self.files += 1
        for line in data.decode("utf-8", "replace").splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                keyword = str(record.get("keyword") or record.get("tag") or "?")
                action = f"{record.get('action', '?')} -> {record.get('applied', '?')}"
            except (ValueError, AttributeError):
                self.unreadable_lines += 1
                continue
            self.records += 1
            self.actions[keyword][action] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "records": self.records,
            "unreadable_lines": self.unreadable_lines,
            "actions": {k: dict(sorted(v.items())) for k, v in sorted(self.actions.items())},
        }


@dataclass(frozen=True)
class Withheld:
    """An item or input file that the build did not write, and why (as the manifest says)."""

    what: str  # "item" or "file"
    name: str
    status: str
    reason: str


def withheld(manifest: dict[str, Any]) -> list[Withheld]:
    """Items not written (quarantined, failed, not built), accounted files withheld, inputs skipped."""
    out = []
    for item in manifest.get("items", []) or []:
        status = str(item.get("status", ""))
        if status in WITHHELD_STATUSES:
            out.append(Withheld("item", str(item.get("id", "?")), status, str(item.get("error") or status)))
    accounting = manifest.get("accounting")
    if isinstance(accounting, dict):
        for entry in accounting.get("withheld", []) or []:
            out.append(Withheld("file", str(entry.get("file", "?")), "withheld", str(entry.get("reason", ""))))
    for key, status in (("inputs_skipped", "skipped"), ("inputs_unreadable", "unreadable")):
        for entry in manifest.get(key, []) or []:
            out.append(Withheld("file", str(entry.get("file", "?")), status, str(entry.get("reason", ""))))
    return out


def accounting_problem(manifest: dict[str, Any]) -> str | None:
    """Why the manifest's input accounting does not add up (written + withheld != inputs), or None."""
    accounting = manifest.get("accounting")
    if not isinstance(accounting, dict):
        return None
    try:
        inputs, written = int(accounting["inputs"]), int(accounting["written"])
        held = len(accounting.get("withheld", []) or [])
    except (KeyError, TypeError, ValueError):
        return "accounting-malformed"
    if written + held != inputs:
        return f"accounting-mismatch:{written} written + {held} withheld != {inputs} inputs"
    return None


def audit_files(out_dir: Path, manifest: dict[str, Any]) -> list[Path]:
    """The JSONL audit files of the build: those the manifest lists, and any under ``audit/``."""
    listed = {
        out_dir / o["path"]
        for item in manifest.get("items", []) or []
        for o in item.get("outputs", []) or []
        if isinstance(o, dict) and str(o.get("path", "")).endswith(".jsonl")
    }
    folder = out_dir / "audit"
    found = set(folder.rglob("*.jsonl")) if folder.is_dir() else set()
    return sorted(p for p in listed | found if p.is_file())
