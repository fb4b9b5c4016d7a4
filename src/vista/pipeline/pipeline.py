"""Task and Pipeline: what a federated experiment runs, round after round.

A ``single`` task runs once in the pipeline process: ``fn(ctx)`` reads and writes the
FLContext. A ``parallel`` task's ``fn(ctx)`` decides which logical workers run and with what
(it returns ``Jobs``); each becomes a job with a unique id, run by an Executor (the
NodeScheduler's worker processes, or inline), and ``collect(ctx, results)`` folds the
results back into the context. A job that fails (after the executor's retries) stops the run
with its traceback. A stop request (``EventManager.request_stop``, e.g. from a signal
handler) ends the run at the next task boundary with :class:`RunInterrupted`, as do jobs the
executor cancelled because it was asked to stop.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal

from vista.pipeline.context import FLContext
from vista.pipeline.event_pipeline import IMPLICIT
from vista.pipeline.events import EventManager
from vista.pipeline.executor import Executor
from vista.pipeline.protocol import JobResult, JobSpec, JobState

JOBS_RETRIED = "jobs_retried"
WORKERS_RESPAWNED = "workers_respawned"


def _takes(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` accepts the keyword ``name`` (executors written before it existed do not)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class JobFailedError(RuntimeError):
    """A worker job raised: carries the job id and the worker's traceback."""

    def __init__(self, result: JobResult, fn: str) -> None:
        self.result = result
        self.job_id = result.job_id
        super().__init__(
            f"job {result.job_id} ({fn} for {result.key!r}) failed on worker {result.worker}: "
            f"{result.error}\n--- worker traceback ---\n{result.traceback}"
        )


class RunInterrupted(RuntimeError):
    """The run was asked to stop; ``round`` is the round in progress, ``task`` the task that
    was next (or whose jobs were cancelled)."""

    def __init__(self, round: int, task: str | None = None, reason: str = "stop requested") -> None:
        self.round, self.task = round, task
        where = f"round {round}" + (f", task {task!r}" if task is not None else "")
        super().__init__(f"run interrupted in {where}: {reason}")


