"""The FedPEFT driver: the pipeline of one federated fine-tuning experiment.

Per round: sample clients (seeded) -> broadcast the global trainable state (in
``fl.transfer_dtype``) and train locally on each sampled client (parallel) -> aggregate
(the aggregator's own state, e.g. a server optimiser's moments, is kept across rounds) ->
every ``eval_every`` rounds and in the last, score the global model on the test split and
on every client's own test split (parallel, fixed shards, per-example predictions) ->
record. The best round's state and full evaluation (global and per client) are kept for
the summary and ``adapter_best.safetensors``. Only trainable tensors and small arrays cross process boundaries, and the
bytes each client sends and receives are counted exactly.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from vista.data.fednlp import FederatedData
from vista.fl.aggregators import ClientUpdate
from vista.fl.client import EvalSums, Predictions, macro_f1, score
from vista.fl.sampling import client_seed, sample_clients
from vista.fl.transfer import to_wire
from vista.pipeline import FLContext, JobResult, Jobs, JobSpec, Pipeline, Task, payload_nbytes

log = logging.getLogger(__name__)

KEPT = ("global_state", "aggregator_state", "trainable_params", "total_params", "method",
        "bytes_up_total", "bytes_down_total", "forward_passes_total", "backward_passes_total",
        "best_test_accuracy", "best_round", "best_state", "best_eval", "run_started", "history")


@dataclass(frozen=True)
class FedPEFTRun:
    rounds: int
    clients_per_round: int
    eval_every: int
    seed: int
    eval_shard_size: int = 128
    transfer_dtype: str = "float32"
    eval_clients: bool = True  # score the global model on each client's own test split
    personal_eval: bool = False  # score each sampled client's local model on its test split
    client_failures: str = "stop"  # "drop": a failed client job leaves the round, the rest aggregate
    min_clients: int = 1  # with "drop": fewer successful clients than this stops the run
    local_epochs: int = 1  # for counting forward/backward passes


@dataclass(frozen=True)
class FedPEFTCheckpoint:
    """Where a run stopped: enough to continue it exactly (budgeted search trains a candidate
    for a few rounds, and only the survivors on). ``kept`` holds the context entries kept
    across rounds (global and aggregator state, best round, history, byte totals)."""

    round: int
    kept: dict[str, Any]

    @classmethod
    def of(cls, ctx: FLContext) -> "FedPEFTCheckpoint":
        return cls(ctx.round, {k: ctx[k] for k in KEPT})


class TooFewClientsError(RuntimeError):
    """With ``fl.client_failures=drop``: a round kept fewer clients than ``fl.min_clients``."""


@dataclass(frozen=True)
class EvalPlan:
    """Which test examples to predict (each once) and how to score them."""

    indices: np.ndarray  # sorted unique union of the global and client test splits
    labels: np.ndarray  # aligned with indices
    test: np.ndarray  # the global test split
    client_tests: dict[int, np.ndarray]  # client -> its test indices (clients with any)
    num_labels: int

    def sums(self, pred: np.ndarray, loss: np.ndarray, subset: np.ndarray) -> EvalSums:
        pos = np.searchsorted(self.indices, subset)
        return score(self.labels[pos], pred[pos], loss[pos], self.num_labels)


def eval_metrics(sums: EvalSums, prefix: str = "test_") -> dict[str, float]:
    return {f"{prefix}accuracy": sums.correct / max(sums.n, 1), f"{prefix}loss": sums.loss_sum / max(sums.n, 1),
            f"{prefix}macro_f1": macro_f1(sums.confusion)}


def client_summary(rows: list[dict[str, Any]], key: str, prefix: str) -> dict[str, float]:
    """Mean, std, min and 10th percentile of a per-client metric (the fairness view)."""
    vals = np.asarray([r[key] for r in rows if r.get(key) is not None], dtype=np.float64)
    if not len(vals):
        return {}
    return {f"{prefix}_mean": float(vals.mean()), f"{prefix}_std": float(vals.std()),
            f"{prefix}_min": float(vals.min()), f"{prefix}_p10": float(np.percentile(vals, 10))}


def fedpeft_pipeline(
    run: FedPEFTRun,
    fed: FederatedData,
    aggregator: Any,
    log_metrics: Callable[[dict[str, Any]], None],
    on_round: Callable[[FLContext, dict[str, Any] | None], None] = lambda ctx, m: None,
    rank_of: Callable[[int], int | None] = lambda client: None,
    announce: Callable[[str], None] = lambda msg: None,
    resume: FedPEFTCheckpoint | None = None,
) -> Pipeline:
    """``resume`` continues a run from its checkpoint: rounds ``resume.round + 1 .. run.rounds``
    with the same seeded sampling, so stopping and continuing equals one uninterrupted run."""
    clients = fed.client_ids
    if run.clients_per_round > len(clients):
        raise ValueError(
            f"fl.clients_per_round={run.clients_per_round} but the partition {fed.partition.method!r} "
            f"has only {len(clients)} clients"
        )
    if resume is not None and resume.round > run.rounds:
        raise ValueError(f"cannot resume at round {resume.round}: the run has only {run.rounds} rounds")
    plan = _eval_plan(fed, run.eval_clients)
    shards = [plan.indices[i : i + run.eval_shard_size] for i in range(0, len(plan.indices), run.eval_shard_size)]
    options = aggregator.client_options() if hasattr(aggregator, "client_options") else {}

    def down_bytes(wire_state: dict[str, Any], ranks: set[int | None]) -> dict[int | None, int]:
        """Bytes a client of each rank receives this round (the state truncated to its rank),
        computed once per rank rather than once per client."""
        from vista.fl.lora_math import truncate_to_rank

        return {r: payload_nbytes(wire_state if r is None else truncate_to_rank(wire_state, r)) for r in ranks}

    # -- setup ------------------------------------------------------------------------------
    def plan_init(ctx: FLContext) -> Jobs:
        return Jobs([JobSpec("init_state", "init")])

    def collect_init(ctx: FLContext, results: list[JobResult]) -> None:
        v = results[0].value
        ctx.keep(*KEPT)
        ctx["global_state"] = v["state"]
        ctx["aggregator_state"] = aggregator.init_state(v["state"]) if hasattr(aggregator, "init_state") else None
        ctx["trainable_params"], ctx["total_params"] = v["trainable_params"], v["total_params"]
        ctx["method"] = v.get("method")
        ctx["bytes_up_total"] = ctx["bytes_down_total"] = 0
        ctx["forward_passes_total"] = ctx["backward_passes_total"] = 0
        ctx["best_test_accuracy"], ctx["best_round"], ctx["best_state"], ctx["best_eval"] = -1.0, 0, None, None
        ctx["run_started"] = time.perf_counter()
        ctx["history"] = []
        pct = 100.0 * v["trainable_params"] / max(v["total_params"], 1)
        announce(f"trainable parameters: {v['trainable_params']:,} of {v['total_params']:,} ({pct:.3f}%)"
                 f" [{ctx['method']}]")

    def restore(ctx: FLContext) -> None:
        assert resume is not None
        ctx.keep(*KEPT)
        ctx.round = resume.round
        for k, v in resume.kept.items():
            ctx[k] = v
        ctx["run_started"] = time.perf_counter()

    # -- one round ----------------------------------------------------------------------------
    def sample(ctx: FLContext) -> None:
        ctx["round_started"] = time.perf_counter()
        ctx["clients"] = sample_clients(clients, run.clients_per_round, run.seed, ctx.round)

    def plan_train(ctx: FLContext) -> Jobs:
        specs = [JobSpec("train", c, {"seed": client_seed(run.seed, ctx.round, c), "options": options,
                                      "personal_eval": run.personal_eval}) for c in ctx["clients"]]
        wire = to_wire(ctx["global_state"], run.transfer_dtype)
        ctx["wire_state"] = wire
        return Jobs(specs, shared={"state": wire})

    def collect_train(ctx: FLContext, results: list[JobResult]) -> None:
        glob = ctx["global_state"]
        updates, rows = [], []
        failed = [r for r in results if not r.ok]
        failures = [{"client": r.key, "job_id": r.job_id, "worker": r.worker, "error": r.error} for r in failed]
        for f in failures:
            log.warning("round %d: client %s dropped, job %s failed on worker %s: %s",
                        ctx.round, f["client"], f["job_id"], f["worker"], f["error"])
        ok = [r for r in results if r.ok]
        down_of_rank = down_bytes(ctx["wire_state"], {rank_of(r.key) for r in ok})
        if len(ok) < max(run.min_clients, 1):
            detail = "; ".join(f"client {f['client']} (job {f['job_id']}): {f['error']}" for f in failures[:5])
            raise TooFewClientsError(
                f"round {ctx.round}: {len(ok)} of {len(results)} client jobs succeeded, fl.min_clients="
                f"{run.min_clients}; failures: {detail}\n--- first worker traceback ---\n{failed[0].traceback}"
            )
        for r in ok:
            v = r.value
            state = {k: t.to(glob[k].dtype) if k in glob else t for k, t in v["state"].items()}
            up, down = payload_nbytes(v["state"]), down_of_rank[rank_of(r.key)]
            updates.append(ClientUpdate(r.key, state, v["num_examples"],
                                        {"loss": v["loss"], "steps": v["steps"], "seconds": r.seconds},
                                        rank=v.get("rank")))
            row = {"client": r.key, "num_examples": v["num_examples"], "train_loss": v["loss"], "steps": v["steps"],
                   "seconds": r.seconds, "bytes_up": up, "bytes_down": down, "rank": v.get("rank")}
            if v.get("personal") is not None:
                row["personal_accuracy"] = v["personal"].correct / max(v["personal"].n, 1)
            rows.append(row)
            role = f"client:{r.key}"
            for k in ("train_loss", "num_examples", "bytes_up", "bytes_down"):
                ctx.set(k, row[k], role=role)
        rows += [{"client": f["client"], "failed": True, "error": f["error"]} for f in failures]
        ctx["updates"], ctx["per_client"], ctx["failures"] = updates, rows, failures
        ctx["wire_state"] = None
        ctx["bytes_up"] = sum(r.get("bytes_up", 0) for r in rows)
        ctx["bytes_down"] = sum(r.get("bytes_down", 0) for r in rows)  # a failed client's download is not counted
        ctx["bytes_up_total"] += ctx["bytes_up"]
        ctx["bytes_down_total"] += ctx["bytes_down"]
        n = sum(u.num_examples for u in updates)
        ctx["train_loss"] = sum(u.metrics["loss"] * u.num_examples for u in updates) / n
        ctx["train_examples"] = n
        ctx["train_steps"] = sum(u.metrics["steps"] for u in updates)
        ctx["backward_passes"] = n * run.local_epochs  # examples through forward + backward
        ctx["backward_passes_total"] += ctx["backward_passes"]
        ctx["forward_passes_total"] += ctx["backward_passes"]

    def aggregate(ctx: FLContext) -> None:
        ctx["global_state"], ctx["aggregator_state"] = aggregator.aggregate(
            ctx["global_state"], ctx["updates"], ctx["failures"], ctx["aggregator_state"])
        ctx["updates"] = None  # the client tensors are no longer needed this round

    def plan_eval(ctx: FLContext) -> Jobs:
        return _eval_jobs(shards, ctx["global_state"], run.transfer_dtype)

    def collect_eval(ctx: FLContext, results: list[JobResult]) -> None:
        scored = _score(plan, results)
        ctx["eval"] = scored
        ctx["eval_passes"] = len(plan.indices)  # forward-only
        ctx["forward_passes_total"] += ctx["eval_passes"]
        for row in scored["client_eval"]:
            ctx.set("test_accuracy", row["test_accuracy"], role=f"client:{row['client']}")
        if scored["test_accuracy"] > ctx["best_test_accuracy"]:
            ctx["best_test_accuracy"], ctx["best_round"] = scored["test_accuracy"], ctx.round
            ctx["best_state"], ctx["best_eval"] = ctx["global_state"], scored

    def end_round(ctx: FLContext) -> None:
        metrics = None
        if "eval" in ctx:
            scored = ctx["eval"]
            metrics = {
                "round": ctx.round,
                **{k: v for k, v in scored.items() if k != "client_eval"},
                "train_loss": ctx["train_loss"],
                "train_examples": ctx["train_examples"],
                "backward_passes": ctx["backward_passes"],
                "forward_passes": ctx["backward_passes"] + ctx["eval_passes"],
                "bytes_up": ctx["bytes_up"],
                "bytes_down": ctx["bytes_down"],
                "bytes_up_total": ctx["bytes_up_total"],
                "bytes_down_total": ctx["bytes_down_total"],
                "forward_passes_total": ctx["forward_passes_total"],
                "backward_passes_total": ctx["backward_passes_total"],
                "round_seconds": time.perf_counter() - ctx["round_started"],
                "clients_failed": len(ctx["failures"]),
                **client_summary(ctx["per_client"], "personal_accuracy", "personal_accuracy"),
                "clients": ctx["clients"],
                "per_client": ctx["per_client"],
                "client_eval": scored["client_eval"],
            }
            log_metrics(metrics)
            ctx["history"].append({k: v for k, v in metrics.items() if not isinstance(v, list)})
        on_round(ctx, metrics)

    # -- teardown: the best round's full evaluation -------------------------------------------
    def best_round(ctx: FLContext) -> None:
        """Evaluation is deterministic (fixed shards, per-example predictions), so the best
        round's scores from its own evaluation *are* its final evaluation: kept, not re-run."""
        if ctx["best_eval"] is not None:
            ctx["best_eval"] = {**ctx["best_eval"], "round": ctx["best_round"]}

    setup = [Task("resume", restore)] if resume is not None else [
        Task("init_global", plan_init, mode="parallel", collect=collect_init)]
    return Pipeline(
        setup=setup,
        tasks=[
            Task("sample_clients", sample),
            Task("client_train", plan_train, mode="parallel", collect=collect_train,
                 failures="collect" if run.client_failures == "drop" else "raise"),
            Task("aggregate", aggregate),
            Task("evaluate", plan_eval, mode="parallel", collect=collect_eval, every=run.eval_every, also_last=True),
        ],
        teardown=[Task("best_round", best_round)],
        rounds=run.rounds,
        on_round_end=end_round,
        first_round=resume.round + 1 if resume is not None else 1,
    )


