"""The worker process: builds its runtime once, then runs jobs until told to stop.

Runs in a spawned process. It ignores SIGINT, SIGTERM and SIGHUP (the parent handles
signals and stops it; under Slurm every process of a job gets SIGTERM), and a watchdog thread
exits the process as soon as the parent is gone, so no worker outlives the run even when the
parent is killed. A heartbeat thread, started before the runtime is built, tells the parent
every ``heartbeat_s`` that the process is alive (a silent one is hung: the parent replaces
it). Its messages go up its own pipe, so a worker killed while writing can garble nothing
but its own channel. Its stdout/stderr and logging go to its own file.
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

from vista.errors import UserError
from vista.pipeline.protocol import (
    Heartbeat,
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
from vista.scheduler import faults

PARENT_POLL_SECONDS = 0.5
IGNORED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Outbox:
    """The worker's end of its pipe to the parent, shared by the job loop and the heartbeat."""

    def __init__(self, conn: Any) -> None:
        self._conn, self._lock = conn, threading.Lock()

    def put(self, msg: Any) -> None:
        with self._lock:
            self._conn.send(msg)


def _heartbeat(outbox: Outbox, worker_id: int, every: float) -> None:
    while True:
        time.sleep(every)
        try:
            outbox.put(Heartbeat(worker_id))
        except (OSError, ValueError):  # the parent is gone: the watchdog ends the process
            return


def _die_with_parent() -> None:
    """Linux: the kernel SIGKILLs this process when its parent dies, even a stopped (SIGSTOP)
    one, whose watchdog thread cannot run. Elsewhere the watchdog alone."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError) as err:
        logging.getLogger("vista.worker").debug("no PR_SET_PDEATHSIG (%s): the watchdog thread alone", err)


PROCESS_NAME = "vista-w{}"  # a worker's name in ps/top (/proc/PID/comm): "vista-w0", "vista-w1", ...


def name_process(name: str) -> None:
    """Linux: ``ps`` and ``top`` show the worker as ``name`` (a forked worker would otherwise
    carry its fork server's command line, a spawned one multiprocessing's)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


def _release_fork_server() -> None:
    """A worker forked by the fork server is handed the server's "alive" pipe end, which the
    server watches to exit when the run's process is gone; a worker holding it (a stopped one
    cannot exit) would keep the server, and so itself, alive. Close it: the worker starts no
    processes of its own."""
    from multiprocessing import forkserver

    fd = forkserver._forkserver._forkserver_alive_fd
    if fd is not None and forkserver._forkserver._forkserver_pid is None:  # handed down, not our own server
        try:
            os.close(fd)
        except OSError:
            pass
        forkserver._forkserver._forkserver_alive_fd = None


def _watch_parent(parent_pid: int) -> None:
    """Exit when the run's process is gone: a spawned worker is re-parented, a forked one's
    parent (the fork server) may outlive it by a moment, so ask for the pid itself too."""
    ppid = os.getppid()
    while True:
        time.sleep(PARENT_POLL_SECONDS)
        if os.getppid() != ppid or not _alive(parent_pid):
            os._exit(3)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    """Run one attempt of a job on a runtime, turning any exception into a failed JobResult
    (Ctrl-C excepted: it stops an inline run). ``faults.current_job`` names the attempt while
    it runs, and an injected fault (``VISTA_FAULTS``) fires first."""
    t0 = time.perf_counter()
    user_error = False
    token = faults.current_job.set((msg.job_id, msg.attempt))
    try:
        faults.inject(faults.action_for_job(msg.job_id, msg.attempt), f"job {msg.job_id}")
        value = runtime.run(msg.fn, msg.key, msg.payload, shared)
        state, error, tb = JobState.DONE, None, None
    except KeyboardInterrupt:
        raise
    except BaseException as err:
        value, state = None, JobState.FAILED
        error, tb = f"{type(err).__name__}: {err}", traceback.format_exc()
        user_error = isinstance(err, UserError)
        logging.getLogger("vista.worker").error("job %s (attempt %d) failed:\n%s", msg.job_id, msg.attempt, tb)
    finally:
        faults.current_job.reset(token)
    return JobResult(msg.job_id, msg.key, state, value, error, tb, worker_id, time.perf_counter() - t0, msg.attempt,
                     user_error)


def worker_main(init: WorkerInit, inbox: Any, conn: Any, parent_pid: int) -> None:
    """``inbox``: a queue of RunJob / Shutdown; ``conn``: the write end of this worker's pipe."""
    if init.environ is not None:  # a forked worker has its fork server's environment: take the run's
        os.environ.clear()
        os.environ.update(init.environ)
    for sig in IGNORED_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    name_process(PROCESS_NAME.format(init.worker_id))
    _release_fork_server()
    _die_with_parent()
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    outbox = Outbox(conn)
    outbox.put(Heartbeat(init.worker_id))  # at once: the parent hears from a starting worker
    threading.Thread(target=_heartbeat, args=(outbox, init.worker_id, init.heartbeat_s), daemon=True).start()
    if init.log_file:
        _redirect_output(init.log_file)
    log = logging.getLogger("vista.worker")
    t0 = time.perf_counter()
    try:
        faults.inject(faults.action_for_start(init.worker_id, init.start), f"worker {init.worker_id} start")
        import torch

        torch.set_num_threads(init.num_threads)
        from vista.scheduler.devices import cap_gpu_memory

        cap_gpu_memory(init.device, init.gpu_mem_mb)
        runtime = init.runtime_factory(init.runtime_args,
                                       WorkerEnv(init.worker_id, init.device, init.device_weights))
    except BaseException as err:
        log.error("worker %d failed to start:\n%s", init.worker_id, traceback.format_exc())
        outbox.put(WorkerStartFailed(init.worker_id, f"{type(err).__name__}: {err}", traceback.format_exc()))
        return
    log.info("worker %d (start #%d) ready on %s with %d threads in %.1fs", init.worker_id, init.start, init.device,
             init.num_threads, time.perf_counter() - t0)
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
        log.info("job %s (attempt %d): %s(%r)", job.job_id, job.attempt, job.fn, job.key)
        outbox.put(run_job(runtime, job, shared, init.worker_id))
    close = getattr(runtime, "close", None)
    if close is not None:
        close()
    log.info("worker %d stopped", init.worker_id)
