"""The out-of-the-box experiment: real MiniLM, real 20 Newsgroups text, federated LoRA."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_default_run_learns_real_text(tmp_path):
    """``python -m vista.main`` with no arguments (only the run dir pinned): >= 0.6 accuracy."""
    run_dir = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "vista.main", f"hydra.run.dir={run_dir}"], capture_output=True,
                       text=True, cwd=tmp_path, timeout=1200)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip().splitlines()[-1] == f"run directory: {run_dir.resolve()}"
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2, 3]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["model"] == "minilm" and summary["num_clients"] == 10 and summary["num_labels"] == 5
    assert summary["test_accuracy"] >= 0.6, summary
    assert rows[-1]["test_loss"] < rows[0]["test_loss"]
    assert "round 3/3" in p.stderr