def _eval_plan(fed: FederatedData, with_clients: bool) -> EvalPlan:
    test = np.asarray(fed.test_indices, dtype=np.int64)
    client_tests = {}
    if with_clients:
        client_tests = {c: np.asarray(s.test, dtype=np.int64) for c, s in fed.partition.clients.items() if len(s.test)}
    indices = np.unique(np.concatenate([test, *client_tests.values()])) if client_tests else np.unique(test)
    labels = fed.data.labels(indices) if len(indices) else np.zeros(0, np.int64)
    return EvalPlan(indices, np.asarray(labels, np.int64), test, client_tests, fed.num_labels)


def _eval_jobs(shards: list[np.ndarray], state: dict[str, Any], dtype: str) -> Jobs:
    specs = [JobSpec("evaluate", i, {"indices": s.tolist()}) for i, s in enumerate(shards)]
    return Jobs(specs, shared={"state": to_wire(state, dtype)})


def _score(plan: EvalPlan, results: list[JobResult]) -> dict[str, Any]:
    """Global and per-client metrics from per-example predictions (each example scored once)."""
    preds: list[Predictions] = [r.value for r in results]
    pred = np.concatenate([p.pred for p in preds]) if preds else np.zeros(0, np.int64)
    loss = np.concatenate([p.loss for p in preds]) if preds else np.zeros(0, np.float64)
    out: dict[str, Any] = eval_metrics(plan.sums(pred, loss, plan.test))
    rows = []
    for c, idx in sorted(plan.client_tests.items()):
        s = plan.sums(pred, loss, idx)
        rows.append({"client": c, "test_examples": s.n, "test_accuracy": s.correct / s.n,
                     "test_macro_f1": macro_f1(s.confusion)})
    out.update(client_summary(rows, "test_accuracy", "client_test_accuracy"))
    out["client_eval"] = rows
    return out


