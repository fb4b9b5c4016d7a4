"""Rankings of candidate models and how well they agree with the ground truth.

A *score* is a ``dict[str, float]`` from candidate name to a number where higher is better:
a transferability score, a search result's ``rank_scores``, or the ground truth itself (the
federated fine-tuned accuracy of every candidate). The agreement measures compare two
scores on their common candidates, so a score that skipped some candidate still compares.

Baselines that need no model evaluation at all (Borda voting over per-client scores, the
parameter-count prior, random) are here too, so every method yields the same kind of score.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "borda",
    "kendall_tau",
    "max_kendall_tau",
    "missing_last",
    "param_prior",
    "random_expectation",
    "random_scores",
    "rank_by",
    "selection_quality",
    "spearman",
    "tie_groups",
    "tied_truth",
    "top1_regret",
    "weighted_tau",
]


# --------------------------------------------------------------------------- helpers
def _check_scores(scores: Mapping[str, float], name: str) -> None:
    """Reject non-mappings and NaN values: NaN has no place in an ordering."""
    if not isinstance(scores, Mapping):
        raise TypeError(
            f"{name} must be a dict of candidate -> score, got {type(scores).__name__}"
        )
    try:
        bad = [k for k, v in scores.items() if math.isnan(float(v))]
    except (TypeError, ValueError):
        raise ValueError(f"{name} has a non-numeric score: {dict(scores)!r}") from None
    if bad:
        raise ValueError(f"{name} has NaN scores for {sorted(bad)}")


def _common(
    truth: Mapping[str, float], scores: Mapping[str, float], minimum: int = 2
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Common keys (sorted) and the aligned truth and score vectors."""
    _check_scores(truth, "truth")
    _check_scores(scores, "scores")
    keys = sorted(set(truth) & set(scores))
    if len(keys) < minimum:
        raise ValueError(
            f"truth and scores share {len(keys)} candidate(s), need at least {minimum} "
            f"(truth: {sorted(truth)}, scores: {sorted(scores)})"
        )
    x = np.array([float(truth[k]) for k in keys])
    y = np.array([float(scores[k]) for k in keys])
    return keys, x, y


def _constant(*vectors: np.ndarray) -> bool:
    return any(np.all(v == v[0]) for v in vectors)


# --------------------------------------------------------------------------- orderings
def _missing(v: Any) -> bool:
    """No score: ``None``, NaN or an infinity (what the driver records as ``None``)."""
    if v is None:
        return True
    try:
        return not math.isfinite(float(v))
    except (TypeError, ValueError):
        return False  # a non-numeric value is an error, reported by _check_scores


def rank_by(scores: Mapping[str, float | None]) -> list[str]:
    """Candidates from best to worst; equal scores fall back to name order so runs agree.
    A candidate without a score (``None``, NaN or an infinity, e.g. a metric undefined for it)
    ranks after every scored one, the unscored ones in name order."""
    if not isinstance(scores, Mapping):
        raise TypeError(f"scores must be a dict of candidate -> score, got {type(scores).__name__}")
    scored = {k: v for k, v in scores.items() if not _missing(v)}
    _check_scores(scored, "scores")
    return sorted(scored, key=lambda k: (-float(scored[k]), k)) + sorted(set(scores) - set(scored))


def missing_last(scores: Mapping[str, float | None]) -> dict[str, float]:
    """Every candidate with a finite score that orders exactly as :func:`rank_by`: a missing
    score (``None``, NaN, an infinity) becomes a value below every real one, the missing
    candidates in name order. So an evaluation (tau, regret) counts a candidate a score could
    not rank where a live run puts it (last), instead of dropping it. Empty when no candidate
    has a score (a live run stops there)."""
    order = rank_by(scores)
    real = {k: float(v) for k, v in scores.items() if not _missing(v)}  # type: ignore[arg-type]
    if not real:
        return {}
    floor = min(real.values())
    gap = max(1.0, max(real.values()) - floor)
    missing = [k for k in order if k not in real]
    return {**real, **{k: floor - gap * (1 + i) for i, k in enumerate(missing)}}


def kendall_tau(truth: Mapping[str, float], scores: Mapping[str, float]) -> float:
    """Kendall tau-b on the common candidates; NaN when either side is constant.

    A constant side carries no ordering, so there is no correlation to report (NaN rather
    than 0, so that averaging over runs does not silently count it as "no agreement").
    """
    _, x, y = _common(truth, scores)
    if _constant(x, y):
        return float("nan")
    # here, not at the top: the config's import of vista.selection stays light
    from scipy import stats

    return float(stats.kendalltau(x, y).statistic)


def weighted_tau(truth: Mapping[str, float], scores: Mapping[str, float]) -> float:
    """``scipy.stats.weightedtau`` (hyperbolic weigher, additive): swaps near the top cost more.

    Model selection cares about the head of the ranking, which plain tau weighs no more
    than the tail. NaN when either side is constant.
    """
    _, x, y = _common(truth, scores)
    if _constant(x, y):
        return float("nan")
    from scipy import stats

    return float(stats.weightedtau(x, y).statistic)


