"""``vista scheduler=ray`` as a user runs it: the config group, the printed arrangement, the
records; and no Ray process left after a run that ends, fails or is stopped by SIGTERM (then
continued with ``vista resume=RUN_DIR`` on Ray)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from support.processes import ray_processes
from test_reliability import _cli_args, _Run

pytest.importorskip("ray")
pytestmark = pytest.mark.slow


BEFORE: set[int] = set()  # Ray processes not ours (another Ray user on this machine): ignored


def _ray_processes() -> list[str]:
    return list(ray_processes(ignore=BEFORE).values())


def _ray_args(hub: Path, data: Path, part: Path, run_dir: Path) -> list[str]:
    args = [a for a in _cli_args(hub, data, part, run_dir) if not a.startswith("scheduler.num_workers")]
    return ["scheduler=ray", "scheduler.num_workers=auto", *args]


@pytest.fixture(autouse=True)
def no_ray_before():
    import ray

    if ray.is_initialized():
        ray.shutdown()
    deadline = time.monotonic() + 10
    while _ray_processes() and time.monotonic() < deadline:  # an earlier test's Ray winding down
        time.sleep(0.5)
    BEFORE.clear()
    BEFORE.update(p.pid for p in psutil.process_iter())  # anything still there is not this test's


def test_a_ray_run_prints_its_arrangement_records_its_placement_and_stops_ray(tiny_hub, tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "vista.main", *_ray_args(tiny_hub, *tiny_data, run_dir)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "ray: arrangement: 2 workers on cpu x2, 1 thread each" in p.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    ex = summary["executor"]
    assert ex["backend"] == "ray" and ex["arrangement"]["workers"] == 2
    # num_workers=auto keeps the cheap upper bound when the exact estimate could not change the plan
    assert ex["arrangement"]["mem_source"] in {"estimate", "upper bound"}, ex["arrangement"]
    assert ex["arrangement"]["mem_per_worker_mb"] > 0
    assert len({w["pid"] for w in ex["placement"]}) == 2
    assert not _ray_processes(), "a finished scheduler=ray run left Ray processes"


def test_a_failed_ray_run_leaves_no_ray_process(tiny_hub, tiny_data, tmp_path):
    env = {**os.environ, "VISTA_FAULTS": "client_train@r1#0=raise"}
    p = subprocess.run([sys.executable, "-m", "vista.main", *_ray_args(tiny_hub, *tiny_data, tmp_path / "run"),
                        "scheduler.max_retries=0"], capture_output=True, text=True, cwd=tmp_path, timeout=600, env=env)
    assert p.returncode == 1 and "injected fault" in p.stderr, p.stderr[-3000:]
    assert not _ray_processes(), "a failed scheduler=ray run left Ray processes"


def test_sigterm_stops_a_ray_run_without_leftovers_and_resume_finishes_it(tiny_hub, tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    run = _Run(_ray_args(tiny_hub, *tiny_data, run_dir), tmp_path)
    run.wait_for("round 1/3", timeout=300)
    os.kill(run.proc.pid, signal.SIGTERM)
    assert run.finish() == 143, "".join(run.lines[-30:])
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    assert not _ray_processes(), "an interrupted scheduler=ray run left Ray processes"
    p = subprocess.run([sys.executable, "-m", "vista.main", f"resume={run_dir}", "scheduler=ray"], capture_output=True,
                       text=True, cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2, 3]
    assert not _ray_processes()
