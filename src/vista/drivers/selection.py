"""The selection driver: which candidate model to fine-tune, how sure, at what cost.

A selection run is a pipeline. Statistics methods (the exact and client scores of the registry,
:data:`vista.selection.scores.SCORES`: logme, hscore, reg_hscore, transrate, gbc, the avg_logme /
borda baselines, and any score registered later): a parallel ``probe`` task (the server's shift per
candidate), a parallel ``client_stats`` task (one job per candidate x client: frozen encoder ->
additive statistics around the shift -> privacy guard) and a single ``merge_and_score`` task (merge
= sum, score, rank, caveats); a two-round score adds the PCA round, and a head score (head_probe)
the head probe's rounds on the cached features (:mod:`vista.drivers.selection_stats`,
:mod:`vista.drivers.selection_head`). Prior scores (param_prior,
random) need no client work; combined ones (gbc_prior, and ``auto``, its alias) are the server's
function of their components' values. Search methods (successive_halving, hybrid, brute_force)
fine-tune candidates with the FedPEFT driver, continuing survivors from their checkpoints, and
``then_finetune`` the winner. Results: FLContext, ``selection.json``, the recorder, ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from vista.data.fednlp import FederatedData
from vista.drivers.interrupt import StopOnSignals
from vista.drivers.run import seed_everything
from vista.drivers.selection_search import FedPEFTOracle, finetune, run_search
from vista.drivers.selection_stats import run_statistics, statistics_pipeline, statistics_releases
from vista.errors import Interrupted
from vista.models.inventory import count_parameters
from vista.parts import ExperimentParts
from vista.pipeline import EventManager, FLContext, RunInterrupted
from vista.recording.recorder import ExpRecorder
from vista.selection.combine import resolved, server_scores
from vista.selection.privacy import privacy_report
from vista.selection.ranking import rank_by
from vista.selection.search import Cost
from vista.selection.spec import PRIOR, SEARCH, STATS

log = logging.getLogger(__name__)

SELECTION_FILE = "selection.json"


# -- the run -----------------------------------------------------------------------------------
def run_selection(parts: ExperimentParts, run_dir: str | Path, config: dict[str, Any] | None = None,
                  progress_stream: Any = None, from_checkpoint: bool = False) -> dict[str, Any]:
    """Select a candidate for ``parts`` (``parts.selection`` says how); returns the summary.
    ``from_checkpoint``: continue the selection run in ``run_dir`` (the statistics round runs
    again, deterministically; a search continues where it stopped)."""
    spec = parts.selection
    if spec is None or spec.name == "none":
        raise ValueError("run_selection needs parts.selection with a method (selection=logme, ...)")
    run_dir = Path(run_dir)
    seed_everything(parts.seed)
    fed = FederatedData(parts.data)
    dirs = {c.name: c.resolve() for c in spec.models}  # every missing candidate is reported up front
    names = list(dirs)
    params = {n: count_parameters(d) for n, d in dirs.items()}
    recorder = ExpRecorder(parts.recorder, run_dir, config)
    if config is not None:
        recorder.write_config(config)
    events = EventManager()
    out: dict[str, Any] = {"method": spec.name, "candidates": names, "seed": parts.seed,
                           "partition": fed.partition.method, "num_clients": len(fed.client_ids),
                           "num_labels": fed.num_labels}
    stream = progress_stream or sys.stdout
    t0 = time.perf_counter()
    guard = StopOnSignals(events, parts.scheduler.grace_s)
    try:
        scores: dict[str, dict[str, float | None]] = {}
        cost = Cost()
        ctx = FLContext()  # the statistics round's context, or a fresh one: the result lands here
        if spec.needs_statistics:
            print(f"selection: statistics round, {len(names)} candidates", file=stream, flush=True)
            with guard:
                ctx = run_statistics(parts, spec, fed, run_dir, events, guard)
            _raise_if_stopped(guard, run_dir)
            scores, cost = ctx["scores"], ctx["cost"]
            out["clients"] = ctx["client_rows"]
            out["failed_jobs"] = ctx["failed_jobs"]
            out["privacy"] = privacy_report(spec.privacy, len(ctx["cohort"]), spec.per_class, ctx["releases"],
                                            missing_shares=ctx["missing_shares"])
            if "head_sigma" in ctx:  # the head probe's noisy sums under DP (design note 97): each block's noise std
                out["privacy"]["head_sigma"] = ctx["head_sigma"]
            out["pooling"] = spec.feature_pooling
            out["dims"] = ctx["dims"]
            out["project_dim"] = spec.project_dim  # not null: the dims above are the projected ones
            # the PCA round's width (min(64, rank)); the head probe's curves (and the centred one's beside it)
            for key in ("pca_dims", "head_curves", "head_curves_centred"):
                if key in ctx:
                    out[key] = ctx[key]
            if "head_cost" in ctx:  # the probe's part of `cost` (its rounds, bytes; no forward pass when cached)
                out["head_cost"] = ctx["head_cost"].to_dict()
            out["baseline_voters"] = ctx["baseline_voters"]  # clients whose own LogME avg_logme/borda use
            out["cohort"] = ctx["cohort"]  # the clients sampled (selection.clients / client_fraction)
            out["caveats"] = ctx["caveats"]  # {score: {candidate: why its value says little}}
            print("".join(f"selection: caveat: {s} of {n}: {w}\n" for s, per in ctx["caveats"].items()
                          for n, w in per.items()), end="", file=stream, flush=True)
        scores = server_scores(spec.wanted_scores(), names, params, parts.seed, scores)  # prior, then combined
        if resolved(spec.wanted_scores()):
            out["resolved"] = resolved(spec.wanted_scores())  # e.g. auto -> gbc_prior, and its rule
        search = oracle = None
        if spec.method.kind == SEARCH:
            seeding = scores.get(spec.ranking_score or "") if spec.name == "hybrid" else None
            with guard:  # between stretches; each stretch has its own while it trains
                search, oracle = run_search(parts, spec, run_dir, seeding, progress_stream, reuse=from_checkpoint,
                                            before_stretch=lambda: _raise_if_stopped(guard, run_dir))
            cost = cost + search.cost
            ranking, chosen = search.ranking, search.chosen
            ranked_by = spec.validation_key
            scores[spec.name] = dict(search.rank_scores)
            out["search"] = search.to_dict()
            out["histories"] = oracle.histories()  # per-round learning curves: replayable searches
        else:
            ranked_by = spec.ranking_score
            assert ranked_by is not None and spec.method.kind in (STATS, PRIOR)
            if all(v is None for v in scores[ranked_by].values()):
                raise RuntimeError(f"selection: no candidate got a finite {ranked_by} score: {scores[ranked_by]}")
            ranking = rank_by(scores[ranked_by])  # candidates without a score last
            chosen = ranking[0]
        out.update(ranked_by=ranked_by, ranking=ranking, chosen=chosen, scores=scores,
                   params=params, cost=cost.to_dict(), selection_seconds=time.perf_counter() - t0)
        rows = [{"candidate": n, "rank": ranking.index(n) + 1, "params": params[n], "path": str(dirs[n]),
                 **{s: v.get(n) for s, v in scores.items()}} for n in names]
        out["table"] = sorted(rows, key=lambda r: r["rank"])
        ctx["ranking"], ctx["chosen"], ctx["scores"], ctx["cost"] = ranking, chosen, scores, cost
        print(f"selection ({spec.name}, ranked by {ranked_by}): " + " > ".join(ranking), file=stream, flush=True)
        print(f"chosen: {chosen}; cost: {cost.forward_passes:,} forward passes, {cost.backward_passes:,} "
              f"backward, {cost.bytes_up:,} bytes up, {cost.rounds} rounds", file=stream, flush=True)
        if spec.then_finetune:
            out["finetune"] = finetune(parts, spec, chosen, run_dir, oracle, progress_stream, reuse=from_checkpoint)
        (run_dir / SELECTION_FILE).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / SELECTION_FILE).write_text(json.dumps(out, indent=2, default=_json_default))
        recorder.table("selection", out["table"])
        recorder.log({"round": 1, "selection_forward_passes": cost.forward_passes,
                      "selection_bytes_up": cost.bytes_up, "selection_rounds": cost.rounds})
        summary = {"chosen": chosen, "ranking": ranking, "method": spec.name, "ranked_by": ranked_by,
                   "cost": cost.to_dict(), "scores": scores}
        if "finetune" in out:
            ft = out["finetune"]
            summary.update(test_accuracy=ft.get("test_accuracy"), best_test_accuracy=ft.get("best_test_accuracy"),
                           best_round=ft.get("best_round"))
        recorder.summary(summary)
        return {**summary, "selection": out}
    except (RunInterrupted, Interrupted) as err:  # the selection run is what continues, not a stretch of it
        stop = Interrupted(guard.received or getattr(err, "signum", 2), str(run_dir), None)
        recorder.fail(stop)
        print(f"vista: {stop}", file=sys.stderr, flush=True)
        raise stop from None
    finally:
        events.steps.save(run_dir / "event_pipeline.json")
        fed.close()
        recorder.close()


def _raise_if_stopped(guard: StopOnSignals, run_dir: Path) -> None:
    if guard.received is not None:
        raise Interrupted(guard.received, str(run_dir), None)


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    if dataclasses.is_dataclass(x):
        return dataclasses.asdict(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


__all__ = ["FedPEFTOracle", "SELECTION_FILE", "finetune", "run_search", "run_selection", "run_statistics",
           "statistics_pipeline", "statistics_releases"]
