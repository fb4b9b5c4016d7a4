"""The one place Hydra's ``instantiate`` turns config groups into typed parts."""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import OmegaConf

from vista.config.typed import check
from vista.data.fednlp import FederatedDataSpec
from vista.fl.spec import FLSpec
from vista.models.hub import ModelSpec
from vista.parts import ExperimentParts
from vista.recording.checkpoints import CheckpointSpec
from vista.selection.spec import SelectionSpec


def build_parts(cfg: dict[str, Any]) -> ExperimentParts:
    """``cfg`` is the validated, resolved config (plain containers)."""
    dataset = instantiate(cfg["dataset"], _convert_="all")
    partition = instantiate(cfg["partition"], _convert_="all")
    data_file = dataset.data_path().resolve()
    partition_file, method = partition.resolve(data_file)
    data = FederatedDataSpec(data_file=str(data_file), partition_file=str(partition_file.resolve()), method=method)
    return ExperimentParts(
        seed=cfg["seed"],
        fl=check(FLSpec, cfg["fl"], "fl"),
        model=instantiate(cfg["model"], _convert_="all"),
        peft=instantiate(cfg["peft"], _convert_="all"),
        data=data,
        aggregator=instantiate(cfg["aggregator"], _convert_="all"),
        scheduler=instantiate(cfg["scheduler"], _convert_="all"),
        recorder=instantiate(cfg["recorder"], _convert_="all"),
        selection=build_selection(cfg["selection"], cfg["paths"]),
        checkpoint=check(CheckpointSpec, cfg["checkpoint"], "checkpoint"),
    )


def build_selection(sel: dict[str, Any], paths: dict[str, Any]) -> SelectionSpec | None:
    """The typed SelectionSpec with its candidates resolved, or None for ``selection=none``."""
    spec = check(SelectionSpec, sel, "selection")
    if spec.name == "none":
        return None
    return dataclasses.replace(spec, candidates=tuple(candidate_spec(c, paths) for c in spec.candidates))


def candidate_spec(entry: str | ModelSpec, paths: dict[str, Any]) -> ModelSpec:
    """A candidate named as a directory path (has a '/'), as a directory that exists in
    ``paths.model_hub``, or as a model config (``minilm`` -> conf/model/minilm.yaml), in
    that order; anything else is looked up in the hub (and reported missing there)."""
    if isinstance(entry, ModelSpec):
        return entry
    if "/" in entry or entry.startswith((".", "~")):
        where = Path(entry).expanduser()
        return ModelSpec(name=where.name, path=str(where))
    hub = Path(str(paths["model_hub"])).expanduser()
    conf = resources.files("vista.conf") / "model" / f"{entry}.yaml"
    if conf.is_file() and not (hub / entry).is_dir():
        node = OmegaConf.merge({"paths": paths}, {"m": OmegaConf.create(conf.read_text())})
        spec = OmegaConf.to_container(node.m, resolve=True)
        spec.pop("_target_", None)
        return ModelSpec(**spec)
    return ModelSpec(name=entry, hub_dir=str(hub), hub_name=entry)
