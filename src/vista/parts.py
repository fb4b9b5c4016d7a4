"""ExperimentParts: the typed parts of one experiment, what every driver receives.

``vista.build`` makes them from the config (the only place Hydra instantiates anything);
tests and scripts make them by hand. Low in the layering on purpose: drivers, the selection
study and ``vista.build`` import it, and it imports only specs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vista.data.fednlp import FederatedDataSpec
from vista.fl.spec import FLSpec
from vista.models.hub import ModelSpec
from vista.recording.checkpoints import CheckpointSpec
from vista.recording.spec import RecorderSpec
from vista.scheduler import SchedulerSpec


@dataclass(frozen=True)
class ExperimentParts:
    seed: int
    fl: FLSpec
    model: ModelSpec
    peft: Any  # a vista.peft.PeftSpec: LoraSpec, IA3Spec, BitFitSpec, ...
    data: FederatedDataSpec
    aggregator: Any  # a vista.fl.aggregators.Aggregator: FedAvg, FedAdam, ExactLoRA, ...
    scheduler: SchedulerSpec
    recorder: RecorderSpec
    selection: Any = None  # a vista.selection.SelectionSpec for selection runs; None: fine-tune parts.model
    checkpoint: CheckpointSpec = CheckpointSpec()
