"""The executor registry: ``scheduler=process | inline | ray`` -> an executor class.

Every backend is built the same way, ``build(spec, runtime_factory, runtime_args, log_dir,
memory=..., useful_workers=...)``, and started with ``start()`` (where it arranges its
workers: :mod:`vista.scheduler.arrangement`). Backends are imported only when chosen, so
Ray is needed only for ``scheduler=ray``. A new backend is one module and one entry here
(plus its yaml in ``conf/scheduler/``).
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any, Callable

from vista.pipeline.executor import Executor
from vista.scheduler.spec import BACKEND_NAMES, SchedulerSpec

# name -> "module:callable"; the callable builds the unstarted executor
BACKENDS: dict[str, str] = {
    "process": "vista.scheduler.node_scheduler:NodeScheduler",
    "inline": "vista.scheduler.inline:inline_executor",
    "ray": "vista.scheduler.ray_executor:RayExecutor",
}
assert tuple(BACKENDS) == BACKEND_NAMES


def backend(name: str) -> Callable[..., Executor]:
    module, _, attr = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def build_executor(spec: SchedulerSpec, runtime_factory: Callable[..., Any], runtime_args: Any,
                   log_dir: str | Path | None = None, *, memory: Any = None,
                   useful_workers: int | None = None, weight_keeper: Any = None) -> Executor:
    """The unstarted executor ``spec`` names. ``memory`` (a MemoryEstimate) and
    ``useful_workers`` (the most jobs a task runs at once) inform ``num_workers=auto``;
    ``weight_keeper`` (a :class:`~vista.models.device_weights.WeightKeeper`) keeps one copy of
    the frozen weights per GPU for the process backend's workers (the others ignore it)."""
    build = backend(spec.executor)
    return build(spec, runtime_factory, runtime_args, log_dir, memory=memory, useful_workers=useful_workers,
                 weight_keeper=weight_keeper)


def plan_workers(spec: SchedulerSpec, memory: Any = None, useful_workers: int | None = None,
                 inventory: Any = None) -> Any:
    """The :class:`~vista.scheduler.arrangement.Arrangement` for ``spec`` on ``inventory``
    (default: this machine's), with at most ``spec.cpus`` cores when that is set."""
    from vista.scheduler.arrangement import Inventory, arrange

    inv = Inventory.probe() if inventory is None else inventory
    if spec.cpus > 0 and spec.cpus < inv.cpus:
        inv = dataclasses.replace(inv, cpus=spec.cpus)
    return arrange(spec.num_workers, spec.device, spec.threads_per_worker, spec.gpu_mem_per_worker_mb, inv,
                   memory, useful_workers)