def payload_nbytes(obj: Any) -> int:
    """Bytes of the tensors/arrays inside a payload (what actually crosses the wire)."""
    if hasattr(obj, "element_size") and hasattr(obj, "numel"):
        return int(obj.numel() * obj.element_size())
    if hasattr(obj, "nbytes") and hasattr(obj, "dtype"):
        return int(obj.nbytes)
    if isinstance(obj, dict):
        return sum(payload_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(payload_nbytes(v) for v in obj)
    return 0


@dataclass
class Jobs:
    """A parallel task's plan: one JobSpec per chosen worker, plus a payload broadcast to all."""

    specs: list[JobSpec]
    shared: Any = None


@dataclass
class Task:
    name: str
    fn: Callable[[FLContext], Any]
    mode: Literal["single", "parallel"] = "single"
    collect: Callable[[FLContext, list[JobResult]], None] | None = None
    every: int = 1
    also_last: bool = False  # also run in the final round when it is off the ``every`` grid
    # "raise": the first failed job stops the run (JobFailedError); "collect": every job runs
    # and collect() receives failed results too (``result.ok`` False), to drop or retry them
    failures: Literal["raise", "collect"] = "raise"

    def __post_init__(self) -> None:
        if self.mode not in ("single", "parallel"):
            raise ValueError(f"task {self.name!r}: mode must be 'single' or 'parallel', not {self.mode!r}")
        if self.mode == "parallel" and self.collect is None:
            raise ValueError(f"parallel task {self.name!r} needs a collect(ctx, results) function")
        if self.every < 1:
            raise ValueError(f"task {self.name!r}: every must be >= 1, got {self.every}")
        if self.failures not in ("raise", "collect"):
            raise ValueError(f"task {self.name!r}: failures must be 'raise' or 'collect', not {self.failures!r}")

    def due(self, round: int, rounds: int) -> bool:
        return round % self.every == 0 or (self.also_last and round == rounds)


@dataclass
class Pipeline:
    tasks: list[Task]
    rounds: int
    setup: list[Task] = field(default_factory=list)
    teardown: list[Task] = field(default_factory=list)
    on_round_end: Callable[[FLContext], None] | None = None
    # after the round is recorded: a driver's checkpoint; the info it returns (or None: nothing
    # done) becomes an implicit ``checkpoint`` step
    after_round: Callable[[FLContext], dict[str, Any] | None] | None = None
    first_round: int = 1  # > 1 when continuing a run from a checkpoint (round numbers seed sampling)

    def __post_init__(self) -> None:
        if not 1 <= self.first_round <= self.rounds + 1:
            raise ValueError(f"first_round must lie in [1, rounds + 1], got {self.first_round} (rounds={self.rounds})")
        names = [t.name for t in self._all()]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"duplicate task names in pipeline: {sorted(dupes)}")

    def _all(self) -> Iterable[Task]:
        return [*self.setup, *self.tasks, *self.teardown]

    def run(self, ctx: FLContext, events: EventManager, executor: Executor | None) -> FLContext:
        """Run setup, the rounds, teardown. Each round starts with ``ctx["jobs_retried"]`` and
        ``ctx["workers_respawned"]`` at 0; each parallel task adds its retries and respawns."""
        for task in self._all():
            events.register(task.name, self._runner(task, events, executor))
        for task in self.setup:
            self._emit(task, ctx, events, ctx.round)
        for r in range(self.first_round, self.rounds + 1):
            if events.stop_requested:
                raise RunInterrupted(r, None, "stop requested before the round began")
            t0 = time.perf_counter()
            dropped = ctx.refresh(r)
            events.record("context_refresh", round=r, seconds=time.perf_counter() - t0, dropped=len(dropped))
            for key in (JOBS_RETRIED, WORKERS_RESPAWNED):  # kept (not refreshed away): reset here instead
                ctx[key] = 0
                ctx.keep(key)
            for task in self.tasks:
                if task.due(r, self.rounds):
                    self._emit(task, ctx, events, r)
            if self.on_round_end is not None:
                t0 = time.perf_counter()
                self.on_round_end(ctx)
                events.record("record", round=r, seconds=time.perf_counter() - t0)
            if self.after_round is not None:
                t0 = time.perf_counter()
                info = self.after_round(ctx)
                if info is not None:
                    events.record("checkpoint", round=r, seconds=time.perf_counter() - t0, **info)
        for task in self.teardown:
            self._emit(task, ctx, events, ctx.round)
        return ctx

    @staticmethod
    def _emit(task: Task, ctx: FLContext, events: EventManager, round: int) -> None:
        if events.stop_requested:
            raise RunInterrupted(round, task.name)
        events.emit(task.name, ctx, round=round, mode=task.mode)

    @staticmethod
    def _runner(task: Task, events: EventManager, executor: Executor | None) -> Callable[[FLContext], Any]:
        if task.mode == "single":
            return task.fn

        def run_parallel(ctx: FLContext) -> None:
            if executor is None:
                raise RuntimeError(f"parallel task {task.name!r} needs an executor (vista.pipeline.Executor)")
            plan = task.fn(ctx)
            if not isinstance(plan, Jobs):
                raise TypeError(f"parallel task {task.name!r} must return Jobs, got {type(plan).__name__}")
            monitor = events.monitor
            group = monitor.open_group(task.name, ctx.round)
            requests = [monitor.add(group, spec) for spec in plan.specs]
            if plan.shared is not None:
                events.record(
                    "broadcast",
                    kind=IMPLICIT,
                    round=ctx.round,
                    task=task.name,
                    receivers=len(requests),
                    bytes_each=payload_nbytes(plan.shared),
                )

            def on_start(job_id: str, worker: int) -> None:
                monitor.mark_running(job_id, worker)
                events.job_event(job_id, JobState.RUNNING)

            def on_done(res: JobResult) -> None:  # as each job finishes, so progress is live
                monitor.finish(res)
                events.job_event(res.job_id, res.state)

            counts = {JOBS_RETRIED: 0, WORKERS_RESPAWNED: 0}

            def on_retry(res: JobResult, attempt: int) -> None:
                counts[JOBS_RETRIED] += 1
                monitor.mark_retrying(res.job_id, res.worker)
                events.job_event(res.job_id, JobState.RETRYING)
                events.record("job_retry", round=ctx.round, task=task.name, job_id=res.job_id, attempt=attempt,
                              state=res.state.value, error=(res.error or "").splitlines()[0] if res.error else None,
                              worker=res.worker)

            def on_respawn(worker: int, reason: str) -> None:
                counts[WORKERS_RESPAWNED] += 1
                monitor.note_respawn()
                events.record("worker_respawn", round=ctx.round, task=task.name, worker=worker,
                              reason=reason.splitlines()[0] if reason else reason)

            collect_failures = task.failures == "collect"
            extra = {k: fn for k, fn in (("on_retry", on_retry), ("on_respawn", on_respawn))
                     if _takes(executor.run_jobs, k)}
            try:
                results = executor.run_jobs(requests, plan.shared, on_start, on_done,
                                            stop_on_failure=not collect_failures, **extra) if requests else []
            finally:
                for key, n in counts.items():
                    if n or key in ctx:
                        ctx[key] = (ctx.get(key) or 0) + n
            cancelled = [r.job_id for r in results if r.state is JobState.CANCELLED]
            if cancelled:
                failed = sum(1 for r in results if r.state in (JobState.FAILED, JobState.TIMED_OUT))
                raise RunInterrupted(ctx.round, task.name, f"{len(cancelled)} job(s) cancelled ({', '.join(cancelled)})"
                                     + (f"; {failed} failed" if failed else ""))
            for res in results:
                if not res.ok and not collect_failures:
                    by_id = {q.job_id: q for q in requests}
                    raise JobFailedError(res, by_id[res.job_id].fn)
            if len(results) != len(requests):
                missing = sorted({q.job_id for q in requests} - {r.job_id for r in results})
                raise RuntimeError(f"parallel task {task.name!r}: no result for jobs {missing}")
            order = {q.job_id: i for i, q in enumerate(requests)}
            task.collect(ctx, sorted(results, key=lambda r: order[r.job_id]))  # type: ignore[misc]

        return run_parallel
