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
import json
import os
import sys
from pathlib import Path

import procmem  # benchmarks/ is sys.path[0]

MB = 1024 * 1024
FIELDS = ("Pss", "Pss_Anon", "Pss_File", "Private_Dirty", "Shared_Dirty")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True, help="a vs_flower.py work directory (workload.json)")
    ap.add_argument("--child", required=True, help="the runner: plain, vista1, vista2, flower1, flower2")
    ap.add_argument("--hub", default=os.environ.get("VISTA_MODEL_HUB", "~/.cache/vista-bench/hub"))
    ap.add_argument("--model", default=None, help="as given to vs_flower.py (default: the workload's)")
    ap.add_argument("--interval", type=float, default=0.2)
    args = ap.parse_args(argv)
    model = args.model or json.loads((Path(args.workdir) / "workload.json").read_text())["model"]
    cmd = [sys.executable, str(Path(__file__).with_name("vs_flower.py")), "--child", args.child,
           "--workdir", args.workdir, "--hub", args.hub, "--model", model]
    run = procmem.run_fresh(cmd, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"}, interval=args.interval,
                            echo=False, detail=True)
    print(f"{args.child}: peak PSS of the tree {run.peak_pss_mb:,.0f} MB (rc {run.rc})")
    print("| process | " + " | ".join(f"{f} MB" for f in FIELDS) + " | own peak PSS MB |")
    print("|---|" + "---|" * (len(FIELDS) + 1))
    for pid, (name, r) in sorted(run.at_peak.items(), key=lambda kv: -kv[1][1].get("Pss", 0)):
        print(f"| {pid} {name} | " + " | ".join(f"{r.get(f, 0) / MB:,.0f}" for f in FIELDS)
              + f" | {run.own_peak.get(pid, 0) / MB:,.0f} |")
    print(f"result: {json.dumps(run.result)[:300] if run.result is not None else run.tail[-300:]}")


if __name__ == "__main__":
    main()
