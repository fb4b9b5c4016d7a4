"""Which clients train in a round: a seeded draw, the same for the same (seed, round)."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def sample_clients(client_ids: Sequence[int], k: int, seed: int, round: int) -> list[int]:
    if not 1 <= k <= len(client_ids):
        raise ValueError(f"fl.clients_per_round={k} must be between 1 and the number of clients ({len(client_ids)})")
    rng = np.random.default_rng([seed, round])
    chosen = rng.choice(np.asarray(client_ids), size=k, replace=False)
    return sorted(int(c) for c in chosen)


def client_seed(seed: int, round: int, client: int) -> int:
    """A per-(round, client) seed for data order and dropout, independent of the worker."""
    return int(np.random.SeedSequence([seed, round, client]).generate_state(1)[0])
