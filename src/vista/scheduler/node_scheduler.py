"""NodeScheduler: long-lived worker processes that run the jobs of parallel tasks.

Workers are spawned once per run; each builds its runtime (e.g. loads the frozen base
model) once and reuses it for every job and round. Jobs go to idle workers as they free
up; the broadcast payload of a job group is pickled to each worker once, not once per
job. A job that raises comes back FAILED with its traceback and id; a worker that dies
is reported the same way. ``shutdown`` (also on Ctrl-C and at interpreter exit) leaves
no worker process behind.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import multiprocessing as mp
import os
import queue
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from vista.checks import at_least, one_of, positive
from vista.pipeline.protocol import (
    JobRequest,
    JobResult,
    JobStarted,
    JobState,
    RunJob,
    Shutdown,
    WorkerInit,
    WorkerReady,
    WorkerStartFailed,
)
from vista.scheduler.devices import DEVICES, plan_devices, threads_per_worker
from vista.scheduler.worker import worker_main

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2


@dataclass(frozen=True)
class SchedulerSpec:
    num_workers: int = 2
    device: str = "auto"  # auto | cpu | cuda
    gpu_mem_per_worker_mb: int = 0  # 0: no cap
    threads_per_worker: int = 0  # 0: usable cores / CPU workers
    start_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        for name in ("num_workers", "gpu_mem_per_worker_mb", "threads_per_worker"):
            at_least(self, name, 0)
        one_of(self, "device", DEVICES)
        positive(self, "start_timeout_s")


class WorkerStartError(RuntimeError):
    pass


class NodeScheduler:
    def __init__(
        self,
        spec: SchedulerSpec,
        runtime_factory: Callable[..., Any],
        runtime_args: Any,
        log_dir: str | Path | None = None,
    ) -> None:
        if spec.num_workers < 1:
            raise ValueError("NodeScheduler needs scheduler.num_workers >= 1 (0 means run inline)")
        self.spec = spec
        self._factory = runtime_factory
        self._args = runtime_args
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self._ctx = mp.get_context("spawn")
        self._procs: list[Any] = []
        self._inboxes: list[Any] = []
        self._outbox: Any = None
        self._shared_seen: dict[int, str | None] = {}
        self._shared_ids = itertools.count()
        self.devices: list[str] = []
        self.start_seconds: float = 0.0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "NodeScheduler":
        t0 = time.perf_counter()
        self.devices = plan_devices(self.spec.device, self.spec.num_workers, self.spec.gpu_mem_per_worker_mb)
        threads = threads_per_worker(self.spec.threads_per_worker, self.spec.num_workers, self.devices)
        if self._log_dir is not None:
            self._log_dir.mkdir(parents=True, exist_ok=True)
        self._outbox = self._ctx.Queue()
        atexit.register(self.shutdown)
        for w, device in enumerate(self.devices):
            inbox = self._ctx.Queue()
            init = WorkerInit(
                worker_id=w,
                runtime_factory=self._factory,
                runtime_args=self._args,
                device=device,
                num_threads=threads,
                gpu_mem_mb=self.spec.gpu_mem_per_worker_mb or None,
                log_file=str(self._log_dir / f"worker_{w}.log") if self._log_dir else None,
            )
            proc = self._ctx.Process(
                target=worker_main, args=(init, inbox, self._outbox, os.getpid()), name=f"vista-worker-{w}", daemon=True
            )
            proc.start()
            self._procs.append(proc)
            self._inboxes.append(inbox)
            self._shared_seen[w] = None
        ready: set[int] = set()
        deadline = time.monotonic() + self.spec.start_timeout_s
        while len(ready) < len(self._procs):
            msg = self._get(deadline, waiting_for="workers to start")
            if isinstance(msg, WorkerReady):
                ready.add(msg.worker_id)
            elif isinstance(msg, WorkerStartFailed):
                self.shutdown()
                raise WorkerStartError(
                    f"worker {msg.worker_id} failed to start: {msg.error}\n--- worker traceback ---\n{msg.traceback}"
                )
        self.start_seconds = time.perf_counter() - t0
        log.info("NodeScheduler: %d workers on %s, %d threads each, ready in %.1fs",
                 len(self._procs), ",".join(sorted(set(self.devices))), threads, self.start_seconds)
        return self

    def shutdown(self) -> None:
        """Stop every worker: ask politely, then terminate, then kill."""
        if not self._procs:
            return
        for inbox in self._inboxes:
            try:
                inbox.put_nowait(Shutdown())
            except (OSError, ValueError) as err:  # a dead worker's queue: terminate/kill below stop it
                log.debug("could not ask a worker to shut down: %s", err)
        deadline = time.monotonic() + 2.0
        for proc in self._procs:
            proc.join(timeout=max(0.0, deadline - time.monotonic()))
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=2.0)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=2.0)
        for q in [*self._inboxes, self._outbox]:
            if q is not None:
                q.cancel_join_thread()
                q.close()
        self._procs, self._inboxes, self._outbox = [], [], None
        atexit.unregister(self.shutdown)

    def __enter__(self) -> "NodeScheduler":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    # -- dispatch ----------------------------------------------------------------------------
    def run_jobs(
        self,
        requests: Sequence[JobRequest],
        shared: Any,
        on_start: Callable[[str, int], None] = lambda job_id, worker: None,
        on_done: Callable[[JobResult], None] = lambda result: None,
        stop_on_failure: bool = True,
    ) -> list[JobResult]:
        """Run a group of jobs on idle workers.

        By default dispatching stops at the first failure. With ``stop_on_failure=False``
        every job gets a result: a job's exception leaves its worker alive for the next job;
        a dead worker's job fails and the rest go to the live workers; when none is left,
        the jobs not yet run fail with that reason.
        """
        if not self._procs:
            raise RuntimeError("NodeScheduler.run_jobs before start()")
        shared_id = f"s{next(self._shared_ids)}" if shared is not None else None
        pending = deque(requests)
        wanted = {r.job_id for r in requests}
        idle = [i for i, proc in enumerate(self._procs) if proc.is_alive()]
        running: dict[int, JobRequest] = {}
        results: list[JobResult] = []
        failed = False
        while (pending and not failed) or running:
            while pending and idle and not failed:
                w = idle.pop(0)
                req = pending.popleft()
                send_shared = self._shared_seen[w] != shared_id
                self._inboxes[w].put(
                    RunJob(req.job_id, req.fn, req.key, req.payload, shared_id, shared if send_shared else None)
                )
                self._shared_seen[w] = shared_id
                running[w] = req
            msg = self._get_or_detect_death(running)
            if isinstance(msg, JobStarted):
                if msg.job_id in wanted:
                    on_start(msg.job_id, msg.worker_id)
            elif isinstance(msg, JobResult):
                if msg.job_id not in wanted:
                    continue  # a stale result of an abandoned group
                running.pop(msg.worker, None)
                if msg.worker is not None and self._procs[msg.worker].is_alive():
                    idle.append(msg.worker)
                    idle.sort()
                results.append(msg)
                on_done(msg)
                if msg.state is not JobState.DONE and stop_on_failure:
                    failed = True
                    break
            if pending and not idle and not running:  # every worker is dead
                for req in pending:
                    res = JobResult(req.job_id, req.key, JobState.FAILED,
                                    error="no live worker left to run this job (all worker processes died)",
                                    traceback="(not run)")
                    results.append(res)
                    on_done(res)
                pending.clear()
        return results

    # -- internals ---------------------------------------------------------------------------
    def _get(self, deadline: float, waiting_for: str) -> Any:
        while True:
            try:
                return self._outbox.get(timeout=POLL_SECONDS)
            except queue.Empty:
                dead = [i for i, p in enumerate(self._procs) if not p.is_alive()]
                if dead:
                    codes = {i: self._procs[i].exitcode for i in dead}
                    self.shutdown()
                    raise WorkerStartError(f"worker(s) died while waiting for {waiting_for}: exit codes {codes}")
                if time.monotonic() > deadline:
                    self.shutdown()
                    raise WorkerStartError(f"timed out waiting for {waiting_for}")

    def _get_or_detect_death(self, running: dict[int, JobRequest]) -> Any:
        while True:
            try:
                return self._outbox.get(timeout=POLL_SECONDS)
            except queue.Empty:
                for w, req in list(running.items()):
                    proc = self._procs[w]
                    if not proc.is_alive():
                        log_hint = f"; see {self._log_dir / f'worker_{w}.log'}" if self._log_dir else ""
                        return JobResult(
                            req.job_id, req.key, JobState.FAILED,
                            error=f"worker {w} (pid {proc.pid}) died with exit code {proc.exitcode} "
                            f"while running the job (out of memory?){log_hint}",
                            traceback="(no traceback: the process died)", worker=w,
                        )
