"""``recorder=`` group: where a run's records go besides the local run directory."""

from __future__ import annotations

from dataclasses import dataclass, field

from vista.checks import one_of

MODES = ("online", "offline", "disabled")


@dataclass(frozen=True)
class RecorderSpec:
    # W&B: online (offline without a login) | offline | disabled.
    # The local run directory is written in every mode.
    mode: str = "disabled"
    # None: WANDB_PROJECT / WANDB_ENTITY from the environment (project defaults to "vista").
    project: str | None = None
    entity: str | None = None
    # Filled from Hydra by ``vista.main`` when unset: the sweep directory's name, the job's
    # overrides, [experiment_name], the driver.
    group: str | None = None
    name: str | None = None
    tags: list[str] = field(default_factory=list)
    job_type: str | None = None

    def __post_init__(self) -> None:
        one_of(self, "mode", MODES)
