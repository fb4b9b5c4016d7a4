"""The executor interface: what runs a parallel task's jobs, as the pipeline and drivers see it.

An executor is built unstarted from a *runtime factory* (a picklable top-level function
``factory(args, WorkerEnv) -> runtime``; the runtime's ``run(fn, key, payload, shared)``
runs one job) and started once: each of its workers builds its runtime then (e.g. loads the
frozen base model once) and serves jobs until ``shutdown``. Backends (``vista.scheduler``'s
registry): ``process`` (long-lived spawned processes on this host), ``inline`` (this
process), ``ray`` (Ray actors on one machine or a cluster).

Fault semantics, the same for every backend where they apply (docs/RELIABILITY.md):

- a job that raises, whose worker dies, or that runs past its time limit is re-run, the same
  request with ``attempt`` + 1, up to ``max_retries`` times; its result is its last attempt's
  (DONE, FAILED, TIMED_OUT, or CANCELLED after a stop request);
- a worker that dies or is killed for a time-out is replaced (a *respawn*: it builds its
  runtime again) while the others carry on;
- ``on_retry`` and ``on_respawn`` tell the pipeline, which records each in the event_pipeline
  and the round's ``jobs_retried`` / ``workers_respawned``;
- ``request_stop`` (safe from a signal handler) dispatches nothing more; running jobs may
  finish within the grace period, the rest come back CANCELLED.

Nothing here imports a backend: drivers know only this interface.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from vista.pipeline.protocol import JobRequest, JobResult


def no_callback(*args: Any) -> None:
    """The default of an executor's ``on_start`` / ``on_done`` / ``on_retry`` / ``on_respawn``."""
    return None


@dataclass(frozen=True)
class Placement:
    """Where one worker runs: what ``Executor.placement()`` reports and summary.json records."""

    worker: int
    device: str  # "cpu" or "cuda:i" as the worker sees it
    node: str  # the host name (process, inline) or the Ray node's address and id
    pid: int | None
    threads: int  # torch threads of the worker

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class Executor(Protocol):
    backend: str  # the registry name: process, inline, ray
    retries: int  # job re-runs over the executor's life
    respawns: int  # workers replaced over the executor's life

    def start(self) -> Executor:
        """Start the workers (each builds its runtime once); returns the executor. Raises on a
        worker that cannot start (after its retries), leaving nothing running."""

    def run_jobs(
        self,
        requests: Sequence[JobRequest],
        shared: Any,
        on_start: Callable[[str, int], None] = no_callback,
        on_done: Callable[[JobResult], None] = no_callback,
        stop_on_failure: bool = True,
        *,
        on_retry: Callable[[JobResult, int], None] = no_callback,
        on_respawn: Callable[[int, str], None] = no_callback,
    ) -> list[JobResult]:
        """Run a group of jobs and return their results (a job's result is its last
        attempt's); unless ``stop_on_failure`` is False, stop dispatching at the first final
        failure and return what finished. ``shared`` (the broadcast global state) reaches each
        worker once per group, however many of its jobs the worker runs.

        ``on_start(job_id, worker)`` as an attempt starts; ``on_done(result)`` with a job's
        final result; ``on_retry(result, next_attempt)`` with a failed attempt that will be
        re-run; ``on_respawn(worker, reason)`` when a worker is replaced."""

    def request_stop(self, grace_s: float | None = None) -> None:
        """Dispatch nothing more; jobs running may finish within ``grace_s`` (default: the
        executor's own grace), the others come back CANCELLED. Safe from a signal handler."""

    @property
    def stop_requested(self) -> bool: ...

    def placement(self) -> list[Placement]:
        """Where each worker runs now, in worker order."""

    def abort(self) -> None:
        """Kill every worker at once (a second Ctrl-C): no grace, no results. Safe from a
        signal handler; ``shutdown`` still cleans up after it."""

    def shutdown(self) -> None:
        """Stop every worker and release what the executor started (idempotent)."""
