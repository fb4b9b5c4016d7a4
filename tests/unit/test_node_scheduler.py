"""NodeScheduler with real spawned worker processes and a tiny runtime."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from support.runtimes import make_echo

from vista.pipeline import EventManager, FLContext, JobFailedError, Jobs, JobSpec, JobState, Pipeline, Task
from vista.pipeline.protocol import JobRequest
from vista.scheduler import NodeScheduler, SchedulerSpec, WorkerStartError


def _requests(fn: str, keys, payload=None) -> list[JobRequest]:
    return [JobRequest(f"g.j{i}", "g", fn, k, dict(payload or {})) for i, k in enumerate(keys)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pids, timeout=10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return []
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


@pytest.fixture(scope="module")
def sched(tmp_path_factory):
    s = NodeScheduler(SchedulerSpec(num_workers=2, device="cpu"), make_echo, {},
                      log_dir=tmp_path_factory.mktemp("logs"))
    with s:
        yield s


def test_jobs_spread_over_processes_and_runtime_built_once(sched):
    started = []
    res = sched.run_jobs(_requests("sleep", range(6), {"seconds": 0.2}), shared=None,
                         on_start=lambda j, w: started.append((j, w)))
    assert sorted(r.key for r in res) == list(range(6))
    assert all(r.state is JobState.DONE for r in res)
    pids = {r.value["pid"] for r in res}
    assert pids == set(sched.pids) and len(pids) == 2 and os.getpid() not in pids
    assert all(r.value["inits"] == 1 for r in res)  # one runtime per process, reused
    assert sorted(j for j, _ in started) == sorted(r.job_id for r in res)
    # both workers got work: jobs are dispatched to whichever worker is idle
    assert {r.worker for r in res} == {0, 1}
    # a second group reuses the same processes and runtimes
    res2 = sched.run_jobs(_requests("echo", range(4)), shared=None)
    assert {r.value["pid"] for r in res2} == pids and all(r.value["inits"] == 1 for r in res2)
    assert max(r.value["jobs"] for r in res2) >= 5


def test_shared_payload_reaches_every_job(sched):
    res = sched.run_jobs(_requests("echo", range(5)), shared={"state": [1, 2, 3]})
    assert [r.value["shared"] for r in res] == [{"state": [1, 2, 3]}] * 5
    res = sched.run_jobs(_requests("echo", range(3)), shared={"state": "new"})
    assert all(r.value["shared"] == {"state": "new"} for r in res)


def test_threads_split_between_workers(sched):
    res = sched.run_jobs(_requests("echo", range(2)), shared=None)
    from vista.scheduler.devices import usable_cpus

    assert {r.value["threads"] for r in res} == {max(1, usable_cpus() // 2)}


def test_worker_exception_comes_back_with_traceback_and_job_id(sched):
    res = sched.run_jobs(_requests("boom", ["c7"]), shared=None)
    (r,) = res
    assert r.state is JobState.FAILED and r.job_id == "g.j0"
    assert "ValueError: boom on c7" in r.error
    assert "Traceback" in r.traceback and "boom on c7" in r.traceback and "runtimes.py" in r.traceback
    # the scheduler is still usable after a failed job
    assert sched.run_jobs(_requests("echo", [1]), shared=None)[0].ok


def test_failure_stops_the_pipeline_with_job_id(sched):
    events = EventManager()
    pipe = Pipeline(
        tasks=[Task("explode", lambda ctx: Jobs([JobSpec("echo", 0), JobSpec("boom", 1)]), mode="parallel",
                    collect=lambda ctx, res: None)],
        rounds=2,
    )
    with pytest.raises(JobFailedError) as info:
        pipe.run(FLContext(), events, sched)
    err = info.value
    assert err.job_id.startswith("r1.explode") and "boom on 1" in str(err) and "Traceback" in str(err)
    assert events.monitor.state(err.job_id) is JobState.FAILED
    assert "explode" not in [s.name for s in events.steps if s.round == 2]


def test_worker_logs_go_to_their_own_files(sched):
    sched.run_jobs(_requests("echo", range(2)), shared=None)
    logs = sorted(p.name for p in sched._log_dir.iterdir())
    assert logs == ["worker_0.log", "worker_1.log"]
    assert "ready on cpu" in (sched._log_dir / "worker_0.log").read_text()


def test_dead_worker_is_a_failed_job(tmp_path):
    with NodeScheduler(SchedulerSpec(num_workers=1, device="cpu"), make_echo, {}, log_dir=tmp_path) as s:
        (r,) = s.run_jobs(_requests("die", ["x"]), shared=None)
        assert r.state is JobState.FAILED and "exit code 7" in r.error and r.job_id == "g.j0"
        pid = s.pids[0]
    assert _wait_gone([pid]) == []


def test_runtime_that_cannot_start_is_reported(tmp_path):
    s = NodeScheduler(SchedulerSpec(num_workers=2, device="cpu"), make_echo, {"fail_init": True}, log_dir=tmp_path)
    with pytest.raises(WorkerStartError, match="cannot build this runtime"):
        s.start()
    assert s.pids == []


def _readers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("vista-reader-")}


def test_shutdown_leaves_no_process_and_no_pipe_reader(tmp_path):
    before = _readers()  # the module's shared scheduler has its own
    s = NodeScheduler(SchedulerSpec(num_workers=2, device="cpu"), make_echo, {}, log_dir=tmp_path).start()
    pids = list(s.pids)
    assert all(_alive(p) for p in pids)
    mine = _readers() - before
    assert sorted(t.name for t in mine) == ["vista-reader-0", "vista-reader-1"]
    s.shutdown()
    assert _wait_gone(pids) == []
    # joined, not left to the interpreter's exit: a daemon thread inside torch there aborts the run
    assert [t.name for t in mine if t.is_alive()] == []


_DRIVER = textwrap.dedent(
    """
    import signal, sys, time
    # a terminal's Ctrl-C raises KeyboardInterrupt; restore that even when this test runs under a
    # shell that started it in the background (which makes SIGINT ignored, and inherited so)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.path.insert(0, {tests!r})
    from support.runtimes import make_echo
    from vista.pipeline.protocol import JobRequest
    from vista.scheduler import NodeScheduler, SchedulerSpec
    if __name__ == "__main__":
        s = NodeScheduler(SchedulerSpec(num_workers=2, device="cpu"), make_echo, {{}}).start()
        print("PIDS", *s.pids, flush=True)
        try:
            s.run_jobs([JobRequest("j0", "g", "sleep", 0, {{"seconds": 60}}), JobRequest("j1", "g", "sleep", 1, {{"seconds": 60}})], None)
        except KeyboardInterrupt:
            s.shutdown()
            print("INTERRUPTED", flush=True)
            sys.exit(130)
    """
)


def _start_driver(tmp_path: Path) -> tuple[subprocess.Popen, list[int]]:
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER.format(tests=str(Path(__file__).parents[1])))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    line = proc.stdout.readline()
    assert line.startswith("PIDS"), line
    time.sleep(1.0)  # let the jobs start
    return proc, [int(p) for p in line.split()[1:]]


@pytest.mark.slow  # over 7 s on 2 cores: out of the fast tier (pytest -m 'not slow'), still in CI
def test_ctrl_c_stops_every_worker(tmp_path):
    proc, pids = _start_driver(tmp_path)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
    out, _ = proc.communicate(timeout=120)  # a hang guard: loaded machines are slow
    assert "INTERRUPTED" in out and proc.returncode == 130
    assert _wait_gone(pids) == []


@pytest.mark.slow  # over 7 s on 2 cores: out of the fast tier (pytest -m 'not slow'), still in CI
def test_killed_parent_leaves_no_orphans(tmp_path):
    proc, pids = _start_driver(tmp_path)
    proc.kill()  # SIGKILL: no cleanup code runs in the parent
    proc.wait(timeout=10)
    assert _wait_gone(pids, timeout=10) == []


def _mixed(fns_keys) -> list[JobRequest]:
    return [JobRequest(f"m.j{i}", "m", fn, k, {}) for i, (fn, k) in enumerate(fns_keys)]


def test_without_stop_on_failure_every_job_gets_a_result(sched):
    res = sched.run_jobs(_mixed([("echo", 0), ("boom", 1), ("echo", 2), ("echo", 3)]), shared=None,
                         stop_on_failure=False)
    assert sorted((r.key, r.ok) for r in res) == [(0, True), (1, False), (2, True), (3, True)]
    assert len(set(sched.pids)) == 2 and all(_alive(p) for p in sched.pids)


def test_a_dead_worker_fails_its_job_and_the_others_carry_on(tmp_path):
    # max_retries=0: no re-runs, no replacement workers (tests/unit/test_job_faults.py has those)
    spec = SchedulerSpec(num_workers=2, device="cpu", max_retries=0)
    with NodeScheduler(spec, make_echo, {}, log_dir=tmp_path) as s:
        res = s.run_jobs(_mixed([("die", 0), ("sleep", 1), ("echo", 2), ("echo", 3)]), shared=None,
                         stop_on_failure=False)
        by_key = {r.key: r for r in res}
        assert sorted(by_key) == [0, 1, 2, 3]
        assert not by_key[0].ok and "died with exit code 7" in by_key[0].error
        assert all(by_key[k].ok for k in (1, 2, 3))
        assert len({by_key[k].value["pid"] for k in (1, 2, 3)}) == 1  # the survivor ran them
        # the next group goes to the live worker only
        assert all(r.ok for r in s.run_jobs(_mixed([("echo", 5), ("echo", 6)]), shared=None))
        # when the last worker dies, the jobs not run fail with that reason
        res = s.run_jobs(_mixed([("die", 7), ("echo", 8)]), shared=None, stop_on_failure=False)
        assert [r.ok for r in res] == [False, False]
        assert "no live worker left" in {r.key: r for r in res}[8].error


def test_workers_ignore_sigint_sigterm_and_sighup(sched):
    """The parent handles signals and stops its workers (under Slurm every process gets SIGTERM)."""
    pids = list(sched.pids)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        for pid in pids:
            os.kill(pid, sig)
    time.sleep(0.3)
    assert all(_alive(p) for p in pids)
    res = sched.run_jobs(_requests("echo", range(2)), shared=None)
    assert all(r.ok for r in res) and sched.pids == pids


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_retries", -1), ("job_timeout_s", -0.5), ("heartbeat_s", 0), ("heartbeat_s", -1.0), ("grace_s", -1)],
)
def test_scheduler_spec_fault_settings_are_checked(field, value):
    from vista.checks import FieldError

    with pytest.raises(FieldError) as info:
        SchedulerSpec(**{field: value})
    assert info.value.field == field


def test_scheduler_spec_defaults_are_the_yaml_defaults():
    import dataclasses

    import yaml

    conf = yaml.safe_load((Path(__file__).parents[2] / "conf" / "scheduler" / "process.yaml").read_text())
    conf.pop("_target_")
    defaults = {f.name: f.default for f in dataclasses.fields(SchedulerSpec)}
    assert conf == defaults
    spec = SchedulerSpec()
    assert (spec.max_retries, spec.job_timeout_s, spec.heartbeat_s, spec.grace_s) == (1, 0.0, 10.0, 30.0)
