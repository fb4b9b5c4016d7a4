"""The selection driver: which candidate model to fine-tune, how sure, at what cost.

A selection run is a pipeline. Statistics methods (the exact and client scores of the registry,
:data:`vista.selection.scores.SCORES`: logme, hscore, reg_hscore, transrate, gbc, the avg_logme /
borda baselines, and any score registered later): a parallel ``probe`` task (the server's shift per
candidate), a parallel ``client_stats`` task (one job per candidate x client: frozen encoder ->
additive statistics around the shift -> privacy guard) and a single ``merge_and_score`` task (merge
= sum, score, rank, caveats); a two-round score adds the PCA round. Prior scores (param_prior,
random) need no client work; combined ones (gbc_prior, and ``auto``, its alias) are the server's
function of their components' values. Search methods (successive_halving, hybrid, brute_force)
fine-tune candidates with the FedPEFT driver, continuing survivors from their checkpoints, and
``then_finetune`` the winner. Results: FLContext, ``selection.json``, the recorder, ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from vista.data.fednlp import FederatedData
from vista.drivers.interrupt import StopOnSignals
from vista.drivers.run import estimate_memory, make_executor, seed_everything
from vista.drivers.selection_search import FedPEFTOracle, finetune, run_search
from vista.errors import Interrupted
from vista.fl.spec import ClientFailures
from vista.models.inventory import count_parameters
from vista.parts import ExperimentParts
from vista.pipeline import (
    EventManager,
    FLContext,
    JobResult,
    Jobs,
    JobSpec,
    Pipeline,
    RunInterrupted,
    Task,
    payload_nbytes,
)
from vista.recording.recorder import ExpRecorder
from vista.selection import metrics as score_fns
from vista.selection import scores as registry
from vista.selection.combine import resolved, server_scores
from vista.selection.privacy import (
    Releases,
    check_budget,
    merge_uploads,
    plan,
    privacy_report,
    require_admitted,
)
from vista.selection.ranking import rank_by
from vista.selection.runtime import StatisticsRuntime, StatsArgs
from vista.selection.sampling import cohort as sample_cohort
from vista.selection.sampling import derived_seed
from vista.selection.search import Cost
from vista.selection.spec import PRIOR, SEARCH, STATS, SelectionSpec

log = logging.getLogger(__name__)

SELECTION_FILE = "selection.json"


# -- statistics methods ------------------------------------------------------------------------
def statistics_pipeline(spec: SelectionSpec, names: list[str], cohort: list[int], seed: int,
                        collect_failures: bool, releases: int = 1) -> Pipeline:
    """The statistics round (setup): the server computes each candidate's shift (its features
    of public probe texts); every client encodes its train data with every candidate and uploads
    additive statistics around that shift; the server merges them (a sum) and scores. A
    two-round score (GBC) takes a second round: the server sends each candidate's PCA basis and
    pooled mean (from the merged round-1 statistics) and the clients upload statistics of their
    centred, projected features. Which scores, which statistics, which rounds: the registry
    (:data:`vista.selection.scores.SCORES`). ``releases``: how many DP releases the budget is
    split over (:func:`vista.selection.privacy.plan`); ``missing_shares`` in the context
    counts, per sum that lost any, the clients whose noise share is missing."""
    wanted = spec.statistics_scores()
    defs = {s: registry.SCORES[s] for s in wanted}
    first_round = [s for s, d in defs.items() if d.kind == registry.EXACT and d.rounds == 1]
    second_round = [s for s, d in defs.items() if d.rounds == 2]
    client_scores = [s for s, d in defs.items() if d.kind == registry.CLIENT]
    failures = "collect" if collect_failures else "raise"

    def plan_probe(ctx: FLContext) -> Jobs:
        ctx.keep("cohort", "merged", "scores", "client_rows", "dims", "failed_jobs", "cost", "baseline_voters",
                 "missing_shares", "caveats")
        return Jobs([JobSpec("probe", (m, -1)) for m in range(len(names))])

    def collect_probe(ctx: FLContext, results: list[JobResult]) -> None:
        ctx["shifts"] = {names[r.key[0]]: np.asarray(r.value["shift"], dtype=np.float64) for r in results if r.ok}

    def plan_stats(ctx: FLContext) -> Jobs:
        ctx["cohort"] = cohort
        shifts = ctx["shifts"]  # a candidate whose probe failed: statistics around 0
        # score_seed / weight_seed: the DP noise of a client's own score (per candidate) and of its
        # example count (one per client: every candidate's job draws the same, released once)
        specs = [JobSpec("client_stats", (m, c), {"cohort": cohort, "mask_seed": derived_seed(seed, 6, m),
                                                  "noise_seed": derived_seed(seed, 7, m, c),
                                                  "score_seed": derived_seed(seed, 10, m, c),
                                                  "weight_seed": derived_seed(seed, 11, c),
                                                  "shift": shifts.get(name)})
                 for m, name in enumerate(names) for c in cohort]  # candidate-major: one model load per run
        return Jobs(specs)

    def collect_stats(ctx: FLContext, results: list[JobResult]) -> None:
        ctx["client_results"] = results

    def merge_and_score(ctx: FLContext) -> None:
        results: list[JobResult] = ctx["client_results"]
        merged, failed, mine_of = _merge(results, spec, names, cohort, seed, 6, releases)
        table: dict[str, dict[str, float | None]] = {s: {} for s in wanted}
        local: list[dict[str, float]] = [dict() for _ in cohort]
        weights = [0.0 for _ in cohort]
        per_client: dict[int, dict[str, Any]] = {}
        for name in names:
            for s in first_round:
                table[s][name] = _score(defs[s], merged[name])
            for r in mine_of[name]:
                v, i = r.value, cohort.index(r.key[1])
                if v["local_logme"] is not None:  # with DP: clipped and noised, and so is the weight
                    local[i][name] = v["local_logme"]
                    weights[i] = float(v["local_weight"])
                per_client.setdefault(r.key[1], {"client": r.key[1], "examples": v["examples"],
                                                 "eligible": v["eligible"], "reason": v["reason"],
                                                 "withheld_classes": v["withheld_classes"]})
        require_admitted(list(per_client.values()), spec.privacy, spec.texts_cap(len(cohort)))
        # the client scores read the clients' own LogME; one whose LogME is undefined for some
        # candidate (e.g. it holds one class) votes for none: the same clients judge every candidate
        voters = [(loc, w) for loc, w in zip(local, weights, strict=True) if len(loc) == len(names)]
        for s in client_scores:
            got = registry.safe_table(defs[s].fn([v for v, _ in voters], [w for _, w in voters]))
            table[s] = {n: got.get(n) for n in names}
        ctx["baseline_voters"] = len(voters)
        ctx["merged"] = merged
        ctx["caveats"] = registry.caveats(first_round, merged)  # where a score's value says little
        ctx["scores"] = table
        ctx["client_rows"] = [per_client[c] for c in sorted(per_client)]
        ctx["dims"] = {n: int(mine_of[n][0].value["dim"]) for n in names}
        ctx["failed_jobs"] = failed
        ctx["missing_shares"] = _missing_shares(failed, names)
        shift_bytes = sum(np.asarray(ctx["shifts"][names[r.key[0]]]).nbytes for r in results
                          if r.ok and names[r.key[0]] in ctx["shifts"])
        ctx["cost"] = dataclasses.replace(_cost(results, rounds=1), bytes_down=shift_bytes)
        ctx["client_results"] = None

    # -- round 2 (two-round scores: GBC): statistics of centred features on the pooled PCA basis
    def plan_projected(ctx: FLContext) -> Jobs:
        bases = {name: score_fns.pca_basis(ctx["merged"][name]) for name in names}
        centres = {name: ctx["merged"][name].mean() for name in names}
        ctx["bases"] = bases
        specs = [JobSpec("client_stats", (m, c), {"cohort": cohort, "mask_seed": derived_seed(seed, 8, m),
                                                  "noise_seed": derived_seed(seed, 9, m, c),
                                                  "basis": bases[name], "centre": centres[name]})
                 for m, name in enumerate(names) for c in cohort]
        return Jobs(specs)

    def collect_projected(ctx: FLContext, results: list[JobResult]) -> None:
        merged, failed, _ = _merge(results, spec, names, cohort, seed, 8, releases)
        ctx["pca_dims"] = {n: int(ctx["bases"][n].shape[1]) for n in names}
        for s in second_round:
            ctx["scores"][s] = {n: _score(defs[s], merged[n]) for n in names}
        ctx["failed_jobs"] = ctx["failed_jobs"] + failed
        ctx["missing_shares"] = ctx["missing_shares"] + _missing_shares(failed, names)
        # what each client got: the basis and the centre
        down = sum(ctx["bases"][names[r.key[0]]].nbytes + 8 * ctx["bases"][names[r.key[0]]].shape[0]
                   for r in results if r.ok)
        ctx["cost"] = ctx["cost"] + dataclasses.replace(_cost(results, rounds=1), bytes_down=down)

    two = bool(second_round)
    return Pipeline(
        setup=[Task("probe", plan_probe, mode="parallel", collect=collect_probe, failures=failures),
               Task("client_stats", plan_stats, mode="parallel", collect=collect_stats, failures=failures),
               Task("merge_and_score", merge_and_score)],
        tasks=[Task("client_gbc_stats", plan_projected, mode="parallel", collect=collect_projected,
                    failures=failures)] if two else [],
        rounds=1 if two else 0,
    )


def _score(d: registry.ScoreDef, stats: Any) -> float | None:
    """An exact score of merged statistics, or None (no example arrived, or it is undefined)."""
    if stats.n == 0:
        return None
    with np.errstate(all="ignore"):
        return registry.safe_value(d.fn(stats))


def _missing_shares(failed: list[dict[str, Any]], names: list[str]) -> list[int]:
    """Per candidate's sum that lost any: how many clients' uploads (and DP noise shares) it lacks."""
    counts = [len({f["client"] for f in failed if f["candidate"] == n}) for n in names]
    return [k for k in counts if k]


def _merge(results: list[JobResult], spec: SelectionSpec, names: list[str], cohort: list[int], seed: int,
           tag: int, releases: int = 1) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, list[JobResult]]]:
    """Per candidate: the server's sum of the uploads that arrived (masks of dropped clients
    removed), the failed jobs, and the successful results."""
    failed = [{"candidate": names[r.key[0]], "client": r.key[1], "job_id": r.job_id, "error": r.error}
              for r in results if not r.ok]
    merged, mine_of = {}, {}
    for m, name in enumerate(names):
        mine = [r for r in results if r.ok and r.key[0] == m]
        if not mine:
            raise RuntimeError(f"candidate {name!r}: every client statistics job failed; first: "
                               f"{next((f['error'] for f in failed if f['candidate'] == name), '?')}")
        dropped = sorted({f["client"] for f in failed if f["candidate"] == name})
        merged[name] = merge_uploads([r.value["upload"] for r in mine], spec.privacy,
                                     seed=derived_seed(seed, tag, m), cohort=cohort, dropped=dropped,
                                     releases=releases)
        mine_of[name] = mine
    return merged, failed, mine_of


def _cost(results: list[JobResult], rounds: int) -> Cost:
    ok = [r for r in results if r.ok]
    return Cost(forward_passes=sum(r.value["forward_passes"] for r in ok),
                bytes_up=sum(payload_nbytes(r.value["upload"]["payload"]) for r in ok), rounds=rounds)


def run_statistics(parts: ExperimentParts, spec: SelectionSpec, fed: FederatedData, run_dir: Path,
                   events: EventManager, guard: StopOnSignals | None = None) -> FLContext:
    """The statistics round on the workers: the context after it (``releases``: what it released)."""
    names = [c.name for c in spec.models]
    cohort = sample_cohort(list(fed.client_ids), spec.cohort_size(len(fed.client_ids)), parts.seed)
    releases = statistics_releases(spec)
    check_budget(spec.privacy, spec.per_class or spec.rounds == 2, len(cohort), releases.total)
    if spec.client_logme and spec.privacy.secure_agg and not spec.privacy.dp:
        log.warning("selection: the clients' own LogME (%s) leaves them unmasked and un-noised; "
                    "set selection.privacy.dp_epsilon to noise it", ", ".join(
                        s for s in spec.statistics_scores() if "client_logme" in registry.SCORES[s].needs))
    store = Path(spec.feature_store) if spec.feature_store else None  # kept across runs (a study's choice)
    cache = store or (run_dir / "feature_cache" if spec.rounds == 2 and spec.feature_cache_mb else None)
    if cache is not None and store is None:
        shutil.rmtree(cache, ignore_errors=True)  # a stopped run's leftovers
    if (cap := spec.texts_cap(len(cohort))) != spec.max_texts_per_client:  # min_texts_per_round (note 71)
        log.info("selection: %d clients scored: each encodes up to %d of its texts", len(cohort), cap)
    args = StatsArgs(candidates=spec.models, data=parts.data, num_labels=fed.num_labels, pooling=spec.feature_pooling,
                     batch_size=spec.batch_size, max_seq_len=spec.max_seq_len or parts.fl.max_seq_len,
                     per_class=spec.per_class, local_logme=spec.client_logme, privacy=spec.privacy,
                     releases=releases.total, seed=parts.seed, max_texts=cap,
                     project_dim=spec.project_dim, feature_cache=str(cache) if cache else None,
                     feature_cache_mb=spec.feature_cache_mb, keep_features=store is not None)
    pipeline = statistics_pipeline(spec, names, cohort, parts.seed, releases=releases.total,
                                   collect_failures=parts.fl.client_failures is ClientFailures.drop)
    ctx = FLContext()
    t0 = time.perf_counter()
    memory, useful = None, len(names) * len(cohort)
    if parts.scheduler.num_workers == "auto":  # the largest candidate's forward pass bounds a worker
        estimates = [e for m in spec.models
                     if (e := estimate_memory(m, None, fed.num_labels, args.batch_size, args.max_seq_len, train=False,
                                              scheduler=parts.scheduler, useful_workers=useful)) is not None]
        memory = max(estimates, key=lambda e: e.total_mb, default=None)
    executor = make_executor(parts, args, run_dir, StatisticsRuntime.create, memory=memory, useful_workers=useful)
    if guard is not None:
        guard.attach(executor)
    try:
        pipeline.run(ctx, events, executor)
    finally:
        executor.shutdown()
        if cache is not None and store is None:  # features of the clients' texts: nothing is kept after the round
            shutil.rmtree(cache, ignore_errors=True)
    ctx["cost"] = dataclasses.replace(ctx["cost"], seconds=time.perf_counter() - t0)
    ctx["releases"] = releases
    return ctx


def statistics_releases(spec: SelectionSpec) -> Releases:
    """What the statistics round releases (DP split and accounting): a sum per candidate and round,
    and with client scores a score vector per candidate and the weights."""
    return plan(len(spec.candidates), spec.rounds, spec.client_logme)


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
            out["pooling"] = spec.feature_pooling
            out["dims"] = ctx["dims"]
            out["project_dim"] = spec.project_dim  # not null: the dims above are the projected ones
            if "pca_dims" in ctx:  # the PCA round's width per candidate (min(64, rank))
                out["pca_dims"] = ctx["pca_dims"]
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
