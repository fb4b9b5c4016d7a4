"""Server aggregation: pure functions of (global state, client updates, failures)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ClientUpdate:
    client: int
    state: State
    num_examples: int
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FedAvg:
    """McMahan et al. 2017: the example-weighted mean of the clients' trainable tensors.

    Summed in float64 in client-id order, so the result does not depend on which worker
    finished first; a single client with weight 1 gives back its own tensors bit for bit.
    """

    def aggregate(self, global_state: State, updates: Sequence[ClientUpdate], failures: Sequence[Any] = ()) -> State:
        if not updates:
            raise ValueError("FedAvg got no client updates this round")
        total = sum(u.num_examples for u in updates)
        if total <= 0:
            raise ValueError("FedAvg: the clients reported no training examples")
        ordered = sorted(updates, key=lambda u: u.client)
        out: State = {}
        for name, ref in global_state.items():
            acc = torch.zeros(ref.shape, dtype=torch.float64)
            for u in ordered:
                acc += u.state[name].to(torch.float64) * (u.num_examples / total)
            out[name] = acc.to(ref.dtype)
        return out
