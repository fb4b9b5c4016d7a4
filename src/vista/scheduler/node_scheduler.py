"""NodeScheduler: long-lived worker processes that run the jobs of parallel tasks.

Workers are spawned once per run; each builds its runtime (e.g. loads the frozen base
model) once and reuses it for every job and round. Jobs go to idle workers as they free
up; the broadcast payload of a job group is pickled to each worker once, not once per
job. ``shutdown`` (also on Ctrl-C and at interpreter exit) leaves no worker process behind.

Faults, job by job (``max_retries`` > 0): a job that raises is re-run, the same request
with ``attempt`` + 1, up to ``max_retries`` times before its FAILED result is final. A worker
that dies (killed, out of memory, segfault), goes silent for 3 heartbeats while it starts or
runs a job (hung; SIGSTOP), or runs a job longer than ``job_timeout_s`` is killed and
replaced in its slot (same worker id and device; it builds its runtime again) while the
other workers carry on, and its job is re-run (the attempt is FAILED or TIMED_OUT). A worker
that cannot start (its runtime fails to build, it dies or hangs) is started again, up to
``max_retries`` times in a row, then :class:`WorkerStartError`. ``max_retries=0`` turns all
this off: a failure is final, and a dead or hung worker is not replaced.

``request_stop`` (safe from a signal handler) stops dispatching: jobs running may finish
until the grace deadline; the rest come back CANCELLED (still-running ones with their
workers killed).
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from vista.pipeline.executor import Placement, no_callback
from vista.pipeline.protocol import (
    JobRequest,
    JobResult,
    JobStarted,
    JobState,
    RunJob,
    WorkerInit,
    WorkerReady,
    WorkerStartFailed,
)
from vista.scheduler import faults
from vista.scheduler.arrangement import Arrangement
from vista.scheduler.backends import plan_workers
from vista.scheduler.job_group import JobGroup
from vista.scheduler.pool import (
    BUSY,
    DIED,
    IDLE,
    STARTING,
    ChannelClosed,
    Slot,
    WorkerPool,
)
from vista.scheduler.warm_start import worker_context

if TYPE_CHECKING:  # the annotation only: the spec module needs nothing from here
    from vista.scheduler.spec import SchedulerSpec

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1


class WorkerStartError(RuntimeError):
    pass


class NodeScheduler:
    backend = "process"

    def __init__(
        self,
        spec: SchedulerSpec,
        runtime_factory: Callable[..., Any],
        runtime_args: Any,
        log_dir: str | Path | None = None,
        *,
        memory: Any = None,
        useful_workers: int | None = None,
        weight_keeper: Any = None,
    ) -> None:
        """``memory`` (a :class:`~vista.scheduler.memory.MemoryEstimate`) and ``useful_workers``
        inform the arrangement of ``num_workers=auto`` (:mod:`vista.scheduler.arrangement`).
        ``weight_keeper`` (a :class:`~vista.models.device_weights.WeightKeeper`): this process
        keeps one copy of the frozen weights on each GPU the workers use, and they map it."""
        if spec.num_workers == 0:
            raise ValueError("NodeScheduler needs scheduler.num_workers >= 1 or auto (0 means run inline)")
        self.spec = spec
        self._memory, self._useful = memory, useful_workers
        self._keeper = weight_keeper
        self.arrangement: Arrangement | None = None
        self._factory = runtime_factory
        self._args = runtime_args
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self._ctx = worker_context()
        self._pool: WorkerPool | None = None
        self._threads = 1
        self._shared_ids = itertools.count()
        self._stop_at: float | None = None
        self._stop_noted = False
        self.devices: list[str] = []
        self.start_seconds: float = 0.0
        self.retries = 0  # job re-runs, over the scheduler's life
        self.respawns = 0  # worker processes replaced (start-up restarts included)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> NodeScheduler:
        t0 = time.perf_counter()
        faults.plan()  # a malformed VISTA_FAULTS is an error here, not in a worker
        self.arrangement = plan_workers(self.spec, self._memory, self._useful)
        self.devices, self._threads = list(self.arrangement.devices), self.arrangement.threads
        if self._log_dir is not None:
            self._log_dir.mkdir(parents=True, exist_ok=True)
        self._pool = WorkerPool(self._ctx, self._init_for, self.spec.heartbeat_s)
        atexit.register(self.shutdown)
        if self._keeper is not None:  # before any worker starts: each maps what is kept on its GPU
            self._keeper.prepare(self.devices)
        for device in self.devices:
            self._pool.add(device)
        while any(s.state == STARTING for s in self._pool.slots):
            self._poll(None)
        self.start_seconds = time.perf_counter() - t0
        log.info("NodeScheduler: %d workers on %s, %d threads each, ready in %.1fs",
                 len(self.devices), ",".join(sorted(set(self.devices))), self._threads, self.start_seconds)
        return self

    def shutdown(self) -> None:
        """Stop every worker: ask politely, then kill."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        pool.shutdown()
        if self._keeper is not None:  # only now: no worker maps the kept weights any more
            self._keeper.close()
        atexit.unregister(self.shutdown)

    def __enter__(self) -> NodeScheduler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    @property
    def pids(self) -> list[int]:
        """The live worker processes, in slot order (worker id = index while none is lost,
        which only happens with ``max_retries=0`` or after a stop)."""
        return [s.pid for s in self._pool.slots if s.ch is not None and s.pid is not None] \
            if self._pool is not None else []

    def placement(self) -> list[Placement]:
        host = socket.gethostname()
        return [Placement(s.id, s.device, host, s.pid if s.ch is not None else None, self._threads)
                for s in (self._pool.slots if self._pool is not None else [])]

    def abort(self) -> None:
        """SIGKILL every worker process now (from a signal handler: no joins, no locks)."""
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue  # already gone

    def request_stop(self, grace_s: float | None = None) -> None:
        """Stop dispatching; running jobs may finish within ``grace_s`` (default
        ``spec.grace_s``), then they and every job not started come back CANCELLED. Safe to call
        from a signal handler; a second call may shorten the deadline, never extend it."""
        at = time.monotonic() + max(0.0, self.spec.grace_s if grace_s is None else grace_s)
        if self._stop_at is None or at < self._stop_at:
            self._stop_at = at

    @property
    def stop_requested(self) -> bool:
        return self._stop_at is not None

    # -- dispatch ----------------------------------------------------------------------------
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
        """Run a group of jobs on idle workers; a job's result is its last attempt's.

        ``on_retry(result, next_attempt)`` hears of each failed attempt that will be re-run,
        ``on_respawn(worker, reason)`` of each worker process replaced. By default dispatching
        stops at the first final failure (jobs still running are abandoned). With
        ``stop_on_failure=False`` every job gets a result; when no worker is left (only
        with ``max_retries=0``), the jobs not yet run fail with that reason.
        """
        if self._pool is None:
            raise RuntimeError("NodeScheduler.run_jobs before start()")
        shared_id = f"s{next(self._shared_ids)}" if shared is not None else None
        g = JobGroup(requests, shared, shared_id, on_start, on_done, on_retry, on_respawn, stop_on_failure)
        while True:
            if self._stop_at is not None:
                self._cancel(g)
            else:
                self._dispatch(g)
            if g.done:
                return g.results
            if g.pending and not g.live and not self._pool.any_up():
                g.fail_pending("no live worker left to run this job (all worker processes died)")
                continue
            self._poll(g)

    def _dispatch(self, g: JobGroup) -> None:
        assert self._pool is not None
        while g.pending and not g.failed:
            slot = self._pool.idle_slot()
            if slot is None or slot.ch is None:
                return
            req, attempt = g.pending.popleft()
            send_shared = slot.shared_id != g.shared_id
            job = RunJob(req.job_id, req.fn, req.key, req.payload, g.shared_id,
                         g.shared if send_shared else None, attempt)
            slot.ch.inbox.put(job)
            slot.shared_id, slot.state, slot.job, slot.dispatched_at = g.shared_id, BUSY, job, time.monotonic()
            g.started(req, attempt)

    def _cancel(self, g: JobGroup) -> None:
        """After a stop request: nothing more starts; at the deadline what runs is killed."""
        assert self._pool is not None and self._stop_at is not None
        if not self._stop_noted:
            self._stop_noted = True
            log.warning("stop requested: %d job(s) not started are cancelled, %d running may finish within %.1fs",
                        len(g.pending), len(g.live), max(0.0, self._stop_at - time.monotonic()))
        g.cancel_pending()
        if time.monotonic() < self._stop_at:
            return
        for slot in self._pool.slots:
            job = slot.job if slot.state == BUSY else None
            if job is not None and job.job_id in g.live:
                log.warning("job %s still running on worker %d at the stop deadline: killing the worker",
                            job.job_id, slot.id)
                self._pool.kill(slot)
                g.cancel_live(job.job_id, "still running at the stop deadline (worker killed)", slot.id)

    # -- events -------------------------------------------------------------------------------
    def _poll(self, g: JobGroup | None) -> None:
        """Handle what the workers said (waiting up to POLL_SECONDS), then check on each."""
        assert self._pool is not None
        pool = self._pool
        event = pool.next_event(POLL_SECONDS)
        while event is not None:
            self._handle(*event, g)
            if self._pool is None:
                return
            event = pool.next_event(0)
        now = time.monotonic()
        for slot in pool.slots:
            problem = pool.problem(slot, now, self.spec.job_timeout_s, self.spec.start_timeout_s)
            if problem is not None:
                self._fault(slot, *problem, g)

    def _handle(self, slot: Slot, ch: Any, msg: Any, g: JobGroup | None) -> None:
        if ch is not slot.ch or isinstance(msg, ChannelClosed):
            return  # a replaced process's last words; a closed channel is seen by problem()
        if isinstance(msg, WorkerReady):
            slot.state, slot.start_failures = IDLE, 0
            if slot.starts > 1:
                log.info("worker %d: replacement (start #%d) ready in %.1fs", slot.id, slot.starts - 1, msg.seconds)
        elif isinstance(msg, WorkerStartFailed):
            self._start_failed(slot, f"{msg.error}\n--- worker traceback ---\n{msg.traceback}", g)
        elif isinstance(msg, JobStarted):
            if g is not None and msg.job_id in g.live:
                g.on_start(msg.job_id, msg.worker_id)
        elif isinstance(msg, JobResult):
            slot.state, slot.job = IDLE, None
            if g is not None and msg.job_id in g.live:
                self._attempt_over(msg, g)
            # else: a result of an abandoned group's job; its worker is free again

    def _fault(self, slot: Slot, kind: str, reason: str, g: JobGroup | None) -> None:
        """The slot's process died, hung or ran out of time: replace it, re-run its job."""
        if slot.state == STARTING:
            self._start_failed(slot, reason, g)
            return
        job = slot.job if slot.state == BUSY else None
        seconds = time.monotonic() - slot.dispatched_at
        where = f"running job {job.job_id} (attempt {job.attempt})" if job is not None else "idle"
        hint = f"; see {self._log_dir / f'worker_{slot.id}.log'}" if self._log_dir else ""
        if kind == DIED and job is not None:
            reason += " while running the job (out of memory?)"
        log.warning("worker %d %s: %s", slot.id, where, reason)
        self._replace(slot, reason, g)
        if job is not None and g is not None and job.job_id in g.live:
            state = JobState.FAILED if kind == DIED else JobState.TIMED_OUT
            why = "the process died" if kind == DIED else "the worker was killed"
            self._attempt_over(JobResult(job.job_id, job.key, state, error=reason + hint,
                                         traceback=f"(no traceback: {why})", worker=slot.id, seconds=seconds,
                                         attempt=job.attempt), g)

    def _attempt_over(self, res: JobResult, g: JobGroup) -> None:
        if g.attempt_over(res, self.spec.max_retries, stopping=self._stop_at is not None):
            self.retries += 1

    def _replace(self, slot: Slot, reason: str, g: JobGroup | None) -> None:
        assert self._pool is not None
        self._pool.kill(slot)
        if self._stop_at is not None or self.spec.max_retries == 0:
            log.warning("worker %d is not replaced (%s)",
                        slot.id, "stop requested" if self._stop_at is not None else "max_retries=0")
            return
        self._respawn(slot, reason, g)

    def _start_failed(self, slot: Slot, reason: str, g: JobGroup | None) -> None:
        assert self._pool is not None
        self._pool.kill(slot)
        slot.start_failures += 1
        if self._stop_at is not None:
            return
        if slot.start_failures > self.spec.max_retries:
            tries = slot.start_failures
            self.shutdown()
            raise WorkerStartError(f"worker {slot.id} failed to start ({tries} tries): {reason}")
        log.warning("worker %d failed to start (start #%d): %s", slot.id, slot.starts - 1, reason.splitlines()[0])
        self._respawn(slot, f"failed to start: {reason.splitlines()[0]}", g)

    def _respawn(self, slot: Slot, reason: str, g: JobGroup | None) -> None:
        assert self._pool is not None
        self._pool.spawn(slot)
        self.respawns += 1
        log.warning("worker %d: starting a replacement process (start #%d, pid %s) after: %s",
                    slot.id, slot.starts - 1, slot.pid, reason)
        if g is not None:
            g.on_respawn(slot.id, reason)

    def _init_for(self, slot: Slot) -> WorkerInit:
        return WorkerInit(
            worker_id=slot.id,
            runtime_factory=self._factory,
            runtime_args=self._args,
            device=slot.device,
            num_threads=self._threads,
            gpu_mem_mb=self.spec.gpu_mem_per_worker_mb or None,
            log_file=str(self._log_dir / f"worker_{slot.id}.log") if self._log_dir else None,
            start=slot.starts,
            heartbeat_s=self.spec.heartbeat_s,
            environ=dict(os.environ),
            device_weights=self._keeper.handles(slot.device) if self._keeper is not None else None,
        )
