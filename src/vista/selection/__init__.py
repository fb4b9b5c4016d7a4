"""Pretrained model selection: exact federated transferability scores (pure numpy).

Modules: ``stats`` (additive statistics), ``scores`` (the score registry: every score, the
statistics it needs, its rounds), ``metrics`` (exact scores of merged statistics),
``baselines`` (the naive and prior baselines), ``features`` (frozen encoders on the clients),
``privacy`` (admission, secure aggregation, differential privacy), ``ranking`` (rank
agreement), ``search`` (successive halving, hybrid, brute force), ``spec`` (the
``selection=`` methods), ``runtime`` (the client jobs); the run itself is
:func:`vista.drivers.selection.run_selection`.

``score_features(features, labels, metric)`` scores pooled arrays;
``federated_score(clients, metric)`` reduces each client's ``(features, labels)`` to
additive :class:`SufficientStats`, merges them and scores the sum, which equals the pooled
score for every exact score (client scores such as ``avg_logme`` are per-client baselines).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from vista.selection import metrics
from vista.selection.scores import CLIENT, EXACT, SCORES, ScoreDef, score
from vista.selection.stats import SufficientStats

__all__ = ["METRICS", "SCORES", "ScoreDef", "SufficientStats", "federated_score", "score", "score_features"]


class _Metrics(Mapping[str, ScoreDef]):
    """The scores :func:`federated_score` computes (the exact and the client ones): a live
    view of the registry, so a score registered later is here too."""

    def _names(self) -> list[str]:
        return [n for n, d in SCORES.items() if d.kind in (EXACT, CLIENT)]

    def __getitem__(self, name: str) -> ScoreDef:
        if name not in self._names():
            raise KeyError(name)
        return SCORES[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


METRICS: Mapping[str, ScoreDef] = _Metrics()


def _get_metric(metric: str) -> ScoreDef:
    try:
        return METRICS[metric]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown metric {metric!r}; known metrics: {', '.join(sorted(METRICS))}"
        ) from None


def federated_score(clients: Sequence[tuple[np.ndarray, np.ndarray]], metric: str, shift=None) -> float:
    """Score a federation given as a list of ``(features, labels)`` pairs, one per client.

    ``num_classes`` is the largest label over all clients plus one; every client's
    statistics use it, so they merge. ``shift``: the public point every client's statistics
    are accumulated around (see :mod:`vista.selection.stats`). A two-round score gets the
    pooled PCA basis of round 1, and each client's round-2 statistics are of its features
    centred on the round-1 mean and projected on it. A client score gets each client's own
    LogME (one candidate: the federation's).
    """
    m = _get_metric(metric)
    clients = list(clients)
    if not clients:
        raise ValueError("federated_score needs at least one client")
    num_classes = 1 + max(int(np.max(y)) for _, y in clients if np.size(y) > 0)
    if m.kind == CLIENT:
        local = [SufficientStats.from_features(f, y, num_classes, shift=shift) for f, y in clients]
        votes = [(v, s.n) for s in local if (v := metrics.local_logme(s)) is not None]
        table = m.fn([{"federation": v} for v, _ in votes], [w for _, w in votes])
        return float("nan") if table.get("federation") is None else float(table["federation"])
    if m.rounds == 2:  # round 1: the pooled PCA basis; round 2: statistics of projected features
        first = sum(SufficientStats.from_features(f, y, num_classes, shift=shift) for f, y in clients)
        basis, centre = metrics.pca_basis(first), first.mean()
        clients = [((np.asarray(f, dtype=np.float64) - centre) @ basis, y) for f, y in clients]
        shift = None
    stats = [SufficientStats.from_features(f, y, num_classes, per_class=m.per_class, shift=shift)
             for f, y in clients]
    return float(m.fn(sum(stats[1:], stats[0])))


def score_features(features: np.ndarray, labels: np.ndarray, metric: str, shift=None) -> float:
    """Score pooled features (N x D) and integer labels (N,): the centralised value."""
    return federated_score([(features, labels)], metric, shift=shift)
