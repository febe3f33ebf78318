"""The dependency rules of ARCHITECTURE.md, checked by reading the imports.

cli -> engine -> steps/sources/writers -> ops/sample; recipe -> registries.
Steps never import the engine; ops import nothing of medflow but themselves;
the engine never names a step.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "medflow"


def _medflow_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("medflow"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("medflow"):
            found.add(node.module)
    return found


def _modules(room: str) -> list[Path]:
    return sorted((PACKAGE / room).rglob("*.py"))


FORBIDDEN = {
    "ops": ("medflow.engine", "medflow.steps", "medflow.recipe", "medflow.sources", "medflow.writers",
            "medflow.sample", "medflow.cli"),
    "steps": ("medflow.engine", "medflow.cli", "medflow.recipe"),
    "sources": ("medflow.engine", "medflow.cli", "medflow.steps"),
    "writers": ("medflow.engine", "medflow.cli", "medflow.steps"),
    "recipe": ("medflow.engine", "medflow.cli"),
    "engine": ("medflow.cli",),
    # commands that read builds read manifests and outputs only (ARCHITECTURE.md)
    "audit": ("medflow.engine", "medflow.steps", "medflow.writers", "medflow.cli", "medflow.recipe"),
    "deid": ("medflow.engine", "medflow.steps", "medflow.writers", "medflow.cli", "medflow.recipe"),
}


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_rooms_import_only_downwards(room):
    violations = []
    for path in _modules(room):
        for module in _medflow_imports(path):
            if module.startswith(FORBIDDEN[room]):
                violations.append(f"{path.relative_to(PACKAGE.parent)} imports {module}")
    assert violations == []


def test_engine_never_names_a_step():
    from medflow.steps.registry import all_steps

    names = {spec.name for spec in all_steps()}
    offenders = []
    for path in _modules("engine"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            # a step named in a comparison (params.step == "window") or looked up by name
            candidates = []
            if isinstance(node, ast.Compare):
                candidates = [node.left, *node.comparators]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "get_step":
                candidates = list(node.args)
            for candidate in candidates:
                if isinstance(candidate, ast.Constant) and candidate.value in names:
                    offenders.append(f"{path.name}: {candidate.value!r}")
    assert offenders == []
