"""The executor interface and registry: ``scheduler=process | inline | ray`` build the class
they name, every backend satisfies :class:`vista.pipeline.Executor`, and the specs check
their values. Also the sweep's core sharing (no oversubscription)."""

from __future__ import annotations

import types

import pytest
from support.runtimes import make_echo

from vista.checks import FieldError
from vista.pipeline import Executor
from vista.pipeline.protocol import JobRequest
from vista.scheduler import BACKENDS, RaySchedulerSpec, SchedulerSpec, build_executor
from vista.scheduler.backends import backend
from vista.sweep import concurrent_runs, share_cores


def test_the_registry_names_the_three_backends_and_ray_is_imported_only_when_chosen():
    import subprocess
    import sys

    assert list(BACKENDS) == ["process", "inline", "ray"]
    for name in BACKENDS:
        assert callable(backend(name))
    code = ("import sys; from vista.scheduler import build_executor, SchedulerSpec; import vista.drivers.fedpeft; "
            "from vista.scheduler.backends import backend; backend('ray'); print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # even the ray backend's module imports Ray only in start()


def test_num_workers_zero_is_inline_and_each_backend_is_an_executor(tmp_path):
    inline = build_executor(SchedulerSpec(num_workers=0, device="cpu"), make_echo, {}, tmp_path)
    assert inline.backend == "inline" and isinstance(inline, Executor)
    assert inline.arrangement.devices == ("cpu",) and inline.arrangement.num_workers == 1
    res = inline.start().run_jobs([JobRequest("j", "g", "echo", 1, {})], shared={"w": 1})
    assert res[0].ok and res[0].value["shared"] == {"w": 1}
    [p] = inline.placement()
    assert p.worker == 0 and p.device == "cpu" and p.pid is not None
    inline.shutdown()
    process = build_executor(SchedulerSpec(backend="process", num_workers=1, device="cpu"), make_echo, {}, tmp_path)
    assert process.backend == "process" and isinstance(process, Executor)
    ray_ex = build_executor(RaySchedulerSpec(num_workers=1, device="cpu"), make_echo, {}, tmp_path)
    assert ray_ex.backend == "ray" and isinstance(ray_ex, Executor)
    # none started: nothing to shut down, and shutting down twice is fine
    for ex in (process, ray_ex):
        ex.shutdown()
        ex.shutdown()


def test_the_process_backend_with_auto_workers_reports_its_arrangement_and_placement(tmp_path):
    with build_executor(SchedulerSpec(num_workers="auto", device="cpu", threads_per_worker=1, cpus=2), make_echo, {},
                        tmp_path, useful_workers=1) as ex:
        assert ex.arrangement.num_workers == 1  # one job per round: one worker is enough
        assert "1 worker" in ex.arrangement.describe()
        [p] = ex.placement()
        assert p.device == "cpu" and p.threads == 1 and p.pid == ex.pids[0]


@pytest.mark.parametrize(("field", "value"), [("num_workers", -1), ("num_workers", "many"), ("backend", "mpi"),
                                              ("cpus", -1)])
def test_scheduler_spec_checks_its_values(field, value):
    with pytest.raises(FieldError) as info:
        SchedulerSpec(**{field: value})
    assert info.value.field == field


@pytest.mark.parametrize(("field", "value"), [("address", "10.0.0.1:6379"), ("gpus_per_worker", -0.5),
                                              ("cpus_per_worker", -1)])
def test_ray_spec_checks_its_values(field, value):
    with pytest.raises(FieldError) as info:
        RaySchedulerSpec(**{field: value})
    assert info.value.field == field


def test_ray_spec_defaults():
    spec = RaySchedulerSpec()
    assert (spec.backend, spec.address, spec.num_workers, spec.ship_data) == ("ray", "local", "auto", False)
    assert RaySchedulerSpec(address="ray://head:10001").address == "ray://head:10001"
    assert SchedulerSpec().executor == "process" and SchedulerSpec(num_workers=0).executor == "inline"
    assert RaySchedulerSpec(num_workers=0).executor == "inline"


def _hydra(target: str, n_jobs: int | None = None):
    return types.SimpleNamespace(launcher=types.SimpleNamespace(_target_=target, n_jobs=n_jobs))


def test_a_joblib_sweep_shares_the_cores_between_its_runs(monkeypatch):
    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert concurrent_runs(_hydra("hydra._internal.core_plugins.basic_launcher.BasicLauncher")) == 1
    assert concurrent_runs(_hydra(joblib, 4)) == 4
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert concurrent_runs(_hydra(joblib, -1)) == 16 and concurrent_runs(_hydra(joblib, -2)) == 15
    assert share_cores({"cpus": 0}, 4, 16) == {"cpus": 4}
    assert share_cores({"cpus": 0}, 3, 2) == {"cpus": 1}  # never below one core
    assert share_cores({"cpus": 6}, 4, 16) == {"cpus": 6}  # the user's choice stands
    assert share_cores({"cpus": 0}, 1, 16) == {"cpus": 0}  # one run: all usable cores


def test_a_run_with_a_core_share_never_oversubscribes(tmp_path):
    """4 runs on 16 cores: each run's workers x threads <= its 4 cores."""
    from vista.scheduler.arrangement import Inventory
    from vista.scheduler.backends import plan_workers

    inv = Inventory(cpus=16, gpus=(), host_available_mb=1 << 20)
    for runs in (1, 2, 4, 8):
        spec = SchedulerSpec(**share_cores({"num_workers": "auto", "device": "cpu", "cpus": 0}, runs, 16))
        plan = plan_workers(spec, None, 64, inventory=inv)
        assert plan.num_workers * plan.threads <= 16 // runs
        assert plan.num_workers * plan.threads * runs <= 16


def test_without_ray_installed_the_error_is_one_line_with_the_pip_command(monkeypatch, tmp_path):
    import sys

    from vista.errors import UserError

    monkeypatch.setitem(sys.modules, "ray", None)
    ex = build_executor(RaySchedulerSpec(num_workers=1, device="cpu"), make_echo, {}, tmp_path)
    with pytest.raises(UserError) as info:
        ex.start()
    assert "\n" not in str(info.value) and "pip install 'vista[ray]'" in str(info.value)
