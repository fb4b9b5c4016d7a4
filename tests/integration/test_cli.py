"""``python -m vista.main model=roberta peft=lora`` against a temp hub with a tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def _run(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vista.main", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


def _common(hub: Path, data: Path, part: Path, run_dir: Path) -> list[str]:
    return [f"paths.model_hub={hub}", "dataset=fednlp", f"dataset.data_file={data}", "partition=fednlp_file",
            f"partition.file={part}", "fl.rounds=2", "fl.clients_per_round=2", "fl.batch_size=8",
            "fl.max_seq_len=32", f"hydra.run.dir={run_dir}"]


def test_cli_runs_roberta_lora_from_the_hub(tiny_hub, tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    p = _run("model=roberta", "peft=lora", *_common(tiny_hub, *tiny_data, run_dir), "partition.method=uniform",
             "scheduler.num_workers=2", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip().splitlines()[-1] == f"run directory: {run_dir.resolve()}"
    assert "round 2/2" in p.stderr + p.stdout
    for name in ["config.yaml", "metrics.jsonl", "summary.json", "event_pipeline.json", "adapter.safetensors"]:
        assert (run_dir / name).is_file(), name
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["model"] == "roberta" and summary["test_accuracy"] == rows[-1]["test_accuracy"]
    config = (run_dir / "config.yaml").read_text()
    assert f"hub_dir: {tiny_hub}" in config and "${" not in config  # resolved


@pytest.mark.slow  # over 7 s on 2 cores: out of the fast tier (pytest -m 'not slow'), still in CI
def test_cli_finds_alpha_1_as_alpha_1_0_and_runs_inline(tiny_hub, tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    p = _run("model=roberta", *_common(tiny_hub, *tiny_data, run_dir),
             'partition.method="niid_label_clients=4_alpha=1"', "scheduler.num_workers=0", "fl.rounds=1",
             cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads((run_dir / "summary.json").read_text())["partition"] == "niid_label_clients=4_alpha=1.0"


def test_cli_unknown_partition_lists_the_known_ones(tiny_hub, tiny_data, tmp_path):
    p = _run("model=roberta", *_common(tiny_hub, *tiny_data, tmp_path / "run"), 'partition.method="kmeans_clusters=4"',
             cwd=tmp_path)
    assert p.returncode == 2  # a user error after validation: one line, exit 2
    assert [line for line in p.stderr.splitlines() if line.startswith("vista:")] == p.stderr.strip().splitlines()
    assert "kmeans_clusters=4" in p.stderr and "uniform" in p.stderr and "niid_label_clients=4_alpha=1.0" in p.stderr


@pytest.mark.slow  # over 7 s on 2 cores: out of the fast tier (pytest -m 'not slow'), still in CI
def test_cli_partition_given_as_parts(tiny_hub, tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    p = _run("model=roberta", *_common(tiny_hub, *tiny_data, run_dir), "partition.kind=niid_label",
             "partition.clients=4", "partition.alpha=1", "scheduler.num_workers=0", "fl.rounds=1", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads((run_dir / "summary.json").read_text())["partition"] == "niid_label_clients=4_alpha=1.0"


def test_cli_unquoted_equals_gets_a_hint_not_only_a_parser_error(tmp_path):
    p = _run("partition.method=niid_label_clients=100_alpha=1", cwd=tmp_path, timeout=60)
    assert p.returncode == 2
    assert "'partition.method=\"niid_label_clients=100_alpha=1\"'" in p.stderr and "partition.kind" in p.stderr


@pytest.mark.slow  # over 7 s on 2 cores: out of the fast tier (pytest -m 'not slow'), still in CI
def test_cli_user_errors_after_validation_are_one_line_exit_2(tiny_hub, tiny_data, tmp_path):
    """Clients per round above the partition's clients; a label the model has no class for
    (found by a worker, reading a client's data): one line each, exit 2, no traceback."""
    p = _run("model=roberta", *_common(tiny_hub, *tiny_data, tmp_path / "a"), "partition.method=uniform",
             "fl.clients_per_round=1000", cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        "vista: fl.clients_per_round=1000 but the partition 'uniform' has only 4 clients; lower "
        "fl.clients_per_round or choose a partition with more clients"]
    import shutil

    import h5py

    data, part = tiny_data
    bad = tmp_path / "bad_data.h5"
    shutil.copy(data, bad)
    with h5py.File(bad, "r+") as f:
        del f["Y/0"]
        f["Y/0"] = "no-such-label"  # example 0 is in a client's train split, not in the test split
    p = _run("model=roberta", *_common(tiny_hub, bad, part, tmp_path / "b"), "partition.method=uniform",
             "fl.clients_per_round=4", "scheduler.num_workers=1", cwd=tmp_path)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = [line for line in p.stderr.splitlines() if line.strip() and not line.startswith("round ")]
    assert len(lines) == 1 and lines[0].startswith("vista: ") and "'no-such-label'" in lines[0], lines
    assert "Traceback" not in p.stderr
