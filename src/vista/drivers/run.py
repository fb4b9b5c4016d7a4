"""What every driver needs to run, without Hydra: one seed for everything, and an executor.

``main.py`` builds the parts from the config; tests and scripts can build them by hand
(:class:`vista.parts.ExperimentParts`) and call a driver directly.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vista.parts import ExperimentParts
from vista.scheduler import InlineExecutor, NodeScheduler


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_executor(parts: ExperimentParts, args: Any, run_dir: Path, factory: Callable[..., Any]) -> Any:
    """A started executor whose workers build their runtime with ``factory(args, env)`` (a
    picklable top-level function): worker processes, or inline for ``num_workers=0``."""
    if parts.scheduler.num_workers == 0:
        return InlineExecutor(factory, args, device="cpu" if parts.scheduler.device == "auto" else parts.scheduler.device,
                              max_retries=parts.scheduler.max_retries, num_threads=parts.scheduler.threads_per_worker)
    scheduler = NodeScheduler(parts.scheduler, factory, args, log_dir=run_dir / "workers")
    try:
        return scheduler.start()
    except BaseException:  # a worker that failed to start, a timeout, Ctrl-C: no process left behind
        scheduler.shutdown()
        raise
