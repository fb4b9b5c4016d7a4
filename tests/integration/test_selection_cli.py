"""``python -m vista.main selection=<method>``: the config group drives a selection run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vista.main", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def _common(hub: Path, data: Path, part: Path, run_dir: Path) -> list[str]:
    return [f"paths.model_hub={hub}", "dataset=fednlp", f"dataset.data_file={data}", "partition=fednlp_file",
            f"partition.file={part}", "partition.method=uniform", "fl.rounds=1", "fl.clients_per_round=2",
            "fl.batch_size=8", "fl.max_seq_len=32", "scheduler.num_workers=0", f"hydra.run.dir={run_dir}"]


@pytest.mark.slow  # over 7 s on 2 cores: out of the fast tier (pytest -m 'not slow'), still in CI
def test_cli_logme_selection_then_finetune(arch_hub, tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    p = _run("selection=logme", "selection.candidates=[bert,gpt2]", "selection.then_finetune=true",
             "selection.scores=[hscore,param_prior]", *_common(arch_hub, *tiny_data, run_dir), cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    sel = json.loads((run_dir / "selection.json").read_text())
    assert sel["method"] == "logme" and set(sel["ranking"]) == {"bert", "gpt2"}
    assert sel["privacy"]["secure_agg"] is True and sel["privacy"]["min_examples"] == 8  # on in the config
    assert set(sel["scores"]) == {"logme", "hscore", "param_prior"}
    assert f"chosen model: {sel['chosen']}" in p.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["chosen"] == sel["chosen"]
    assert json.loads((run_dir / "finetune" / "summary.json").read_text())["model"] == sel["chosen"]
    assert [json.loads(x)["candidate"] for x in (run_dir / "selection.jsonl").read_text().splitlines()] == \
        sel["ranking"]


@pytest.mark.slow  # over 7 s on 2 cores: out of the fast tier (pytest -m 'not slow'), still in CI
def test_cli_selection_config_errors(arch_hub, tiny_data, tmp_path):
    common = _common(arch_hub, *tiny_data, tmp_path / "run")
    p = _run("selection=logme", "selection.candidates=[bert]", *common, cwd=tmp_path)
    assert p.returncode == 2 and "selection.candidates: need at least 2" in p.stderr
    p = _run("selection=hybrid", "selection.metric=accuracy", "selection.candidates=[bert,gpt2]", *common,
             cwd=tmp_path)
    assert p.returncode == 2 and "unknown score 'accuracy'" in p.stderr
    p = _run("selection=logme", "selection.candidates=[bert,nothere]", *common, cwd=tmp_path)
    assert p.returncode == 2 and "nothere" in p.stderr  # a missing model is a user error: one line, exit 2
