"""The FedPEFT recipe: one federated fine-tuning experiment, one method per task.

Per round: sample clients (seeded) -> broadcast the global trainable state (in
``fl.transfer_dtype``) and train locally on each sampled client (parallel) -> aggregate
(the aggregator's own state, e.g. a server optimiser's moments, is kept across rounds) ->
every ``eval_every`` rounds and in the last, score the global model on the test split and
on every client's own test split, and on the clients' validation splits held out of their
training data with ``fl.val_fraction`` (parallel, fixed shards, per-example predictions; with
``fl.test_every``, the test splits only every that many rounds and in the last) -> record.
The best round's state and full evaluation (global and per client) are kept for the summary
and ``adapter_best.safetensors``. Only trainable tensors and small arrays cross
process boundaries, and the bytes each client sends and receives are counted exactly.

:class:`FedPEFTRecipe` is torchtune-style: one method per task, the state that carries
across rounds in one object (:class:`RoundState`, what a stopped run continues from), the
rest of a round in its FLContext, recorded through the ExpRecorder as :data:`RECORDS` says.
``vista.drivers.fedpeft`` runs it (executor, checkpoints, signals, resume).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from vista.data.fednlp import FederatedData
from vista.drivers.evaluation import SUMMARY_STATS, EvalPlan, client_summary, eval_jobs
from vista.drivers.round_state import RoundState
from vista.errors import UserError
from vista.fl.aggregators import Aggregator, ClientUpdate
from vista.fl.client import EvalSums
from vista.fl.lr_schedule import round_lr
from vista.fl.sampling import client_seed, sample_clients
from vista.fl.spec import ClientFailures
from vista.fl.transfer import to_wire
from vista.parts import ExperimentParts
from vista.pipeline import (
    FLContext,
    JobResult,
    Jobs,
    JobSpec,
    Pipeline,
    Task,
    payload_nbytes,
)
from vista.recording.plan import Artifact, RecordPlan, Table, client_role
from vista.recording.recorder import ExpRecorder

log = logging.getLogger(__name__)

ADAPTER_FILE = "adapter.safetensors"
BEST_ADAPTER_FILE = "adapter_best.safetensors"  # written when the best round is not the last

# What a round records (see vista.recording.plan): one line of metrics.jsonl per evaluated
# round, the per-client training rows (clients.jsonl) and evaluation rows (client_eval.jsonl)
# from the ``client:<id>`` roles, and the adapters at the end.
TRAIN_ROWS = Table("per_client", ("num_examples", "train_loss", "steps", "seconds", "bytes_up", "bytes_down",
                                  "rank", "personal_accuracy", "micro_batch", "oom_retries", "failed", "error"))
EVAL_ROWS = Table("client_eval", ("test_examples", "test_accuracy", "test_macro_f1", "val_examples", "val_accuracy"))
RECORDS = RecordPlan(
    metrics=("test_accuracy", "test_loss", "test_macro_f1", *(f"client_test_accuracy_{s}" for s in SUMMARY_STATS),
             "val_accuracy", "val_loss", "val_macro_f1", *(f"client_val_accuracy_{s}" for s in SUMMARY_STATS),
             "train_loss", "train_examples", "lr", "backward_passes", "forward_passes", "bytes_up", "bytes_down",
             "bytes_up_total", "bytes_down_total", "forward_passes_total", "backward_passes_total", "round_seconds",
             "clients_failed", "jobs_retried", "workers_respawned", *(f"personal_accuracy_{s}" for s in SUMMARY_STATS),
             "clients"),
    tables=(TRAIN_ROWS, EVAL_ROWS),
    artifacts=(Artifact("global_state", ADAPTER_FILE), Artifact("best_state", BEST_ADAPTER_FILE)),
)


class TooFewClientsError(RuntimeError):
    """With ``fl.client_failures=drop``: a round kept fewer clients than ``fl.min_clients``."""


class FedPEFTRecipe:
    """One federated PEFT experiment: :meth:`pipeline` assembles one Task per method below."""

    def __init__(self, parts: ExperimentParts, fed: FederatedData, recorder: ExpRecorder,
                 on_round: Callable[[FLContext, dict[str, Any] | None], None] = lambda ctx, m: None,
                 announce: Callable[[str], None] = lambda msg: None, resume: RoundState | None = None) -> None:
        """``resume`` continues a run from its state: rounds ``resume.round + 1 .. fl.rounds``
        with the same seeded sampling, so stopping and continuing equals one uninterrupted run."""
        self.fl, self.seed = parts.fl, parts.seed
        self.clients = fed.client_ids
        if self.fl.clients_per_round > len(self.clients):
            raise UserError(f"fl.clients_per_round={self.fl.clients_per_round} but the partition "
                            f"{fed.partition.method!r} has only {len(self.clients)} clients; lower "
                            f"fl.clients_per_round or choose a partition with more clients")
        if resume is not None and resume.round > self.fl.rounds:
            raise UserError(f"cannot resume at round {resume.round}: fl.rounds={self.fl.rounds}; "
                            f"give fl.rounds={resume.round} or more")
        self.aggregator: Aggregator = parts.aggregator
        self.client_options = self.aggregator.client_options()
        self.rank_of = parts.peft.client_rank
        self.recorder, self.on_round, self.announce = recorder, on_round, announce
        self.full_plan = EvalPlan.of(fed, self.fl.eval_clients, self.fl.val_fraction, self.seed)
        # rounds between fl.test_every's predict only the validation split (what a search ranks on)
        self.val_plan = self.full_plan.validation_only() if self.fl.test_every is not None else self.full_plan
        self.state: RoundState | None = resume.copy() if resume is not None else None
        # the state after the last complete round: what an interrupted run checkpoints
        self.last_complete: RoundState | None = resume.copy() if resume is not None else None
        self.started = time.perf_counter()

    def pipeline(self, after_round: Callable[[FLContext], dict[str, Any] | None] | None = None) -> Pipeline:
        """``after_round``: called after each round is recorded (the driver's checkpoints)."""
        setup = [Task("restore", self.restore)] if self.state is not None else [
            Task("init_global", self.init_global, mode="parallel", collect=self.collect_init)]
        return Pipeline(
            setup=setup,
            tasks=[
                Task("sample_clients", self.sample_clients),
                Task("client_train", self.client_train, mode="parallel", collect=self.collect_train,
                     failures="collect" if self.fl.client_failures is ClientFailures.drop else "raise"),
                Task("aggregate", self.aggregate),
                Task("evaluate", self.evaluate, mode="parallel", collect=self.collect_eval,
                     every=self.fl.eval_every, also_last=True),
            ],
            teardown=[Task("best_round", self.best_round)],
            rounds=self.fl.rounds,
            on_round_end=self.record,
            after_round=after_round,
            first_round=self.state.round + 1 if self.state is not None else 1,
        )

    # -- setup ------------------------------------------------------------------------------
    def init_global(self, ctx: FLContext) -> Jobs:
        return Jobs([JobSpec("init_state", "init")])

    def collect_init(self, ctx: FLContext, results: list[JobResult]) -> None:
        v = results[0].value
        self.state = RoundState(0, v["state"], self.aggregator.init_state(v["state"]), v["trainable_params"],
                                v["total_params"], v.get("method"))
        self.started = time.perf_counter()
        pct = 100.0 * v["trainable_params"] / max(v["total_params"], 1)
        self.announce(f"trainable parameters: {v['trainable_params']:,} of {v['total_params']:,} ({pct:.3f}%)"
                      f" [{self.state.method}]")

    def restore(self, ctx: FLContext) -> None:
        ctx.round = self.st.round
        self.started = time.perf_counter()

    # -- one round ----------------------------------------------------------------------------
    def sample_clients(self, ctx: FLContext) -> None:
        ctx["round_started"] = time.perf_counter()
        ctx["clients"] = sample_clients(self.clients, self.fl.clients_per_round, self.seed, ctx.round)

    def client_train(self, ctx: FLContext) -> Jobs:
        ctx["lr"] = lr = round_lr(self.fl, ctx.round)
        specs = [JobSpec("train", c, {"seed": client_seed(self.seed, ctx.round, c), "options": self.client_options,
                                      "lr": lr, "personal_eval": self.fl.personal_eval}) for c in ctx["clients"]]
        ctx["wire_state"] = to_wire(self.st.global_state, self.fl.transfer_dtype)
        return Jobs(specs, shared={"state": ctx["wire_state"]})

    def collect_train(self, ctx: FLContext, results: list[JobResult]) -> None:
        glob = self.st.global_state
        failed = [r for r in results if not r.ok]
        failures = [{"client": r.key, "job_id": r.job_id, "worker": r.worker, "error": r.error} for r in failed]
        for f in failures:
            log.warning("round %d: client %s dropped, job %s failed on worker %s: %s",
                        ctx.round, f["client"], f["job_id"], f["worker"], f["error"])
        ok = [r for r in results if r.ok]
        if len(ok) < max(self.fl.min_clients, 1):
            detail = "; ".join(f"client {f['client']} (job {f['job_id']}): {f['error']}" for f in failures[:5])
            raise TooFewClientsError(
                f"round {ctx.round}: {len(ok)} of {len(results)} client jobs succeeded, fl.min_clients="
                f"{self.fl.min_clients}; failures: {detail}\n--- first worker traceback ---\n{failed[0].traceback}"
            )
        down_of_rank = self._down_bytes(ctx["wire_state"], {self.rank_of(r.key) for r in ok})
        updates = []
        for r in ok:
            v, role = r.value, client_role(r.key)
            state = {k: t.to(glob[k].dtype) if k in glob else t for k, t in v["state"].items()}
            updates.append(ClientUpdate(r.key, state, v["num_examples"],
                                        {"loss": v["loss"], "steps": v["steps"], "seconds": r.seconds},
                                        rank=v.get("rank")))
            row = {"num_examples": v["num_examples"], "train_loss": v["loss"], "steps": v["steps"],
                   "seconds": r.seconds, "bytes_up": payload_nbytes(v["state"]),
                   "bytes_down": down_of_rank[self.rank_of(r.key)], "rank": v.get("rank")}
            if v.get("oom_retries"):  # out of memory: trained with gradient accumulation over micro-batches
                row["micro_batch"], row["oom_retries"] = v["micro_batch"], v["oom_retries"]
            if v.get("personal") is not None:
                personal: EvalSums = v["personal"]
                row["personal_accuracy"] = personal.correct / max(personal.n, 1)
            for k, x in row.items():
                ctx.set(k, x, role=role)
        for f in failures:
            ctx.set("failed", True, role=client_role(f["client"]))
            ctx.set("error", f["error"], role=client_role(f["client"]))
        ctx["updates"], ctx["failures"], ctx["wire_state"] = updates, failures, None
        ctx["bytes_up"] = sum(ctx.get("bytes_up", role=client_role(r.key)) for r in ok)
        ctx["bytes_down"] = sum(ctx.get("bytes_down", role=client_role(r.key)) for r in ok)  # not a failed one's
        n = sum(u.num_examples for u in updates)
        ctx["train_loss"] = sum(u.metrics["loss"] * u.num_examples for u in updates) / n
        ctx["train_examples"] = n
        ctx["train_steps"] = sum(u.metrics["steps"] for u in updates)
        ctx["backward_passes"] = n * self.fl.local_epochs  # examples through forward + backward
        totals = self.st.totals
        totals.bytes_up += ctx["bytes_up"]
        totals.bytes_down += ctx["bytes_down"]
        totals.backward_passes += ctx["backward_passes"]
        totals.forward_passes += ctx["backward_passes"]

    def aggregate(self, ctx: FLContext) -> None:
        st = self.st
        st.global_state, st.aggregator_state = self.aggregator.aggregate(
            st.global_state, ctx["updates"], ctx["failures"], st.aggregator_state)
        ctx["updates"] = None  # the client tensors are no longer needed this round

    def eval_plan(self, round: int) -> EvalPlan:
        """The full plan (test splits and validation), or in the rounds between
        ``fl.test_every``'s the validation splits alone; the run's last round is full unless
        ``fl.test_last`` is False."""
        every = self.fl.test_every
        full = every is None or round % every == 0 or (self.fl.test_last and round == self.fl.rounds)
        return self.full_plan if full else self.val_plan

    def evaluate(self, ctx: FLContext) -> Jobs:
        plan = self.eval_plan(ctx.round)
        return eval_jobs(plan.shards(), self.st.global_state, self.fl.transfer_dtype,
                         tag="" if plan is self.full_plan else "val")

    def collect_eval(self, ctx: FLContext, results: list[JobResult]) -> None:
        plan = self.eval_plan(ctx.round)
        scored = plan.metrics(results)
        ctx["eval"] = scored
        for k, v in scored.items():
            if k != "client_eval":
                ctx[k] = v
        for row in scored["client_eval"]:
            for k in EVAL_ROWS.columns:
                if k in row:
                    ctx.set(k, row[k], role=client_role(row["client"]))
        ctx["eval_passes"] = len(plan.indices)  # forward-only
        st = self.st
        st.totals.forward_passes += ctx["eval_passes"]
        if "test_accuracy" in scored and scored["test_accuracy"] > st.best_test_accuracy:
            st.best_test_accuracy, st.best_round = scored["test_accuracy"], ctx.round
            st.best_state, st.best_eval = st.global_state, scored

    def record(self, ctx: FLContext) -> None:
        """End of a round: an evaluated round is recorded (RECORDS) and joins the history."""
        metrics = None
        st = self.st
        st.totals.jobs_retried += ctx.get("jobs_retried", 0)
        st.totals.workers_respawned += ctx.get("workers_respawned", 0)
        if "eval" in ctx:
            ctx["forward_passes"] = ctx["backward_passes"] + ctx["eval_passes"]
            ctx["bytes_up_total"], ctx["bytes_down_total"] = st.totals.bytes_up, st.totals.bytes_down
            ctx["forward_passes_total"] = st.totals.forward_passes
            ctx["backward_passes_total"] = st.totals.backward_passes
            ctx["round_seconds"] = time.perf_counter() - ctx["round_started"]
            ctx["clients_failed"] = len(ctx["failures"])
            for k, v in client_summary(TRAIN_ROWS.rows(ctx), "personal_accuracy", "personal_accuracy").items():
                ctx[k] = v
            metrics = self.recorder.snapshot(ctx, RECORDS)
            st.history.append({k: v for k, v in metrics.items() if not isinstance(v, list)})
        st.round = ctx.round
        self.last_complete = st.copy()
        self.on_round(ctx, metrics)

    # -- teardown ---------------------------------------------------------------------------
    def best_round(self, ctx: FLContext) -> None:
        """Evaluation is deterministic (fixed shards, per-example predictions), so the best
        round's scores from its own evaluation *are* its final evaluation: kept, not re-run.
        The adapters to write land in the context (RECORDS' artifacts)."""
        st = self.st
        if st.best_eval is not None:
            st.best_eval = {**st.best_eval, "round": st.best_round}
        ctx["global_state"] = st.global_state
        ctx["best_state"] = st.best_state if st.best_round != st.round else None

    def summary(self) -> dict[str, Any]:
        st = self.st
        last = st.history[-1] if st.history else {}
        best = st.best_eval or {}
        return {
            "rounds": st.round,
            "method": st.method,
            "final_round": last.get("round"),
            "test_accuracy": last.get("test_accuracy"),
            "test_loss": last.get("test_loss"),
            "test_macro_f1": last.get("test_macro_f1"),
            "client_test_accuracy_mean": last.get("client_test_accuracy_mean"),
            "client_test_accuracy_min": last.get("client_test_accuracy_min"),
            "best_test_accuracy": st.best_test_accuracy,
            "best_round": st.best_round,
            "best": {k: v for k, v in best.items() if k != "client_eval"},
            "bytes_up_total": st.totals.bytes_up,
            "bytes_down_total": st.totals.bytes_down,
            "forward_passes_total": st.totals.forward_passes,
            "backward_passes_total": st.totals.backward_passes,
            "jobs_retried_total": st.totals.jobs_retried,
            "workers_respawned_total": st.totals.workers_respawned,
            "trainable_params": st.trainable_params,
            "total_params": st.total_params,
            "trainable_percent": 100.0 * st.trainable_params / max(st.total_params, 1),
            "wall_seconds": time.perf_counter() - self.started,
            "mean_round_seconds": float(np.mean([h["round_seconds"] for h in st.history])) if st.history else None,
        }

    # -- helpers ----------------------------------------------------------------------------
    @property
    def st(self) -> RoundState:
        if self.state is None:
            raise RuntimeError("FedPEFTRecipe: no round state yet (init_global has not run)")
        return self.state

    @staticmethod
    def _down_bytes(wire_state: dict[str, Any], ranks: set[int | None]) -> dict[int | None, int]:
        """Bytes a client of each rank receives this round (the state truncated to its rank),
        computed once per rank rather than once per client."""
        from vista.fl.lora_math import truncate_to_rank

        return {r: payload_nbytes(wire_state if r is None else truncate_to_rank(wire_state, r)) for r in ranks}
