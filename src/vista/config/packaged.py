"""Reading the packaged Hydra config (``vista.conf``) as files: never resolved, never composed."""

from __future__ import annotations

import functools
from importlib.resources import files
from typing import Any

import yaml


def conf_yaml(*parts: str) -> Any:
    """``conf_yaml("peft", "lora.yaml")``: a packaged config file, as plain YAML."""
    node = files("vista.conf")
    for p in parts:
        node = node / p
    return yaml.safe_load(node.read_text(encoding="utf-8"))


@functools.cache
def run_independent_keys() -> tuple[str, ...]:
    """The keys that say *where* a run reads and records, not *what* it computes: the primary
    config's ``hydra.job.config.override_dirname.exclude_keys`` (kept out of job names, ignored
    by ``vista compare``, free to change on ``vista resume``)."""
    node = conf_yaml("config.yaml")
    for key in ("hydra", "job", "config", "override_dirname", "exclude_keys"):
        node = node[key]
    return tuple(str(k) for k in node)
