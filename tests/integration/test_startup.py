"""Start-up (issue 15.2): the CLI's own import is light, workers fork from a server that has
already imported torch & co., and the default path imports no wandb, matplotlib,
scikit-learn or sentence-transformers in any process. Times are benchmarks/startup.py's."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HEAVY_NEVER = ("wandb", "matplotlib", "sklearn", "sentence_transformers")
IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)$")


def _imported(text: str) -> set[str]:
    return {m.group(1) for line in text.splitlines() if (m := IMPORTED.match(line))}


def test_importing_the_cli_loads_no_torch_scipy_or_transformers():
    code = ("import sys, vista.main; print(sorted(m for m in ('torch', 'scipy', 'transformers', 'peft', 'h5py', "
            "'sklearn', 'wandb', 'matplotlib', 'sentence_transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_a_default_run_forks_warm_workers_and_imports_nothing_heavy(tiny_hub, tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    args = ["model=roberta", f"paths.model_hub={tiny_hub}", "dataset=fednlp", f"dataset.data_file={tiny_data[0]}",
            "partition=fednlp_file", f"partition.file={tiny_data[1]}", "partition.method=uniform", "fl.rounds=1",
            "fl.clients_per_round=2", "fl.batch_size=8", "fl.max_seq_len=32", "scheduler.num_workers=2",
            "scheduler.threads_per_worker=1", f"hydra.run.dir={run_dir}"]
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "vista.main", *args], capture_output=True,
                       text=True, cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    parent_and_server = _imported(p.stderr)  # the fork server's preload prints here too
    logs = sorted((run_dir / "workers").glob("worker_*.log"))
    assert len(logs) == 2
    workers = [_imported(log.read_text()) for log in logs]
    for mods in (parent_and_server, *workers):
        assert not {m.split(".")[0] for m in mods} & set(HEAVY_NEVER)
    # the server imported torch, transformers and peft once; the workers, forked from it, did not
    assert {"torch", "transformers", "peft"} <= parent_and_server
    for mods in workers:
        assert not {"torch", "transformers", "peft"} & mods, sorted(mods)[:20]
        assert mods, "a worker's imports were not recorded (its log)"
