"""The statistics round of a selection run: the server's shifts, every client's additive statistics
through the privacy guard, the merge (a sum) and the exact and client scores; GBC's PCA round; then
the head probe's rounds when a head score is wanted (:mod:`vista.drivers.selection_head`). Split
from :mod:`vista.drivers.selection`, which re-exports what it always exported."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from vista.data.fednlp import FederatedData
from vista.drivers.interrupt import StopOnSignals
from vista.drivers.run import estimate_memory, make_executor
from vista.drivers.selection_head import run_head_probe
from vista.fl.spec import ClientFailures
from vista.parts import ExperimentParts
from vista.pipeline import EventManager, FLContext, JobResult, Jobs, JobSpec, Pipeline, Task, payload_nbytes
from vista.selection import metrics as score_fns
from vista.selection import scores as registry
from vista.selection.head_dp import check_budget as check_head_budget
from vista.selection.privacy import Releases, check_budget, merge_uploads, plan, require_admitted
from vista.selection.runtime import StatisticsRuntime, StatsArgs
from vista.selection.sampling import cohort as sample_cohort
from vista.selection.sampling import derived_seed
from vista.selection.search import Cost
from vista.selection.spec import SelectionSpec

log = logging.getLogger(__name__)


def statistics_pipeline(spec: SelectionSpec, names: list[str], cohort: list[int], seed: int,
                        collect_failures: bool, releases: int = 1) -> Pipeline:
    """The statistics round (setup): the server computes each candidate's shift (its features
    of public probe texts); every client encodes its train data with every candidate and uploads
    additive statistics around that shift; the server merges them (a sum) and scores. A
    two-round score (GBC) takes a second round: the server sends each candidate's PCA basis and
    pooled mean (from the merged round-1 statistics) and the clients upload statistics of their
    centred, projected features. Which scores, which statistics, which rounds: the registry
    (:data:`vista.selection.scores.SCORES`); a run of head scores alone uploads the counts only
    (``SelectionSpec.uploads_moments``: the probe reads the features the round cached). ``releases``: how many DP releases the budget is
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
    if spec.head_scores():  # the head probe's noise too, before any client works (design note 97)
        check_head_budget(spec.privacy, len(cohort), releases.total)
    if spec.client_logme and spec.privacy.secure_agg and not spec.privacy.dp:
        log.warning("selection: the clients' own LogME (%s) leaves them unmasked and un-noised; "
                    "set selection.privacy.dp_epsilon to noise it", ", ".join(
                        s for s in spec.statistics_scores() if "client_logme" in registry.SCORES[s].needs))
    store = Path(spec.feature_store) if spec.feature_store else None  # kept across runs (a study's choice)
    cache = store or (run_dir / "feature_cache" if spec.reuses_features and spec.feature_cache_mb else None)
    if cache is not None and store is None:
        shutil.rmtree(cache, ignore_errors=True)  # a stopped run's leftovers
    if (cap := spec.texts_cap(len(cohort))) != spec.max_texts_per_client:  # min_texts_per_round (note 71)
        log.info("selection: %d clients scored: each encodes up to %d of its texts", len(cohort), cap)
    args = StatsArgs(candidates=spec.models, data=parts.data, num_labels=fed.num_labels, pooling=spec.feature_pooling,
                     batch_size=spec.batch_size, max_seq_len=spec.max_seq_len or parts.fl.max_seq_len,
                     per_class=spec.per_class, local_logme=spec.client_logme, privacy=spec.privacy,
                     releases=releases.total, seed=parts.seed, max_texts=cap,
                     project_dim=spec.project_dim, feature_cache=str(cache) if cache else None,
                     feature_cache_mb=spec.feature_cache_mb, keep_features=store is not None,
                     head=spec.head_spec(parts.fl) if spec.head_scores() else None, moments=spec.uploads_moments)
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
        if args.head is not None:
            if not spec.privacy.secure_agg:
                log.warning("selection: the head probe's layers reach the server in the clear "
                            "(selection.privacy.secure_agg=false)")
            run_head_probe(ctx, names, spec.head_scores(), args.head, fed.num_labels, spec.privacy, parts.seed,
                           events, executor,
                           collect_failures=parts.fl.client_failures is ClientFailures.drop, releases=releases.total)
    finally:
        executor.shutdown()
        if cache is not None and store is None:  # features of the clients' texts: nothing is kept after the round
            shutil.rmtree(cache, ignore_errors=True)
    ctx["cost"] = dataclasses.replace(ctx["cost"], seconds=time.perf_counter() - t0)
    ctx["releases"] = releases
    return ctx


def statistics_releases(spec: SelectionSpec) -> Releases:
    """What the selection run releases (DP split and accounting): a sum per candidate and statistics
    round, with client scores a score vector per candidate and the weights, and with a head score
    each probe's ``rounds + 1`` sums per candidate (what it releases under DP: :mod:`vista.selection.head_dp`)."""
    head = len(spec.candidates) * len(spec.head_centrings()) * (spec.head_rounds + 1) if spec.head_scores() else 0
    return plan(len(spec.candidates), spec.rounds, spec.client_logme, head)
