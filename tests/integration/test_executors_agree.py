"""The same federated run on every executor: ``scheduler=inline``, ``process`` and ``ray``
(local, 2 CPUs) give identical metrics and identical adapter bytes for the same seed, and
summary.json records the backend, the arrangement and where each worker ran. Then a
two-node Ray cluster on this one machine (a head and a second node joined with
``ray start --address``): ``scheduler.address=auto`` puts actors on both nodes and gives the
single-node metrics. No Ray process is left behind."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.experiments import tiny_parts
from support.processes import ray_processes
from support.records import TIMING as BASE_TIMING
from support.records import strip_timing

from vista.drivers.fedpeft import run_fedpeft
from vista.scheduler import RaySchedulerSpec, SchedulerSpec

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow
TIMING = BASE_TIMING | {"executor"}


def _strip(x):
    return strip_timing(x, TIMING)


def _records(run_dir: Path) -> dict:
    out = {f: _strip([json.loads(line) for line in (run_dir / f).read_text().splitlines()])
           for f in ("metrics.jsonl", "clients.jsonl", "client_eval.jsonl")}
    out["adapter"] = (run_dir / "adapter.safetensors").read_bytes()
    return out


def _ray_procs() -> list[int]:
    return list(ray_processes())


def _wait_no_ray(timeout: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while _ray_procs() and time.monotonic() < deadline:
        time.sleep(0.5)
    return _ray_procs()


COMMON = dict(device="cpu", threads_per_worker=1, num_workers=2)


@pytest.fixture(scope="module")
def runs(tiny_hub, tiny_data, tmp_path_factory):
    if ray.is_initialized():
        ray.shutdown()
    base = tiny_parts(tiny_hub, *tiny_data, rounds=2, clients_per_round=4)
    specs = {"inline": SchedulerSpec(backend="inline", **COMMON),
             "process": SchedulerSpec(backend="process", **COMMON),
             "ray": RaySchedulerSpec(address="local", **COMMON)}
    out = {}
    for name, spec in specs.items():
        run_dir = tmp_path_factory.mktemp(name)
        summary = run_fedpeft(dataclasses.replace(base, scheduler=spec), run_dir)
        out[name] = (_records(run_dir), summary)
    return out


def test_inline_process_and_ray_give_identical_metrics_and_adapter_bytes(runs):
    inline, _ = runs["inline"]
    assert len(inline["metrics.jsonl"]) == 2
    for name in ("process", "ray"):
        records, _ = runs[name]
        for f in ("metrics.jsonl", "clients.jsonl", "client_eval.jsonl"):
            assert records[f] == inline[f], f"scheduler={name} changed {f}"
        assert records["adapter"] == inline["adapter"], f"scheduler={name} changed the adapter bytes"


def test_summary_records_backend_arrangement_and_placement(runs):
    for name, workers in (("inline", 1), ("process", 2), ("ray", 2)):
        ex = runs[name][1]["executor"]
        assert ex["backend"] == name
        assert ex["arrangement"]["workers"] == workers and ex["arrangement"]["threads"] == 1
        assert [p["worker"] for p in ex["placement"]] == list(range(workers))
        assert all(p["device"] == "cpu" and p["threads"] == 1 for p in ex["placement"])
    assert len({p["pid"] for p in runs["ray"][1]["executor"]["placement"]}) == 2
    assert not _wait_no_ray(), "a Ray process outlived scheduler=ray with address=local"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_cli(*args: str, env: dict, timeout: float = 90) -> subprocess.CompletedProcess:
    ray_bin = str(Path(sys.executable).with_name("ray"))
    return subprocess.run([ray_bin, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_a_two_node_cluster_runs_actors_on_both_nodes_with_the_single_node_metrics(runs, tiny_hub, tiny_data,
                                                                                      tmp_path, monkeypatch):
    """Head and worker node on localhost, 1 CPU each: the two actors (1 CPU each) must land
    one per node; the run joins with ``scheduler.address=auto`` (RAY_ADDRESS)."""
    if ray.is_initialized():
        ray.shutdown()
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_ADDRESS": address, "RAY_USAGE_STATS_ENABLED": "0"}
    try:
        head = _ray_cli("start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                        "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats", env=env)
        assert head.returncode == 0, head.stderr[-2000:]
        node = _ray_cli("start", f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                        "--num-gpus=0", "--disable-usage-stats", env=env)
        assert node.returncode == 0, node.stderr[-2000:]
        monkeypatch.setenv("RAY_ADDRESS", address)
        base = tiny_parts(tiny_hub, *tiny_data, rounds=2, clients_per_round=4)
        spec = RaySchedulerSpec(address="auto", **{**COMMON, "num_workers": "auto"})
        summary = run_fedpeft(dataclasses.replace(base, scheduler=spec), tmp_path / "run")
        ex = summary["executor"]
        assert ex["arrangement"]["workers"] == 2  # auto: the cluster's 2 CPUs, 1 thread each
        nodes = {p["node"] for p in ex["placement"]}
        assert len(nodes) == 2, f"actors did not spread over both nodes: {ex['placement']}"
        records = _records(tmp_path / "run")
        single, _ = runs["inline"]
        for f in ("metrics.jsonl", "clients.jsonl", "client_eval.jsonl"):
            assert records[f] == single[f], f"the two-node run changed {f}"
        assert records["adapter"] == single["adapter"]
    finally:
        stop = _ray_cli("stop", "--force", env=env, timeout=60)
        assert stop.returncode == 0, stop.stderr[-2000:]
    assert not _wait_no_ray(), "ray stop left Ray processes behind"
