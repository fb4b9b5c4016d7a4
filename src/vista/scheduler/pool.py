"""The NodeScheduler's worker processes: one *slot* per worker, refilled in place.

A slot keeps its worker id and device for the whole run; the process in it may be replaced
(a *respawn*) when it dies, hangs or runs a job past its time limit. Each process has its
own inbox (a queue the parent writes) and its own pipe up to the parent, read by a thread
of the parent: that thread notes when the process was last heard from (any message counts,
heartbeats included) and passes every other message on, tagged with the process it came
from, so a message of a process already replaced is recognised and dropped. A process
killed in the middle of a message garbles its own pipe only.

What this module decides is only *what is wrong* with a slot (:meth:`WorkerPool.problem`);
what to do about it (re-run the job, respawn, give up) is the NodeScheduler's business.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vista.pipeline.protocol import Heartbeat, RunJob, Shutdown, WorkerInit
from vista.scheduler.worker import worker_main

log = logging.getLogger(__name__)

STARTING, IDLE, BUSY, DEAD = "starting", "idle", "busy", "dead"
SILENT_BEATS = 3  # a starting or busy worker silent this many heartbeats is hung
READER_JOIN_S = 5.0  # how long a killed process's pipe reader may take to see the end of the pipe
EOF_WAIT_S = 1.0  # how long a dead process's pipe may stay open before the death counts anyway

# what can be wrong with a slot
DIED, HUNG, TIMEOUT = "died", "hung", "timeout"


@dataclass(frozen=True)
class ChannelClosed:
    """The reader thread's last word: the process's pipe ended (or could not be read)."""

    error: str


@dataclass(eq=False)
class Channel:
    """One worker process (one start of a slot) and the parent's ends of its channels."""

    proc: Any
    inbox: Any
    conn: Any
    started_at: float
    last_seen: float  # written by the reader thread
    heard: bool = False  # any message yet
    closed: str | None = None  # set when the main loop reads the ChannelClosed
    dead_at: float | None = None  # when the main loop first saw the process gone
    reader: threading.Thread | None = None  # the parent's thread reading ``conn``


@dataclass(eq=False)
class Slot:
    id: int
    device: str
    state: str = DEAD
    ch: Channel | None = None
    pid: int | None = None  # of the current (or last) process
    starts: int = 0  # processes started in this slot so far
    start_failures: int = 0  # in a row; a ready worker resets it
    job: RunJob | None = None  # the attempt it runs (BUSY)
    dispatched_at: float = 0.0
    shared_id: str | None = None  # the group payload it holds


