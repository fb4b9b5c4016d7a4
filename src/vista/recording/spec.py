"""``recorder=`` group: where a run's records go besides the local run directory."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RecorderSpec:
    # W&B: online (falls back to offline without a login) | offline | disabled.
    # The local run directory is written in every mode.
    mode: str = "disabled"
    project: str = "vista"
    entity: str | None = None
