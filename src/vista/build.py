"""The one place Hydra's ``instantiate`` turns config groups into typed parts."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate

from vista.data.fednlp import FederatedDataSpec
from vista.drivers.run import ExperimentParts, FLSpec


def build_parts(cfg: dict[str, Any]) -> ExperimentParts:
    """``cfg`` is the validated, resolved config (plain containers)."""
    dataset = instantiate(cfg["dataset"], _convert_="all")
    partition = instantiate(cfg["partition"], _convert_="all")
    data_file = dataset.data_path().resolve()
    partition_file, method = partition.resolve(data_file)
    data = FederatedDataSpec(data_file=str(data_file), partition_file=str(partition_file.resolve()), method=method)
    return ExperimentParts(
        seed=cfg["seed"],
        fl=FLSpec(**cfg["fl"]),
        model=instantiate(cfg["model"], _convert_="all"),
        peft=instantiate(cfg["peft"], _convert_="all"),
        data=data,
        aggregator=instantiate(cfg["aggregator"], _convert_="all"),
        scheduler=instantiate(cfg["scheduler"], _convert_="all"),
        recorder=instantiate(cfg["recorder"], _convert_="all"),
    )
