"""What every driver needs to run, without Hydra: one seed for everything, and an executor.

``main.py`` builds the parts from the config; tests and scripts can build them by hand
(:class:`vista.parts.ExperimentParts`) and call a driver directly.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vista.parts import ExperimentParts
from vista.pipeline import Executor
from vista.scheduler import build_executor

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_executor(parts: ExperimentParts, args: Any, run_dir: Path, factory: Callable[..., Any],
                  memory: Any = None, useful_workers: int | None = None, weight_keeper: Any = None) -> Executor:
    """A started executor of the backend ``parts.scheduler`` names (``scheduler=process |
    inline | ray``), whose workers build their runtime with ``factory(args, env)`` (a picklable
    top-level function). ``memory`` and ``useful_workers`` inform ``num_workers=auto``;
    ``weight_keeper`` keeps one copy of the frozen weights per GPU (process backend)."""
    executor = build_executor(parts.scheduler, factory, args, run_dir / "workers", memory=memory,
                              useful_workers=useful_workers, weight_keeper=weight_keeper)
    try:
        return executor.start()
    except BaseException:  # a worker that failed to start, a timeout, Ctrl-C: nothing left behind
        executor.shutdown()
        raise


def estimate_memory(model: Any, peft_apply: Callable[[Any], Any] | None, num_labels: int, batch_size: int,
                    max_seq_len: int, train: bool = True, scheduler: Any = None,
                    useful_workers: int | None = None, checkpointing: bool = False) -> Any:
    """A worker's memory estimate for ``scheduler.num_workers=auto`` (None, with a warning,
    when the model's config cannot be read that way: the arrangement then goes by cores).

    Given the ``scheduler`` spec, a bound read from the model's files comes first: when memory
    does not limit the workers even at that bound (the common case on a CPU host), it is the
    answer, and the exact estimate (which imports transformers and peft: seconds, on the path
    to the first job) is not built."""
    if model is None:
        return None
    from vista.scheduler.memory import upper_bound_memory

    if scheduler is not None:
        bound = upper_bound_memory(Path(model.resolve()), batch_size, max_seq_len, train, num_labels)
        if bound is not None and _plan_unchanged(scheduler, bound, useful_workers):
            return bound
    return _exact_estimate(model, peft_apply, num_labels, batch_size, max_seq_len, train, checkpointing)


def _exact_estimate(model: Any, peft_apply: Callable[[Any], Any] | None, num_labels: int, batch_size: int,
                    max_seq_len: int, train: bool, checkpointing: bool = False) -> Any:
    from vista.scheduler.memory import estimate_worker_memory

    try:
        return estimate_worker_memory(Path(model.resolve()), peft_apply, num_labels, batch_size, max_seq_len,
                                      train=train, trust_remote_code=model.trust_remote_code,
                                      checkpointing=checkpointing)
    except Exception as err:  # noqa: BLE001  an exotic architecture: plan by cores alone
        log.warning("no memory estimate for %s (%s: %s); arranging workers by cores alone", model.name,
                    type(err).__name__, err)
        return None


def _plan_unchanged(scheduler: Any, memory: Any, useful_workers: int | None) -> bool:
    """Whether ``memory`` leaves the workers' arrangement as it is without any estimate."""
    from vista.scheduler.backends import plan_workers
    from vista.scheduler.devices import DevicePlanError

    try:
        with_memory = plan_workers(scheduler, memory, useful_workers)
        without = plan_workers(scheduler, None, useful_workers)
    except DevicePlanError:
        return False
    return (with_memory.devices, with_memory.threads) == (without.devices, without.threads)


def executor_summary(executor: Executor) -> dict[str, Any]:
    """What summary.json says of the executor: backend, arrangement, placement, faults."""
    arrangement = getattr(executor, "arrangement", None)
    return {"backend": getattr(executor, "backend", type(executor).__name__),
            "arrangement": arrangement.to_dict() if arrangement is not None else None,
            "placement": [p.to_dict() for p in executor.placement()],
            "retries": executor.retries, "respawns": executor.respawns}
