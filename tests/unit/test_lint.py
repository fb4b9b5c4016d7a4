"""The project's lint as a test: ruff with the rules in pyproject.toml's [tool.ruff] (unused or undefined
names, import order, syntax errors) passes over the whole tree, so an unused import or a name that
does not exist fails CI rather than waiting for a reader."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_ruff_finds_nothing_over_the_tree():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", "."], cwd=ROOT,
                          capture_output=True, text=True)
    assert "No module named ruff" not in done.stderr, "ruff is a dev dependency: pip install -e '.[dev]'"
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_reads_the_projects_rules():
    """The rules are the project's, not ruff's defaults: an unsorted import block is flagged (I001)."""
    bad = "import sys\nimport os\n\nprint(os, sys)\n"
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise",
                           "--stdin-filename", "src/vista/x.py", "-"], cwd=ROOT, input=bad,
                          capture_output=True, text=True)
    assert done.returncode == 1 and "I001" in done.stdout, done.stdout + done.stderr


def test_the_study_scripts_are_ruffs_local_import_group():
    """A study script another one imports is sorted as a local import only if pyproject.toml names it."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    local = set(cfg["tool"]["ruff"]["lint"]["isort"]["known-local-folder"])
    assert local == {p.stem for p in (ROOT / "experiments" / "selection_study").glob("*.py")}
