"""JobMonitor, EventManager and the event_pipeline linked list."""

from __future__ import annotations

import json

import pytest

from vista.pipeline.event_pipeline import IMPLICIT, TASK, EventPipeline, Step
from vista.pipeline.events import EventManager, JobMonitor
from vista.pipeline.protocol import JobResult, JobSpec, JobState


def _done(job_id: str, key: object = None, worker: int = 0, value: object = None) -> JobResult:
    return JobResult(job_id, key, JobState.DONE, value=value, worker=worker)


def _failed(job_id: str, key: object = None, worker: int = 0) -> JobResult:
    return JobResult(job_id, key, JobState.FAILED, error="ValueError: boom", traceback="tb", worker=worker)


# ---- JobMonitor ------------------------------------------------------------------------


def test_job_ids_unique_within_and_across_groups() -> None:
    mon = JobMonitor()
    g1 = mon.open_group("client_train", 1)
    g2 = mon.open_group("client_train", 1)  # same task, same round: still a new group
    g3 = mon.open_group("evaluate", 2)
    assert len({g1, g2, g3}) == 3
    assert g1.startswith("r1.client_train.") and g3.startswith("r2.evaluate.")
    ids = []
    for g in (g1, g2, g3):
        for key in range(3):
            req = mon.add(g, JobSpec("train", key, {"k": key}))
            assert req.group_id == g
            assert req.job_id.startswith(g + ".")
            assert req.key == key and req.fn == "train" and req.payload == {"k": key}
            ids.append(req.job_id)
    assert len(ids) == len(set(ids)) == 9
    assert ids[:3] == [f"{g1}.j0", f"{g1}.j1", f"{g1}.j2"]
    assert list(mon.states(g2)) == ids[3:6]


def test_job_state_transitions_and_counts() -> None:
    mon = JobMonitor()
    g = mon.open_group("t", 1)
    a, b, c, d = (mon.add(g, JobSpec("f", k)).job_id for k in range(4))
    assert mon.counts(g) == {"pending": 4, "running": 0, "done": 0, "failed": 0,
                             "retrying": 0, "timed_out": 0, "cancelled": 0}
    assert mon.worker_of(a) is None

    mon.mark_running(a, 2)
    mon.mark_running(b, 1)
    assert mon.state(a) is JobState.RUNNING
    assert mon.worker_of(a) == 2
    assert mon.counts(g) == {"pending": 2, "running": 2, "done": 0, "failed": 0,
                             "retrying": 0, "timed_out": 0, "cancelled": 0}

    mon.finish(_done(a, worker=2))
    mon.finish(_failed(b, worker=1))
    assert mon.state(a) is JobState.DONE
    assert mon.state(b) is JobState.FAILED
    assert mon.counts(g) == {"pending": 2, "running": 0, "done": 1, "failed": 1,
                             "retrying": 0, "timed_out": 0, "cancelled": 0}
    assert [r.job_id for r in mon.failed(g)] == [b]
    assert mon.states(g) == {a: JobState.DONE, b: JobState.FAILED, c: JobState.PENDING, d: JobState.PENDING}

    # a pending job may be finished directly (no JobStarted seen)
    mon.finish(_done(c, worker=3))
    assert mon.state(c) is JobState.DONE
    assert mon.worker_of(c) == 3
    assert mon.counts(g) == {"pending": 1, "running": 0, "done": 2, "failed": 1,
                             "retrying": 0, "timed_out": 0, "cancelled": 0}


def test_illegal_transitions_raise() -> None:
    mon = JobMonitor()
    g = mon.open_group("t", 1)
    a = mon.add(g, JobSpec("f", 0)).job_id
    b = mon.add(g, JobSpec("f", 1)).job_id
    mon.mark_running(a, 0)
    with pytest.raises(ValueError, match="expected pending"):
        mon.mark_running(a, 0)  # already running
    mon.finish(_done(a))
    with pytest.raises(ValueError, match="finished twice"):
        mon.finish(_done(a))
    with pytest.raises(ValueError, match="finished twice"):
        mon.finish(_failed(a))
    with pytest.raises(ValueError):
        mon.mark_running(a, 0)  # done, not pending
    mon.finish(_failed(b))
    with pytest.raises(ValueError):
        mon.mark_running(b, 0)
    with pytest.raises(ValueError, match="unknown"):
        mon.finish(_done("r9.nope.g0.j0"))
    with pytest.raises(ValueError):
        mon.mark_running("r9.nope.g0.j0", 0)
    # the failed attempts changed nothing
    assert mon.states(g) == {a: JobState.DONE, b: JobState.FAILED}