def summarize(ctx: FLContext) -> dict[str, Any]:
    last = ctx["history"][-1] if ctx["history"] else {}
    best = ctx["best_eval"] or {}
    return {
        "rounds": ctx.round,
        "method": ctx["method"],
        "final_round": last.get("round"),
        "test_accuracy": last.get("test_accuracy"),
        "test_loss": last.get("test_loss"),
        "test_macro_f1": last.get("test_macro_f1"),
        "client_test_accuracy_mean": last.get("client_test_accuracy_mean"),
        "client_test_accuracy_min": last.get("client_test_accuracy_min"),
        "best_test_accuracy": ctx["best_test_accuracy"],
        "best_round": ctx["best_round"],
        "best": {k: v for k, v in best.items() if k != "client_eval"},
        "bytes_up_total": ctx["bytes_up_total"],
        "bytes_down_total": ctx["bytes_down_total"],
        "forward_passes_total": ctx["forward_passes_total"],
        "backward_passes_total": ctx["backward_passes_total"],
        "trainable_params": ctx["trainable_params"],
        "total_params": ctx["total_params"],
        "trainable_percent": 100.0 * ctx["trainable_params"] / max(ctx["total_params"], 1),
        "wall_seconds": time.perf_counter() - ctx["run_started"],
        "mean_round_seconds": float(np.mean([h["round_seconds"] for h in ctx["history"]])) if ctx["history"] else None,
    }
