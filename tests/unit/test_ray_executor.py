"""scheduler=ray on a local Ray (2 CPUs): the executor contract, faults, payloads, cleanup.

One Ray session serves the module (Ray takes seconds to start here); each test that needs
other settings makes its own executor inside it. The Ray processes of a ``local`` executor
are gone when it shuts down (tested with a fresh executor at the end)."""

from __future__ import annotations

import time

import pytest
from support.processes import ray_processes
from support.runtimes import make_echo

from vista.pipeline.protocol import JobRequest, JobState
from vista.scheduler import RaySchedulerSpec, build_executor

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # a local Ray takes seconds to start here: about 50 s in all


def _requests(fn: str, keys, payload=None, group: str = "g") -> list[JobRequest]:
    return [JobRequest(f"{group}-{k}", group, fn, k, dict(payload or {})) for k in keys]


def _spec(**kw) -> RaySchedulerSpec:
    return RaySchedulerSpec(**{"num_workers": 2, "device": "cpu", "threads_per_worker": 1, "start_timeout_s": 120.0,
                               **kw})


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray for the module (executors inside it leave it running)."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False, namespace="vista")
    yield
    ray.shutdown()


def test_jobs_run_on_two_actors_with_the_shared_payload_put_once_per_group(ray_session, monkeypatch, tmp_path):
    puts = []
    real_put = ray.put
    monkeypatch.setattr(ray, "put", lambda value, **kw: (puts.append(value), real_put(value, **kw))[1])
    with build_executor(_spec(), make_echo, {}, tmp_path) as ex:
        assert ex.backend == "ray" and ex.devices == ["cpu", "cpu"]
        placement = ex.placement()
        assert [p.worker for p in placement] == [0, 1] and all(p.threads == 1 for p in placement)
        assert len({p.pid for p in placement}) == 2
        started = []
        res = ex.run_jobs(_requests("echo", range(6)), {"state": "v1"}, on_start=lambda j, w: started.append(j))
        assert sorted(started) == sorted(f"g-{k}" for k in range(6))
        assert [r.state for r in res] == [JobState.DONE] * 6
        assert {r.value["shared"]["state"] for r in res} == {"v1"}
        assert {r.value["pid"] for r in res} == {p.pid for p in placement}  # both actors served jobs
        assert all(r.value["inits"] == 1 for r in res)  # each built its runtime once
        assert puts == [{"state": "v1"}]  # one ray.put for the group, not one per job
        res2 = ex.run_jobs(_requests("echo", range(2), group="h"), {"state": "v2"})
        assert {r.value["shared"]["state"] for r in res2} == {"v2"} and len(puts) == 2
        assert ex.run_jobs(_requests("echo", [9], group="n"), None)[0].value["shared"] is None
        assert len(puts) == 2  # no payload, nothing put


def test_a_failed_job_is_retried_and_a_dead_actor_restarted(ray_session, tmp_path):
    with build_executor(_spec(max_retries=1), make_echo, {}, tmp_path) as ex:
        retries, respawns = [], []
        res = ex.run_jobs(_requests("boom", [1]), None, stop_on_failure=False,
                          on_retry=lambda r, a: retries.append((r.state, a)))
        assert res[0].state is JobState.FAILED and res[0].attempt == 1 and "boom on 1" in res[0].traceback
        assert retries == [(JobState.FAILED, 1)]
        # an actor that dies mid-job: Ray restarts it, Vista re-runs the job there (and it dies again)
        pids = {p.pid for p in ex.placement()}
        res = ex.run_jobs(_requests("die", [2], group="d"), None, stop_on_failure=False,
                          on_respawn=lambda w, why: respawns.append((w, why)))
        assert res[0].state is JobState.FAILED and res[0].attempt == 1 and "died" in res[0].error
        assert len(respawns) == 2 and ex.respawns == 2
        assert all("Ray actor" in why for _, why in respawns)
        ok = ex.run_jobs(_requests("echo", range(4), group="e"), None)  # the restarted actors serve jobs
        assert all(r.ok for r in ok) and not ({r.value["pid"] for r in ok} <= pids)


