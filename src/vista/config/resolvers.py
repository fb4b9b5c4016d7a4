"""OmegaConf resolvers Vista's configs use: ``${vista_asset:NAME}`` is a file shipped in the package."""

from __future__ import annotations

from importlib import resources

from omegaconf import OmegaConf


def asset_path(name: str) -> str:
    return str(resources.files("vista") / "assets" / name)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("vista_asset"):
        OmegaConf.register_new_resolver("vista_asset", asset_path)
