"""Faults a long run meets, injected deterministically, each ending with the fault-free run's
records: a worker that dies, hangs or raises (in training, evaluation, start-up), and the
main process stopped by SIGTERM / SIGINT / SIGHUP / SIGKILL then resumed. No process is left.
docs/RELIABILITY.md lists these cases with their figures."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from support.experiments import tiny_parts
from support.records import TIMING, strip_timing

from vista.drivers.fedpeft import run_fedpeft
from vista.scheduler import SchedulerSpec

pytestmark = pytest.mark.slow
FAULT_KEYS = {"jobs_retried", "workers_respawned", "jobs_retried_total", "workers_respawned_total", "executor"}


def _strip(x, drop=TIMING | FAULT_KEYS):
    return strip_timing(x, drop)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _records(run_dir: Path) -> dict:
    out = {f: _strip(_jsonl(run_dir / f)) for f in ("metrics.jsonl", "clients.jsonl", "client_eval.jsonl")}
    out["summary"] = _strip({k: v for k, v in json.loads((run_dir / "summary.json").read_text()).items()
                             if k not in ("status",)})
    out["adapter"] = (run_dir / "adapter.safetensors").read_bytes()
    return out


def _parts(tiny_hub, tiny_data):
    p = tiny_parts(tiny_hub, *tiny_data, rounds=3, clients_per_round=4)
    return dataclasses.replace(p, scheduler=SchedulerSpec(num_workers=2, device="cpu", threads_per_worker=1,
                                                          heartbeat_s=0.5))


@pytest.fixture(scope="module")
def fault_free(tiny_hub, tiny_data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("fault_free")
    run_fedpeft(_parts(tiny_hub, tiny_data), run_dir)
    return _records(run_dir)


@pytest.mark.parametrize("fault,respawned", [
    ("client_train@r2#1=exit", 1),    # a worker killed mid-job (SIGKILL, the OOM killer, a segfault)
    ("client_train@r2#0=raise", 0),   # a job that raises
    ("client_train@r2#1=hang", 1),    # a worker frozen (SIGSTOP): silent for 3 heartbeats
    ("evaluate@r2#0=exit", 1),        # evaluation is covered too
])
def test_a_faulty_job_is_retried_and_the_run_ends_as_without_it(tiny_hub, tiny_data, tmp_path, monkeypatch,
                                                                fault_free, fault, respawned):
    monkeypatch.setenv("VISTA_FAULTS", fault)
    t0 = time.monotonic()
    run_fedpeft(_parts(tiny_hub, tiny_data), tmp_path / "run")
    seconds = time.monotonic() - t0
    assert _records(tmp_path / "run") == fault_free
    rows = _jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [(r["jobs_retried"], r["workers_respawned"]) for r in rows] == [(0, 0), (1, respawned), (0, 0)]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["jobs_retried_total"] == 1 and summary["workers_respawned_total"] == respawned
    steps = json.loads((tmp_path / "run" / "event_pipeline.json").read_text())["steps"]
    retry = [s for s in steps if s["name"] == "job_retry"]
    assert len(retry) == 1 and retry[0]["round"] == 2
    print(f"{fault}: {seconds:.1f} s")


def test_a_worker_that_cannot_start_is_started_again(tiny_hub, tiny_data, tmp_path, monkeypatch, fault_free):
    monkeypatch.setenv("VISTA_FAULTS", "start#1=exit")
    run_fedpeft(_parts(tiny_hub, tiny_data), tmp_path / "run")
    assert _records(tmp_path / "run") == fault_free
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["executor"]["respawns"] == 1


# -- the main process stopped, then `vista resume=RUN_DIR` -----------------------------------------
def _cli_args(hub: Path, data: Path, part: Path, run_dir: Path) -> list[str]:
    return ["model=roberta", f"paths.model_hub={hub}", "dataset=fednlp", f"dataset.data_file={data}",
            "partition=fednlp_file", f"partition.file={part}", "partition.method=uniform", "fl.rounds=3",
            "fl.clients_per_round=4", "fl.batch_size=8", "fl.max_seq_len=32", "scheduler.num_workers=2",
            "scheduler.threads_per_worker=1", f"hydra.run.dir={run_dir}"]


class _Run:
    """``vista ...`` in the background, its stderr read line by line, its process tree watched."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "vista.main", *args], cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.lines: list[str] = []  # stderr
        self.out: list[str] = []  # stdout
        self.pids: set[int] = set()
        self._readers = [threading.Thread(target=self._read, args=(s, to), daemon=True)
                         for s, to in ((self.proc.stderr, self.lines), (self.proc.stdout, self.out))]
        for r in self._readers:
            r.start()

    @staticmethod
    def _read(stream, to: list[str]) -> None:
        for line in stream:
            to.append(line)

    def wait_for(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            self._note_children()
            assert self.proc.poll() is None, "".join(self.lines[-30:])
            assert time.monotonic() < deadline, f"no {text!r} in time:\n" + "".join(self.lines[-30:])
            time.sleep(0.05)
        self._note_children()

    def _note_children(self) -> None:
        try:
            self.pids |= {c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            pass

    def workers(self) -> list[int]:
        """The live worker processes (named vista-wN)."""
        self._note_children()
        live = []
        for pid in self.pids:
            try:
                if psutil.Process(pid).name().startswith("vista-w"):
                    live.append(pid)
            except psutil.Error:  # gone since it was seen
                continue
        return live

    def finish(self, timeout: float = 180) -> int:
        code = self.proc.wait(timeout=timeout)
        for r in self._readers:
            r.join(timeout=10)
        return code

    def left_behind(self, timeout: float = 10) -> list[int]:
        deadline = time.monotonic() + timeout
        alive = set(self.pids)
        while alive and time.monotonic() < deadline:
            alive = {p for p in alive if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE}
            time.sleep(0.1)
        return sorted(alive)


@pytest.fixture(scope="module")
def cli_fault_free(tiny_hub, tiny_data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    p = subprocess.run([sys.executable, "-m", "vista.main", *_cli_args(tiny_hub, *tiny_data, run_dir)],
                       capture_output=True, text=True, cwd=run_dir.parent, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return _records(run_dir)


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)],
                         ids=["SIGTERM", "SIGINT", "SIGHUP"])
def test_a_signal_after_round_1_then_resume_gives_the_fault_free_run(tiny_hub, tiny_data, tmp_path,
                                                                     cli_fault_free, sig, code):
    run_dir = tmp_path / "run"
    run = _Run(_cli_args(tiny_hub, *tiny_data, run_dir), tmp_path)
    run.wait_for("round 1/3")
    os.kill(run.proc.pid, sig)
    assert run.finish() == code, "".join(run.lines[-20:])
    assert run.left_behind() == []
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["signal"] == sig.name
    assert summary["resume"] == f"vista resume={run_dir.resolve()}"
    assert f"vista resume={run_dir.resolve()}" in "".join(run.lines)
    resumed = _Run([f"resume={run_dir}"], tmp_path)
    assert resumed.finish() == 0, "".join(resumed.lines[-30:])
    assert resumed.left_behind() == []
    assert _records(run_dir) == cli_fault_free
    steps = json.loads((run_dir / "event_pipeline.json").read_text())["steps"]
    assert [s["name"] for s in steps].count("resume") == 1


def test_sigkill_of_the_main_process_leaves_no_worker_and_the_run_resumes(tiny_hub, tiny_data, tmp_path,
                                                                         cli_fault_free):
    run_dir = tmp_path / "run"
    run = _Run(_cli_args(tiny_hub, *tiny_data, run_dir), tmp_path)
    run.wait_for("round 1/3")
    os.kill(run.proc.pid, signal.SIGKILL)
    assert run.finish() == -signal.SIGKILL
    assert run.pids and run.left_behind() == []
    resumed = _Run([f"resume={run_dir}"], tmp_path)
    assert resumed.finish() == 0, "".join(resumed.lines[-30:])
    assert _records(run_dir) == cli_fault_free


def test_sigkill_of_the_main_process_while_a_worker_is_stopped_leaves_nothing(tiny_hub, tiny_data, tmp_path):
    """A stopped worker cannot run its watchdog: the kernel (PR_SET_PDEATHSIG) kills it when its
    parent, the fork server, exits, which the server does when the run's process is gone
    (workers do not hold the server's "alive" pipe open)."""
    run = _Run(_cli_args(tiny_hub, *tiny_data, tmp_path / "run"), tmp_path)
    run.wait_for("round 1/3")
    stopped = min(run.workers())
    os.kill(stopped, signal.SIGSTOP)
    os.kill(run.proc.pid, signal.SIGKILL)
    assert run.finish() == -signal.SIGKILL
    assert stopped in run.pids and run.left_behind() == []


def test_a_worker_killed_from_outside_is_replaced(tiny_hub, tiny_data, tmp_path, cli_fault_free):
    """What a user sees when the OOM killer takes a worker: the run goes on, same results."""
    run_dir = tmp_path / "run"
    run = _Run(_cli_args(tiny_hub, *tiny_data, run_dir), tmp_path)
    run.wait_for("round 1/3")
    victim = min(run.workers())
    os.kill(victim, signal.SIGKILL)
    assert run.finish() == 0, "".join(run.lines[-30:])
    assert run.left_behind() == []
    assert _records(run_dir) == cli_fault_free
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["workers_respawned_total"] + summary["executor"]["respawns"] >= 1


def test_resume_refuses_an_override_that_changes_the_results(tiny_hub, tiny_data, tmp_path, cli_fault_free):
    run_dir = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "vista.main", *_cli_args(tiny_hub, *tiny_data, run_dir),
                        "fl.rounds=1"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    p = subprocess.run([sys.executable, "-m", "vista.main", f"resume={run_dir}", "fl.lr=0.1", "peft.r=2"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        f"vista: config error: resume: fl.lr, peft.r would change the results of {run_dir.resolve()}; a resumed "
        "run may change only scheduler.*, recorder.*, checkpoint.*, paths.* and fl.rounds"]
    # extending the finished run is allowed, and gives the longer run
    p = subprocess.run([sys.executable, "-m", "vista.main", f"resume={run_dir}", "fl.rounds=3",
                        "scheduler.num_workers=1"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert _records(run_dir) == cli_fault_free
