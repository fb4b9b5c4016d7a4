"""The head probe's rounds in a selection run (:mod:`vista.selection.head_probe`).

After the statistics round, when a head score is wanted (``head_probe``), the server runs the
probe on the same workers: ``rounds + 1`` parallel ``head_train`` tasks, one job per candidate
and scored client. In round ``r`` each client scores the layer after ``r - 1`` rounds on its
held-out rows and, but in the last round, trains it on the others; the server averages the
layers (FedAvg, by probe-train rows) and adds up the reports into the candidate's curve, with
``secure_agg`` as masked sums (it learns only the sums, as of the statistics round). Every head
score is then its function of that curve. The clients read the features the statistics
round cached, so the probe adds no forward pass (a worker on another host re-encodes once).
Centred (``selection.head_centre``), each job also gets the candidate's pooled feature mean, which
the server has from the statistics round's summed moments (masked or not: only the sum).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from vista.pipeline import EventManager, Executor, FLContext, JobResult, Jobs, JobSpec, Pipeline, Task, payload_nbytes
from vista.selection import scores as registry
from vista.selection.head_probe import HeadSpec, contribution, finish_round, init_head
from vista.selection.privacy import PrivacySpec, exact_total, unmasked_total
from vista.selection.sampling import derived_seed
from vista.selection.search import Cost

log = logging.getLogger(__name__)


def _mask_seed(seed: int, candidate: int, round_: int) -> int:
    """The pair streams' seed of one candidate's round (stands for the cohort's agreed keys)."""
    return derived_seed(seed, 16, candidate, round_)


def _upload_bytes(value: dict[str, Any]) -> int:
    return payload_nbytes(value["upload"]["payload"] if "upload" in value else value["head"])


def head_pipeline(names: list[str], cohort: list[int], dims: dict[str, int], classes: int, head: HeadSpec,
                  privacy: PrivacySpec, seed: int, collect_failures: bool,
                  centres: dict[str, np.ndarray] | None = None) -> Pipeline:
    """The probe's rounds for every candidate at once (jobs candidate-major, as the statistics round);
    ``centres``: each candidate's pooled feature mean, sent with the layer (``HeadSpec.centre``)."""
    if head.centre and centres is None:
        raise ValueError("a centred head probe needs each candidate's pooled mean (the statistics round's)")

    def plan(ctx: FLContext) -> Jobs:
        if ctx.round == 1:
            ctx["heads"] = {n: init_head(classes, dims[n], head, seed) for n in names}
            ctx["curves"] = {n: [] for n in names}
            ctx["failed_jobs"], ctx["cost"] = [], Cost()
        ctx.keep("heads", "curves", "failed_jobs", "cost")
        train = ctx.round <= head.rounds
        return Jobs([JobSpec("head_train", (m, c), {"head": ctx["heads"][n], "round": ctx.round, "train": train,
                                                    "cohort": cohort, "mask_seed": _mask_seed(seed, m, ctx.round),
                                                    "centre": centres[n] if head.centre else None})
                     for m, n in enumerate(names) for c in cohort])

    def collect(ctx: FLContext, results: list[JobResult]) -> None:
        ok = [r for r in results if r.ok]
        ctx["failed_jobs"] = ctx["failed_jobs"] + [
            {"candidate": names[r.key[0]], "client": r.key[1], "job_id": r.job_id, "error": r.error,
             "head_round": ctx.round} for r in results if not r.ok]
        for m, n in enumerate(names):
            mine = [r.value for r in ok if r.key[0] == m]
            if not mine:
                raise RuntimeError(f"candidate {n!r}: every head probe job of round {ctx.round} failed; first: "
                                   f"{next((f['error'] for f in ctx['failed_jobs'] if f['candidate'] == n), '?')}")
            train, layer = ctx.round <= head.rounds, ctx["heads"][n]
            if privacy.secure_agg:  # failed jobs' masks removed, as in the statistics round
                total = unmasked_total([v["upload"] for v in mine], cohort, privacy.frac_bits,
                                       _mask_seed(seed, m, ctx.round))
            else:
                total = exact_total([contribution(layer, v["head"], v["n"], v["report"], train) for v in mine],
                                    privacy.frac_bits)
            new, point = finish_round(ctx.round - 1, total, train)
            ctx["curves"][n].append(point)
            ctx["heads"][n] = new if new is not None else layer
        again = sum(1 for r in ok if r.value["forward_passes"] > 0)
        if ctx.round > 1 and again:  # round 1 may encode (no statistics round before it on that host)
            log.warning("head probe round %d: %d client jobs encoded their texts again (the feature cache is off "
                        "or full: selection.feature_cache_mb); each such round costs a statistics round's encode",
                        ctx.round, again)
        sent = sum(payload_nbytes(ctx["heads"][names[r.key[0]]]) for r in results)
        if head.centre:  # the centre goes down with the layer: a client job keeps nothing across rounds
            sent += sum(payload_nbytes(centres[names[r.key[0]]]) for r in results)
        ctx["cost"] = ctx["cost"] + Cost(forward_passes=sum(r.value["forward_passes"] for r in ok),
                                         bytes_up=sum(_upload_bytes(r.value) for r in ok),
                                         bytes_down=sent, rounds=1)

    return Pipeline(tasks=[Task("head_train", plan, mode="parallel", collect=collect,
                                failures="collect" if collect_failures else "raise")],
                    rounds=head.rounds + 1)


def run_head_probe(ctx: FLContext, names: list[str], wanted: tuple[str, ...], head: HeadSpec, classes: int,
                   privacy: PrivacySpec, seed: int, events: EventManager, executor: Executor,
                   collect_failures: bool) -> None:
    """Run the probe after the statistics round whose context is ``ctx``, on its executor; put each
    wanted head score into ``ctx["scores"]``, the curves into ``ctx["head_curves"]``, and add the
    probe's cost (also kept alone as ``ctx["head_cost"]``) and failed jobs to the round's."""
    probe = FLContext()
    # centred: on the pooled mean of the statistics round's sums, what GBC's PCA round centres on
    centres = {n: ctx["merged"][n].mean() for n in names} if head.centre else None
    head_pipeline(names, ctx["cohort"], ctx["dims"], classes, head, privacy, seed, collect_failures, centres).run(
        probe, events, executor)
    curves: dict[str, list[dict[str, Any]]] = probe["curves"]
    for s in wanted:
        fn = registry.SCORES[s].fn
        ctx["scores"][s] = {n: registry.safe_value(fn(curves[n])) for n in names}
    ctx["head_curves"] = curves
    ctx["head_cost"] = probe["cost"]  # the probe's share of the round's cost, reported on its own too
    ctx["cost"] = ctx["cost"] + probe["cost"]
    ctx["failed_jobs"] = ctx["failed_jobs"] + probe["failed_jobs"]
    log.info("head probe: %d rounds; last held-out accuracy %s", head.rounds,
             {n: round(c[-1]["val_accuracy"], 4) for n, c in curves.items()})
