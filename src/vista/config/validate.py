"""Validate a composed config before anything loads: each config group against its
``_target_`` dataclass, the primary config's own keys against :class:`RunConf`.

No schema restates the specs: a new option (an aggregator, a PEFT method) is its dataclass
and its yaml file, and validation follows. The result is the resolved config as plain
containers with every field of every group filled in (what ``config.yaml`` records and
``vista.build`` instantiates).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vista.config.schema import RunConf
from vista.config.typed import ConfigError, as_plain, check, locate


def _one_line(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None) or "config"
    msg = str(getattr(err, "msg", None) or err).strip().splitlines()[0]
    return f"{key}: {msg}"


def validate(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """Return the resolved config as plain containers, or raise ConfigError."""
    if isinstance(cfg, DictConfig):
        missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra."))
        if missing:
            raise ConfigError(f"{missing[0]}: missing mandatory value; set it, e.g. {missing[0]}=...")
    try:
        plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(_one_line(err)) from None
    plain = {k: v for k, v in plain.items() if k != "hydra"}
    groups = {k: v for k, v in plain.items() if isinstance(v, dict) and "_target_" in v}
    run = as_plain(check(RunConf, {k: v for k, v in plain.items() if k not in groups}, ""))
    out: dict[str, Any] = {}
    for key in [*plain, *(k for k in run if k not in plain)]:
        if key in groups:
            target = groups[key]["_target_"]
            out[key] = {"_target_": target, **as_plain(check(locate(target, key), groups[key], key))}
        else:
            out[key] = run[key]
    out["driver"] = _driver(out["driver"], out["selection"]["name"])
    return out


def _driver(driver: str, selection: str) -> str:
    """``auto`` -> the selection driver exactly when a selection method is chosen."""
    from vista.drivers import DRIVERS

    wanted = "fedpeft" if selection == "none" else "selection"
    if driver == "auto":
        return wanted
    if driver not in DRIVERS:
        raise ConfigError(f"driver: unknown driver {driver!r}; known: {['auto', *DRIVERS]}")
    if driver != wanted:
        raise ConfigError(f"driver: driver={driver} with selection={selection}; use driver=auto, or "
                          + ("selection=none to fine-tune model=" if driver == "fedpeft" else "a selection method"))
    return driver
