"""The primary config's own keys, typed. Everything else is a config group whose node names
its dataclass in ``_target_`` (``vista.peft.LoraSpec``, ``vista.fl.aggregators.FedAdam`` ...):
that dataclass *is* the group's schema, with the only defaults and value checks there are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vista.checks import at_least
from vista.fl.spec import FLSpec
from vista.recording.checkpoints import CheckpointSpec
from vista.selection.spec import SelectionSpec


@dataclass(frozen=True)
class PathsConf:
    model_hub: str  # <model_hub>/<hub_name> per model (model=roberta -> <model_hub>/roberta-base)
    data_dir: str  # where dataset presets look for <name>_data.h5 / <name>_partition.h5


@dataclass(frozen=True)
class RunConf:
    """``seed``, ``driver``, ``experiment_name``, ``paths``, ``fl``, ``selection``, ``checkpoint``
    and ``resume``: the keys of the primary config that are not ``_target_`` groups."""

    paths: PathsConf
    seed: int = 42
    driver: str = "auto"  # auto | a vista.drivers.DRIVERS name (auto: selection when selection=<method>)
    experiment_name: str = "default"
    fl: FLSpec = field(default_factory=FLSpec)
    selection: SelectionSpec = field(default_factory=SelectionSpec)
    checkpoint: CheckpointSpec = field(default_factory=CheckpointSpec)
    resume: str | None = None  # a run directory to continue (vista resume=RUN_DIR); see vista.resume

    def __post_init__(self) -> None:
        at_least(self, "seed", 0)
