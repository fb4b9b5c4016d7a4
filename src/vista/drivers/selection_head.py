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
the server has from the statistics round's summed moments (masked or not: only the sum). A score
that reads the centred probe whatever the flag (``head_probe_centred``, in ``head_pair``) beside one
that reads the uncentred probe trains both side by side in the same rounds (design note 95).
Under DP (``selection.privacy.dp_epsilon``) the probe trains by :mod:`vista.selection.head_dp`'s rule:
each client sends its noisy gradient sum a training round, the server takes an Adam step, and the last
round's noisy report is the score; its ``rounds + 1`` releases per candidate and probe share the run's
budget with the statistics (design note 97).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from vista.pipeline import EventManager, Executor, FLContext, JobResult, Jobs, JobSpec, Pipeline, Task, payload_nbytes
from vista.selection import head_dp
from vista.selection import scores as registry
from vista.selection.head_probe import HeadSpec, contribution, finish_round, init_head
from vista.selection.privacy import PrivacySpec, exact_total, unmasked_total
from vista.selection.sampling import derived_seed
from vista.selection.search import Cost

log = logging.getLogger(__name__)


def _mask_seed(seed: int, candidate: int, round_: int, probe: int = 0) -> int:
    """The pair streams' seed of one candidate's round (stands for the cohort's agreed keys); a second
    probe of the same candidate (``head_pair``'s centred one) its own, so no mask is used twice."""
    return derived_seed(seed, 16, candidate, round_, *((probe,) if probe else ()))


def _upload_bytes(value: dict[str, Any]) -> int:
    if "upload" in value:
        return payload_nbytes(value["upload"]["payload"])
    return payload_nbytes(value["blocks"] if "blocks" in value else value["head"])


def head_pipeline(names: list[str], cohort: list[int], dims: dict[str, int], classes: int, head: HeadSpec,
                  privacy: PrivacySpec, seed: int, collect_failures: bool,
                  centres: dict[str, np.ndarray] | None = None, centrings: tuple[bool, ...] | None = None,
                  releases: int = 1) -> Pipeline:
    """The probe's rounds for every candidate at once (jobs probe- then candidate-major);
    ``centrings``: which probes train side by side, uncentred (False) and/or centred (True), by default
    ``head.centre`` alone; ``centres``: each candidate's pooled feature mean, sent with a centred probe's
    layer. A job's key is (candidate, client, probe), ``probe`` indexing ``centrings``; the curves are
    kept by (probe, candidate). Under DP (``privacy.dp``) each job adds its noise share of one of the
    run's ``releases`` and the server steps by :func:`~vista.selection.head_dp.finish_dp_round`."""
    centrings = (head.centre,) if centrings is None else tuple(centrings)
    if any(centrings) and centres is None:
        raise ValueError("a centred head probe needs each candidate's pooled mean (the statistics round's)")
    units = [(v, m, n) for v in range(len(centrings)) for m, n in enumerate(names)]

    def plan(ctx: FLContext) -> Jobs:
        if ctx.round == 1:
            ctx["heads"] = {(v, n): init_head(classes, dims[n], head, seed) for v, _, n in units}
            ctx["curves"] = {(v, n): [] for v, _, n in units}
            ctx["adam"] = {(v, n): head_dp.Adam.start(ctx["heads"][v, n]) for v, _, n in units}
            ctx["failed_jobs"], ctx["cost"], ctx["missing_shares"] = [], Cost(), []
        ctx.keep("heads", "curves", "failed_jobs", "cost", "adam", "missing_shares")
        train = ctx.round <= head.rounds
        return Jobs([JobSpec("head_train", (m, c, v), {
            "head": ctx["heads"][v, n], "round": ctx.round, "train": train, "cohort": cohort,
            "mask_seed": _mask_seed(seed, m, ctx.round, v), "centre": centres[n] if centrings[v] else None,
            "noise_seed": head_dp.noise_seed(seed, m, c, ctx.round, v) if privacy.dp else None})
            for v, m, n in units for c in cohort])

    def collect(ctx: FLContext, results: list[JobResult]) -> None:
        ok = [r for r in results if r.ok]
        ctx["failed_jobs"] = ctx["failed_jobs"] + [
            {"candidate": names[r.key[0]], "client": r.key[1], "job_id": r.job_id, "error": r.error,
             "head_round": ctx.round, "centred": centrings[r.key[2]]} for r in results if not r.ok]
        for v, m, n in units:
            mine = [r.value for r in ok if r.key[0] == m and r.key[2] == v]
            if not mine:
                raise RuntimeError(f"candidate {n!r}: every head probe job of round {ctx.round} failed; first: "
                                   f"{next((f['error'] for f in ctx['failed_jobs'] if f['candidate'] == n), '?')}")
            train, layer = ctx.round <= head.rounds, ctx["heads"][v, n]
            if privacy.secure_agg:  # failed jobs' masks removed, as in the statistics round
                total = unmasked_total([x["upload"] for x in mine], cohort, privacy.frac_bits,
                                       _mask_seed(seed, m, ctx.round, v))
            elif privacy.dp:  # the clients' noisy blocks in the clear
                total = exact_total([x["blocks"] for x in mine], privacy.frac_bits)
            else:
                total = exact_total([contribution(layer, x["head"], x["n"], x["report"], train) for x in mine],
                                    privacy.frac_bits)
            if privacy.dp:
                if len(mine) < len(cohort):  # the sum lacks the failed jobs' noise shares (reported)
                    ctx["missing_shares"] = ctx["missing_shares"] + [len(cohort) - len(mine)]
                new, ctx["adam"][v, n], point = head_dp.finish_dp_round(ctx.round - 1, layer, ctx["adam"][v, n],
                                                                        total, train, head)
            else:
                new, point = finish_round(ctx.round - 1, total, train)
            ctx["curves"][v, n].append(point)
            ctx["heads"][v, n] = new if new is not None else layer
        again = sum(1 for r in ok if r.value["forward_passes"] > 0)
        if ctx.round > 1 and again:  # round 1 may encode (no statistics round before it on that host)
            log.warning("head probe round %d: %d client jobs encoded their texts again (the feature cache is off "
                        "or full: selection.feature_cache_mb); each such round costs a statistics round's encode",
                        ctx.round, again)
        # the layer goes down with every job, and a centred probe's centre too: a client job keeps nothing
        sent = sum(payload_nbytes(ctx["heads"][r.key[2], names[r.key[0]]])
                   + (payload_nbytes(centres[names[r.key[0]]]) if centrings[r.key[2]] else 0) for r in results)
        ctx["cost"] = ctx["cost"] + Cost(forward_passes=sum(r.value["forward_passes"] for r in ok),
                                         bytes_up=sum(_upload_bytes(r.value) for r in ok),
                                         bytes_down=sent, rounds=1)

    return Pipeline(tasks=[Task("head_train", plan, mode="parallel", collect=collect,
                                failures="collect" if collect_failures else "raise")],
                    rounds=head.rounds + 1)


