"""``recorder=`` group: where a run's records go besides the local run directory."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RecorderSpec:
    # W&B mode: online | offline | disabled. The local run directory is always written;
    # the W&B sink arrives with the ExpRecorder issue, until then only "disabled" records.
    mode: str = "disabled"
    project: str = "vista"
    entity: str | None = None
