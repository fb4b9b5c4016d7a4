"""Pretrained model selection: exact federated transferability scores (pure numpy).

Modules: ``stats`` (additive statistics), ``metrics`` (scores of merged statistics),
``features`` (frozen encoders on the clients), ``privacy`` (admission, secure aggregation,
differential privacy), ``ranking`` (rank agreement, baselines), ``search`` (successive
halving, hybrid, brute force), ``spec`` (the ``selection=`` methods), ``runtime`` (the
client jobs), ``study`` (evaluating selection methods); the run itself is
:func:`vista.drivers.selection.run_selection`.

``score_features(features, labels, metric)`` scores pooled arrays;
``federated_score(clients, metric)`` reduces each client's ``(features, labels)`` to
additive :class:`SufficientStats`, merges them and scores the sum, which equals the pooled
score for every metric except the ``avg_logme`` baseline (example-weighted mean of the
per-client LogME scores).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from vista.selection import metrics
from vista.selection.stats import SufficientStats

__all__ = ["METRICS", "Metric", "SufficientStats", "federated_score", "score_features"]


@dataclass(frozen=True)
class Metric:
    """A registered score: ``score(list of client stats) -> float``."""

    name: str
    per_class: bool  # needs per-class Gram matrices
    score: Callable[[Sequence[SufficientStats]], float]
    two_rounds: bool = False  # GBC: round 1 finds a PCA basis, round 2 scores projected features


def _merged(
    fn: Callable[[SufficientStats], float],
) -> Callable[[Sequence[SufficientStats]], float]:
    def score(client_stats: Sequence[SufficientStats]) -> float:
        return fn(sum(client_stats[1:], client_stats[0]))

    return score


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("logme", False, _merged(metrics.logme)),
        Metric("hscore", False, _merged(metrics.hscore)),
        Metric("reg_hscore", False, _merged(metrics.reg_hscore)),
        Metric("transrate", True, _merged(metrics.transrate)),
        Metric("gbc", True, _merged(metrics.gbc), two_rounds=True),
        Metric("avg_logme", False, metrics.avg_logme),
    )
}


def _get_metric(metric: str) -> Metric:
    try:
        return METRICS[metric]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown metric {metric!r}; known metrics: {', '.join(sorted(METRICS))}"
        ) from None


def federated_score(
    clients: Sequence[tuple[np.ndarray, np.ndarray]], metric: str
) -> float:
    """Score a federation given as a list of ``(features, labels)`` pairs, one per client.

    ``num_classes`` is the largest label over all clients plus one; every client's
    statistics use it, so they merge.
    """
    m = _get_metric(metric)
    clients = list(clients)
    if not clients:
        raise ValueError("federated_score needs at least one client")
    num_classes = 1 + max(int(np.max(y)) for _, y in clients if np.size(y) > 0)
    if m.two_rounds:  # round 1: the pooled PCA basis; round 2: statistics of projected features
        first = [SufficientStats.from_features(f, y, num_classes) for f, y in clients]
        basis = metrics.pca_basis(sum(first[1:], first[0]))
        clients = [(np.asarray(f, dtype=np.float64) @ basis, y) for f, y in clients]
    stats = [
        SufficientStats.from_features(f, y, num_classes, per_class=m.per_class)
        for f, y in clients
    ]
    return float(m.score(stats))


def score_features(features: np.ndarray, labels: np.ndarray, metric: str) -> float:
    """Score pooled features (N x D) and integer labels (N,) — the centralised value."""
    return federated_score([(features, labels)], metric)