def spearman(truth: Mapping[str, float], scores: Mapping[str, float]) -> float:
    """Spearman rho on the common candidates; NaN when either side is constant."""
    _, x, y = _common(truth, scores)
    if _constant(x, y):
        return float("nan")
    from scipy import stats

    return float(stats.spearmanr(x, y).statistic)


def _chosen_and_best(
    truth: Mapping[str, float], scores: Mapping[str, float]
) -> tuple[str, str]:
    keys, _, _ = _common(truth, scores, minimum=1)
    chosen = rank_by({k: scores[k] for k in keys})[0]
    best = rank_by({k: truth[k] for k in keys})[0]
    return chosen, best


def top1_regret(truth: Mapping[str, float], scores: Mapping[str, float]) -> float:
    """Truth of the best candidate minus truth of the top-scored one (0 = picked the best).

    Both are taken among the common candidates; ties at the top go to the first name.
    """
    chosen, best = _chosen_and_best(truth, scores)
    return float(truth[best]) - float(truth[chosen])


def tie_groups(truth: Mapping[str, float], tol: float = 0.0) -> list[list[str]]:
    """The candidates in groups the truth cannot order, best group first.

    Sorted by value (name order among equals), a group starts at the best candidate left and
    takes every next one within ``tol`` of *that* candidate, so every pair in a group is
    within ``tol`` (no chaining: 0.90, 0.91, 0.92 at ``tol`` 0.015 make two groups, not one).
    ``tol`` = 0: exact ties only; a gap of exactly ``tol`` ties (1e-12 of slack absorbs the
    rounding of 0.92 - 0.90). Accuracies that differ by less than the ground truth can resolve
    (a few test texts, seed noise) are not an order a score can be blamed for missing.
    """
    _check_scores(truth, "truth")
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    groups: list[list[str]] = []
    top = 0.0
    for k in rank_by(truth):
        v = float(truth[k])
        if groups and top - v <= tol + 1e-12:
            groups[-1].append(k)
        else:
            groups.append([k])
            top = v
    return groups


def tied_truth(truth: Mapping[str, float], tol: float = 0.0) -> dict[str, float]:
    """The truth with each candidate valued at its :func:`tie_groups` group's best value: the
    groups keep their order and tie inside, so tau-b and the other rank measures do not ask a
    score to order what the truth cannot. ``tol`` = 0 changes only values within 1e-12."""
    out: dict[str, float] = {}
    for g in tie_groups(truth, tol):
        out.update(dict.fromkeys(g, float(truth[g[0]])))
    return out


