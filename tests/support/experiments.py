"""Typed experiment parts for tiny end-to-end runs (inline executor by default)."""

from __future__ import annotations

from pathlib import Path

from vista.data.fednlp import FederatedDataSpec
from vista.fl.aggregators import FedAvg
from vista.fl.spec import FLSpec
from vista.models.hub import ModelSpec
from vista.parts import ExperimentParts
from vista.peft.lora import LoraSpec
from vista.recording.spec import RecorderSpec
from vista.scheduler import SchedulerSpec


def tiny_parts(hub: Path, data: Path, part: Path, aggregator=None, peft=None, **fl) -> ExperimentParts:
    spec = FLSpec(**{"rounds": 2, "clients_per_round": 2, "batch_size": 8, "lr": 5e-3, "max_seq_len": 32,
                     "eval_batch_size": 16, **fl})
    return ExperimentParts(
        seed=11, fl=spec,
        model=ModelSpec(name="roberta", hub_dir=str(hub), hub_name="roberta-base"),
        peft=peft or LoraSpec(r=4, alpha=8, dropout=0.0),
        data=FederatedDataSpec(str(data), str(part), "uniform"),
        aggregator=aggregator or FedAvg(),
        scheduler=SchedulerSpec(num_workers=0, device="cpu"),
        recorder=RecorderSpec(),
    )
