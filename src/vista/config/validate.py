"""Validate a composed config: types and keys against the schema, then value ranges."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vista.config.schema import VistaConf


class ConfigError(ValueError):
    """A config problem, phrased as one line that names the key."""


# key -> (lowest allowed value, what it means)
_MINIMUM = {
    "fl.rounds": 1,
    "fl.clients_per_round": 1,
    "fl.local_epochs": 1,
    "fl.batch_size": 1,
    "fl.max_seq_len": 4,
    "fl.eval_every": 1,
    "fl.eval_batch_size": 1,
    "fl.min_clients": 1,
    "scheduler.num_workers": 0,
    "scheduler.gpu_mem_per_worker_mb": 0,
    "scheduler.threads_per_worker": 0,
    "peft.r": 1,
    "peft.init_r": 1,
    "peft.target_r": 1,
    "peft.num_virtual_tokens": 1,
    "peft.encoder_hidden_size": 1,
    "selection.batch_size": 1,
    "selection.r0": 1,
    "selection.eta": 2,
    "selection.top_k": 1,
}
_DRIVERS = ("fedpeft",)


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
        plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
        plain = {k: v for k, v in plain.items() if k != "hydra"}
        merged = OmegaConf.merge(OmegaConf.structured(VistaConf), plain)
        out = OmegaConf.to_container(merged, resolve=True, enum_to_str=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        raise ConfigError(_one_line(err)) from None
    # a group option gets only the keys it sets: the schema's union of fields is for checking
    for group, node in plain.items():
        if isinstance(node, dict) and "_target_" in node:
            out[group] = {k: v for k, v in out[group].items() if k in node}
    for dotted, low in _MINIMUM.items():
        group, key = dotted.split(".")
        if key not in out.get(group, {}):  # e.g. peft.r for a method without a rank
            continue
        if out[group][key] < low:
            raise ConfigError(f"{dotted}: must be >= {low}, got {out[group][key]}")
    if out["seed"] < 0:
        raise ConfigError(f"seed: must be >= 0, got {out['seed']}")
    if not out["fl"]["lr"] > 0:
        raise ConfigError(f"fl.lr: must be > 0, got {out['fl']['lr']}")
    _check_selection(out["selection"])
    if out["driver"] not in _DRIVERS:
        raise ConfigError(f"driver: unknown driver {out['driver']!r}; known: {list(_DRIVERS)}")
    return out


def _check_selection(sel: dict[str, Any]) -> None:
    from vista.selection.features import POOLINGS
    from vista.selection.spec import METHODS, SCORES

    known = ["none", *METHODS]
    if sel["name"] not in known:
        raise ConfigError(f"selection.name: unknown method {sel['name']!r}; known: {known}")
    if sel["name"] == "none":
        return
    if len(sel["candidates"]) < 2:
        raise ConfigError(f"selection.candidates: need at least 2 candidate models, got {sel['candidates']}; "
                          "e.g. selection.candidates=[minilm,mpnet,smollm2]")
    for s in [*sel["scores"], *([sel["metric"]] if sel["metric"] else [])]:
        if s not in SCORES:
            raise ConfigError(f"selection.scores/metric: unknown score {s!r}; known: {list(SCORES)}")
    if sel["pooling"] not in POOLINGS:
        raise ConfigError(f"selection.pooling: {sel['pooling']!r}; known: {list(POOLINGS)}")
    if sel["max_rounds"] is not None and sel["max_rounds"] < sel["r0"]:
        raise ConfigError(f"selection.max_rounds: must be >= selection.r0={sel['r0']}, got {sel['max_rounds']}")
    if sel["clients"] is not None and sel["clients"] < 1:
        raise ConfigError(f"selection.clients: must be >= 1 or null (all), got {sel['clients']}")
    from vista.selection.privacy import PrivacySpec

    try:  # the spec checks its own values ("<field> must be ..."); here they get their config key
        PrivacySpec(**sel["privacy"])
    except (ValueError, TypeError) as err:
        field, _, problem = str(err).partition(" ")
        raise ConfigError(f"selection.privacy.{field}: {problem}") from None
