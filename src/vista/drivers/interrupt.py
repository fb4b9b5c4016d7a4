"""Stopping a run on SIGINT, SIGTERM or SIGHUP without losing it.

The first signal asks the run to stop: no new job is dispatched, jobs already running may
finish within ``scheduler.grace_s``, and the pipeline stops at the next task boundary; the
driver then checkpoints the last complete round, writes ``summary.json`` (status
``interrupted``, with the command that continues the run) and stops its workers. A second
signal exits at once (workers killed first). Slurm's preemption (SIGTERM, then SIGKILL after
its KillWait) and a closed terminal (SIGHUP) are the usual senders.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopOnSignals:
    """While active (a ``with`` block in the main thread), the signals above stop the run."""

    def __init__(self, events: Any, grace_s: float, say: Callable[[str], None] | None = None) -> None:
        self.events, self.grace_s = events, grace_s
        self.say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.received: int | None = None
        self.executor: Any = None
        self._previous: dict[int, Any] = {}

    def attach(self, executor: Any) -> None:
        """The executor whose running jobs the first signal lets finish (and the second kills).
        Our handlers are installed again: starting an executor may have replaced them (Ray's
        core worker installs its own SIGTERM handler, which kills the driver at once)."""
        self.executor = executor
        if self._previous and threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                signal.signal(sig, self._handle)
        if self.received is not None:
            self._stop_executor()

    def __enter__(self) -> "StopOnSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            self.say(f"vista: {name} again: stopping at once")
            if self.executor is not None:
                self.executor.abort()
            os._exit(128 + signum)
        self.received = signum
        self.say(f"vista: {name}: no new jobs; running ones may finish within {self.grace_s:g} s, then the last "
                 f"complete round is checkpointed (send it again to stop at once)")
        self.events.request_stop()
        self._stop_executor()

    def _stop_executor(self) -> None:
        stop = getattr(self.executor, "request_stop", None)
        if stop is not None:
            stop(self.grace_s)
