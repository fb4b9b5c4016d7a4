"""No growth over rounds (issue 15, point 5): PSS of the parent and of each worker, sampled at the end
of every round of a long tiny run, inline and with 2 worker processes.

A tiny RoBERTa (hidden 32, built on the fly like tests/support/tiny.py) + LoRA r4 on 8 clients,
2 per round, evaluated every round (so every round prints its line: the sampler is keyed by the
``round N/M`` lines the driver prints, :class:`procmem.RoundSampler`), checkpoints every round.
Each executor runs in a fresh process. Per process it prints the mean of the first 5 and of the
last 5 rounds, the largest growth over the first 5 rounds' mean, the growth from round 10 to the
last, and the slope (MB per round, least squares from round 10 on). Prints; asserts nothing
(tests/integration/test_memory_rounds.py is the short version that asserts a bound).

    python benchmarks/memory_rounds.py               # 50 rounds, inline and 2 workers
    python benchmarks/memory_rounds.py --quick       # 12 rounds
    python benchmarks/memory_rounds.py --rounds 200 --workers 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import procmem

ROOT = Path(__file__).resolve().parents[1]


def assets(work: Path) -> tuple[Path, Path, Path]:
    """(model hub, data file, partition file), built once in ``work``."""
    sys.path.insert(0, str(ROOT / "tests"))
    from support.tiny import build_tiny_roberta, write_fednlp_pair

    hub = work / "hub"
    if not (hub / "roberta-base" / "config.json").is_file():
        build_tiny_roberta(hub / "roberta-base")
    data, part = work / "tiny_data.h5", work / "tiny_partition.h5"
    if not data.is_file():
        write_fednlp_pair(work, n_clients=8, n_per_label=16)
    return hub, data, part


def child(args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from support.experiments import tiny_parts

    from vista.drivers.fedpeft import run_fedpeft
    from vista.scheduler import SchedulerSpec

    work = Path(args.workdir)
    hub, data, part = assets(work)
    parts = tiny_parts(hub, data, part, rounds=args.rounds, eval_every=1)
    parts = replace(parts, scheduler=SchedulerSpec(num_workers=args.child, device="cpu", threads_per_worker=1))
    sampler = procmem.RoundSampler(measure=procmem.anon_bytes if args.measure == "anon" else procmem.pss_bytes)
    run_fedpeft(parts, Path(tempfile.mkdtemp(prefix=f"w{args.child}_", dir=work)), progress_stream=sampler)
    return {"rows": sampler.rows}


def series(rows: dict[str, dict]) -> dict[str, list[float]]:
    """Per process, MB by round: ``parent`` and ``worker <pid>`` (inline: the parent is the worker)."""
    rounds = sorted(rows, key=int)
    out = {"parent": [rows[r]["parent"] / procmem.MB for r in rounds]}
    for pid in sorted({p for r in rounds for p in rows[r]["workers"]}):
        out[f"worker {pid}"] = [rows[r]["workers"].get(pid, float("nan")) / procmem.MB for r in rounds]
    return out


def summary(mb: list[float], skip: int = 10) -> dict[str, float]:
    first, last = statistics.mean(mb[:5]), statistics.mean(mb[-5:])
    tail = mb[skip - 1:] if len(mb) > skip + 1 else mb
    xs = range(len(tail))
    mx, my = statistics.mean(xs), statistics.mean(tail)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, tail)) / max(sum((x - mx) ** 2 for x in xs), 1e-9)
    return {"first5": first, "last5": last, "max_growth": max(mb) - first,
            "from_round_10": mb[-1] - mb[min(skip, len(mb)) - 1], "slope": slope}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="0: inline")
    ap.add_argument("--measure", choices=("pss", "anon"), default="pss",
                    help="pss: all pages (default); anon: anonymous + shared-memory pages only (what a leak grows)")
    ap.add_argument("--quick", action="store_true", help="12 rounds")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds = 12
    work = Path(args.workdir or tempfile.mkdtemp(prefix="vista_memory_rounds_"))
    work.mkdir(parents=True, exist_ok=True)
    args.workdir = str(work)
    if args.child is not None:
        print(json.dumps(child(args)), flush=True)
        return
    assets(work)
    print(f"tiny RoBERTa + LoRA r4, 8 clients, 2 per round, {args.rounds} rounds, evaluated and checkpointed every "
          f"round; {args.measure.upper()} at each round's end; {procmem.versions(('torch', 'transformers', 'peft'))}")
    head = ("executor", "process", "first 5 MB", "last 5 MB", "max growth MB", "round 10 -> last MB", "MB / round")
    table = []
    for w in args.workers:
        name = "inline" if w == 0 else f"{w} workers"
        print(f"{name} ...", file=sys.stderr, flush=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--rounds", str(args.rounds), "--workdir", str(work),
               "--measure", args.measure, "--child", str(w)]
        run = procmem.run_fresh(cmd, echo=False)
        if run.rc != 0 or not run.result:
            print(f"{name} failed (rc {run.rc}):\n{run.tail}", file=sys.stderr)
            continue
        per = series(run.result["rows"])
        (work / f"series_{w}.json").write_text(json.dumps(per))
        for proc, mb in per.items():
            s = summary(mb)
            table.append(f"| {name} | {proc} | {s['first5']:.1f} | {s['last5']:.1f} | {s['max_growth']:+.1f} | "
                         f"{s['from_round_10']:+.1f} | {s['slope']:+.3f} |")
        table.append(f"| {name} | whole tree, peak | | | | | {run.peak_pss_mb:,.0f} MB peak |")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    print("\n".join(table))
    print(f"per-round series: {work}/series_*.json")


if __name__ == "__main__":
    main()
