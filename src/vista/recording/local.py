"""The local run directory: always written, whatever else records the run.

* ``metrics.jsonl``: one object per evaluated round, scalars (and lists of scalars such
  as the sampled client ids);
* ``<table>.jsonl``: one object per table row, with a ``round`` column (``clients.jsonl``
  for the per-client rows, ``<name>.jsonl`` for ``ExpRecorder.table(name, rows)``);
* ``summary.json``: the final summary, with ``status`` (``finished`` | ``failed`` |
  ``interrupted``) and, for a failed run, ``error`` and ``traceback``;
* ``config.yaml``: the resolved config.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

# table name -> file stem, where the file has a friendlier name than the key
TABLE_FILES = {"per_client": "clients"}


def _clean(v: Any) -> Any:
    if hasattr(v, "item") and callable(v.item) and getattr(v, "ndim", 1) == 0:
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if hasattr(v, "tolist"):
        return _clean(v.tolist())
    if isinstance(v, Path):
        return str(v)
    return v


def _dumps(obj: Any) -> str:
    return json.dumps(_clean(obj), default=str)


def table_file(name: str) -> str:
    stem = TABLE_FILES.get(name, re.sub(r"[^\w.-]+", "_", name))
    return f"{stem}.jsonl"


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    from omegaconf import OmegaConf

    (Path(run_dir) / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(_clean(config))))


class LocalRecorder:
    """``restore`` (file name -> text, from :meth:`written` at a checkpoint) continues a run's
    files exactly as they were then, and appends from there."""

    def __init__(self, run_dir: str | Path, restore: dict[str, str] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self._files: set[str] = set()  # files of this run (created fresh, then appended to)
        self.metrics_path.write_text("")
        for name, text in (restore or {}).items():
            (self.run_dir / name).write_text(text)
            self._files.add(name)

    def write_config(self, config: dict[str, Any]) -> None:
        write_config(self.run_dir, config)

    def log(self, metrics: dict[str, Any]) -> None:
        with self.metrics_path.open("a") as f:
            f.write(_dumps(metrics) + "\n")

    def table(self, name: str, rows: list[dict[str, Any]], round: int | None = None) -> Path:
        """Append ``rows`` to ``<name>.jsonl`` (a ``round`` column first when given)."""
        path = self.run_dir / table_file(name)
        if path.name not in self._files:  # a fresh file per run, like metrics.jsonl
            path.write_text("")
            self._files.add(path.name)
        with path.open("a") as f:
            for r in rows:
                f.write(_dumps({"round": round, **r} if round is not None and "round" not in r else r) + "\n")
        return path

    def written(self) -> dict[str, str]:
        """Every record file of this run as it stands (metrics.jsonl and the tables)."""
        names = {self.metrics_path.name, *self._files}
        return {n: (self.run_dir / n).read_text() for n in sorted(names) if (self.run_dir / n).is_file()}

    def summary(self, summary: dict[str, Any]) -> None:
        (self.run_dir / "summary.json").write_text(json.dumps(_clean(summary), indent=2, default=str) + "\n")

    def close(self) -> None:
        pass
