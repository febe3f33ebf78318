"""``medflow audit``: prove to a reviewer that a de-identified build holds no residual identity.

The audit reads a build only (``manifest.json``, the written files, the JSONL audit files, file
and folder names); it imports no engine and no step code. Every finding is reported as
``FILE: attribute.path: rule`` with the file's path relative to the build and any identifying
part of that path replaced by ``<rule>``: a finding never repeats the value it found.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from medflow.audit.files import scan_file, scan_json_value
from medflow.audit.scan import AuditFinding, Scanner, redact, rules
from medflow.audit.source import collect_identity
from medflow.audit.summary import AuditSummary, Withheld, accounting_problem, audit_files, withheld

MANIFEST_NAME = "manifest.json"
EXIT_CLEAN, EXIT_FINDINGS, EXIT_NOT_A_BUILD = 0, 1, 2


class NotABuildError(Exception):
    """The folder is not a medflow build (no readable manifest.json with a manifest_version)."""


@dataclass
class AuditReport:
    """Everything ``medflow audit`` reports; ``exit_code`` 1 when there is any finding."""

    out_dir: Path
    findings: list[AuditFinding] = field(default_factory=list)
    files_scanned: int = 0
    names_scanned: int = 0
    summary: AuditSummary = field(default_factory=AuditSummary)
    withheld: list[Withheld] = field(default_factory=list)
    accounting: dict[str, Any] | None = None
    source_files: int | None = None
    source_patients: int | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_FINDINGS if self.findings else EXIT_CLEAN

    def as_dict(self) -> dict[str, Any]:
        return {
            "build": str(self.out_dir),
            "clean": not self.findings,
            "findings": [{"file": f.file, "path": f.path, "rule": f.rule} for f in self.findings],
            "files_scanned": self.files_scanned,
            "names_scanned": self.names_scanned,
            "source": None if self.source_files is None
            else {"files": self.source_files, "patients": self.source_patients},
            "audit_records": self.summary.as_dict(),
            "withheld": [w.__dict__ for w in self.withheld],
            "accounting": self.accounting,
        }


def read_build_manifest(out_dir: Path) -> dict[str, Any]:
    """The manifest of the build at ``out_dir``.

    Raises:
        NotABuildError: no folder, no manifest.json, or not a medflow manifest.
    """
    path = out_dir / MANIFEST_NAME
    if not out_dir.is_dir() or not path.is_file():
        raise NotABuildError(f"{out_dir}: not a medflow build (no {MANIFEST_NAME})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise NotABuildError(f"{path}: not a medflow manifest ({type(exc).__name__})") from None
    if not isinstance(manifest, dict) or "manifest_version" not in manifest:
        raise NotABuildError(f"{path}: not a medflow manifest (no manifest_version)")
    return manifest


def _walk(out_dir: Path) -> tuple[list[Path], list[Path]]:
    """Every file and every folder under ``out_dir`` (symlinks are not followed), sorted."""
    files, folders = [], []
    for root, dirs, names in os.walk(out_dir):
        dirs.sort()
        base = Path(root)
        folders += [base / d for d in dirs]
        files += [base / n for n in sorted(names)]
    return sorted(files), sorted(folders)


class _Names:
    """Display paths: each component scanned once; identifying parts replaced by ``<rule>``."""

    def __init__(self, out_dir: Path, scanner: Scanner):
        self.out_dir, self.scanner = out_dir, scanner
        self.components: dict[str, tuple[str, list[str]]] = {}

    def component(self, name: str) -> tuple[str, list[str]]:
        if name not in self.components:
            spans = self.scanner.name(name)
            self.components[name] = (redact(name, spans), rules(spans))
        return self.components[name]

    def display(self, path: Path) -> str:
        parts = PurePosixPath(path.relative_to(self.out_dir).as_posix()).parts
        return "/".join(self.component(p)[0] for p in parts)


def audit_build(out_dir: Path, source: Path | None = None) -> AuditReport:
    """Scan the build at ``out_dir``; with ``source``, against the originals' identifying values too.

    Raises:
        NotABuildError: ``out_dir`` is not a medflow build.
    """
    out_dir = Path(out_dir)
    manifest = read_build_manifest(out_dir)
    report = AuditReport(out_dir=out_dir)
    identity = None
    if source is not None:
        collected = collect_identity(Path(source))
        identity = collected.merged()
        report.source_files, report.source_patients = collected.files, len(collected.per_patient)
    scanner = Scanner(identity)
    names = _Names(out_dir, scanner)
    files, folders = _walk(out_dir)
    found: set[AuditFinding] = set()
    for path in folders + files:
        report.names_scanned += 1
        _, name_rules = names.component(path.name)
        shown = names.display(path) + ("/" if path in folders else "")
        found.update(AuditFinding(shown, "(folder name)" if path.is_dir() else "(file name)", r) for r in name_rules)
    for path in files:
        report.files_scanned += 1
        shown = names.display(path)
        if path == out_dir / MANIFEST_NAME:
            hits = scan_json_value(manifest, scanner)
        else:
            hits = scan_file(path, scanner)
        found.update(AuditFinding(shown, where, rule) for where, rule in hits)
    problem = accounting_problem(manifest)
    if problem:
        found.add(AuditFinding(MANIFEST_NAME, "accounting", problem))
    report.findings = sorted(found)
    for path in audit_files(out_dir, manifest):
        report.summary.add(path.read_bytes())
    report.withheld = [_redacted(w, scanner) for w in withheld(manifest)]
    accounting = manifest.get("accounting")
    report.accounting = accounting if isinstance(accounting, dict) else None
    if report.accounting is not None:  # printed in full with --json: the reasons must be redacted too
        report.accounting = json.loads(json.dumps(report.accounting))
        for entry in report.accounting.get("withheld", []) or []:
            if isinstance(entry, dict):
                for key in ("file", "reason"):
                    if key in entry:
                        entry[key] = _redact_text(str(entry[key]), scanner)
    return report


def _redact_text(text: str, scanner: Scanner) -> str:
    return redact(text, scanner.text(text, patterns=True))


def _redacted(entry: Withheld, scanner: Scanner) -> Withheld:
    """A withheld entry safe to print: identifying parts of its name and reason replaced."""
    return Withheld(entry.what, _redact_text(entry.name, scanner), entry.status, _redact_text(entry.reason, scanner))


def format_report(report: AuditReport) -> str:
    """The human-readable report: findings first (one line each), then the summaries."""
    lines = [finding.line() for finding in report.findings]
    source = ""
    if report.source_files is not None:
        source = f", against {report.source_patients} patient(s) of {report.source_files} source file(s)"
    verdict = f"{len(report.findings)} finding(s)" if report.findings else "clean: no residual identifying value found"
    lines.append(f"audit of {report.out_dir}: {report.files_scanned} file(s) and {report.names_scanned} name(s) "
                 f"scanned{source}; {verdict}")
    summary = report.summary
    lines.append(f"de-identification audit records: {summary.records} in {summary.files} file(s)"
                 + (f", {summary.unreadable_lines} unreadable line(s)" if summary.unreadable_lines else ""))
    for keyword, actions in sorted(summary.actions.items()):
        counted = ", ".join(f"{action} x{count}" for action, count in sorted(actions.items()))
        lines.append(f"  {keyword}: {counted}")
    if report.accounting is not None:
        acc = report.accounting
        held = len(acc.get("withheld", []) or [])
        lines.append(f"inputs: {acc.get('inputs')} file(s), {acc.get('written')} written, {held} withheld")
    items = sum(w.what == "item" for w in report.withheld)
    lines.append(f"withheld: {items} item(s), {len(report.withheld) - items} input file(s)")
    lines += [f"  {w.what} {w.name}: {w.status}: {w.reason}" for w in report.withheld]
    return "\n".join(lines)
