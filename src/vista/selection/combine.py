"""Combined scores (other scores' values in, one ranking out) and ``auto``, the recommended one.

A combined score is registered like any other (``@score(name, kind=COMBINED, uses=(...))``):
the server computes it from its components' values once they are all in (statistics scores
after the statistics round, prior ones after them), and a run records the components beside
it. Two rules are registered:

* ``gbc_prior``: ``z(gbc) + 0.5 z(param_prior)``, each standardised over the candidates
  (population std). GBC leads; the size prior moves candidates GBC barely separates. On the
  committed study (9 settings, design note 54) it picked the best model in all 9 with mean
  Kendall tau 0.87 (GBC alone 0.65; a ranking without ties reaches at most 0.89 given the
  ground truth's ties); weights 0.55-1.15 reach 0.89, from 1.2 r8 IID loses its top-1.
* ``logme_gbc``: LogME, its near-ties (within 5% of the spread of the candidates' LogME)
  ordered by GBC. On the study it kept LogME's one miss (bbc alpha = 0.1, regret 0.32).

``auto`` was ``gbc_prior`` on what each candidate's classifier reads (:data:`AUTO_POOLING`
None; design note 69) until design note 89 made it ``head_gbc`` (:mod:`vista.selection.head_scores`,
which registers the alias): the head probe beside this rule; since design note 96 ``head_pair``, the
probe uncentred and centred beside it. From design note 61 to 69 it scored
mean-pooled features; two settings
held out and registered beforehand decided against that: on rotten_tomatoes it picked MiniLM
(regret 0.285) where the classifiers' pooling picked SmolLM2 (0.042), and on r52 both picked
the best but the classifiers' pooling ranked at the tie cap (tau-b 0.95 against 0.74). The
mean-pooled rule stays registered as ``gbc_prior_mean`` so that the study keeps reporting it.
``selection.json`` records what ``auto`` resolved to and the pooling the run used.
``selection=gbc_prior`` is the rule auto was (design notes 54 to 89).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vista.selection.scores import (
    COMBINED,
    PRIOR,
    SCORES,
    alias,
    safe_table,
    safe_value,
    score,
)

__all__ = ["AUTO_POOLING", "NEAR_TIE", "PRIOR_WEIGHT", "gbc_prior", "logme_gbc", "near_ties", "resolved", "server_scores",
           "weighted_z", "zscores"]

PRIOR_WEIGHT = 0.5  # the size prior's weight beside GBC's (z units)
AUTO_POOLING: str | None = None  # what auto scores: None, what each candidate's classifier reads
NEAR_TIE = 0.05  # LogME values within this share of their spread over the candidates are near-ties

Table = Mapping[str, Mapping[str, float | None]]


def zscores(values: Mapping[str, float | None]) -> dict[str, float | None]:
    """Each value minus the mean over the candidates that have one, over their population std
    (0 for all when they are equal); a missing value stays None."""
    have = {k: v for k, v in safe_table(values).items() if v is not None}
    if not have:
        return dict.fromkeys(values)
    x = np.array(list(have.values()), dtype=np.float64)
    sd = float(x.std())
    z = dict(zip(have, ((x - x.mean()) / sd if sd > 0 else np.zeros_like(x)).tolist()))
    return {k: z.get(k) for k in values}


def weighted_z(table: Table, weights: Mapping[str, float], required: Sequence[str]) -> dict[str, float | None]:
    """``sum_s w_s z(s)`` per candidate. A candidate missing a ``required`` score gets None (it
    ranks last, as that score alone ranks it); a missing optional one adds 0 (the mean)."""
    names = list(next(iter(table.values())))
    zs = {s: zscores(table[s]) for s in weights}
    out: dict[str, float | None] = {}
    for n in names:
        if any(zs[s][n] is None for s in required):
            out[n] = None
        else:
            out[n] = sum(w * (zs[s][n] or 0.0) for s, w in weights.items())
    return out


def near_ties(primary: Mapping[str, float | None], breaker: Mapping[str, float | None],
              rel: float) -> dict[str, float | None]:
    """Rank by ``primary``; candidates within ``rel`` x (max - min of ``primary``) of the first
    of their run (from the top) are near-ties, ordered by ``breaker`` (missing last, then the
    primary). The result is ordinal: M for the first of M scored candidates down to 1; a
    candidate without a primary value gets None."""
    p = {k: v for k, v in safe_table(primary).items() if v is not None}
    b = safe_table(breaker)
    if not p:
        return dict.fromkeys(primary)
    spread = max(p.values()) - min(p.values())
    groups: list[list[str]] = []
    for k in sorted(p, key=lambda k: (-p[k], k)):
        if groups and p[groups[-1][0]] - p[k] <= rel * spread:
            groups[-1].append(k)
        else:
            groups.append([k])
    order = [k for g in groups for k in sorted(g, key=lambda k: (b.get(k) is None, -(b.get(k) or 0.0), -p[k], k))]
    return {k: (float(len(order) - order.index(k)) if k in p else None) for k in primary}


@score("gbc_prior", kind=COMBINED, uses=("gbc", "param_prior"))
def gbc_prior(table: Table) -> dict[str, float | None]:
    """z(GBC) + 0.5 z(log10 parameters): GBC leads, the size prior moves its near-ties."""
    return weighted_z(table, {"gbc": 1.0, "param_prior": PRIOR_WEIGHT}, required=("gbc",))


@score("logme_gbc", kind=COMBINED, uses=("logme", "gbc"))
def logme_gbc(table: Table) -> dict[str, float | None]:
    """LogME, its near-ties (within 5% of its spread over the candidates) ordered by GBC (ordinal)."""
    return near_ties(table["logme"], table["gbc"], NEAR_TIE)


alias("gbc_prior_mean", "gbc_prior", "gbc_prior on mean-pooled features: auto from design note 61 to 69, "
      "kept so that the study reports it", pooling="mean")


def server_scores(wanted: Sequence[str], names: Sequence[str], params: Mapping[str, int | None], seed: int,
                  scores: dict[str, dict[str, float | None]]) -> dict[str, dict[str, float | None]]:
    """``scores`` (what the clients' statistics gave) plus the wanted prior scores, then the
    wanted combined ones, each ``{candidate: value}`` over ``names``."""
    for kind in (PRIOR, COMBINED):
        for s in wanted:
            d = SCORES[s]
            if d.kind != kind:
                continue
            got = d.fn(names, params, seed) if kind == PRIOR else d.fn({u: scores[u] for u in d.uses})
            scores[s] = {n: safe_value(got.get(n)) for n in names}
    return scores


def resolved(wanted: Sequence[str]) -> dict[str, dict[str, Any]]:
    """For each wanted alias: the score it resolved to, that score's components and rule."""
    out = {}
    for s in wanted:
        d = SCORES[s]
        if d.alias_of is not None:
            out[s] = {"resolved_to": d.alias_of, "uses": list(d.uses), "rule": SCORES[d.alias_of].doc, "note": d.doc,
                      "pooling": d.pooling}
    return out
