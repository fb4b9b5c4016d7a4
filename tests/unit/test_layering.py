"""One-way layering: the packages below the drivers never import upward, nor Hydra; no module
grows past 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "vista"
LOWER = ("pipeline", "scheduler", "fl", "data", "models", "peft", "selection", "recording")
UPWARD = ("vista.drivers", "vista.main", "vista.build", "vista.sweep", "vista.config", "hydra")


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


@pytest.mark.parametrize("package", LOWER)
def test_lower_packages_do_not_import_upward_nor_hydra(package):
    bad = {f"{p.relative_to(SRC)}: {m}" for p in (SRC / package).rglob("*.py") for m in _imports(p)
           if any(m == u or m.startswith(u + ".") for u in UPWARD)}
    assert not bad, sorted(bad)


def test_hydra_is_imported_only_at_the_edge():
    users = {str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
             if any(m == "hydra" or m.startswith("hydra.") for m in _imports(p))}
    assert users == {"main.py", "build.py", "sweep.py"}


def test_no_module_over_400_lines():
    sizes = {str(p.relative_to(SRC)): len(p.read_text().splitlines()) for p in SRC.rglob("*.py")}
    assert max(sizes.values()) <= 400, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
