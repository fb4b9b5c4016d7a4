"""InlineExecutor: runs jobs in the pipeline process (``scheduler.num_workers=0``).

Same runtime, same job results, no processes: for debugging with pdb and for tests of
code that sits above the scheduler. The NodeScheduler's fault semantics where they apply: a
job that raises is re-run up to ``max_retries`` times (0 by default: a failure is final);
``request_stop`` cancels the jobs not started (the one running cannot be interrupted). There
is no process to time out or replace.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any, Callable, Sequence

from vista.pipeline.executor import Placement, no_callback
from vista.pipeline.protocol import JobRequest, JobResult, JobState, RunJob, WorkerEnv
from vista.scheduler.arrangement import Arrangement
from vista.scheduler.spec import SchedulerSpec
from vista.scheduler.worker import run_job

log = logging.getLogger(__name__)


class InlineExecutor:
    backend = "inline"

    def __init__(self, runtime_factory: Callable[..., Any], runtime_args: Any, device: str = "cpu",
                 max_retries: int = 0, num_threads: int = 0) -> None:
        """``num_threads`` > 0 sets this process's torch threads, as a worker's are set
        (``scheduler.threads_per_worker``): the same thread count gives the same bits."""
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if num_threads > 0:
            import torch

            torch.set_num_threads(num_threads)
        self.runtime = runtime_factory(runtime_args, WorkerEnv(0, device))
        self.devices = [device]
        self.arrangement: Arrangement | None = None
        self.max_retries = max_retries
        self.retries = 0
        self.respawns = 0  # always: nothing to respawn
        self.stop_requested = False

    def start(self) -> InlineExecutor:
        """The runtime is built already (in the constructor): nothing to start."""
        return self

    def placement(self) -> list[Placement]:
        import torch

        return [Placement(0, self.devices[0], socket.gethostname(), os.getpid(), torch.get_num_threads())]

    def abort(self) -> None:
        """Nothing to kill: the job running is this process's own."""

    def request_stop(self, grace_s: float | None = None) -> None:
        """Cancel the jobs not started yet (safe from a signal handler); ``grace_s`` is moot."""
        self.stop_requested = True

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
        results = []
        for req in requests:
            res = self._run(req, shared, on_start, on_retry)
            results.append(res)
            on_done(res)
            if res.state is JobState.FAILED and stop_on_failure:
                break
        return results

    def _run(self, req: JobRequest, shared: Any, on_start: Callable[[str, int], None],
             on_retry: Callable[[JobResult, int], None]) -> JobResult:
        attempt = 0
        while True:
            if self.stop_requested:
                return JobResult(req.job_id, req.key, JobState.CANCELLED, worker=0, attempt=attempt,
                                 error="cancelled: stop requested before it started", traceback="(not run)")
            on_start(req.job_id, 0)
            res = run_job(self.runtime, RunJob(req.job_id, req.fn, req.key, req.payload, attempt=attempt), shared, 0)
            if res.ok or attempt >= self.max_retries:
                return res
            log.warning("job %s attempt %d failed inline (%s); re-running it (attempt %d of at most %d)",
                        req.job_id, attempt, (res.error or "").splitlines()[0], attempt + 1, self.max_retries + 1)
            attempt += 1
            self.retries += 1
            on_retry(res, attempt)

    def shutdown(self) -> None:
        close = getattr(self.runtime, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> InlineExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def inline_executor(spec: SchedulerSpec, runtime_factory: Callable[..., Any], runtime_args: Any,
                    log_dir: str | Path | None = None, *, memory: Any = None,
                    useful_workers: int | None = None, weight_keeper: Any = None) -> InlineExecutor:
    """``scheduler=inline`` / ``num_workers=0``: one worker, this process (``log_dir`` is moot:
    the jobs log where the run logs; ``weight_keeper`` too: one process holds one copy anyway)."""
    device = "cpu" if spec.device == "auto" else spec.device
    if device == "cuda":
        device = "cuda:0"
    executor = InlineExecutor(runtime_factory, runtime_args, device=device, max_retries=spec.max_retries,
                              num_threads=spec.threads_per_worker or spec.cpus)
    import torch

    mem = getattr(memory, "total_mb", None)
    executor.arrangement = Arrangement(
        devices=(device,), threads=torch.get_num_threads(), mem_per_worker_mb=mem,
        mem_source=getattr(memory, "source", "none") if memory is not None else "none",
        reason="inline: the pipeline process runs every job")
    return executor
