"""Job-level fault tolerance: the NodeScheduler with real worker processes, the
InlineExecutor, and how the Pipeline reports retries, respawns and stop requests.

Faults come from VISTA_FAULTS (vista.scheduler.faults), which spawned workers inherit; a job
fault fires on a job's first attempt only, so a re-run must give the fault-free result.
Heartbeats every 0.5 s: a worker silent for 1.5 s is hung.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from support.runtimes import calc, make_echo

from vista.pipeline import (
    EventManager,
    FLContext,
    JobFailedError,
    Jobs,
    JobSpec,
    JobState,
    Pipeline,
    RunInterrupted,
    Task,
)
from vista.pipeline.event_pipeline import IMPLICIT
from vista.pipeline.protocol import JobRequest
from vista.scheduler import (
    InlineExecutor,
    NodeScheduler,
    SchedulerSpec,
    WorkerStartError,
    faults,
)

RUNNING, RETRYING, DONE = JobState.RUNNING, JobState.RETRYING, JobState.DONE
RETRIED = [RUNNING, RETRYING, RUNNING, DONE]  # a job's events when its first attempt failed


def _spec(num_workers: int = 2, **kw) -> SchedulerSpec:
    return SchedulerSpec(num_workers=num_workers, device="cpu", heartbeat_s=0.5, start_timeout_s=60.0, **kw)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def _wait_gone(pids, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def _specs(n: int, fn: str = "calc", **extra) -> list[JobSpec]:
    return [JobSpec(fn, k, {"x": k + 1, **extra}) for k in range(n)]


def _expected(specs: list[JobSpec], shared=None) -> list[dict]:
    return [calc(s.key, s.payload, shared) for s in specs]


class Run:
    """One round of a pipeline with one parallel task; its job events and results."""

    def __init__(self, executor, task: str, specs: list[JobSpec], shared=None) -> None:
        self.events = EventManager()
        self.seen: list[tuple[str, JobState]] = []
        self.events.subscribe("job", lambda j, s: self.seen.append((j, s)))
        self.results: list = []
        self.group = f"r1.{task}.g0"
        pipe = Pipeline([Task(task, lambda c: Jobs(specs, shared), "parallel", lambda c, r: self.results.extend(r))],
                        rounds=1)
        self.ctx = pipe.run(FLContext(), self.events, executor)

    def states(self, k: int) -> list[JobState]:
        return [s for j, s in self.seen if j == f"{self.group}.j{k}"]

    def steps(self, name: str) -> list[dict]:
        return [s.info for s in self.events.steps if s.name == name]


FAULTS = "raise_t#1=raise;exit_t#0=exit;hang_t#1=hang"


@pytest.fixture(scope="module")
def sched(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(faults.ENV, FAULTS)  # replacements started later inherit it too
        with NodeScheduler(_spec(job_timeout_s=1.5), make_echo, {}, log_dir=tmp_path_factory.mktemp("logs")) as s:
            yield s


def _check_replaced(sched: NodeScheduler, before: list[int], worker: int) -> None:
    after = sched.pids
    assert after[worker] != before[worker] and _wait_gone([before[worker]]) == []
    assert [p for i, p in enumerate(after) if i != worker] == [p for i, p in enumerate(before) if i != worker]


def test_a_raising_job_is_rerun_on_a_live_worker(sched):
    before, specs = list(sched.pids), _specs(4)
    run = Run(sched, "raise_t", specs, shared={"w": [1, 2]})
    assert [r.value for r in run.results] == _expected(specs, {"w": [1, 2]})
    assert [r.attempt for r in run.results] == [0, 1, 0, 0]
    assert run.states(1) == RETRIED and run.states(0) == [RUNNING, DONE]
    (retry,) = run.steps("job_retry")
    assert retry["job_id"] == f"{run.group}.j1" and retry["attempt"] == 1 and retry["state"] == "failed"
    assert "injected fault" in retry["error"]
    assert run.steps("worker_respawn") == []
    assert run.ctx["jobs_retried"] == 1 and run.ctx["workers_respawned"] == 0
    assert run.events.monitor.retries(run.group) == 1 and run.events.monitor.total_respawns == 0
    assert sched.pids == before  # nobody died


def test_a_dead_worker_is_replaced_in_its_slot_and_its_job_rerun(sched):
    before, specs = list(sched.pids), _specs(4)
    run = Run(sched, "exit_t", specs)
    assert [r.value for r in run.results] == _expected(specs)
    assert all(r.state is DONE for r in run.results) and run.states(0) == RETRIED
    (respawn,) = run.steps("worker_respawn")
    (retry,) = run.steps("job_retry")
    assert retry["worker"] == respawn["worker"] and retry["state"] == "failed"
    assert "died with exit code 70" in retry["error"]
    assert run.ctx["jobs_retried"] == 1 and run.ctx["workers_respawned"] == 1
    assert run.events.monitor.total_retries == 1 and run.events.monitor.total_respawns == 1
    _check_replaced(sched, before, respawn["worker"])


def test_a_hung_worker_is_detected_by_its_silence_and_replaced(sched):
    before, specs = list(sched.pids), _specs(3)
    t0 = time.monotonic()
    run = Run(sched, "hang_t", specs)
    assert time.monotonic() - t0 < 30
    assert [r.value for r in run.results] == _expected(specs)
    assert run.states(1) == RETRIED
    (retry,) = run.steps("job_retry")
    assert retry["state"] == "timed_out" and "hung" in retry["error"]
    (respawn,) = run.steps("worker_respawn")
    assert run.ctx["jobs_retried"] == 1 and run.ctx["workers_respawned"] == 1
    _check_replaced(sched, before, respawn["worker"])


def test_a_job_past_its_timeout_is_killed_and_rerun(sched):
    before = list(sched.pids)
    specs = [JobSpec("slow_once", 0, {"x": 1, "seconds": 60}), *_specs(2)[1:]]
    t0 = time.monotonic()
    run = Run(sched, "timeout_t", specs)
    assert time.monotonic() - t0 < 30  # not the 60 s of the first attempt
    assert [r.value for r in run.results] == _expected(specs)
    assert run.states(0) == RETRIED
    (retry,) = run.steps("job_retry")
    assert retry["state"] == "timed_out" and "job_timeout_s=1.5" in retry["error"]
    (respawn,) = run.steps("worker_respawn")
    assert run.ctx["workers_respawned"] == 1
    _check_replaced(sched, before, respawn["worker"])


def test_a_job_failing_every_attempt_is_failed_after_max_retries(sched):
    retries: list[tuple[int, int]] = []
    req = JobRequest("r1.boom_t.g0.j0", "r1.boom_t.g0", "boom", "k", {})
    (res,) = sched.run_jobs([req], None, on_retry=lambda r, a: retries.append((r.attempt, a)))
    assert res.state is JobState.FAILED and res.attempt == 1 and "boom on k" in res.error
    assert retries == [(0, 1)]  # max_retries=1: two attempts
    with pytest.raises(JobFailedError) as info:
        Run(sched, "boom_t", [JobSpec("boom", "k")])
    assert info.value.result.attempt == 1


def test_without_retries_a_timeout_is_final_and_the_worker_not_replaced(tmp_path):
    with NodeScheduler(_spec(num_workers=1, max_retries=0, job_timeout_s=1.0), make_echo, {}, log_dir=tmp_path) as s:
        pid = s.pids[0]
        reqs = [JobRequest("r1.t.g0.j0", "r1.t.g0", "slow_once", 0, {"seconds": 60}),
                JobRequest("r1.t.g0.j1", "r1.t.g0", "calc", 1, {})]
        first, second = s.run_jobs(reqs, None, stop_on_failure=False)
        assert first.state is JobState.TIMED_OUT and "job_timeout_s=1" in first.error
        assert second.state is JobState.FAILED and "no live worker left" in second.error
        assert s.pids == [] and s.respawns == 0 and _wait_gone([pid]) == []


@pytest.mark.parametrize("action", ["raise", "exit", "hang"])
def test_a_worker_that_fails_to_start_is_started_again(action, monkeypatch, tmp_path):
    monkeypatch.setenv(faults.ENV, f"start#0={action}")
    with NodeScheduler(_spec(num_workers=1), make_echo, {}, log_dir=tmp_path) as s:
        assert s.respawns == 1
        (res,) = s.run_jobs([JobRequest("r1.t.g0.j0", "r1.t.g0", "calc", 3, {"x": 1})], None)
        assert res.value == calc(3, {"x": 1}, None)
    assert "(start #1) ready" in (tmp_path / "worker_0.log").read_text()


def test_a_start_failing_more_than_max_retries_times_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv(faults.ENV, "start#0=raise")
    s = NodeScheduler(_spec(num_workers=1, max_retries=0), make_echo, {}, log_dir=tmp_path)
    with pytest.raises(WorkerStartError, match="injected fault"):
        s.start()
    assert s.pids == []


def test_a_replacement_that_cannot_start_stops_the_run(tmp_path):
    flag = tmp_path / "broken"
    s = NodeScheduler(_spec(num_workers=1), make_echo, {"fail_init_file": str(flag)}, log_dir=tmp_path).start()
    pid = s.pids[0]
    flag.touch()  # from now on the runtime cannot be built
    respawns: list[int] = []
    with pytest.raises(WorkerStartError, match=r"\(2 tries\).*cannot build this runtime any more"):
        s.run_jobs([JobRequest("r1.t.g0.j0", "r1.t.g0", "die", 0, {})], None,
                   on_respawn=lambda w, why: respawns.append(w))
    assert respawns == [0, 0] and s.pids == []
    assert _wait_gone([pid]) == []


def test_request_stop_lets_running_jobs_finish_within_grace_and_cancels_the_rest(tmp_path):
    s = NodeScheduler(_spec(grace_s=2.0), make_echo, {}, log_dir=tmp_path).start()
    g = "r1.stop_t.g0"
    reqs = [JobRequest(f"{g}.j0", g, "sleep", 0, {"seconds": 0.3}), JobRequest(f"{g}.j1", g, "sleep", 1, {"seconds": 60}),
            JobRequest(f"{g}.j2", g, "calc", 2, {})]
    started: list[str] = []

    def on_start(job_id: str, worker: int) -> None:
        started.append(job_id)
        if len(started) == 2:  # both workers busy, one job waiting
            s.request_stop()

    try:
        pids = list(s.pids)
        t0 = time.monotonic()
        res = {r.job_id: r for r in s.run_jobs(reqs, None, on_start=on_start)}
        assert time.monotonic() - t0 < 10
        assert res[f"{g}.j0"].state is DONE  # finished within the grace
        assert res[f"{g}.j1"].state is JobState.CANCELLED and "deadline" in res[f"{g}.j1"].error
        assert res[f"{g}.j2"].state is JobState.CANCELLED and "before it started" in res[f"{g}.j2"].error
        killed = pids[res[f"{g}.j1"].worker]
        assert _wait_gone([killed]) == []
        # stopped for good: a later group is cancelled outright
        (late,) = s.run_jobs([JobRequest("r1.t.g1.j0", "r1.t.g1", "calc", 0, {})], None)
        assert late.state is JobState.CANCELLED
    finally:
        s.shutdown()
    assert _wait_gone(pids) == []


def test_request_stop_from_a_signal_handler_with_no_grace(tmp_path):
    s = NodeScheduler(_spec(num_workers=1), make_echo, {}, log_dir=tmp_path).start()
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: s.request_stop(0.0))
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGUSR1))
    try:
        pids = list(s.pids)
        timer.start()
        t0 = time.monotonic()
        reqs = [JobRequest(f"r1.t.g0.j{k}", "r1.t.g0", "sleep", k, {"seconds": 60}) for k in range(2)]
        res = s.run_jobs(reqs, None)
        assert time.monotonic() - t0 < 10
        assert [r.state for r in res] == [JobState.CANCELLED] * 2
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, previous)
        s.shutdown()
    assert _wait_gone(pids) == []


# ---- the pipeline over the InlineExecutor -------------------------------------------------------


def test_inline_executor_reruns_a_failed_job_and_the_pipeline_counts_it(monkeypatch):
    monkeypatch.setenv(faults.ENV, "client_train@r1#1=raise")  # round 1, job 1, first attempt
    executor = InlineExecutor(make_echo, {}, max_retries=1)
    per_round: list[tuple[int, int, int]] = []
    specs = _specs(3)
    em, seen, collected = EventManager(), [], []
    em.subscribe("job", lambda j, s: seen.append((j, s)))
    pipe = Pipeline([Task("client_train", lambda c: Jobs(specs), "parallel", lambda c, r: collected.append(r))],
                    rounds=2, on_round_end=lambda c: per_round.append((c.round, c["jobs_retried"],
                                                                       c["workers_respawned"])))
    pipe.run(FLContext(), em, executor)
    assert [[r.value for r in res] for res in collected] == [_expected(specs)] * 2  # as without the fault
    assert [r.attempt for r in collected[0]] == [0, 1, 0] and [r.attempt for r in collected[1]] == [0, 0, 0]
    j1 = "r1.client_train.g0.j1"
    assert [s for j, s in seen if j == j1] == RETRIED
    (step,) = [s for s in em.steps if s.name == "job_retry"]
    assert step.round == 1 and step.kind == IMPLICIT and step.info["task"] == "client_train"
    assert step.info["job_id"] == j1 and step.info["attempt"] == 1 and step.info["worker"] == 0
    assert "injected fault" in step.info["error"] and step.info["state"] == "failed"
    assert per_round == [(1, 1, 0), (2, 0, 0)]  # counted per round
    assert em.monitor.retries("r1.client_train.g0") == 1 and em.monitor.total_retries == executor.retries == 1


def test_inline_job_failing_every_attempt_fails_after_max_retries():
    executor = InlineExecutor(make_echo, {}, max_retries=2)
    em, seen = EventManager(), []
    em.subscribe("job", lambda j, s: seen.append(s))
    pipe = Pipeline([Task("t", lambda c: Jobs([JobSpec("boom", 2)]), "parallel", lambda c, r: None)], rounds=1)
    with pytest.raises(JobFailedError) as info:
        pipe.run(FLContext(), em, executor)
    assert info.value.result.attempt == 2 and "boom on 2" in str(info.value)
    assert seen == [RUNNING, RETRYING, RUNNING, RETRYING, RUNNING, JobState.FAILED]
    assert [s.info["attempt"] for s in em.steps if s.name == "job_retry"] == [1, 2]
    assert executor.runtime.jobs == 3


def test_inline_failures_stay_final_by_default():
    retried: list[int] = []
    executor = InlineExecutor(make_echo, {})
    (res,) = executor.run_jobs([JobRequest("g.j0", "g", "boom", 2, {})], None, on_retry=lambda r, a: retried.append(a))
    assert res.state is JobState.FAILED and res.attempt == 0 and retried == []


def test_stop_request_interrupts_the_run_at_the_next_task():
    em = EventManager()
    ran: list[tuple[str, int]] = []

    def stop_in_round_2(ctx: FLContext) -> None:
        ran.append(("a", ctx.round))
        if ctx.round == 2:
            em.request_stop()

    pipe = Pipeline([Task("a", stop_in_round_2), Task("b", lambda c: ran.append(("b", c.round)))], rounds=3,
                    teardown=[Task("z", lambda c: ran.append(("z", c.round)))])
    with pytest.raises(RunInterrupted, match="round 2, task 'b'") as info:
        pipe.run(FLContext(), em, None)
    assert info.value.round == 2 and info.value.task == "b"
    assert ran == [("a", 1), ("b", 1), ("a", 2)]


def test_stop_request_between_rounds_interrupts_before_the_next_round():
    em = EventManager()
    pipe = Pipeline([Task("a", lambda c: None)], rounds=3,
                    on_round_end=lambda c: em.request_stop() if c.round == 1 else None)
    with pytest.raises(RunInterrupted, match="round 2") as info:
        pipe.run(FLContext(), em, None)
    assert info.value.round == 2 and info.value.task is None
    assert em.steps.names() == ["context_refresh", "a", "record"]


def test_cancelled_jobs_interrupt_the_run_before_collect():
    executor = InlineExecutor(make_echo, {})
    executor.request_stop()  # what a signal handler does: the executor cancels what has not started
    collected: list = []
    em = EventManager()
    pipe = Pipeline([Task("t", lambda c: Jobs(_specs(2)), "parallel", lambda c, r: collected.append(r),
                          failures="collect")], rounds=2)
    with pytest.raises(RunInterrupted, match=r"round 1, task 't': 2 job\(s\) cancelled") as info:
        pipe.run(FLContext(), em, executor)
    assert info.value.round == 1 and collected == [] and executor.runtime.jobs == 0
    assert set(em.monitor.states("r1.t.g0").values()) == {JobState.CANCELLED}


def test_an_executor_without_the_new_callbacks_still_works():
    inner = InlineExecutor(make_echo, {})

    class Old:  # run_jobs as it was before retries existed
        def run_jobs(self, requests, shared, on_start, on_done, stop_on_failure=True):
            return inner.run_jobs(requests, shared, on_start, on_done, stop_on_failure)

    got: list = []
    Pipeline([Task("t", lambda c: Jobs(_specs(1)), "parallel", lambda c, r: got.extend(x.value for x in r))],
             rounds=1).run(FLContext(), EventManager(), Old())
    assert got == _expected(_specs(1))
