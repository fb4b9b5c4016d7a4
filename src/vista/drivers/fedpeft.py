"""The FedPEFT driver: the pipeline of one federated fine-tuning experiment.

Per round: sample clients (seeded) -> broadcast the global trainable state and train
locally on each sampled client (parallel) -> aggregate -> evaluate the global model on
the test split every ``eval_every`` rounds and in the last (parallel, fixed shards) ->
record. Only trainable tensors and small sums cross process boundaries.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from vista.data.fednlp import FederatedData
from vista.fl.aggregators import ClientUpdate
from vista.fl.client import EvalSums, macro_f1
from vista.fl.sampling import client_seed, sample_clients
from vista.pipeline import FLContext, JobResult, Jobs, JobSpec, Pipeline, Task, payload_nbytes

KEPT = ("global_state", "trainable_params", "total_params", "bytes_up_total", "bytes_down_total",
        "best_test_accuracy", "best_round", "run_started", "history")


@dataclass(frozen=True)
class FedPEFTRun:
    rounds: int
    clients_per_round: int
    eval_every: int
    seed: int
    eval_shard_size: int = 128


def fedpeft_pipeline(
    run: FedPEFTRun,
    fed: FederatedData,
    aggregator: Any,
    log_metrics: Callable[[dict[str, Any]], None],
    on_round: Callable[[FLContext, dict[str, Any] | None], None] = lambda ctx, m: None,
) -> Pipeline:
    clients = fed.client_ids
    if run.clients_per_round > len(clients):
        raise ValueError(
            f"fl.clients_per_round={run.clients_per_round} but the partition {fed.partition.method!r} "
            f"has only {len(clients)} clients"
        )
    test = fed.test_indices
    shards = [test[i : i + run.eval_shard_size] for i in range(0, len(test), run.eval_shard_size)]

    # -- setup ------------------------------------------------------------------------------
    def plan_init(ctx: FLContext) -> Jobs:
        return Jobs([JobSpec("init_state", "init")])

    def collect_init(ctx: FLContext, results: list[JobResult]) -> None:
        v = results[0].value
        ctx.keep(*KEPT)
        ctx["global_state"] = v["state"]
        ctx["trainable_params"], ctx["total_params"] = v["trainable_params"], v["total_params"]
        ctx["bytes_up_total"] = ctx["bytes_down_total"] = 0
        ctx["best_test_accuracy"], ctx["best_round"] = -1.0, 0
        ctx["run_started"] = time.perf_counter()
        ctx["history"] = []

    # -- one round ----------------------------------------------------------------------------
    def sample(ctx: FLContext) -> None:
        ctx["round_started"] = time.perf_counter()
        ctx["clients"] = sample_clients(clients, run.clients_per_round, run.seed, ctx.round)

    def plan_train(ctx: FLContext) -> Jobs:
        specs = [JobSpec("train", c, {"seed": client_seed(run.seed, ctx.round, c)}) for c in ctx["clients"]]
        return Jobs(specs, shared={"state": ctx["global_state"]})

    def collect_train(ctx: FLContext, results: list[JobResult]) -> None:
        updates = [ClientUpdate(r.key, r.value["state"], r.value["num_examples"],
                                {"loss": r.value["loss"], "steps": r.value["steps"], "seconds": r.seconds})
                   for r in results]
        for u in updates:
            ctx.set("train_loss", u.metrics["loss"], role=f"client:{u.client}")
            ctx.set("num_examples", u.num_examples, role=f"client:{u.client}")
        ctx["updates"] = updates
        down = payload_nbytes(ctx["global_state"]) * len(updates)
        up = sum(payload_nbytes(u.state) for u in updates)
        ctx["bytes_down"], ctx["bytes_up"] = down, up
        ctx["bytes_down_total"] += down
        ctx["bytes_up_total"] += up
        n = sum(u.num_examples for u in updates)
        ctx["train_loss"] = sum(u.metrics["loss"] * u.num_examples for u in updates) / n
        ctx["train_examples"] = n
        ctx["train_steps"] = sum(u.metrics["steps"] for u in updates)

    def aggregate(ctx: FLContext) -> None:
        ctx["global_state"] = aggregator.aggregate(ctx["global_state"], ctx["updates"])
        ctx["updates"] = None  # the client tensors are no longer needed this round

    def plan_eval(ctx: FLContext) -> Jobs:
        specs = [JobSpec("evaluate", i, {"indices": s.tolist()}) for i, s in enumerate(shards)]
        return Jobs(specs, shared={"state": ctx["global_state"]})

    def collect_eval(ctx: FLContext, results: list[JobResult]) -> None:
        total: EvalSums = results[0].value
        for r in results[1:]:
            total = total + r.value
        ctx["test_accuracy"] = total.correct / total.n
        ctx["test_loss"] = total.loss_sum / total.n
        ctx["test_macro_f1"] = macro_f1(total.confusion)
        if ctx["test_accuracy"] > ctx["best_test_accuracy"]:
            ctx["best_test_accuracy"], ctx["best_round"] = ctx["test_accuracy"], ctx.round

    def end_round(ctx: FLContext) -> None:
        metrics = None
        if "test_accuracy" in ctx:
            metrics = {
                "round": ctx.round,
                "test_accuracy": ctx["test_accuracy"],
                "test_loss": ctx["test_loss"],
                "test_macro_f1": ctx["test_macro_f1"],
                "train_loss": ctx["train_loss"],
                "bytes_up": ctx["bytes_up"],
                "bytes_down": ctx["bytes_down"],
                "bytes_up_total": ctx["bytes_up_total"],
                "bytes_down_total": ctx["bytes_down_total"],
                "round_seconds": time.perf_counter() - ctx["round_started"],
                "clients": ctx["clients"],
            }
            log_metrics(metrics)
            ctx["history"].append(metrics)
        on_round(ctx, metrics)

    return Pipeline(
        setup=[Task("init_global", plan_init, mode="parallel", collect=collect_init)],
        tasks=[
            Task("sample_clients", sample),
            Task("client_train", plan_train, mode="parallel", collect=collect_train),
            Task("aggregate", aggregate),
            Task("evaluate", plan_eval, mode="parallel", collect=collect_eval, every=run.eval_every, also_last=True),
        ],
        rounds=run.rounds,
        on_round_end=end_round,
    )


def summarize(ctx: FLContext) -> dict[str, Any]:
    last = ctx["history"][-1] if ctx["history"] else {}
    return {
        "rounds": ctx.round,
        "final_round": last.get("round"),
        "test_accuracy": last.get("test_accuracy"),
        "test_loss": last.get("test_loss"),
        "test_macro_f1": last.get("test_macro_f1"),
        "best_test_accuracy": ctx["best_test_accuracy"],
        "best_round": ctx["best_round"],
        "bytes_up_total": ctx["bytes_up_total"],
        "bytes_down_total": ctx["bytes_down_total"],
        "trainable_params": ctx["trainable_params"],
        "total_params": ctx["total_params"],
        "wall_seconds": time.perf_counter() - ctx["run_started"],
        "mean_round_seconds": float(np.mean([h["round_seconds"] for h in ctx["history"]])) if ctx["history"] else None,
    }
