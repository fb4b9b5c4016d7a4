"""Configurations, their labels and statistics: which runs are the same configuration (their
Hydra overrides minus the seed, paths and recorder settings; or the config keys that vary; or
``--by KEY,...``), what each configuration is called, and mean +/- std over seeds per metric."""

from __future__ import annotations

import functools
import json
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import yaml

from vista.compare.load import Run
from vista.config.packaged import conf_yaml, run_independent_keys

DEFAULT_METRICS = ("test_accuracy", "test_macro_f1", "test_loss", "train_loss")
# Besides what the primary config keeps out of job names (``override_dirname.exclude_keys``),
# not part of what a configuration *is*: ignored when grouping runs
COMPARE_IGNORED_KEYS = ("seed", "paths.", "hydra.", "model.hub_dir", "scheduler.", "experiment_name")
TARGET = "._target_"


@functools.cache
def ignored_keys() -> tuple[str, ...]:
    """The keys ignored when grouping: ``hydra.job.config.override_dirname.exclude_keys`` of the
    packaged ``config.yaml``, and :data:`COMPARE_IGNORED_KEYS`."""
    return tuple(dict.fromkeys([*run_independent_keys(), *COMPARE_IGNORED_KEYS]))


@functools.cache
def is_config_group(name: str) -> bool:
    """Whether ``name`` is a config group shipped with Vista (``peft``, ``aggregator``, ...)."""
    try:
        return bool(name) and (files("vista.conf") / name).is_dir()
    except (OSError, ValueError):
        return False


@functools.cache
def options_by_target(group: str) -> dict[str, tuple[str, ...]]:
    """``_target_`` -> the packaged options of ``group`` (``vista.conf/<group>/<option>.yaml``)
    with that ``_target_``."""
    if not is_config_group(group):
        return {}
    out: dict[str, list[str]] = {}
    for f in sorted((files("vista.conf") / group).iterdir(), key=lambda f: f.name):
        if not f.name.endswith(".yaml"):
            continue
        try:
            node = conf_yaml(group, f.name)
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue  # an unreadable option names nothing
        target = node.get("_target_") if isinstance(node, dict) else None
        if isinstance(target, str):
            out.setdefault(target, []).append(f.name[: -len(".yaml")])
    return {t: tuple(opts) for t, opts in out.items()}


def group_option(run: Run, group: str) -> str | None:
    """The option of config group ``group`` a run used, as the user names it (``lora``): its
    ``hydra.runtime.choices``; else the packaged option with the run's ``<group>._target_``,
    when exactly one option has it; else the class name of that ``_target_``."""
    if run.choices.get(group):
        return run.choices[group]
    target = run.config.get(group + TARGET)
    if not isinstance(target, str):
        return None
    options = options_by_target(group).get(target, ())
    return options[0] if len(options) == 1 else target.rsplit(".", 1)[-1]


# -- configurations and labels ----------------------------------------------------------------------
def _ignored(key: str, extra: Iterable[str] = ()) -> bool:
    key = key.lstrip("+~")
    return any(key == p or (p.endswith(".") and key.startswith(p)) or key.startswith(p + ".")
               for p in (*ignored_keys(), *extra))


def item(key: str, value: Any, option: str | None = None) -> str:
    """``key=value``, with a group's ``_target_`` shown as the group and its option, else the
    class name (``peft._target_=vista.peft.LoraSpec`` reads ``peft=lora`` given the option
    ``lora``, ``peft=LoraSpec`` without one)."""
    if key.endswith(TARGET) and isinstance(value, str):
        return f"{key[: -len(TARGET)]}={option or value.rsplit('.', 1)[-1]}"
    return f"{key}={value}"


def run_item(run: Run, key: str) -> str:
    """``key=value`` of one run; a ``<group>._target_`` key reads ``<group>=<option>``."""
    if key.endswith(TARGET):
        group = key[: -len(TARGET)]
        option = group_option(run, group)
        return item(key, run.config.get(key), option) if option is None else f"{group}={option}"
    return item(key, run.config.get(key))


def by_keys(by: list[str] | None, runs: list[Run]) -> list[str] | None:
    """``--by`` keys, a config group's name (``peft``) standing for its ``_target_``
    (``peft._target_``): both label a run by the group's option."""
    if not by:
        return by
    out = []
    for k in by:
        if not k.endswith(TARGET) and not any(k in r.config for r in runs) and (
                is_config_group(k) or any(k + TARGET in r.config or k in r.choices for r in runs)):
            k += TARGET
        out.append(k)
    return out