def run_head_probe(ctx: FLContext, names: list[str], wanted: tuple[str, ...], head: HeadSpec, classes: int,
                   privacy: PrivacySpec, seed: int, events: EventManager, executor: Executor,
                   collect_failures: bool, releases: int = 1) -> None:
    """Run the probe after the statistics round whose context is ``ctx``, on its executor; put each
    wanted head score into ``ctx["scores"]``, the curves into ``ctx["head_curves"]`` (and, when an
    uncentred and a centred probe both ran, the centred one's into ``ctx["head_curves_centred"]``),
    and add the probe's cost (also kept alone as ``ctx["head_cost"]``) and failed jobs to the round's;
    ``releases``: the run's DP releases (the budget's split), under DP."""
    probe = FLContext()
    reads = {s: registry.SCORES[s].reads_centred(head.centre) for s in wanted}
    centrings = tuple(sorted(set(reads.values())))
    # centred: on the pooled mean of the statistics round's sums, what GBC's PCA round centres on
    centres = {n: ctx["merged"][n].mean() for n in names} if any(centrings) else None
    if privacy.dp:  # the fixed point's check ran before the statistics round (run_statistics)
        m = len(ctx["cohort"])  # the noise std each noisy sum carries, per block (selection.json's privacy)
        ctx["head_sigma"] = {b: s * math.sqrt(m) for t in (True, False)
                             for b, s in head_dp.head_noise_stds(privacy, m, releases, t).items()}
    head_pipeline(names, ctx["cohort"], ctx["dims"], classes, head, privacy, seed, collect_failures, centres,
                  centrings, releases).run(probe, events, executor)
    by = {c: {n: probe["curves"][v, n] for n in names} for v, c in enumerate(centrings)}
    for s in wanted:
        fn = registry.SCORES[s].fn
        ctx["scores"][s] = {n: registry.safe_value(fn(by[reads[s]][n])) for n in names}
    ctx["head_curves"] = by[centrings[0]]
    if len(centrings) > 1:
        ctx["head_curves_centred"] = by[True]
    ctx["head_cost"] = probe["cost"]  # the probe's share of the round's cost, reported on its own too
    ctx["cost"] = ctx["cost"] + probe["cost"]
    ctx["failed_jobs"] = ctx["failed_jobs"] + probe["failed_jobs"]
    ctx["missing_shares"] = ctx["missing_shares"] + probe["missing_shares"]
    for c, curves in by.items():
        log.info("head probe%s%s: %d rounds; last held-out accuracy %s", " (centred)" if c else "",
                 " under DP" if privacy.dp else "", head.rounds,
                 {n: round(cv[-1]["val_accuracy"], 4) for n, cv in curves.items()})
