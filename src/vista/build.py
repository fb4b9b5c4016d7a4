"""The one place Hydra's ``instantiate`` turns config groups into typed parts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import OmegaConf

from vista.data.fednlp import FederatedDataSpec
from vista.drivers.run import ExperimentParts, FLSpec
from vista.models.hub import ModelSpec


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
        selection=build_selection(cfg["selection"], cfg["paths"]),
    )


def build_selection(sel: dict[str, Any], paths: dict[str, Any]) -> Any:
    """The typed SelectionSpec, or None for ``selection=none``."""
    if sel["name"] == "none":
        return None
    from vista.selection.privacy import PrivacySpec
    from vista.selection.spec import SelectionSpec

    fields = {k: v for k, v in sel.items() if k not in ("candidates", "privacy", "scores")}
    return SelectionSpec(**fields, scores=tuple(sel["scores"]),
                         candidates=tuple(candidate_spec(c, paths) for c in sel["candidates"]),
                         privacy=PrivacySpec(**sel["privacy"]))


def candidate_spec(entry: str, paths: dict[str, Any]) -> ModelSpec:
    """A candidate named as a directory path (has a '/'), as a directory that exists in
    ``paths.model_hub``, or as a model config (``minilm`` -> conf/model/minilm.yaml), in
    that order; anything else is looked up in the hub (and reported missing there)."""
    if "/" in entry or entry.startswith((".", "~")):
        where = Path(entry).expanduser()
        return ModelSpec(name=where.name, path=str(where))
    hub = Path(str(paths["model_hub"])).expanduser()
    conf = Path(__file__).parent / "conf" / "model" / f"{entry}.yaml"
    if conf.is_file() and not (hub / entry).is_dir():
        node = OmegaConf.merge({"paths": paths}, {"m": OmegaConf.load(conf)})
        spec = OmegaConf.to_container(node.m, resolve=True)
        spec.pop("_target_", None)
        return ModelSpec(**spec)
    return ModelSpec(name=entry, hub_dir=str(hub), hub_name=entry)