def test_a_retried_job_runs_again_and_retries_are_counted() -> None:
    mon = JobMonitor()
    g1, g2 = mon.open_group("t", 1), mon.open_group("u", 1)
    a, b, c = (mon.add(g1, JobSpec("f", k)).job_id for k in range(3))
    x = mon.add(g2, JobSpec("f", 0)).job_id
    mon.mark_running(a, 0)
    mon.mark_retrying(a, 0)
    assert mon.state(a) is JobState.RETRYING
    assert mon.counts(g1) == {"pending": 2, "running": 0, "done": 0, "failed": 0,
                              "retrying": 1, "timed_out": 0, "cancelled": 0}
    mon.mark_running(a, 1)  # running again after retrying
    mon.mark_retrying(a, 1)
    mon.mark_running(a, 0)
    mon.finish(_done(a, worker=0))
    mon.mark_retrying(b)  # lost before its start was heard of
    mon.finish(JobResult(b, 1, JobState.TIMED_OUT, error="hung", worker=1, attempt=1))
    mon.finish(JobResult(c, 2, JobState.CANCELLED, error="cancelled: stop requested"))
    mon.mark_running(x, 0)
    mon.mark_retrying(x, 0)
    mon.finish(JobResult(x, 0, JobState.CANCELLED))  # a retrying job may be cancelled
    assert mon.states(g1) == {a: JobState.DONE, b: JobState.TIMED_OUT, c: JobState.CANCELLED}
    assert mon.counts(g1) == {"pending": 0, "running": 0, "done": 1, "failed": 0,
                              "retrying": 0, "timed_out": 1, "cancelled": 1}
    assert mon.retries(g1) == 3 and mon.retries(g2) == 1 and mon.total_retries == 4
    assert mon.failed(g1) == []  # FAILED only
    mon.note_respawn()
    mon.note_respawn()
    assert mon.total_respawns == 2


def test_retry_transitions_that_make_no_sense_raise() -> None:
    mon = JobMonitor()
    g = mon.open_group("t", 1)
    a, b = (mon.add(g, JobSpec("f", k)).job_id for k in range(2))
    mon.mark_running(a, 0)
    mon.mark_retrying(a, 0)
    with pytest.raises(ValueError, match="expected pending or running"):
        mon.mark_retrying(a, 0)  # already retrying
    with pytest.raises(ValueError, match="not a final state"):
        mon.finish(JobResult(a, 0, JobState.RETRYING))
    with pytest.raises(ValueError, match="not a final state"):
        mon.finish(JobResult(b, 1, JobState.RUNNING))
    mon.finish(_done(a))
    with pytest.raises(ValueError):
        mon.mark_retrying(a, 0)  # done
    assert mon.retries(g) == 1 and mon.states(g) == {a: JobState.DONE, b: JobState.PENDING}


def test_request_stop_sets_the_flag() -> None:
    em = EventManager()
    assert em.stop_requested is False
    em.request_stop()
    assert em.stop_requested is True


# ---- EventManager -----------------------------------------------------------------------


def test_register_and_emit_runs_function_and_records_task_step() -> None:
    em = EventManager()
    calls = []

    def add(x: int, y: int) -> int:
        calls.append((x, y))
        return x + y

    em.register("add", add)
    assert em.emit("add", 2, 3, round=4, mode="single") == 5
    assert calls == [(2, 3)]
    steps = list(em.steps)
    assert len(steps) == 1
    s = steps[0]
    assert (s.index, s.name, s.kind, s.round) == (0, "add", TASK, 4)
    assert s.info == {"mode": "single"}
    assert s.seconds >= 0.0
    assert em.registered() == ["add"]


def test_duplicate_registration_raises() -> None:
    em = EventManager()
    em.register("train", lambda: None)
    with pytest.raises(ValueError, match="'train'"):
        em.register("train", lambda: 1)
    assert em.registered() == ["train"]


def test_emit_unknown_name_lists_known_ones() -> None:
    em = EventManager()
    em.register("alpha", lambda: None)
    em.register("beta", lambda: None)
    with pytest.raises(KeyError) as exc:
        em.emit("gamma")
    msg = str(exc.value)
    assert "'gamma'" in msg
    assert "['alpha', 'beta']" in msg
    assert len(em.steps) == 0


def test_function_that_raises_records_no_step() -> None:
    em = EventManager()

    def bad() -> None:
        raise RuntimeError("nope")

    em.register("bad", bad)
    with pytest.raises(RuntimeError, match="nope"):
        em.emit("bad")
    assert len(em.steps) == 0


