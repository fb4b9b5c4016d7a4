"""The selection study's scripts (``experiments/selection_study/*.py``) loaded as modules, so a
test calls their functions and ``main`` without a subprocess."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

STUDY = Path(__file__).resolve().parents[2] / "experiments" / "selection_study"


def study_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, STUDY / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # a dataclass looks its module up there
    spec.loader.exec_module(mod)
    return mod


def write_runs(root: Path, results: list[dict]) -> Path:
    """Study results written as a runs folder (``root/runs/<data>/<partition>/seed<N>/result.json``,
    the layout the scripts read); the folder."""
    for r in results:
        d = root / "runs" / r["data"] / r["partition"] / f"seed{r['seed']}"
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps(r))
    return root / "runs"