class WorkerPool:
    def __init__(self, ctx: Any, make_init: Callable[[Slot], WorkerInit], heartbeat_s: float) -> None:
        self._ctx = ctx
        self._make_init = make_init
        self.heartbeat_s = heartbeat_s
        self.slots: list[Slot] = []
        self._events: queue.Queue[tuple[int, Channel, Any]] = queue.Queue()

    # -- processes --------------------------------------------------------------------------
    def add(self, device: str) -> Slot:
        slot = Slot(len(self.slots), device)
        self.slots.append(slot)
        self.spawn(slot)
        return slot

    def spawn(self, slot: Slot) -> None:
        """Start a fresh process in ``slot`` (its ``starts``-th)."""
        init = self._make_init(slot)
        slot.starts += 1
        reader, writer = self._ctx.Pipe(duplex=False)
        inbox = self._ctx.Queue()
        proc = self._ctx.Process(target=worker_main, args=(init, inbox, writer, os.getpid()),
                                 name=f"vista-worker-{slot.id}", daemon=True)
        proc.start()
        writer.close()  # the child holds the write end now: its death ends the pipe
        now = time.monotonic()
        ch = Channel(proc, inbox, reader, now, now)
        slot.ch, slot.pid, slot.state, slot.job, slot.shared_id = ch, proc.pid, STARTING, None, None
        ch.reader = threading.Thread(target=_read, args=(slot.id, ch, self._events), name=f"vista-reader-{slot.id}",
                                     daemon=True)
        ch.reader.start()

    def kill(self, slot: Slot) -> int | None:
        """SIGKILL the slot's process (a stopped one too) and wait for it and for the thread
        reading its pipe; the slot is DEAD. Returns the exit code.

        The reader is joined, not left to die with the interpreter: a daemon thread still
        inside torch (unpickling a tensor) when Python finalises is killed from a destructor
        that may not unwind, and the whole run aborts at exit with "terminate called without
        an active exception" (pytorch/pytorch#38228)."""
        ch, slot.ch, slot.state, slot.job = slot.ch, None, DEAD, None
        if ch is None:
            return None
        if ch.proc.is_alive():
            ch.proc.kill()
        ch.proc.join(timeout=5.0)
        _close_queue(ch.inbox)
        if ch.reader is not None and ch.reader is not threading.current_thread():
            ch.reader.join(timeout=READER_JOIN_S)  # the pipe ends with the process: EOF, then it returns
            if ch.reader.is_alive():
                log.warning("worker %d's pipe reader did not end within %gs of its process", slot.id,
                            READER_JOIN_S)
        return ch.proc.exitcode

    def shutdown(self) -> None:
        """Ask every process to stop, wait a little, then kill what is left. (Workers ignore
        SIGTERM, so there is no terminate step.)"""
        live = [s for s in self.slots if s.ch is not None]
        for slot in live:
            try:
                slot.ch.inbox.put_nowait(Shutdown())  # type: ignore[union-attr]
            except (OSError, ValueError) as err:  # a dead worker's queue: kill below stops it
                log.debug("could not ask worker %d to shut down: %s", slot.id, err)
        deadline = time.monotonic() + 2.0
        for slot in live:
            slot.ch.proc.join(timeout=max(0.0, deadline - time.monotonic()))  # type: ignore[union-attr]
        for slot in live:
            self.kill(slot)

    # -- what the workers say ------------------------------------------------------------------
    def next_event(self, timeout: float) -> tuple[Slot, Channel, Any] | None:
        """The next message of any worker, with its slot and the process it came from."""
        try:
            sid, ch, msg = self._events.get(timeout=timeout) if timeout > 0 else self._events.get_nowait()
        except queue.Empty:
            return None
        if isinstance(msg, ChannelClosed) and ch is self.slots[sid].ch:
            ch.closed = msg.error
        return self.slots[sid], ch, msg

    def idle_slot(self) -> Slot | None:
        return next((s for s in self.slots if s.state == IDLE), None)

    def any_up(self) -> bool:
        """Some slot has a process that can (or soon will) run jobs."""
        return any(s.state != DEAD for s in self.slots)

    def problem(self, slot: Slot, now: float, job_timeout_s: float, start_timeout_s: float) -> tuple[str, str] | None:
        """``(DIED | HUNG | TIMEOUT, reason)`` when the slot's process must be replaced."""
        ch = slot.ch
        if ch is None or slot.state == DEAD:
            return None
        pid = ch.proc.pid
        if ch.closed is None and not ch.proc.is_alive():
            ch.dead_at = now if ch.dead_at is None else ch.dead_at
        if ch.closed is not None or (ch.dead_at is not None and now - ch.dead_at > EOF_WAIT_S):
            ch.proc.join(timeout=1.0)
            code = ch.proc.exitcode
            if code is None:
                return DIED, f"worker {slot.id} (pid {pid}) broke its channel ({ch.closed})"
            return DIED, f"worker {slot.id} (pid {pid}) died with exit code {code}"
        silent = now - ch.last_seen
        if slot.state in (STARTING, BUSY) and ch.heard and silent > SILENT_BEATS * self.heartbeat_s:
            return HUNG, (f"worker {slot.id} (pid {pid}) sent nothing for {silent:.1f}s "
                          f"(heartbeat every {self.heartbeat_s:g}s): hung")
        if slot.state == STARTING and now - ch.started_at > start_timeout_s:
            return HUNG, f"worker {slot.id} (pid {pid}) did not start within start_timeout_s={start_timeout_s:g}"
        if slot.state == BUSY and job_timeout_s > 0 and now - slot.dispatched_at > job_timeout_s:
            job = slot.job.job_id if slot.job is not None else "?"
            return TIMEOUT, (f"job {job} ran longer than job_timeout_s={job_timeout_s:g} "
                             f"on worker {slot.id} (pid {pid})")
        return None


def _read(slot_id: int, ch: Channel, events: queue.Queue) -> None:
    """Reader thread of one process's pipe (ends when the process does)."""
    while True:
        try:
            msg = ch.conn.recv()
        except EOFError:
            error = "end of pipe"
            break
        except Exception as err:  # noqa: BLE001  a message cut off by a death, or one that cannot be unpickled
            error = f"{type(err).__name__}: {err}"
            break
        ch.last_seen, ch.heard = time.monotonic(), True
        if not isinstance(msg, Heartbeat):
            events.put((slot_id, ch, msg))
    events.put((slot_id, ch, ChannelClosed(error)))
    ch.conn.close()


def _close_queue(q: Any) -> None:
    try:
        q.cancel_join_thread()
        q.close()
    except (OSError, ValueError) as err:
        log.debug("closing a worker queue: %s", err)
