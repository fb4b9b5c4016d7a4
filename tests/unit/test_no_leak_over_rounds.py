"""A long run must not accumulate what its jobs returned. Tensors a worker sends arrive through
file descriptors (torch's sharing strategy); the job monitor used to keep every result, so the
parent's open descriptors grew by about 26 a round and a run hung at `ulimit -n 1024`."""

from __future__ import annotations

import gc
import os
import weakref

import pytest
import torch
from support.runtimes import make_echo

from vista.pipeline import EventManager, FLContext, Jobs, JobSpec, Pipeline, Task
from vista.pipeline.protocol import JobResult, JobState
from vista.scheduler import NodeScheduler, SchedulerSpec


def test_the_job_monitor_keeps_no_value_of_a_finished_job():
    em = EventManager()
    g = em.monitor.open_group("train", 1)
    ok, bad = (em.monitor.add(g, JobSpec("f", k)) for k in (1, 2))
    value = {"w": torch.ones(4)}
    ref = weakref.ref(value["w"])
    em.monitor.finish(JobResult(ok.job_id, 1, JobState.DONE, value))
    em.monitor.finish(JobResult(bad.job_id, 2, JobState.FAILED, {"partial": torch.ones(2)}, error="boom"))
    del value
    gc.collect()
    assert ref() is None
    [failed] = em.monitor.failed(g)
    assert failed.error == "boom" and failed.value is None


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.slow  # over 7 s on 2 cores: out of the fast tier (pytest -m 'not slow'), still in CI
def test_a_long_run_on_worker_processes_holds_no_descriptors_of_past_rounds(tmp_path):
    fds: dict[int, int] = {}

    def plan(ctx: FLContext) -> Jobs:
        return Jobs([JobSpec("tensors", k, {"n": 8}) for k in range(4)], shared={"g": torch.zeros(16)})

    def collect(ctx: FLContext, results: list[JobResult]) -> None:
        ctx["sum"] = float(sum(t.sum() for r in results for t in r.value.values()))

    def note(ctx: FLContext) -> None:
        gc.collect()
        fds[ctx.round] = _open_fds()

    pipeline = Pipeline([Task("train", plan, "parallel", collect), Task("note", note)], rounds=40)
    with NodeScheduler(SchedulerSpec(num_workers=2, device="cpu", threads_per_worker=1), make_echo, {},
                       log_dir=tmp_path) as s:
        pipeline.run(FLContext(), EventManager(), s)
    # 32 tensors a round: before the fix, +32 descriptors a round (960 over these 30 rounds)
    assert fds[40] - fds[10] < 25, fds