def max_kendall_tau(truth: Mapping[str, float], tol: float = 0.0) -> float:
    """The highest Kendall tau-b any score without ties of its own can reach against ``truth``
    whose :func:`tie_groups` (at ``tol``) tie: ``sqrt(1 - n1 / n0)``, ``n0`` = all pairs,
    ``n1`` = pairs inside a group.

    Why: tau-b = (concordant - discordant) / sqrt((n0 - n1)(n0 - n2)); a strict score
    (``n2 = 0``) can be concordant on at most the ``n0 - n1`` pairs the truth orders, and any
    score that sorts the groups right is. So 5 candidates with 3 tied at chance cap tau-b at
    sqrt(0.7) = 0.837 whatever the score. (A score that ties exactly the truth's tied
    candidates would reach 1; real-valued scores do not tie.) NaN when every candidate ties
    or there are fewer than 2 (tau-b is NaN there too)."""
    groups = tie_groups(truth, tol)
    n = sum(len(g) for g in groups)
    n0 = n * (n - 1) // 2
    n1 = sum(len(g) * (len(g) - 1) // 2 for g in groups)
    return math.sqrt(1.0 - n1 / n0) if n0 > n1 else float("nan")


def selection_quality(
    truth: Mapping[str, float], scores: Mapping[str, float], tie_tol: float = 0.0
) -> dict[str, Any]:
    """Every agreement measure at once, plus which candidate was chosen and which was best.

    The rank measures compare ``scores`` with :func:`tied_truth` at ``tie_tol`` and come with
    ``kendall_tau_max`` (:func:`max_kendall_tau`, the ceiling those ties put on tau-b); the
    regret, the chosen and the best candidate use the truth's own values."""
    chosen, best = _chosen_and_best(truth, scores)
    keys = sorted(set(truth) & set(scores))
    ranked = tied_truth({k: truth[k] for k in keys}, tie_tol)
    return {
        "kendall_tau": kendall_tau(ranked, scores),
        "kendall_tau_max": max_kendall_tau(ranked),
        "weighted_tau": weighted_tau(ranked, scores),
        "spearman": spearman(ranked, scores),
        "top1_regret": float(truth[best]) - float(truth[chosen]),
        "chosen": chosen,
        "best": best,
    }


# --------------------------------------------------------------------------- baselines
def borda(
    client_scores: Sequence[Mapping[str, float]],
    weights: Sequence[float] | None = None,
) -> dict[str, float]:
    """Borda count of per-client rankings: the naive federated alternative to merged stats.

    Each client gives its best candidate M-1 points down to 0 for its worst; tied
    candidates share the mean of the points they span. The result is the (optionally
    example-count weighted) *mean* of the clients' points, so it stays in [0, M-1] whatever
    the number of clients or the weights; ordering is the same as the plain Borda sum.
    """
    client_scores = list(client_scores)
    if not client_scores:
        raise ValueError("borda needs at least one client's scores in client_scores")
    names = sorted(client_scores[0])
    if not names:
        raise ValueError("client_scores[0] has no candidates")
    for i, s in enumerate(client_scores):
        _check_scores(s, f"client_scores[{i}]")
        if sorted(s) != names:
            raise ValueError(
                f"client_scores[{i}] scores {sorted(s)}, but client_scores[0] scores {names}: "
                "every client must score the same candidates"
            )
    if weights is None:
        w = np.ones(len(client_scores))
    else:
        w = np.asarray(list(weights), dtype=float)
        if w.shape != (len(client_scores),):
            raise ValueError(
                f"weights has {w.size} entries for {len(client_scores)} clients in client_scores"
            )
        if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(
                f"weights must be finite, non-negative and not all zero, got {w.tolist()}"
            )
    from scipy import stats

    # rankdata ranks ascending from 1 with ties averaged: minus 1 gives points 0..M-1.
    points = np.array(
        [
            stats.rankdata([float(s[k]) for k in names], method="average") - 1.0
            for s in client_scores
        ]
    )
    total = w @ points / w.sum()
    return {k: float(v) for k, v in zip(names, total)}


def param_prior(param_counts: Mapping[str, int]) -> dict[str, float]:
    """``log10`` of each model's parameter count: the "bigger is better" prior to beat."""
    if not isinstance(param_counts, Mapping):
        raise TypeError("param_counts must be a dict of candidate -> parameter count")
    bad = {k: v for k, v in param_counts.items() if isinstance(v, bool) or not v > 0}
    if bad:
        raise ValueError(f"param_counts must be positive, got {bad}")
    return {k: math.log10(v) for k, v in param_counts.items()}


def random_scores(candidates: Iterable[str], seed: int) -> dict[str, float]:
    """Uniform [0, 1) scores, one per candidate, derived from ``(seed, name)`` alone.

    Hashing each name (rather than drawing in sequence) makes a candidate's score
    independent of the order of the list and of which other candidates are in it.
    """
    if isinstance(candidates, str):
        raise TypeError("candidates must be a collection of names, not a single string")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    names = list(candidates)
    dupes = sorted({c for c in names if names.count(c) > 1})
    if dupes:
        raise ValueError(f"candidates has duplicates: {dupes}")
    out = {}
    for c in names:
        digest = hashlib.blake2b(f"{int(seed)}\0{c}".encode(), digest_size=8).digest()
        out[c] = int.from_bytes(digest, "big") / 2.0**64
    return out


RANDOM_DRAWS = 1000  # rankings the random baseline is averaged over (the study's table)
RANDOM_SEED = 0


def random_expectation(
    truth: Mapping[str, float], draws: int = RANDOM_DRAWS, seed: int = RANDOM_SEED, tie_tol: float = 0.0
) -> dict[str, Any]:
    """The random baseline as its expectation: each agreement measure averaged over ``draws``
    uniformly random rankings of the candidates (permutations from
    ``numpy.random.default_rng(seed)``: sampled, not computed in closed form), and
    ``picked_best``, the share of draws whose top candidate is the best.

    One seeded draw (what a live ``selection=random`` run is) lands anywhere: a table of a few
    settings would rank the baseline by luck. The sampled means approach E[tau] = 0 and
    E[regret] = best accuracy minus the mean accuracy. ``chosen`` is None: no single pick.
    ``tie_tol``: as in :func:`selection_quality`."""
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be an int >= 1, got {draws!r}")
    _check_scores(truth, "truth")
    names = sorted(truth)
    if len(names) < 2:
        raise ValueError(f"truth needs at least 2 candidates, got {names}")
    rng = np.random.default_rng(seed)
    seen: dict[tuple[int, ...], dict[str, Any]] = {}  # at most M! distinct rankings: each scored once
    measures = ("kendall_tau", "weighted_tau", "spearman", "top1_regret")
    sums = dict.fromkeys(measures, 0.0)
    hits = 0
    for _ in range(draws):
        perm = tuple(int(i) for i in rng.permutation(len(names)))
        if perm not in seen:
            seen[perm] = selection_quality(truth, {n: float(r) for n, r in zip(names, perm)}, tie_tol)
        q = seen[perm]
        for m in measures:
            sums[m] += q[m]
        hits += q["chosen"] == q["best"]
    best = rank_by(truth)[0]
    return {**{m: sums[m] / draws for m in measures}, "kendall_tau_max": max_kendall_tau(tied_truth(truth, tie_tol)),
            "picked_best": hits / draws, "chosen": None, "best": best, "draws": draws, "seed": seed}
