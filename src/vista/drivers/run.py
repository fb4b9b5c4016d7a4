"""Running an experiment end to end, from typed parts, without Hydra.

``main.py`` builds the parts from the config; tests and scripts can build them by hand.
The run directory always receives ``metrics.jsonl``, ``summary.json`` and
``event_pipeline.json`` (the latter also when the run fails, for the post-mortem).
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vista.data.fednlp import FederatedData, FederatedDataSpec
from vista.drivers.fedpeft import FedPEFTCheckpoint, FedPEFTRun, fedpeft_pipeline, summarize
from vista.fl.runtime import FedPEFTRuntime, RuntimeArgs
from vista.fl.spec import FLSpec
from vista.models.hub import ModelSpec
from vista.pipeline import EventManager, FLContext
from vista.recording.progress import RoundProgress
from vista.recording.recorder import ExpRecorder
from vista.recording.spec import RecorderSpec
from vista.scheduler import InlineExecutor, NodeScheduler, SchedulerSpec


@dataclass(frozen=True)
class ExperimentParts:
    seed: int
    fl: FLSpec
    model: ModelSpec
    peft: Any  # a vista.peft spec: LoraSpec, IA3Spec, BitFitSpec, ...
    data: FederatedDataSpec
    aggregator: Any
    scheduler: SchedulerSpec
    recorder: RecorderSpec
    selection: Any = None  # a vista.selection.SelectionSpec for selection runs; None: fine-tune parts.model


ADAPTER_FILE = "adapter.safetensors"
BEST_ADAPTER_FILE = "adapter_best.safetensors"  # written when the best round is not the last


def save_adapter(state: dict[str, Any], path: Path, parts: ExperimentParts) -> None:
    """The final global trainable tensors (adapters + head), loadable with safetensors."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path),
              metadata={"model": parts.model.name, "peft": type(parts.peft).__name__,
                        "aggregator": type(parts.aggregator).__name__})


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_executor(parts: ExperimentParts, args: RuntimeArgs, run_dir: Path, factory: Any = None) -> Any:
    """``factory(args, env)`` builds each worker's runtime (a picklable top-level function)."""
    factory = factory or FedPEFTRuntime.create
    if parts.scheduler.num_workers == 0:
        return InlineExecutor(factory, args, device="cpu" if parts.scheduler.device == "auto" else parts.scheduler.device)
    return NodeScheduler(parts.scheduler, factory, args, log_dir=run_dir / "workers")


def run_fedpeft(parts: ExperimentParts, run_dir: str | Path, config: dict[str, Any] | None = None,
                progress_stream: Any = None, runtime_factory: Any = None) -> dict[str, Any]:
    """Run a federated PEFT experiment; returns the summary (also in ``summary.json``)."""
    return run_fedpeft_session(parts, run_dir, config, progress_stream, runtime_factory)[0]


def run_fedpeft_session(parts: ExperimentParts, run_dir: str | Path, config: dict[str, Any] | None = None,
                        progress_stream: Any = None, runtime_factory: Any = None,
                        resume: FedPEFTCheckpoint | None = None) -> tuple[dict[str, Any], FedPEFTCheckpoint]:
    """:func:`run_fedpeft`, optionally continuing from ``resume`` (rounds ``resume.round + 1 ..
    parts.fl.rounds``); also returns the checkpoint where it stopped, to continue it later."""
    run_dir = Path(run_dir)
    seed_everything(parts.seed)
    fed = FederatedData(parts.data)  # metadata only: fails fast on a bad file or method
    parts.model.resolve()  # a missing model is reported here, before any process starts
    recorder = ExpRecorder(parts.recorder, run_dir, config)
    if config is not None:
        recorder.write_config(config)
    args = RuntimeArgs(parts.model, parts.peft, parts.data, parts.fl, fed.num_labels, parts.seed)
    fl = parts.fl
    run = FedPEFTRun(fl.rounds, fl.clients_per_round, fl.eval_every, parts.seed,
                     transfer_dtype=getattr(fl.transfer_dtype, "value", fl.transfer_dtype),
                     eval_clients=fl.eval_clients, personal_eval=fl.personal_eval,
                     client_failures=getattr(fl.client_failures, "value", fl.client_failures), min_clients=fl.min_clients,
                     local_epochs=fl.local_epochs)
    events = EventManager()
    progress = RoundProgress(parts.fl.rounds, progress_stream)
    progress.attach(events)  # a job bar per parallel task

    def on_round(ctx: FLContext, metrics: dict[str, Any] | None) -> None:
        progress.update(ctx.round, metrics, time.perf_counter() - ctx["round_started"])

    rank_of = getattr(parts.peft, "client_rank", None) or (lambda client: None)
    pipeline = fedpeft_pipeline(run, fed, parts.aggregator, recorder.log, on_round, rank_of=rank_of,
                                announce=lambda msg: print(msg, file=progress_stream or sys.stdout, flush=True),
                                resume=resume)
    ctx = FLContext()
    executor = None
    try:
        t0 = time.perf_counter()
        executor = make_executor(parts, args, run_dir, runtime_factory)
        if isinstance(executor, NodeScheduler):
            executor.start()
        events.record("scheduler_start", round=0, seconds=time.perf_counter() - t0,
                      workers=max(parts.scheduler.num_workers, 1), devices=list(executor.devices))
        pipeline.run(ctx, events, executor)
        t0 = time.perf_counter()
        save_adapter(ctx["global_state"], run_dir / ADAPTER_FILE, parts)
        events.record("checkpoint", round=ctx.round, seconds=time.perf_counter() - t0, file=ADAPTER_FILE)
        if ctx["best_state"] is not None and ctx["best_round"] != ctx.round:
            save_adapter(ctx["best_state"], run_dir / BEST_ADAPTER_FILE, parts)
            events.record("checkpoint", round=ctx["best_round"], file=BEST_ADAPTER_FILE)
        best = ctx["best_eval"] or {}
        if best.get("client_eval"):
            # the round as a column, not a W&B step: W&B drops logs at steps already passed
            recorder.table("best_client_eval", [{"round": ctx["best_round"], **r} for r in best["client_eval"]])
        summary = summarize(ctx)
        summary.update(model=parts.model.name, partition=fed.partition.method, num_clients=len(fed.client_ids),
                       num_labels=fed.num_labels, seed=parts.seed, aggregator=type(parts.aggregator).__name__,
                       transfer_dtype=run.transfer_dtype)
        recorder.summary(summary)
        events.record("summary", round=ctx.round)
        return summary, FedPEFTCheckpoint.of(ctx)
    finally:
        progress.close()
        if executor is not None:
            t0 = time.perf_counter()
            executor.shutdown()
            events.record("scheduler_shutdown", round=ctx.round, seconds=time.perf_counter() - t0)
        events.steps.save(run_dir / "event_pipeline.json")
        fed.data.close()
        recorder.close()


DRIVERS = {"fedpeft": run_fedpeft}
