"""Hydra multiruns of tiny jobs: one run directory and one offline W&B run per job, named from
its overrides and grouped by sweep; a failing job is recorded and the sweep goes on;
``vista compare`` on the result."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", NETRC=str(tmp_path / "no-netrc"), HYDRA_FULL_ERROR="0")
    return env


def _vista(*args: str, cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vista.main", *args], capture_output=True, text=True, cwd=cwd,
                          env=_env(cwd), timeout=timeout)


def _tiny(hub: Path, data: Path, part: Path, sweep_dir: Path) -> list[str]:
    return ["model=roberta", f"paths.model_hub={hub}", "dataset=fednlp", f"dataset.data_file={data}",
            "partition=fednlp_file", f"partition.file={part}", "partition.method=uniform", "fl.rounds=2",
            "fl.clients_per_round=2", "fl.batch_size=8", "fl.max_seq_len=32", "scheduler.num_workers=0",
            "recorder=wandb", "recorder.mode=offline", f"hydra.sweep.dir={sweep_dir}"]


def _jobs(sweep_dir: Path) -> list[Path]:
    return sorted(p.parent for p in sweep_dir.glob("*/.hydra"))


def _wandb_text(job: Path) -> str:
    (run,) = job.glob("wandb/offline-run-*")
    return b"".join(p.read_bytes() for p in run.glob("*.wandb")).decode("latin-1")


@pytest.mark.slow  # ~25 s (two jobs, then compare) after ~12 s building the tiny fixtures
def test_multirun_with_wandb_offline_then_compare(tiny_hub, tiny_data, tmp_path):
    sweep = tmp_path / "multirun" / "tiny-sweep"
    p = _vista("-m", *_tiny(tiny_hub, *tiny_data, sweep), "seed=1,2", "experiment_name=sweeptest", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    jobs = _jobs(sweep)
    assert [j.name.split("_", 1)[0] for j in jobs] == ["0", "1"]
    for job, seed in zip(jobs, (1, 2)):
        assert job.name.endswith(f"seed={seed}")
        for name in ("config.yaml", "metrics.jsonl", "summary.json", "event_pipeline.json"):
            assert (job / name).is_file(), (job, name)
        assert json.loads((job / "summary.json").read_text())["status"] == "finished"
        assert len(list(job.glob("wandb/offline-run-*"))) == 1
        text = _wandb_text(job)
        for needle in (f"seed={seed}", "tiny-sweep", "sweeptest", "fedpeft", "test_accuracy", "event_pipeline"):
            assert needle in text, (job.name, needle)
    assert "sweep: job #1 finished" in p.stderr and "2/2 jobs done" in p.stderr
    assert f"sweep directory: {sweep.resolve()}" in p.stdout

    c = _vista("compare", str(sweep), cwd=tmp_path, timeout=120)
    assert c.returncode == 0, c.stderr[-3000:]
    out = sweep / "compare"
    with (out / "compare.csv").open() as f:
        (row,) = list(csv.DictReader(f))  # one configuration, two seeds
    assert row["runs"] == "2" and row["seeds"] == "1 2" and row["final_test_accuracy_mean"]
    assert "± " in (out / "compare.md").read_text() and "test_accuracy" in c.stdout
    for png in ("curves_test_accuracy.png", "final_test_accuracy.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # over 7 s on 2 cores: out of the fast tier (pytest -m 'not slow'), still in CI
def test_a_failing_job_is_recorded_and_the_sweep_goes_on(tiny_hub, tiny_data, tmp_path):
    sweep = tmp_path / "multirun" / "with-failure"
    # seed=-1 is a config error in job #0; job #1 still runs
    p = _vista("-m", *_tiny(tiny_hub, *tiny_data, sweep), "fl.rounds=1", "seed=-1,3", cwd=tmp_path)
    assert p.returncode == 1, p.stderr[-3000:]
    bad, good = _jobs(sweep)
    summary = json.loads((bad / "summary.json").read_text())
    assert summary["status"] == "failed" and "seed: must be >= 0" in summary["error"] and summary["traceback"]
    assert "seed: must be >= 0" in _wandb_text(bad)  # its W&B run, finished as failed
    assert json.loads((good / "summary.json").read_text())["status"] == "finished"
    assert "vista: 1 of 2 sweep jobs failed:" in p.stderr and "#0 seed=-1" in p.stderr


def test_a_single_run_config_error_still_exits_2(tiny_hub, tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    p = _vista(*_tiny(tiny_hub, *tiny_data, tmp_path / "unused"), "seed=-1", f"hydra.run.dir={run_dir}",
               cwd=tmp_path, timeout=120)
    assert p.returncode == 2 and "vista: config error: seed: must be >= 0" in p.stderr
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"


@pytest.mark.slow  # ~20 s: loky worker processes each import torch
def test_joblib_launcher_runs_jobs_in_parallel_processes(tiny_hub, tiny_data, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")  # the `sweeps` extra
    sweep = tmp_path / "multirun" / "joblib"
    p = _vista("-m", *_tiny(tiny_hub, *tiny_data, sweep), "fl.rounds=1", "seed=1,-1", "hydra/launcher=joblib",
               "hydra.launcher.n_jobs=2", cwd=tmp_path, timeout=300)
    assert p.returncode == 1, p.stderr[-3000:]
    good, bad = _jobs(sweep)
    assert json.loads((good / "summary.json").read_text())["status"] == "finished"
    assert json.loads((bad / "summary.json").read_text())["status"] == "failed"
    assert all(len(list(j.glob("wandb/offline-run-*"))) == 1 for j in (good, bad))
    assert "#1 seed=-1" in p.stderr
