"""Auditing a de-identified build (``medflow audit OUTPUT [--source SOURCE] [--json]``).

Reads builds only: the manifest, the written files, the JSONL audit files, file and folder names.
It imports no engine and no step code (``tests/test_architecture.py`` checks the imports)::

    from medflow.audit import audit_build, format_report
    report = audit_build(Path("build/publish"), source=Path("/data/export"))
    print(format_report(report)); raise SystemExit(report.exit_code)
"""

from medflow.audit.build import (
    EXIT_CLEAN,
    EXIT_FINDINGS,
    EXIT_NOT_A_BUILD,
    AuditReport,
    NotABuildError,
    audit_build,
    format_report,
    read_build_manifest,
)
from medflow.audit.scan import AuditFinding

__all__ = [
    "EXIT_CLEAN",
    "EXIT_FINDINGS",
    "EXIT_NOT_A_BUILD",
    "AuditFinding",
    "AuditReport",
    "NotABuildError",
    "audit_build",
    "format_report",
    "read_build_manifest",
]
