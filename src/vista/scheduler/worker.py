"""The worker process: builds its runtime once, then runs jobs until told to stop.

Runs in a spawned process. It ignores SIGINT (the parent handles Ctrl-C and stops it), and a
watchdog thread exits the process as soon as the parent is gone, so no worker outlives
the run even when the parent is killed. Its stdout/stderr and logging go to its own file.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any

from vista.pipeline.protocol import (
    JobResult,
    JobStarted,
    JobState,
    RunJob,
    Shutdown,
    WorkerEnv,
    WorkerInit,
    WorkerReady,
    WorkerStartFailed,
)

PARENT_POLL_SECONDS = 0.5


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(PARENT_POLL_SECONDS)
        if os.getppid() != parent_pid:
            os._exit(3)


def _redirect_output(log_file: str) -> None:
    fh = open(log_file, "a", buffering=1, encoding="utf-8")
    os.dup2(fh.fileno(), 1)
    os.dup2(fh.fileno(), 2)
    sys.stdout = sys.stderr = fh
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=fh,
        force=True,
    )


def run_job(runtime: Any, msg: RunJob, shared: Any, worker_id: int) -> JobResult:
    """Run one job on a runtime, turning any exception into a failed JobResult."""
    t0 = time.perf_counter()
    try:
        value = runtime.run(msg.fn, msg.key, msg.payload, shared)
        state, error, tb = JobState.DONE, None, None
    except BaseException as err:
        value, state = None, JobState.FAILED
        error, tb = f"{type(err).__name__}: {err}", traceback.format_exc()
        logging.getLogger("vista.worker").error("job %s failed:\n%s", msg.job_id, tb)
    return JobResult(msg.job_id, msg.key, state, value, error, tb, worker_id, time.perf_counter() - t0)


def worker_main(init: WorkerInit, inbox: Any, outbox: Any, parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    if init.log_file:
        _redirect_output(init.log_file)
    log = logging.getLogger("vista.worker")
    t0 = time.perf_counter()
    try:
        import torch

        torch.set_num_threads(init.num_threads)
        from vista.scheduler.devices import cap_gpu_memory

        cap_gpu_memory(init.device, init.gpu_mem_mb)
        runtime = init.runtime_factory(init.runtime_args, WorkerEnv(init.worker_id, init.device))
    except BaseException as err:
        log.error("worker %d failed to start:\n%s", init.worker_id, traceback.format_exc())
        outbox.put(WorkerStartFailed(init.worker_id, f"{type(err).__name__}: {err}", traceback.format_exc()))
        return
    log.info("worker %d ready on %s with %d threads in %.1fs", init.worker_id, init.device, init.num_threads, time.perf_counter() - t0)
    outbox.put(WorkerReady(init.worker_id, init.device, time.perf_counter() - t0))
    shared_id, shared = None, None
    while True:
        msg = inbox.get()
        if isinstance(msg, Shutdown):
            break
        job: RunJob = msg
        if job.shared_id != shared_id:
            shared_id, shared = job.shared_id, job.shared
        outbox.put(JobStarted(job.job_id, init.worker_id))
        log.info("job %s: %s(%r)", job.job_id, job.fn, job.key)
        outbox.put(run_job(runtime, job, shared, init.worker_id))
    close = getattr(runtime, "close", None)
    if close is not None:
        close()
    log.info("worker %d stopped", init.worker_id)
