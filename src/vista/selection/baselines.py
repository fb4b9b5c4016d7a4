"""The baseline scores, registered in :data:`vista.selection.scores.SCORES`.

Client scores (the naive federated ports, from each voting client's own LogME) and prior
scores (no client work). The voting clients are chosen by the caller: in a selection run,
the clients with a LogME for every candidate, so that every candidate is judged by the
same clients.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from vista.selection.ranking import borda, param_prior, random_scores
from vista.selection.scores import CLIENT, PRIOR, score

__all__ = ["avg_logme", "borda_logme", "param_prior_score", "random_score"]


@score("avg_logme", kind=CLIENT)
def avg_logme(local: Sequence[Mapping[str, float]], weights: Sequence[float]) -> dict[str, float | None]:
    """Example-weighted mean of the clients' own LogME (what a naive port does; not exact)."""
    names = sorted({k for loc in local for k in loc})
    total = float(sum(weights))
    if not local or total <= 0:
        return {n: None for n in names}
    return {n: sum(float(loc[n]) * w for loc, w in zip(local, weights, strict=True)) / total for n in names}


@score("borda", kind=CLIENT)
def borda_logme(local: Sequence[Mapping[str, float]], weights: Sequence[float]) -> dict[str, float | None]:
    """Borda count of the clients' own LogME rankings (example-weighted mean points)."""
    if not local:
        return {}
    return dict(borda(list(local), weights=list(weights)))


@score("param_prior", kind=PRIOR)
def param_prior_score(candidates: Sequence[str], params: Mapping[str, int | None], seed: int) -> dict[str, float | None]:
    """log10 of the parameter count: the bigger model (unknown counts rank last)."""
    known = {c: params[c] for c in candidates if params.get(c)}
    return {c: param_prior(known).get(c) if known else None for c in candidates}


@score("random", kind=PRIOR)
def random_score(candidates: Sequence[str], params: Mapping[str, int | None], seed: int) -> dict[str, float | None]:
    """A seeded random ranking (each candidate's score from ``(seed, name)`` alone)."""
    return dict(random_scores(list(candidates), seed))
