"""A validation split held out of each client's training data, reproducible from the run seed.

Why: a model search (successive halving, hybrid, brute force) must decide on examples it
neither trains on nor is judged by; the clients' test splits are the ground truth's test set.
A client's split depends only on (run seed, client id, its train indices, the fraction), so
the pipeline process (what to evaluate) and every worker (what to train on) compute the same
one without shipping index lists.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["HOLDOUT_STREAM", "Holdout", "hold_out", "holdout_size"]

HOLDOUT_STREAM = 11  # a SeedSequence tag of its own: no other seeded draw shares the stream


@dataclass(frozen=True)
class Holdout:
    """``train``: what the client trains on (its order kept); ``val``: held out, sorted."""

    train: np.ndarray
    val: np.ndarray


def holdout_size(n: int, fraction: float) -> int:
    """``round(fraction * n)`` texts, at least 1 when the client has 2 or more and ``fraction``
    is positive, never all of them (a client keeps one text to train on)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the validation fraction must lie in [0, 1), got {fraction!r}")
    if fraction == 0.0 or n < 2:
        return 0
    return min(n - 1, max(1, round(fraction * n)))


def hold_out(train: np.ndarray, fraction: float, seed: int, client: int) -> Holdout:
    """Split one client's train indices: a seeded draw of :func:`holdout_size` of them is the
    validation split, the rest stay for training in their original order."""
    train = np.asarray(train, dtype=np.int64)
    k = holdout_size(len(train), fraction)
    if k == 0:
        return Holdout(train, np.zeros(0, np.int64))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), HOLDOUT_STREAM, int(client)]))
    held = np.zeros(len(train), dtype=bool)
    held[rng.choice(len(train), size=k, replace=False)] = True
    return Holdout(train[~held], np.sort(train[held]))
