"""The FedPEFT driver: runs :class:`~vista.drivers.recipe.FedPEFTRecipe` on an executor, with
durable checkpoints, graceful stops on signals, and ``vista resume=RUN_DIR``.

After every ``checkpoint.every`` rounds (and the last) the round state, the records written
so far, the event_pipeline, the W&B run id and the RNG states go to
``RUN_DIR/checkpoints/round_NNNNNN/`` (atomically). A signal stops the run at the next task
boundary, checkpoints the last complete round and leaves ``summary.json`` with status
``interrupted`` and the command that continues it; continuing gives exactly the
uninterrupted run's records and adapter (seeds are per round and client, nothing else).
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import time
from pathlib import Path
from typing import Any

from vista.data.fednlp import FederatedData
from vista.drivers.interrupt import StopOnSignals
from vista.drivers.recipe import (
    BEST_ADAPTER_FILE,
    RECORDS,
    FedPEFTRecipe,
    TooFewClientsError,
)
from vista.drivers.round_state import RoundState, restore_rng, rng_state
from vista.drivers.run import (
    estimate_memory,
    executor_summary,
    make_executor,
    seed_everything,
)
from vista.errors import Interrupted, UserError
from vista.parts import ExperimentParts
from vista.pipeline import EventManager, EventPipeline, FLContext, RunInterrupted
from vista.recording.checkpoints import CheckpointStore
from vista.recording.progress import RoundProgress
from vista.recording.recorder import ExpRecorder
from vista.scheduler.warm_start import warm_up_for

__all__ = ["TooFewClientsError", "run_fedpeft", "run_fedpeft_session"]


def run_fedpeft(parts: ExperimentParts, run_dir: str | Path, config: dict[str, Any] | None = None,
                progress_stream: Any = None, runtime_factory: Any = None, from_checkpoint: bool = False) -> dict[str, Any]:
    """Run a federated PEFT experiment; returns the summary (also in ``summary.json``).
    ``from_checkpoint``: continue the run in ``run_dir`` from its newest checkpoint."""
    return run_fedpeft_session(parts, run_dir, config, progress_stream, runtime_factory,
                               from_checkpoint=from_checkpoint)[0]


class _Checkpointer:
    """Writes the run's checkpoints: what a resumed run needs, as of the end of a round."""

    def __init__(self, parts: ExperimentParts, run_dir: Path, recipe: FedPEFTRecipe, recorder: ExpRecorder,
                 events: EventManager) -> None:
        self.spec, self.rounds = parts.checkpoint, parts.fl.rounds
        self.store = CheckpointStore(run_dir, keep=parts.checkpoint.keep)
        self.recipe, self.recorder, self.events = recipe, recorder, events
        self.saved_round = 0
        self.steps_done = len(events.steps)  # event_pipeline steps up to the last complete round

    def after_round(self, ctx: FLContext) -> dict[str, Any] | None:
        """Pipeline hook after each round's record: a checkpoint when one is due."""
        self.steps_done = len(self.events.steps)
        if not self.spec.due(ctx.round, self.rounds):
            return None
        return self.save(self.recipe.st)

    def save(self, state: RoundState) -> dict[str, Any]:
        steps = self.events.steps.to_list()[: self.steps_done]
        tree = {"version": 1, "round": state.round, "state": state.to_tree(), "records": self.recorder.state(),
                "steps": steps, "rng": rng_state()}
        saved = self.store.save(state.round, tree)
        self.saved_round = state.round
        return {"file": str(saved.path.relative_to(self.store.dir.parent)), "bytes": saved.bytes,
                "write_seconds": round(saved.seconds, 6)}

    def save_last_complete(self) -> None:
        """On a stop: the last complete round, unless it is saved already."""
        last = self.recipe.last_complete
        if self.spec.every > 0 and last is not None and last.round > self.saved_round:
            info = self.save(last)
            self.events.record("checkpoint", round=last.round, **info)


def _load(run_dir: Path) -> tuple[RoundState, dict[str, Any], list[dict[str, Any]], dict[str, Any], Path]:
    store = CheckpointStore(run_dir)
    try:
        r, tree = store.load()
    except FileNotFoundError:
        raise UserError(f"resume: {run_dir} has no complete checkpoint in {store.dir} (the run stopped before "
                        f"its first checkpoint, or ran with checkpoint.every=0); start it again instead") from None
    return RoundState.from_tree(tree["state"]), tree["records"], tree["steps"], tree["rng"], store.dir / f"round_{r:06d}"


