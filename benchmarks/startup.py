"""Start-up: from launching ``python -m vista.main`` to its first client job running.

Each variant is the real CLI in a fresh process (default run with MiniLM, the smoke preset,
one round), interleaved and repeated. The first client job's start is the worker's log line
``job r1.client_train.g1.j0 ... train(...)``; the worker-ready and scheduler phases come from
the worker logs and ``event_pipeline.json``. Variants: ``forkserver`` (the default: workers
forked from a server that preloaded torch, transformers and peft, started before Hydra
composes the config, itself a fork of the main process after its ``import torch``),
``late-server`` (the same server started once the config is composed:
``VISTA_WARM_UP_EARLY=0``), ``fresh-server`` (the server started from a fresh interpreter, as
multiprocessing does: ``VISTA_FORK_SERVER_FROM_PARENT=0``) and ``spawn`` (``VISTA_START_METHOD=spawn``: each worker
imports everything itself).

    python benchmarks/startup.py --repeats 3
    python benchmarks/startup.py --repeats 3 --args scheduler.num_workers=1

Prints per variant the median (and range) of: time to the first client job, the parent's
time to the end of its imports and config (``scheduler_start`` begins), the workers' start
(from launch to the last ``ready``), and the run's total wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
VARIANTS = {"forkserver": {"VISTA_START_METHOD": "forkserver"},
            "late-server": {"VISTA_START_METHOD": "forkserver", "VISTA_WARM_UP_EARLY": "0"},
            "fresh-server": {"VISTA_START_METHOD": "forkserver", "VISTA_FORK_SERVER_FROM_PARENT": "0"},
            "spawn": {"VISTA_START_METHOD": "spawn"}}


def _stamp(line: str) -> float | None:
    m = STAMP.match(line)
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() if m else None


def one_run(variant: str, extra: list[str], work: Path) -> dict[str, float]:
    run_dir = work / f"{variant}_{time.monotonic_ns()}"
    env = {**os.environ, **VARIANTS[variant]}
    cmd = [sys.executable, "-m", "vista.main", "experiment=smoke", "fl.rounds=1", "recorder=local",
           f"hydra.run.dir={run_dir}", *extra]
    launched = time.time()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=work, timeout=900)
    total = time.time() - launched
    if p.returncode != 0:
        raise RuntimeError(f"{variant}: exit {p.returncode}\n{p.stderr[-2000:]}")
    first, ready = None, []
    for log in sorted((run_dir / "workers").glob("worker_*.log")):
        for line in log.read_text().splitlines():
            t = _stamp(line)
            if t is None:
                continue
            if "client_train" in line and "train(" in line:
                first = t if first is None else min(first, t)
            elif "ready on" in line:
                ready.append(t)
    return {"first_job": first - launched, "workers_ready": max(ready) - launched, "total": total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--args", nargs="*", default=[], help="more overrides for every run")
    args = ap.parse_args()
    results: dict[str, list[dict[str, float]]] = {v: [] for v in args.variants}
    with tempfile.TemporaryDirectory(prefix="vista-startup-") as tmp:
        for r in range(args.repeats):
            for v in args.variants:  # interleaved: drift in the machine's load hits every variant
                res = one_run(v, args.args, Path(tmp))
                results[v].append(res)
                print(f"repeat {r + 1} {v}: " + "  ".join(f"{k} {x:.2f}s" for k, x in res.items()), file=sys.stderr)
    print(f"| variant | first client job (s) | workers ready (s) | total (s) |  ({args.repeats} runs each; "
          f"median [min-max]; {os.cpu_count()} CPUs; args {' '.join(args.args) or '-'})")
    print("|---|---|---|---|")
    for v, rs in results.items():
        cells = []
        for k in ("first_job", "workers_ready", "total"):
            xs = [r[k] for r in rs]
            cells.append(f"{statistics.median(xs):.2f} [{min(xs):.2f}-{max(xs):.2f}]")
        print(f"| {v} | " + " | ".join(cells) + " |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