def test_subscribers_get_steps_and_job_events() -> None:
    em = EventManager()
    seen_steps: list[Step] = []
    seen_steps2: list[str] = []
    seen_jobs: list[tuple[str, JobState]] = []
    em.subscribe("step", seen_steps.append)
    em.subscribe("step", lambda s: seen_steps2.append(s.name))
    em.subscribe("job", lambda j, s: seen_jobs.append((j, s)))
    em.register("t", lambda: "out")
    em.record("context_refresh", round=1, dropped=2)
    em.emit("t", round=1)
    em.job_event("r1.t.g0.j0", JobState.RUNNING)
    em.job_event("r1.t.g0.j0", JobState.DONE)
    assert [(s.name, s.kind, s.round) for s in seen_steps] == [("context_refresh", IMPLICIT, 1), ("t", TASK, 1)]
    assert seen_steps[0].info == {"dropped": 2}
    assert seen_steps2 == ["context_refresh", "t"]
    assert seen_steps == list(em.steps)
    assert seen_jobs == [("r1.t.g0.j0", JobState.RUNNING), ("r1.t.g0.j0", JobState.DONE)]


def test_event_manager_uses_given_pipeline() -> None:
    ep = EventPipeline()
    em = EventManager(ep)
    em.record("x", round=2)
    assert em.steps is ep
    assert ep.names() == ["x"]


# ---- EventPipeline -------------------------------------------------------------------------


def _sample() -> EventPipeline:
    ep = EventPipeline()
    ep.append("setup", TASK, 0)
    ep.append("context_refresh", IMPLICIT, 1, 0.001, dropped=0)
    ep.append("client_train", TASK, 1, 0.5, mode="parallel")
    ep.append("context_refresh", IMPLICIT, 2, dropped=3)
    ep.append("aggregate", TASK, 2)
    return ep


def test_linked_list_order_head_to_tail() -> None:
    ep = EventPipeline()
    assert ep.head is None and ep.tail is None and len(ep) == 0 and list(ep) == []
    ep = _sample()
    names = []
    node = ep.head
    while node is not None:
        names.append(node.name)
        last = node
        node = node.next
    assert names == ["setup", "context_refresh", "client_train", "context_refresh", "aggregate"]
    assert last is ep.tail
    assert ep.tail.next is None
    assert len(ep) == 5
    assert [s.index for s in ep] == [0, 1, 2, 3, 4]
    assert ep.names() == names
    assert ep.names(round=1) == ["context_refresh", "client_train"]
    assert ep.names(round=2) == ["context_refresh", "aggregate"]
    # steps are appended when they end: end times are in append order, and a step that
    # says it took 0.5 s started 0.5 s before it was appended
    ends = [s.started + s.seconds for s in ep]
    assert ends == sorted(ends)
    steps = list(ep)
    assert steps[2].started < steps[1].started
    assert ep.format() == "setup@0 -> context_refresh@1 -> client_train@1 -> context_refresh@2 -> aggregate@2"


def test_to_list_next_indices() -> None:
    rows = _sample().to_list()
    assert [r["index"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["next"] for r in rows] == [1, 2, 3, 4, None]
    assert rows[2]["kind"] == TASK and rows[1]["kind"] == IMPLICIT
    assert rows[2]["info"] == {"mode": "parallel"}
    assert rows[2]["seconds"] == 0.5
    assert rows[3]["info"] == {"dropped": 3}


def test_save_writes_json_that_loads_back_in_order(tmp_path) -> None:
    ep = _sample()
    path = ep.save(tmp_path / "event_pipeline.json")
    assert path == tmp_path / "event_pipeline.json"
    data = json.loads(path.read_text())
    assert data["head"] == 0
    steps = {s["index"]: s for s in data["steps"]}
    # walk the saved list through "next" from "head"
    order, i = [], data["head"]
    while i is not None:
        order.append(steps[i]["name"])
        i = steps[i]["next"]
    assert order == ep.names()
    assert [(s["name"], s["kind"], s["round"], s["info"]) for s in data["steps"]] == [
        (s.name, s.kind, s.round, s.info) for s in ep
    ]


def test_save_empty_pipeline(tmp_path) -> None:
    data = json.loads(EventPipeline().save(tmp_path / "e.json").read_text())
    assert data == {"head": None, "steps": []}


def test_save_non_json_info_is_stringified(tmp_path) -> None:
    ep = EventPipeline()
    ep.append("x", IMPLICIT, 1, path=tmp_path)
    data = json.loads(ep.save(tmp_path / "e.json").read_text())
    assert data["steps"][0]["info"] == {"path": str(tmp_path)}


def test_emitted_step_started_is_when_the_task_started() -> None:
    import time

    em = EventManager()
    em.register("slow", lambda: time.sleep(0.2))
    em.record("marker", round=1)
    em.emit("slow", round=1)
    marker, slow = list(em.steps)
    assert slow.seconds >= 0.2
    # 'slow' began right after 'marker' was logged, so it started well under 0.2 s later
    assert slow.started - marker.started < 0.1
