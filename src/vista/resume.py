"""``vista resume=RUN_DIR [overrides]``: the config a continued run runs with.

A run continues with its own saved ``config.yaml``. Overrides may change where it reads and
records and how it is scheduled, never what it computes: ``scheduler.*``, ``recorder.*``,
``checkpoint.*``, ``paths.*`` and the other location keys (``run_independent_keys``), and
``fl.rounds`` (to extend a finished run). Any other override is refused, by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from vista.config.packaged import run_independent_keys
from vista.config.typed import ConfigError

ALLOWED = ("scheduler", "recorder", "checkpoint", "paths", "hydra", "resume", "fl.rounds", "model.hub_dir",
           "dataset.partition_file")


def saved_config(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"resume: {run_dir} is not a Vista run directory (no config.yaml there)")
    return yaml.safe_load(path.read_text())


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _allowed(key: str) -> bool:
    return any(key == a or key.startswith(a + ".") for a in (*ALLOWED, *run_independent_keys()))


def resume_config(run_dir: str | Path, overrides: list[str], composed: dict[str, Any]) -> dict[str, Any]:
    """The saved config of ``run_dir`` with the allowed ``overrides`` (Hydra's task overrides of
    this command) taken from ``composed`` (this command's composed, resolved config)."""
    saved = saved_config(run_dir)
    keys = [_key(o) for o in overrides]
    refused = sorted({k for k in keys if not _allowed(k)})
    if refused:
        raise ConfigError(f"resume: {', '.join(refused)} would change the results of {run_dir}; a resumed run "
                          f"may change only scheduler.*, recorder.*, checkpoint.*, paths.* and fl.rounds")
    out = dict(saved)
    for key in keys:
        if key.startswith("hydra") or key == "resume":
            continue
        group, _, rest = key.partition(".")
        if not rest:  # a whole group or block: `recorder=wandb`
            out[group] = composed[group]
            continue
        node, src = out.setdefault(group, {}), composed[group]
        *parents, leaf = rest.split(".")
        for p in parents:
            node, src = node.setdefault(p, {}), src[p]
        node[leaf] = src[leaf]
    out["resume"] = str(Path(run_dir))
    return out