def run_fedpeft_session(parts: ExperimentParts, run_dir: str | Path, config: dict[str, Any] | None = None,
                        progress_stream: Any = None, runtime_factory: Any = None,
                        resume: RoundState | None = None, from_checkpoint: bool = False,
                        ) -> tuple[dict[str, Any], RoundState]:
    """:func:`run_fedpeft`, optionally continuing: from ``resume`` (a round state held in memory:
    rounds ``resume.round + 1 .. parts.fl.rounds`` into a fresh ``run_dir``), or, with
    ``from_checkpoint``, from the newest checkpoint in ``run_dir`` (appending to its records).
    Also returns the round state where it stopped, to continue it later.

    The run directory always receives ``metrics.jsonl``, ``summary.json`` and
    ``event_pipeline.json`` (the latter also when the run fails, for the post-mortem)."""
    from vista.fl.runtime import FedPEFTRuntime, RuntimeArgs, weight_keeper

    run_dir = Path(run_dir)
    warm_up_for(parts.scheduler, parts.model)  # the workers' imports start now, beside this process's
    seed_everything(parts.seed)
    records, steps, where = None, None, None
    if from_checkpoint:
        resume, records, steps, rng, where = _load(run_dir)
        restore_rng(rng)
    fed = FederatedData(parts.data)  # metadata only: fails fast on a bad file or method
    parts.model.resolve()  # a missing model is reported here, before any process starts
    recorder = ExpRecorder(parts.recorder, run_dir, config, resume=records)
    if config is not None:
        recorder.write_config(config)
    events = EventManager(EventPipeline.restored(steps) if steps is not None else None)
    if where is not None:
        events.record("resume", round=resume.round, checkpoint=str(where), rounds=parts.fl.rounds)
    progress = RoundProgress(parts.fl.rounds, progress_stream)
    progress.attach(events)  # a job bar per parallel task
    say = (lambda msg: print(msg, file=progress_stream or sys.stdout, flush=True))

    ended: list[tuple[int, dict[str, Any] | None, float]] = []

    def on_round(ctx: FLContext, metrics: dict[str, Any] | None) -> None:
        ended.append((ctx.round, metrics, time.perf_counter() - ctx["round_started"]))

    def after_round(ctx: FLContext) -> dict[str, Any] | None:
        """Checkpoint first, then say the round is done: a printed round is a durable one."""
        info = checkpoints.after_round(ctx)
        progress.update(*ended.pop())
        return info

    recipe = FedPEFTRecipe(parts, fed, recorder, on_round, resume=resume, announce=say)
    checkpoints = _Checkpointer(parts, run_dir, recipe, recorder, events)
    if resume is not None and from_checkpoint:
        checkpoints.saved_round = resume.round
    ctx = FLContext()
    executor = None
    guard = StopOnSignals(events, parts.scheduler.grace_s)
    try:
        with guard:
            t0 = time.perf_counter()
            memory = estimate_memory(parts.model, parts.peft.apply, fed.num_labels, parts.fl.micro_batch,
                                     parts.fl.max_seq_len, scheduler=parts.scheduler,
                                     useful_workers=parts.fl.clients_per_round,
                                     checkpointing=parts.fl.gradient_checkpointing) \
                if parts.scheduler.num_workers == "auto" else None
            if memory is not None and parts.model.share_weights and parts.scheduler.executor == "process":
                memory = dataclasses.replace(memory, frozen_shared=True)  # kept once per GPU by this process
            args = RuntimeArgs(parts.model, parts.peft, parts.data, parts.fl, fed.num_labels, parts.seed)
            executor = make_executor(parts, args, run_dir, runtime_factory or FedPEFTRuntime.create, memory=memory,
                                     useful_workers=parts.fl.clients_per_round, weight_keeper=weight_keeper(args))
            guard.attach(executor)
            _announce_arrangement(executor, say)
            events.record("scheduler_start", round=0, seconds=time.perf_counter() - t0, backend=executor.backend,
                          workers=len(executor.placement()), devices=[p.device for p in executor.placement()])
            recipe.pipeline(after_round=after_round).run(ctx, events, executor)
        return _finish(parts, fed, recipe, recorder, events, ctx, executor), recipe.st.copy()
    except RunInterrupted as stop:
        checkpoints.save_last_complete()
        done = recipe.last_complete.round if recipe.last_complete is not None else None
        err = Interrupted(guard.received or signal.SIGINT, str(run_dir), done)
        partial = recipe.summary() if recipe.state is not None else {}
        recorder.summary({**partial, "interrupted_in_round": stop.round})
        recorder.fail(err)
        print(f"vista: {err}", file=sys.stderr, flush=True)
        raise err from None
    finally:
        progress.close()
        if executor is not None:
            t0 = time.perf_counter()
            executor.shutdown()
            events.record("scheduler_shutdown", round=ctx.round, seconds=time.perf_counter() - t0)
        events.steps.save(run_dir / "event_pipeline.json")
        fed.close()
        recorder.close()


def _announce_arrangement(executor: Any, say: Any) -> None:
    arrangement = getattr(executor, "arrangement", None)
    if arrangement is not None:
        say(f"{executor.backend}: {arrangement.describe()}")


def _finish(parts: ExperimentParts, fed: FederatedData, recipe: FedPEFTRecipe, recorder: ExpRecorder,
            events: EventManager, ctx: FLContext, executor: Any) -> dict[str, Any]:
    """The adapters, the best round's per-client table, the summary."""
    state = recipe.st
    metadata = {"model": parts.model.name, "peft": type(parts.peft).__name__,
                "aggregator": type(parts.aggregator).__name__}
    t0 = time.perf_counter()
    for path in recorder.save_artifacts(ctx, RECORDS, metadata):
        events.record("checkpoint", round=state.best_round if path.name == BEST_ADAPTER_FILE else state.round,
                      seconds=time.perf_counter() - t0, file=path.name)
        t0 = time.perf_counter()
    best = state.best_eval or {}
    if best.get("client_eval"):
        # the round as a column, not a W&B step: W&B drops logs at steps already passed
        recorder.table("best_client_eval", [{"round": state.best_round, **r} for r in best["client_eval"]])
    summary = recipe.summary()
    summary.update(model=parts.model.name, partition=fed.partition.method, num_clients=len(fed.client_ids),
                   num_labels=fed.num_labels, seed=parts.seed, aggregator=type(parts.aggregator).__name__,
                   transfer_dtype=parts.fl.transfer_dtype.value,
                   # this session's executor, start-up included (the rounds' counts are in the totals above)
                   executor=executor_summary(executor))
    recorder.summary(summary)
    events.record("summary", round=ctx.round)
    return summary
