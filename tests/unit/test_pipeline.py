"""Pipeline + Task over the real InlineExecutor and a small fake runtime."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from vista.pipeline.context import FLContext
from vista.pipeline.event_pipeline import IMPLICIT, TASK
from vista.pipeline.events import EventManager
from vista.pipeline.pipeline import JobFailedError, Jobs, Pipeline, Task, payload_nbytes
from vista.pipeline.protocol import JobResult, JobSpec, JobState, WorkerEnv
from vista.scheduler.inline import InlineExecutor


class FakeRuntime:
    """``run`` computes something from (fn, key, payload, shared) and logs every call."""

    def __init__(self, args: Any, env: WorkerEnv) -> None:
        self.args = args
        self.env = env
        self.calls: list[tuple[str, Any, dict, Any]] = []
        self.closed = 0

    def run(self, fn: str, key: Any, payload: dict, shared: Any) -> Any:
        self.calls.append((fn, key, payload, shared))
        if fn == "train":
            return key * payload["mul"] + (shared["offset"] if shared is not None else 0) + self.args["bias"]
        if fn == "echo":
            return (key, payload, shared)
        if fn == "boom":
            if key == payload.get("bad"):
                _explode(key)
            return key
        raise AssertionError(f"unknown fn {fn}")

    def close(self) -> None:
        self.closed += 1


def _explode(key: Any) -> None:
    raise ValueError(f"bad key {key} exploded")


def fake_factory(args: Any, env: WorkerEnv) -> FakeRuntime:
    return FakeRuntime(args, env)


@pytest.fixture
def executor() -> InlineExecutor:
    return InlineExecutor(fake_factory, {"bias": 1000})


class ReversingExecutor:
    """The InlineExecutor, but results come back in reverse order (as a pool might)."""

    def __init__(self, inner: InlineExecutor) -> None:
        self.inner = inner

    def run_jobs(self, requests, shared, on_start, on_done, stop_on_failure=True):
        return list(reversed(self.inner.run_jobs(requests, shared, on_start, on_done, stop_on_failure)))


# ---- the InlineExecutor itself ---------------------------------------------------------


def test_inline_executor_builds_runtime_once_and_closes_it() -> None:
    with InlineExecutor(fake_factory, {"bias": 1}, device="cpu") as ex:
        rt = ex.runtime
        assert rt.args == {"bias": 1}
        assert rt.env == WorkerEnv(0, "cpu")
        assert ex.devices == ["cpu"]
    assert rt.closed == 1


# ---- parallel tasks -----------------------------------------------------------------------


def test_parallel_task_chooses_workers_and_collect_gets_request_order(executor: InlineExecutor) -> None:
    collected: list[list[JobResult]] = []

    def plan(ctx: FLContext) -> Jobs:
        return Jobs([JobSpec("train", k, {"mul": 10}) for k in (3, 1, 4)], shared={"offset": 7})

    def collect(ctx: FLContext, results: list[JobResult]) -> None:
        collected.append(results)
        ctx["sum"] = sum(r.value for r in results)

    em = EventManager()
    ctx = Pipeline([Task("train", plan, "parallel", collect)], rounds=1).run(FLContext(), em, ReversingExecutor(executor))
    (results,) = collected
    assert [r.key for r in results] == [3, 1, 4]
    assert [r.value for r in results] == [1037, 1017, 1047]
    assert all(r.state is JobState.DONE and r.ok and r.worker == 0 for r in results)
    assert [r.job_id for r in results] == [f"r1.train.g0.j{i}" for i in range(3)]
    assert ctx["sum"] == 1037 + 1017 + 1047
    # exactly the chosen keys ran, in order, nothing else
    assert [(fn, key) for fn, key, _, _ in executor.runtime.calls] == [("train", 3), ("train", 1), ("train", 4)]
    group = "r1.train.g0"
    assert em.monitor.counts(group) == {"pending": 0, "running": 0, "done": 3, "failed": 0,
                                        "retrying": 0, "timed_out": 0, "cancelled": 0}


def test_shared_payload_reaches_every_job(executor: InlineExecutor) -> None:
    shared = {"offset": 1, "state": torch.ones(4)}
    seen: list[Any] = []

    def plan(ctx: FLContext) -> Jobs:
        return Jobs([JobSpec("echo", k, {"i": k}) for k in range(5)], shared=shared)

    def collect(ctx: FLContext, results: list[JobResult]) -> None:
        seen.extend(r.value for r in results)

    Pipeline([Task("t", plan, "parallel", collect)], rounds=1).run(FLContext(), EventManager(), executor)
    assert [k for k, _, _ in seen] == [0, 1, 2, 3, 4]
    assert [p for _, p, _ in seen] == [{"i": k} for k in range(5)]
    assert all(s is shared for _, _, s in seen)


def test_job_events_and_monitor_states_during_a_group(executor: InlineExecutor) -> None:
    events: list[tuple[str, JobState]] = []
    em = EventManager()
    em.subscribe("job", lambda j, s: events.append((j, s)))

    def plan(ctx: FLContext) -> Jobs:
        return Jobs([JobSpec("train", k, {"mul": 1}) for k in (0, 1)])

    Pipeline([Task("t", plan, "parallel", lambda c, r: None)], rounds=1).run(FLContext(), em, executor)
    g = "r1.t.g0"
    assert events == [  # live: each job's DONE is reported as it finishes (the inline executor runs in turn)
        (f"{g}.j0", JobState.RUNNING),
        (f"{g}.j0", JobState.DONE),
        (f"{g}.j1", JobState.RUNNING),
        (f"{g}.j1", JobState.DONE),
    ]
    assert em.monitor.worker_of(f"{g}.j1") == 0


def test_empty_jobs_calls_collect_with_no_results(executor: InlineExecutor) -> None:
    got: list[list[JobResult]] = []
    em = EventManager()
    Pipeline(
        [Task("t", lambda ctx: Jobs([], shared={"x": torch.zeros(2)}), "parallel", lambda c, r: got.append(r))],
        rounds=1,
    ).run(FLContext(), em, executor)
    assert got == [[]]
    assert executor.runtime.calls == []
    (bc,) = [s for s in em.steps if s.name == "broadcast"]
    assert bc.info == {"task": "t", "receivers": 0, "bytes_each": 8}


def test_parallel_task_without_executor_raises() -> None:
    p = Pipeline([Task("t", lambda ctx: Jobs([]), "parallel", lambda c, r: None)], rounds=1)
    with pytest.raises(RuntimeError, match="needs an executor"):
        p.run(FLContext(), EventManager(), None)


def test_parallel_task_must_return_jobs(executor: InlineExecutor) -> None:
    p = Pipeline([Task("t", lambda ctx: [JobSpec("train", 0)], "parallel", lambda c, r: None)], rounds=1)
    with pytest.raises(TypeError, match="must return Jobs, got list"):
        p.run(FLContext(), EventManager(), executor)


# ---- scheduling ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("every", "also_last", "rounds", "expected"),
    [
        (1, False, 3, [1, 2, 3]),
        (2, False, 5, [2, 4]),
        (2, True, 5, [2, 4, 5]),
        (2, True, 4, [2, 4]),  # last round on the grid: runs once, not twice
        (3, True, 5, [3, 5]),
        (7, False, 5, []),
        (7, True, 5, [5]),
    ],
)
def test_every_and_also_last(every: int, also_last: bool, rounds: int, expected: list[int]) -> None:
    ran: list[int] = []
    task = Task("t", lambda ctx: ran.append(ctx.round), every=every, also_last=also_last)
    assert [r for r in range(1, rounds + 1) if task.due(r, rounds)] == expected
    em = EventManager()
    Pipeline([task], rounds=rounds).run(FLContext(), em, None)
    assert ran == expected
    assert [s.round for s in em.steps if s.name == "t"] == expected


def test_setup_and_teardown_run_once_around_the_rounds() -> None:
    log: list[tuple[str, int]] = []

    def setup(ctx: FLContext) -> None:
        log.append(("setup", ctx.round))
        ctx["global_state"] = 0
        ctx.keep("global_state")
        ctx["scratch"] = "dropped in round 1"

    def step(ctx: FLContext) -> None:
        log.append(("step", ctx.round))
        assert "scratch" not in ctx
        ctx["global_state"] += 1

    def teardown(ctx: FLContext) -> None:
        log.append(("teardown", ctx.round))

    em = EventManager()
    ctx = Pipeline([Task("step", step)], rounds=3, setup=[Task("setup", setup)], teardown=[Task("teardown", teardown)]).run(
        FLContext(), em, None
    )
    assert log == [("setup", 0), ("step", 1), ("step", 2), ("step", 3), ("teardown", 3)]
    assert ctx["global_state"] == 3
    assert ctx.round == 3
    refresh = [s for s in em.steps if s.name == "context_refresh"]
    assert [(s.round, s.info["dropped"]) for s in refresh] == [(1, 1), (2, 0), (3, 0)]
    assert [(s.name, s.round) for s in em.steps if s.kind == TASK] == [
        ("setup", 0), ("step", 1), ("step", 2), ("step", 3), ("teardown", 3)
    ]


def test_duplicate_task_names_rejected() -> None:
    with pytest.raises(ValueError, match=r"\['a'\]"):
        Pipeline([Task("a", lambda c: None)], rounds=1, setup=[Task("a", lambda c: None)])


# ---- the event_pipeline of a run ------------------------------------------------------------


def test_event_pipeline_order_for_two_rounds(executor: InlineExecutor) -> None:
    shared_state = {"w": torch.zeros(10, dtype=torch.float32), "b": np.zeros(3, dtype=np.float64)}
    rounds_recorded: list[int] = []

    def init(ctx: FLContext) -> None:
        ctx["global_state"] = shared_state
        ctx.keep("global_state")

    def plan_train(ctx: FLContext) -> Jobs:
        return Jobs([JobSpec("train", k, {"mul": 1}) for k in (0, 2)], shared={"offset": 0, **ctx["global_state"]})

    def plan_eval(ctx: FLContext) -> Jobs:
        return Jobs([JobSpec("echo", 0)])  # no shared payload: no broadcast step

    em = EventManager()
    pipe = Pipeline(
        tasks=[
            Task("client_train", plan_train, "parallel", lambda c, r: c.set("n", len(r))),
            Task("aggregate", lambda ctx: None),
            Task("evaluate", plan_eval, "parallel", lambda c, r: None, every=2),
        ],
        rounds=2,
        setup=[Task("init", init)],
        teardown=[Task("finish", lambda ctx: None)],
        on_round_end=lambda ctx: rounds_recorded.append(ctx.round),
    )
    pipe.run(FLContext(), em, executor)
    # implicit steps are logged as they happen: a parallel task's broadcast is logged
    # inside the task, before the task's own step (appended when the task returns)
    assert em.steps.names() == [
        "init",
        "context_refresh", "broadcast", "client_train", "aggregate", "record",
        "context_refresh", "broadcast", "client_train", "aggregate", "evaluate", "record",
        "finish",
    ]
    assert [s.round for s in em.steps] == [0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2]
    assert [s.kind for s in em.steps] == [
        TASK,
        IMPLICIT, IMPLICIT, TASK, TASK, IMPLICIT,
        IMPLICIT, IMPLICIT, TASK, TASK, TASK, IMPLICIT,
        TASK,
    ]
    assert rounds_recorded == [1, 2]
    expected_bytes = payload_nbytes({"offset": 0, **shared_state})
    assert expected_bytes == 10 * 4 + 3 * 8
    for s in em.steps:
        if s.name == "broadcast":
            assert s.info == {"task": "client_train", "receivers": 2, "bytes_each": expected_bytes}
        if s.kind == TASK:
            assert s.info["mode"] == ("parallel" if s.name in ("client_train", "evaluate") else "single")
    assert [row["next"] for row in em.steps.to_list()] == [*range(1, 13), None]


def test_no_record_step_without_on_round_end() -> None:
    em = EventManager()
    Pipeline([Task("a", lambda c: None)], rounds=2).run(FLContext(), em, None)
    assert em.steps.names() == ["context_refresh", "a", "context_refresh", "a"]


# ---- failures -------------------------------------------------------------------------------


def test_failed_job_raises_job_failed_error_with_id_and_traceback(executor: InlineExecutor) -> None:
    collected: list[Any] = []
    job_events: list[tuple[str, JobState]] = []
    em = EventManager()
    em.subscribe("job", lambda j, s: job_events.append((j, s)))

    def plan(ctx: FLContext) -> Jobs:
        return Jobs([JobSpec("boom", k, {"bad": 2}) for k in range(4)])

    pipe = Pipeline([Task("client_train", plan, "parallel", lambda c, r: collected.append(r))], rounds=2)
    with pytest.raises(JobFailedError) as exc:
        pipe.run(FLContext(), em, executor)
    err = exc.value
    g = "r1.client_train.g0"
    assert err.job_id == f"{g}.j2"
    msg = str(err)
    assert f"job {g}.j2" in msg
    assert "(boom for 2)" in msg
    assert "ValueError: bad key 2 exploded" in msg
    assert "--- worker traceback ---" in msg
    assert "Traceback (most recent call last)" in msg
    assert "_explode" in msg  # the frame that raised, from the worker side
    assert err.result.state is JobState.FAILED
    assert err.result.key == 2
    # the executor stopped at the failure; the monitor knows each job's fate
    assert em.monitor.states(g) == {
        f"{g}.j0": JobState.DONE,
        f"{g}.j1": JobState.DONE,
        f"{g}.j2": JobState.FAILED,
        f"{g}.j3": JobState.PENDING,
    }
    assert em.monitor.state(f"{g}.j2") is JobState.FAILED
    assert [r.job_id for r in em.monitor.failed(g)] == [f"{g}.j2"]
    assert (f"{g}.j2", JobState.FAILED) in job_events
    assert [k for _, k, _, _ in executor.runtime.calls] == [0, 1, 2]
    assert collected == []
    # the run stopped in round 1: no client_train step logged, no round 2
    assert em.steps.names() == ["context_refresh"]


def test_missing_results_raise() -> None:
    class Lossy:
        def run_jobs(self, requests, shared, on_start, on_done, stop_on_failure=True):
            return []

    p = Pipeline([Task("t", lambda c: Jobs([JobSpec("f", 0)]), "parallel", lambda c, r: None)], rounds=1)
    with pytest.raises(RuntimeError, match=r"no result for jobs \['r1.t.g0.j0'\]"):
        p.run(FLContext(), EventManager(), Lossy())


# ---- Task validation -------------------------------------------------------------------------


def test_task_bad_mode() -> None:
    with pytest.raises(ValueError, match="mode must be 'single' or 'parallel'"):
        Task("t", lambda c: None, mode="serial")  # type: ignore[arg-type]


def test_parallel_task_needs_collect() -> None:
    with pytest.raises(ValueError, match="needs a collect"):
        Task("t", lambda c: None, mode="parallel")


@pytest.mark.parametrize("every", [0, -1])
def test_every_must_be_positive(every: int) -> None:
    with pytest.raises(ValueError, match=f"every must be >= 1, got {every}"):
        Task("t", lambda c: None, every=every)


# ---- payload_nbytes -------------------------------------------------------------------------


def test_payload_nbytes_torch() -> None:
    assert payload_nbytes(torch.zeros(3, 4)) == 48
    assert payload_nbytes(torch.zeros(3, 4, dtype=torch.float16)) == 24
    assert payload_nbytes(torch.zeros(3, 4, dtype=torch.bfloat16)) == 24
    assert payload_nbytes(torch.zeros(5, dtype=torch.int64)) == 40
    assert payload_nbytes(torch.zeros(7, dtype=torch.bool)) == 7
    assert payload_nbytes(torch.zeros(4, 4)[:2]) == 32  # a view counts its own elements
    assert payload_nbytes(torch.zeros(0)) == 0


def test_payload_nbytes_numpy() -> None:
    assert payload_nbytes(np.zeros(10)) == 80
    assert payload_nbytes(np.zeros((2, 3), dtype=np.int32)) == 24
    assert payload_nbytes(np.zeros(5, dtype=np.uint8)) == 5


def test_payload_nbytes_nested() -> None:
    payload = {
        "state": {"a": torch.zeros(2, 2), "b": torch.zeros(3, dtype=torch.float16)},  # 16 + 6
        "idx": [np.arange(4, dtype=np.int64), (torch.zeros(1, dtype=torch.float64),)],  # 32 + 8
        "n": 5,
        "name": "client",
        "none": None,
    }
    assert payload_nbytes(payload) == 16 + 6 + 32 + 8
    assert payload_nbytes({}) == 0
    assert payload_nbytes([1, 2.0, "x"]) == 0
    assert payload_nbytes(None) == 0


def test_collect_failures_runs_every_job_and_hands_failures_to_collect(executor: InlineExecutor) -> None:
    collected: list[list[JobResult]] = []
    em = EventManager()

    def plan(ctx: FLContext) -> Jobs:
        return Jobs([JobSpec("boom", k, {"bad": 2}) for k in range(4)])

    task = Task("client_train", plan, "parallel", lambda c, r: collected.append(r), failures="collect")
    Pipeline([task], rounds=1).run(FLContext(), em, executor)
    (results,) = collected
    assert [(r.key, r.ok) for r in results] == [(0, True), (1, True), (2, False), (3, True)]
    assert "bad key 2 exploded" in results[2].error
    g = "r1.client_train.g0"
    assert em.monitor.counts(g)["failed"] == 1 and em.monitor.counts(g)["done"] == 3


def test_task_bad_failures_policy() -> None:
    with pytest.raises(ValueError, match="failures must be 'raise' or 'collect'"):
        Task("t", lambda c: None, "parallel", lambda c, r: None, failures="ignore")  # type: ignore[arg-type]
