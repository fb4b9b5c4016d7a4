"""The ``scheduler`` group's specs: which executor backend runs the jobs, and how.

``scheduler=process`` (the default), ``scheduler=inline`` and ``scheduler=ray`` name a
backend of :data:`vista.scheduler.backends.BACKENDS`; ``scheduler.num_workers=0`` stays the
shorthand for inline. Ray's own knobs live in :class:`RaySchedulerSpec` (``conf/scheduler/ray.yaml``);
nothing here imports Ray.
"""

from __future__ import annotations

from dataclasses import dataclass

from vista.checks import FieldError, at_least, is_int, one_of, positive
from vista.scheduler.devices import DEVICES

BACKEND_NAMES = ("process", "inline", "ray")
AUTO = "auto"


@dataclass(frozen=True)
class SchedulerSpec:
    backend: str = "process"  # process | inline | ray
    num_workers: int | str = AUTO  # auto: from the cores, GPUs and a memory estimate; 0: inline
    device: str = "auto"  # auto | cpu | cuda
    gpu_mem_per_worker_mb: int = 0  # 0: from the estimate (auto) / no cap; > 0: the plan's need and a hard cap
    threads_per_worker: int = 0  # 0: the cores this run may use / CPU workers
    cpus: int = 0  # cores this run may use (0: all usable; a joblib sweep's runs share them)
    start_timeout_s: float = 600.0
    max_retries: int = 1  # re-runs of a failed job (and restarts of a worker that cannot start); 0: none
    job_timeout_s: float = 0.0  # a job running longer is killed and re-run; 0: no limit
    heartbeat_s: float = 10.0  # workers report this often; silent for 3 beats = hung
    grace_s: float = 30.0  # after a stop request, running jobs may finish this long

    def __post_init__(self) -> None:
        one_of(self, "backend", BACKEND_NAMES)
        if not (self.num_workers == AUTO or (is_int(self.num_workers) and self.num_workers >= 0)):
            raise FieldError("num_workers", f"must be an integer >= 0 or 'auto', got {self.num_workers!r}",
                             type(self).__name__)
        for name in ("gpu_mem_per_worker_mb", "threads_per_worker", "cpus", "max_retries"):
            at_least(self, name, 0)
        one_of(self, "device", DEVICES)
        positive(self, "start_timeout_s")
        positive(self, "heartbeat_s")
        at_least(self, "job_timeout_s", 0)
        at_least(self, "grace_s", 0)

    @property
    def executor(self) -> str:
        """The backend that runs: ``inline`` for ``num_workers=0``, else ``backend``."""
        return "inline" if self.num_workers == 0 else self.backend


@dataclass(frozen=True)
class RaySchedulerSpec(SchedulerSpec):
    backend: str = "ray"
    address: str = "local"  # local: start Ray here and stop it at the end | auto: join a running cluster | ray://HOST:PORT
    cpus_per_worker: float = 0.0  # Ray CPUs per actor (0: the arrangement's threads)
    gpus_per_worker: float = 0.0  # Ray GPUs per actor, fractional (0.25: 4 actors per GPU; 0: from the arrangement)
    ship_data: bool = False  # send the data and model files through the object store (no shared storage)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.address in ("local", AUTO) or self.address.startswith("ray://")):
            raise FieldError("address", f"must be local, auto or ray://HOST:PORT, got {self.address!r}",
                             type(self).__name__)
        at_least(self, "cpus_per_worker", 0)
        at_least(self, "gpus_per_worker", 0)
