"""No memory growth over rounds in the workers (issue 15, point 5): the short version of
benchmarks/memory_rounds.py, 50 rounds of a tiny RoBERTa on 2 worker processes (~20-30 s).

Each worker's memory is read at the end of every round (keyed by the ``round N/M`` line the driver
prints: benchmarks/procmem.py's RoundSampler), as the PSS of its anonymous and shared-memory pages
(heap, tensors, /dev/shm): file-backed pages are left out because their share moves whenever some
other process on the host maps or unmaps the same libraries.

The bound: measured on the 2-core CPU (2026-12-03), a worker's memory rose 0.3-0.45 MB from round
10 to round 50 (PSS; 0.7-1.1 MB above the first 5 rounds' mean at most, flattening after ~20 rounds).
8 MB is 15x that drift, and still catches a leak of 0.2 MB per job (a worker runs 40-60 jobs in these
40 rounds): keeping one model + optimiser copy, a batch of activations or a client's encoded data per
job would each pass it.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from support.experiments import tiny_parts
from support.tiny import write_fednlp_pair

from vista.drivers.fedpeft import run_fedpeft
from vista.scheduler import SchedulerSpec

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ROUNDS, FROM_ROUND = 50, 10
BOUND_MB = 8.0


def _procmem():
    spec = importlib.util.spec_from_file_location("bench_procmem", ROOT / "benchmarks" / "procmem.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_worker_memory_stays_flat_over_50_rounds(tiny_hub: Path, tmp_path: Path) -> None:
    procmem = _procmem()
    data, part = write_fednlp_pair(tmp_path / "data", n_clients=8, n_per_label=16)
    parts = replace(tiny_parts(tiny_hub, data, part, rounds=ROUNDS, eval_every=1),
                    scheduler=SchedulerSpec(num_workers=2, device="cpu", threads_per_worker=1))
    sampler = procmem.RoundSampler(measure=procmem.anon_bytes)
    summary = run_fedpeft(parts, tmp_path / "run", progress_stream=sampler)

    rows = sampler.rows
    assert sorted(rows) == list(range(1, ROUNDS + 1)), "every round prints its line (eval_every=1)"
    assert summary["executor"]["respawns"] == 0
    pids = [p["pid"] for p in summary["executor"]["placement"]]
    assert len(pids) == 2
    growth = {}
    for pid in pids:
        assert pid in rows[FROM_ROUND]["workers"] and pid in rows[ROUNDS]["workers"], f"worker {pid} not sampled"
        growth[pid] = (rows[ROUNDS]["workers"][pid] - rows[FROM_ROUND]["workers"][pid]) / procmem.MB
    parent = (rows[ROUNDS]["parent"] - rows[FROM_ROUND]["parent"]) / procmem.MB
    print(f"memory growth from round {FROM_ROUND} to {ROUNDS}: workers "
          f"{', '.join(f'{g:+.2f} MB' for g in growth.values())}; parent (this pytest process) {parent:+.2f} MB")
    for pid, g in growth.items():
        assert g < BOUND_MB, (f"worker {pid} grew {g:.1f} MB from round {FROM_ROUND} to {ROUNDS} "
                              f"(bound {BOUND_MB} MB): series {[rows[r]['workers'].get(pid) for r in sorted(rows)]}")
