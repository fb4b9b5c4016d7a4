"""What a cheaper statistics round samples: a seeded cohort of clients and a seeded cap on
each client's texts. Both are functions of the run's seed alone, so the parent and every worker
(any candidate, either round) draw the same clients and texts without sending index lists."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["capped", "cohort", "derived_seed", "token_share"]


def derived_seed(seed: int, *tags: int) -> int:
    """A seed for one purpose (``tags``) of the run's ``seed``."""
    return int(np.random.SeedSequence([seed, *tags]).generate_state(1)[0])


def cohort(clients: Sequence[int], size: int | None, seed: int) -> list[int]:
    """``size`` of ``clients`` drawn without replacement (all when None or too many), sorted."""
    if size is None or size >= len(clients):
        return sorted(clients)
    rng = np.random.default_rng(derived_seed(seed, 5))
    return sorted(int(c) for c in rng.choice(clients, size=size, replace=False))


def capped(indices: np.ndarray, cap: int | None, seed: int, client: int) -> np.ndarray:
    """At most ``cap`` of a client's text indices, a sample seeded by ``(seed, client)`` in
    their original order: the same texts for every candidate and round."""
    if cap is None or len(indices) <= cap:
        return indices
    rng = np.random.default_rng(np.random.SeedSequence([seed, 12, client]))
    return np.sort(rng.choice(indices, size=cap, replace=False))


def token_share(token_counts: Sequence[int], length: int, full_length: int) -> float:
    """The share of the tokens at ``full_length`` that truncating to ``length`` keeps: sum of
    min(n, length) over sum of min(n, full_length). Compute is linear in tokens at these lengths
    (attention's quadratic part makes shorter cheaper still), so this bounds a shorter round's
    cost from above."""
    full = sum(min(n, full_length) for n in token_counts)
    return sum(min(n, length) for n in token_counts) / full if full else 1.0