def test_a_job_past_its_time_limit_is_killed_and_rerun(ray_session, tmp_path):
    with build_executor(_spec(max_retries=1, job_timeout_s=2.0), make_echo, {}, tmp_path) as ex:
        t0 = time.monotonic()
        res = ex.run_jobs(_requests("slow_once", [3], {"seconds": 60}), None)
        assert res[0].ok and res[0].attempt == 1 and res[0].value["value"] == 30
        assert time.monotonic() - t0 < 45 and ex.retries == 1 and ex.respawns == 1


def test_a_stop_request_cancels_what_has_not_started(ray_session, tmp_path):
    with build_executor(_spec(num_workers=1, grace_s=5.0), make_echo, {}, tmp_path) as ex:
        done = []

        def stop_after_first(res):
            done.append(res)
            ex.request_stop()

        res = ex.run_jobs(_requests("sleep", range(3), {"seconds": 0.2}), None, on_done=stop_after_first)
        assert [r.state for r in res] == [JobState.DONE, JobState.CANCELLED, JobState.CANCELLED]
        assert ex.stop_requested


def test_an_actor_that_cannot_start_is_a_start_error(ray_session, tmp_path):
    from vista.scheduler import WorkerStartError

    ex = build_executor(_spec(num_workers=1), make_echo, {"fail_init": True}, tmp_path)
    with pytest.raises(WorkerStartError, match="cannot build this runtime"):
        ex.start()


def test_a_local_executor_leaves_no_ray_process(tmp_path):
    """``address=local``: the executor starts Ray and stops it, whatever happened in between."""
    if ray.is_initialized():
        ray.shutdown()
    deadline = time.monotonic() + 30
    while ray_processes() and time.monotonic() < deadline:  # the module's Ray session winding down
        time.sleep(0.5)
    assert not ray_processes()
    import subprocess

    bystander = subprocess.Popen(["sleep", "120"])  # another child of this process (a W&B service, say)
    ex = build_executor(_spec(num_workers=1), make_echo, {}, tmp_path).start()
    assert len(ray_processes()) >= 3  # GCS, raylet, the actor
    with pytest.raises(ZeroDivisionError):
        try:
            ex.run_jobs(_requests("echo", [1]), None)
            1 / 0  # a failure in the driver while Ray runs
        finally:
            ex.shutdown()
    assert not ray_processes()  # at once: shutdown() returns when Ray's processes are gone
    assert bystander.poll() is None, "shutdown killed a process that was not Ray's"
    bystander.kill()
    bystander.wait()


def test_ship_data_gives_actors_their_own_copies_of_the_data_and_model_files(ray_session, tiny_hub, tiny_data,
                                                                             tmp_path, monkeypatch):
    import dataclasses
    import hashlib

    from support.runtimes import make_files

    from vista.data.fednlp import FederatedDataSpec
    from vista.models.hub import ModelSpec

    @dataclasses.dataclass(frozen=True)
    class Args:
        model: ModelSpec
        data: FederatedDataSpec

    cache = tmp_path / "ship_cache"
    monkeypatch.setenv("VISTA_SHIP_CACHE", str(cache))  # reaches the actors (VISTA_* variables travel)
    args = Args(ModelSpec(name="roberta", hub_dir=str(tiny_hub), hub_name="roberta-base"),
                FederatedDataSpec(str(tiny_data[0]), str(tiny_data[1]), "uniform"))
    with build_executor(_spec(ship_data=True), make_files, args, tmp_path) as ex:
        res = ex.run_jobs(_requests("files", range(2)), None)
    originals = {"data_file": tiny_data[0], "partition_file": tiny_data[1],
                 "config": tiny_hub / "roberta-base" / "config.json"}
    for r in res:
        for name, (path, digest) in r.value.items():
            assert path.startswith(str(cache)), f"{name} was read from {path}, not from a shipped copy"
            assert digest == hashlib.sha256(originals[name].read_bytes()).hexdigest()
    # one copy per node, shared by its actors: each file materialised once
    assert len(list(cache.glob("*/tiny_data.h5"))) == 1 and len(list(cache.glob("*/roberta-base"))) == 1
