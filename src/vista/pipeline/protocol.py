"""TaskProtocol: the typed messages that cross Vista's two process boundaries.

Level 1, pipeline <-> NodeScheduler: a parallel task turns into ``JobRequest`` messages;
the scheduler answers with ``JobStarted`` / ``JobResult`` events.
Level 2, NodeScheduler <-> worker processes: ``WorkerInit`` once per process, then
``RunJob`` / ``Shutdown`` in, ``WorkerReady`` / ``JobStarted`` / ``JobResult`` out, and a
``Heartbeat`` every ``heartbeat_s`` from the moment the process runs (so a silent one is hung).

A job's attempts: a failed, timed-out or lost attempt may be re-run (``RunJob.attempt`` + 1,
the same request otherwise); the job's state is RETRYING in between. Its final state is
DONE, FAILED, TIMED_OUT (its last attempt ran too long or its worker went silent) or
CANCELLED (a stop was requested before it could finish).

Everything here is a small picklable dataclass: paths, indices and adapter tensors travel,
never datasets or whole models.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class JobState(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    RETRYING = "retrying"  # an attempt failed; the job waits to run again
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


FINAL_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.TIMED_OUT, JobState.CANCELLED})


# ---- level 1: pipeline <-> scheduler ---------------------------------------------------


@dataclass(frozen=True)
class JobSpec:
    """What a parallel task asks for: run worker function ``fn`` for logical worker ``key``
    (a client id, an evaluation shard ...) with ``payload``."""

    fn: str
    key: Any
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobRequest:
    job_id: str
    group_id: str
    fn: str
    key: Any
    payload: dict[str, Any]


@dataclass(frozen=True)
class JobResult:
    job_id: str
    key: Any
    state: JobState
    value: Any = None
    error: str | None = None
    traceback: str | None = None
    worker: int | None = None
    seconds: float = 0.0
    attempt: int = 0  # which run of the job this is (0: the first)
    user_error: bool = False  # the job raised a vista.errors.UserError (bad data, model ...): a one-line error

    @property
    def ok(self) -> bool:
        return self.state is JobState.DONE


# ---- level 2: scheduler <-> worker processes --------------------------------------------


@dataclass(frozen=True)
class WorkerInit:
    """Sent once to a fresh worker process: how to build its long-lived runtime."""

    worker_id: int
    runtime_factory: Any  # picklable callable: (WorkerEnv) -> object with ``run(fn, payload)``
    runtime_args: Any
    device: str
    num_threads: int
    gpu_mem_mb: int | None
    log_file: str | None
    start: int = 0  # how many processes this worker slot started before (fault injection counts on it)
    heartbeat_s: float = 10.0
    environ: dict[str, str] | None = None  # the parent's environment (a forked worker has its fork server's)
    device_weights: Any = None  # IPC handles of the GPU's one copy of the frozen weights (models.device_weights)


@dataclass(frozen=True)
class WorkerEnv:
    """What a worker runtime learns about where it runs."""

    worker_id: int
    device: str
    device_weights: Any = None  # a DeviceWeights: the frozen weights the parent keeps on this GPU, to map


@dataclass(frozen=True)
class RunJob:
    """One job for one worker. The group's shared payload (the broadcast global state)
    rides along only on the first job a worker gets from that group."""

    job_id: str
    fn: str
    key: Any
    payload: dict[str, Any]
    shared_id: str | None = None
    shared: Any = None
    attempt: int = 0  # 0: the first run; a re-run sends the same request with attempt + 1


@dataclass(frozen=True)
class Shutdown:
    pass


@dataclass(frozen=True)
class WorkerReady:
    worker_id: int
    device: str
    seconds: float


@dataclass(frozen=True)
class WorkerStartFailed:
    worker_id: int
    error: str
    traceback: str


@dataclass(frozen=True)
class Heartbeat:
    """Sent every ``WorkerInit.heartbeat_s`` by a worker's own thread, busy or not."""

    worker_id: int


@dataclass(frozen=True)
class JobStarted:
    job_id: str
    worker_id: int
