"""Finding and loading runs: local run directories, a sweep's group by name, a W&B group."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUN_FILES = ("metrics.jsonl", "summary.json")


@dataclass
class Run:
    name: str
    config: dict[str, Any]  # flattened, dotted keys
    rows: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] | None = None
    path: Path | None = None
    # config group -> the option chosen (``peft: lora``), from Hydra's ``hydra.runtime.choices``
    choices: dict[str, str] = field(default_factory=dict)

    @property
    def status(self) -> str:
        if not self.summary:
            return "running" if self.rows else "missing"
        return str(self.summary.get("status", "finished"))

    @property
    def seed(self) -> Any:
        return self.config.get("seed", self.summary.get("seed"))


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    out[prefix[:-1]] = d if d is None or isinstance(d, (bool, int, float, str)) else json.dumps(d, default=str)
    return out


def _yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def hydra_choices(hydra_yaml: Any) -> dict[str, str]:
    """``hydra.runtime.choices`` of a loaded ``.hydra/hydra.yaml``: each config group's option
    (``{"peft": "lora", "aggregator": "fedavg", ...}``; groups left empty are skipped)."""
    node: Any = hydra_yaml
    for key in ("hydra", "runtime", "choices"):
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return {}
    return {str(k): str(v) for k, v in node.items() if v is not None and not isinstance(v, (dict, list))}


def load_run(run_dir: Path) -> Run:
    rows = []
    try:
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass  # a line cut short by a killed job
    except OSError:
        pass
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        summary = {}
    config = flatten(_yaml(run_dir / "config.yaml") or {})
    overrides = _yaml(run_dir / ".hydra" / "overrides.yaml")
    hydra_yaml = run_dir / ".hydra" / "hydra.yaml"
    choices = hydra_choices(_yaml(hydra_yaml)) if hydra_yaml.is_file() else {}
    return Run(run_dir.name, config, rows, summary if isinstance(summary, dict) else {},
               [str(o) for o in overrides] if isinstance(overrides, list) else None, run_dir, choices)


def find_run_dirs(path: Path) -> list[Path]:
    if any((path / f).is_file() for f in RUN_FILES):
        return [path]
    found = {p.parent for f in RUN_FILES for p in path.rglob(f) if "wandb" not in p.relative_to(path).parts}
    found |= {p.parent.parent for p in path.rglob(".hydra/overrides.yaml")
              if "wandb" not in p.relative_to(path).parts and p.parent.parent != path}
    return sorted(found, key=lambda p: (str(p.parent), _num(p.name), p.name))


def _num(name: str) -> int:
    head = name.split("_", 1)[0]
    return int(head) if head.isdigit() else 1 << 30


def find_group(group: str, roots: Iterable[Path]) -> list[Path]:
    """Run directories of the sweep ``group``: a sweep directory of that name under the roots,
    or runs whose ``config.yaml`` has ``recorder.group: <group>``."""
    dirs: list[Path] = []
    for root in roots:
        if not root.is_dir():
            continue
        for cand in [root / group, *root.rglob(group)]:
            if cand.is_dir():
                dirs += find_run_dirs(cand)
        if not dirs:
            for cfg in root.rglob("config.yaml"):
                if ".hydra" in cfg.parts or "wandb" in cfg.parts:
                    continue
                if flatten(_yaml(cfg) or {}).get("recorder.group") == group:
                    dirs.append(cfg.parent)
    return sorted(set(dirs), key=lambda p: (str(p.parent), _num(p.name), p.name))


def load_wandb_group(group: str, project: str | None, entity: str | None, metrics: Iterable[str]) -> list[Run]:
    """The runs of a W&B group (needs a login and the network)."""
    import os

    import wandb

    api = wandb.Api()
    entity = entity or os.environ.get("WANDB_ENTITY") or api.default_entity
    project = project or os.environ.get("WANDB_PROJECT") or "vista"
    runs = []
    for r in api.runs(f"{entity}/{project}", filters={"group": group}):
        keys = ["round", *metrics]
        rows = [dict(h) for h in r.scan_history(keys=None)]
        rows = [{k: h[k] for k in keys if k in h} for h in rows if any(m in h for m in metrics)]
        for h in rows:
            h.setdefault("round", h.get("_step"))
        summary = {k: v for k, v in dict(r.summary).items() if not k.startswith("_")}
        state = {"finished": "finished", "running": "running"}.get(r.state, "failed")
        summary.setdefault("status", summary.get("status", state))
        runs.append(Run(r.name, flatten(dict(r.config)), rows, summary, None, None))
    return runs