def config_items(run: Run, varying: list[str], by: list[str] | None, ignore: Iterable[str]) -> list[str]:
    """What makes a run's configuration: ``key=value`` items (its overrides minus the seed,
    paths and recorder settings; or the config keys that vary between the runs; or ``by``)."""
    if by:
        return [run_item(run, k) for k in by]
    if run.overrides is not None:
        return sorted({o.lstrip("+~") for o in run.overrides if not _ignored(o.split("=", 1)[0], ignore)})
    return [run_item(run, k) for k in varying]


def varying_keys(runs: list[Run], ignore: Iterable[str]) -> list[str]:
    keys = sorted({k for r in runs for k in r.config})
    return [k for k in keys if not _ignored(k, ignore) and len({json.dumps(r.config.get(k)) for r in runs}) > 1]


# -- statistics -------------------------------------------------------------------------------------
def higher_is_better(metric: str) -> bool:
    return "loss" not in metric and "error" not in metric and "perplexity" not in metric


def num_or_none(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def run_values(run: Run, metric: str) -> tuple[float | None, float | None]:
    """(final, best) of a metric in one run."""
    series = [x for x in (num_or_none(r.get(metric)) for r in run.rows) if x is not None]
    final = series[-1] if series else num_or_none(run.summary.get(metric))
    if series:
        best = max(series) if higher_is_better(metric) else min(series)
    else:
        best = num_or_none(run.summary.get(f"best_{metric}", run.summary.get(metric)))
    return final, best


def mean_std(xs: list[float]) -> tuple[float | None, float | None]:
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


@dataclass
class ConfigResult:
    label: str
    runs: list[Run]
    failed: list[Run]
    stats: dict[str, tuple[float | None, float | None]]  # "final_<m>" / "best_<m>" -> (mean, std)

    @property
    def seeds(self) -> list[Any]:
        return [r.seed for r in self.runs]


def common_items(runs: list[Run], by: list[str] | None = None, ignore: Iterable[str] = ()) -> list[str]:
    """The overrides all runs share (left out of the configuration labels)."""
    ignore, by = list(ignore), by_keys(by, runs)
    varying = varying_keys(runs, ignore)
    items = [set(config_items(r, varying, by, ignore)) for r in runs]
    if not items or len({frozenset(i) for i in items}) == 1:
        return []
    return sorted(set.intersection(*items))


def compare(runs: list[Run], metrics: list[str], by: list[str] | None = None,
            ignore: Iterable[str] = ()) -> list[ConfigResult]:
    ignore, by = list(ignore), by_keys(by, runs)
    varying = varying_keys(runs, ignore)
    items = [config_items(r, varying, by, ignore) for r in runs]
    common = set.intersection(*map(set, items)) if items else set()
    if len({tuple(i) for i in items}) > 1:  # label by what differs; the common part is shown once
        items = [[x for x in i if x not in common] for i in items]
    groups: dict[str, list[Run]] = {}
    for r, i in zip(runs, items):
        groups.setdefault(",".join(i) or "(defaults)", []).append(r)
    out = []
    for label, members in groups.items():
        ok = [r for r in members if r.status not in ("failed", "interrupted", "missing")]
        failed = [r for r in members if r not in ok]
        stats = {}
        for m in metrics:
            finals, bests = zip(*[run_values(r, m) for r in ok]) if ok else ((), ())
            stats[f"final_{m}"] = mean_std([x for x in finals if x is not None])
            stats[f"best_{m}"] = mean_std([x for x in bests if x is not None])
        out.append(ConfigResult(label, ok, failed, stats))
    if metrics:
        key, sign = f"final_{metrics[0]}", -1 if higher_is_better(metrics[0]) else 1
        out.sort(key=lambda c: (c.stats[key][0] is None, sign * (c.stats[key][0] or 0.0), c.label))
    return out


def pick_metrics(runs: list[Run], requested: list[str] | None) -> list[str]:
    if requested:
        return requested
    present = {k for r in runs for row in r.rows for k in row} | {k for r in runs for k in r.summary}
    return [m for m in DEFAULT_METRICS if m in present]
