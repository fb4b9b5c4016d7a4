"""Where a run's memory goes: each process's PSS at the moment the process tree peaks.

Runs one ``vs_flower.py`` runner (``--child plain|vista1|vista2|...``) on a workload that
``vs_flower.py`` prepared in ``--workdir``, samples ``/proc/PID/smaps_rollup`` of every process
in its tree every ``--interval`` s, and prints, at the tree's peak, each process's PSS split into
anonymous (heap, tensors) and file-backed (libraries, memory-mapped weights) pages, its private
dirty pages and the dirty pages it shares (a fork server's imports, shared with its workers).
One run, no repeats: the heap's fragmentation moves a training process's peak by up to ~0.7 GB
between identical runs (benchmarks/README.md), so compare like with like over several runs.

    python benchmarks/vs_flower.py --runners plain --repeats 1 --workdir /tmp/vsf   # prepares the workload
    python benchmarks/pss_breakdown.py --workdir /tmp/vsf --child vista1
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import procmem  # benchmarks/ is sys.path[0]

MB = 1024 * 1024
FIELDS = ("Pss", "Pss_Anon", "Pss_File", "Private_Dirty", "Shared_Dirty")


def describe(pid: int, root: int) -> str:
    """What the process is: the runner, a Vista worker (``vista-w0``, ...), the fork server, ..."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"
    if pid == root:
        return "runner (Vista: the main process)"
    for marker, name in (("forkserver", "fork server"), ("resource_tracker", "resource tracker"),
                         ("raylet", "ray: raylet"), ("gcs_server", "ray: gcs")):
        if marker in cmd:
            return name
    return comm


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True, help="a vs_flower.py work directory (workload.json)")
    ap.add_argument("--child", required=True, help="the runner: plain, vista1, vista2, flower1, flower2")
    ap.add_argument("--hub", default=os.environ.get("VISTA_MODEL_HUB", "~/.cache/vista-bench/hub"))
    ap.add_argument("--model", default=None, help="as given to vs_flower.py (default: the workload's)")
    ap.add_argument("--interval", type=float, default=0.2)
    args = ap.parse_args(argv)
    model = args.model or __import__("json").loads((Path(args.workdir) / "workload.json").read_text())["model"]
    cmd = [sys.executable, str(Path(__file__).with_name("vs_flower.py")), "--child", args.child,
           "--workdir", args.workdir, "--hub", args.hub, "--model", model]
    proc = subprocess.Popen(cmd, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"}, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    peak, at_peak, own_peak = 0, {}, {}
    while proc.poll() is None:
        snap = {}
        for pid in procmem.tree_pids(proc.pid, proc.pid):
            r = procmem.rollup(pid)
            if r:
                snap[pid] = (describe(pid, proc.pid), *(r.get(f, 0) / MB for f in FIELDS))
                own_peak[pid] = (snap[pid][0], max(own_peak.get(pid, ("", 0.0))[1], snap[pid][1]))
        total = sum(v[1] for v in snap.values())
        if total > peak:
            peak, at_peak = total, snap
        time.sleep(args.interval)
    last = (proc.stdout.read().decode().strip().splitlines() or ["(no result)"])[-1]
    print(f"{args.child}: peak PSS of the tree {peak:,.0f} MB (rc {proc.returncode})")
    print("| process | " + " | ".join(f"{f} MB" for f in FIELDS) + " | own peak PSS MB |")
    print("|---|" + "---|" * (len(FIELDS) + 1))
    for pid, (name, *vals) in sorted(at_peak.items(), key=lambda kv: -kv[1][1]):
        print(f"| {pid} {name} | " + " | ".join(f"{v:,.0f}" for v in vals) + f" | {own_peak[pid][1]:,.0f} |")
    print(f"result: {last[:300]}")


if __name__ == "__main__":
    main()
