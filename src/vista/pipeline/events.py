"""EventManager: the eventloop that runs task functions, and the job monitor.

Task functions are registered under a name and emitted by the pipeline; every emission is
appended to the event_pipeline (with its wall time) and announced to subscribers
(progress display, recorder). The JobMonitor gives every job of a parallel task a unique
id inside a *group* (one group per parallel task per round) and tracks its state, its
re-runs (retries) and the worker processes replaced on the way (respawns).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections import defaultdict
from typing import Any, Callable

from vista.pipeline.event_pipeline import IMPLICIT, TASK, EventPipeline
from vista.pipeline.protocol import (
    FINAL_STATES,
    JobRequest,
    JobResult,
    JobSpec,
    JobState,
)


class JobMonitor:
    """Job ids and states per parallel task group: pending -> running -> done | failed |
    timed_out | cancelled, with running -> retrying -> running ... for a job that is re-run."""

    def __init__(self) -> None:
        self._groups: dict[str, list[str]] = {}
        self._group_of: dict[str, str] = {}
        self._state: dict[str, JobState] = {}
        self._worker: dict[str, int | None] = {}
        self._results: dict[str, JobResult] = {}
        self._retries: dict[str, int] = {}
        self._counter = itertools.count()
        self.total_retries = 0  # re-runs over the whole run
        self.total_respawns = 0  # worker processes replaced over the whole run

    def open_group(self, task: str, round: int) -> str:
        group_id = f"r{round}.{task}.g{next(self._counter)}"
        self._groups[group_id] = []
        self._retries[group_id] = 0
        return group_id

    def add(self, group_id: str, spec: JobSpec) -> JobRequest:
        jobs = self._groups[group_id]
        job_id = f"{group_id}.j{len(jobs)}"
        jobs.append(job_id)
        self._group_of[job_id] = group_id
        self._state[job_id] = JobState.PENDING
        self._worker[job_id] = None
        return JobRequest(job_id, group_id, spec.fn, spec.key, spec.payload)

    def mark_running(self, job_id: str, worker: int) -> None:
        self._expect(job_id, JobState.PENDING, JobState.RETRYING)
        self._state[job_id] = JobState.RUNNING
        self._worker[job_id] = worker

    def mark_retrying(self, job_id: str, worker: int | None = None) -> None:
        """An attempt of the job failed (or its worker was lost); it will run again."""
        self._expect(job_id, JobState.PENDING, JobState.RUNNING)
        self._state[job_id] = JobState.RETRYING
        self._worker[job_id] = worker
        self._retries[self._group_of[job_id]] += 1
        self.total_retries += 1

    def note_respawn(self) -> None:
        """A worker process was replaced by a fresh one."""
        self.total_respawns += 1

    def retries(self, group_id: str) -> int:
        """How many re-runs the jobs of this group needed."""
        return self._retries[group_id]

    def finish(self, result: JobResult) -> None:
        if self._state.get(result.job_id) not in (JobState.PENDING, JobState.RUNNING, JobState.RETRYING):
            raise ValueError(f"job {result.job_id} finished twice or is unknown")
        if result.state not in FINAL_STATES:
            raise ValueError(f"job {result.job_id}: {result.state.value} is not a final state")
        self._state[result.job_id] = result.state
        self._worker[result.job_id] = result.worker
        if result.state is not JobState.DONE:
            # only failures are read back (``failed``), and without their value: a kept result
            # would pin its tensors, and a tensor received from a worker holds an open file
            # descriptor (torch's file-descriptor sharing): keeping every job's result leaked
            # ~26 descriptors a round and hung a run at `ulimit -n 1024` after 37 rounds
            self._results[result.job_id] = dataclasses.replace(result, value=None)

    def state(self, job_id: str) -> JobState:
        return self._state[job_id]

    def states(self, group_id: str) -> dict[str, JobState]:
        return {j: self._state[j] for j in self._groups[group_id]}

    def counts(self, group_id: str) -> dict[str, int]:
        c = {s.value: 0 for s in JobState}
        for s in self.states(group_id).values():
            c[s.value] += 1
        return c

    def worker_of(self, job_id: str) -> int | None:
        return self._worker[job_id]

    def failed(self, group_id: str) -> list[JobResult]:
        return [self._results[j] for j in self._groups[group_id] if self._state[j] is JobState.FAILED]

    def _expect(self, job_id: str, *states: JobState) -> None:
        if self._state.get(job_id) not in states:
            raise ValueError(f"job {job_id} is {self._state.get(job_id)}, expected "
                             f"{' or '.join(s.value for s in states)}")


class EventManager:
    def __init__(self, event_pipeline: EventPipeline | None = None) -> None:
        self.steps = event_pipeline if event_pipeline is not None else EventPipeline()
        self.monitor = JobMonitor()
        self._functions: dict[str, Callable[..., Any]] = {}
        self._subscribers: dict[str, list[Callable[..., None]]] = defaultdict(list)
        self.stop_requested = False  # Pipeline.run raises RunInterrupted at the next task boundary

    def request_stop(self) -> None:
        """Ask the run to stop at the next task boundary (safe from a signal handler)."""
        self.stop_requested = True

    # -- eventloop -----------------------------------------------------------------------
    def register(self, name: str, fn: Callable[..., Any]) -> None:
        if name in self._functions:
            raise ValueError(f"a task function named {name!r} is already registered")
        self._functions[name] = fn

    def registered(self) -> list[str]:
        return list(self._functions)

    def emit(self, name: str, *args: Any, round: int = 0, kind: str = TASK, **info: Any) -> Any:
        """Run the function registered as ``name`` and log the step."""
        try:
            fn = self._functions[name]
        except KeyError:
            raise KeyError(f"no task function registered as {name!r}; known: {self.registered()}") from None
        started, t0 = self.steps.clock(), time.perf_counter()
        out = fn(*args)
        self.record(name, kind=kind, round=round, seconds=time.perf_counter() - t0, started=started, **info)
        return out

    def record(self, name: str, *, kind: str = IMPLICIT, round: int = 0, seconds: float = 0.0,
               started: float | None = None, **info: Any) -> None:
        """Log a step that already happened (implicit steps: broadcast, refresh, record ...)."""
        step = self.steps.append(name, kind, round, seconds, started, **info)
        for fn in self._subscribers["step"]:
            fn(step)

    # -- observers ------------------------------------------------------------------------
    def subscribe(self, event: str, fn: Callable[..., None]) -> None:
        """Events: ``step`` (a Step), ``job`` (job_id, JobState)."""
        self._subscribers[event].append(fn)

    def job_event(self, job_id: str, state: JobState) -> None:
        for fn in self._subscribers["job"]:
            fn(job_id, state)
