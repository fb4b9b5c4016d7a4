"""What every aggregator shares: the update type, the protocol, and the one careful weighted
mean (float64, client-id order) the others are built on.

An upload is read as "the client's model, given as a change to the global one": a key the
client did not upload (a frozen tensor) counts as the global value, and a LoRA factor
trained at a lower rank is zero-padded to the global rank first (HetLoRA-style) -- so every
aggregator sees full-shape states and can ignore both cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from vista.fl.lora_math import pad_to_global, rank_dim

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ClientUpdate:
    """One client's result: the tensors it uploaded and how many examples it trained on."""

    client: int
    state: State
    num_examples: int
    metrics: dict[str, Any] = field(default_factory=dict)
    rank: int | None = None  # LoRA rank the client trained at; None = the global rank


@runtime_checkable
class Aggregator(Protocol):
    def client_options(self) -> dict[str, Any]:
        """Sent to every client in its job payload (e.g. ``prox_mu``, ``frozen``)."""
        ...

    def init_state(self, global_state: State) -> Any:
        """The server-optimiser state before round 1 (None when stateless)."""
        ...

    def aggregate(self, global_state: State, updates: Sequence[ClientUpdate], failures: Sequence[Any],
                  state: Any) -> tuple[State, Any]:
        """(new global state, new aggregator state); inputs are left untouched."""
        ...


class Stateless:
    """The defaults of an aggregator with no server state and nothing to ask of clients."""

    def client_options(self) -> dict[str, Any]:
        return {}

    def init_state(self, global_state: State) -> Any:
        return None


@dataclass(frozen=True)
class Contribution:
    """An update as the server uses it: global keys only, full shapes, normalised weight."""

    client: int
    state: State
    weight: float


def contributions(name: str, global_state: State, updates: Sequence[ClientUpdate],
                  failures: Sequence[Any]) -> list[Contribution]:
    """Check the round's updates and bring them to global shapes, sorted by client id.

    Failed jobs do not count: the mean is over the clients that came back, each weighted by
    its share of *their* examples (FedAvg with dropped stragglers).
    """
    if not updates:
        raise ValueError(f"{name} got no client updates this round "
                         f"({len(failures)} failed job(s){': ' + _brief(failures) if failures else ''})")
    ids = [u.client for u in updates]
    if len(set(ids)) != len(ids):
        dup = sorted({c for c in ids if ids.count(c) > 1})
        raise ValueError(f"{name}: more than one update from client(s) {dup}")
    for u in updates:
        if isinstance(u.num_examples, bool) or not isinstance(u.num_examples, int) or u.num_examples < 0:
            raise ValueError(f"{name}: client {u.client} reported num_examples={u.num_examples!r}")
    total = sum(u.num_examples for u in updates)
    if total <= 0:
        raise ValueError(f"{name}: the clients reported no training examples")
    out = []
    for u in sorted(updates, key=lambda u: u.client):
        _check_rank(name, u, global_state)
        out.append(Contribution(u.client, pad_to_global(u.state, global_state), u.num_examples / total))
    return out


def _check_rank(name: str, u: ClientUpdate, global_state: State) -> None:
    for key, t in u.state.items():
        dim = rank_dim(key)
        if dim is None or key not in global_state or t.dim() <= dim:
            continue
        expected = u.rank if u.rank is not None else int(global_state[key].shape[dim])
        if t.shape[dim] != expected:
            said = f"rank={u.rank}" if u.rank is not None else "rank=None (the global rank)"
            raise ValueError(f"{name}: client {u.client} uploaded {key!r} with shape {tuple(t.shape)} "
                             f"(global {tuple(global_state[key].shape)}) but its update says {said}")


def _brief(failures: Sequence[Any]) -> str:
    text = "; ".join(str(f) for f in list(failures)[:3])
    return text[:300] + ("..." if len(failures) > 3 or len(text) > 300 else "")


def mean64(global_state: State, contribs: Sequence[Contribution]) -> State:
    """The weighted mean of every global tensor, in float64, summed in the given order.

    A client that did not upload a key contributes the global value; a key nobody uploaded
    is the global value exactly (not a sum of weights that only nearly adds up to one).
    """
    out: State = {}
    for key, ref in global_state.items():
        if not any(key in c.state for c in contribs):
            out[key] = ref.to(torch.float64, copy=True)
            continue
        acc = torch.zeros(ref.shape, dtype=torch.float64, device=ref.device)
        for c in contribs:
            acc += c.state.get(key, ref).to(device=ref.device, dtype=torch.float64) * c.weight
        out[key] = acc
    return out


def cast_like(global_state: State, state64: State) -> State:
    """Round each tensor once to its global dtype (keys not in ``global_state`` stay float64)."""
    return {k: v.to(global_state[k].dtype) if k in global_state else v for k, v in state64.items()}


def check_state_keys(name: str, what: str, state: dict[str, torch.Tensor], global_state: State) -> None:
    """A server-optimiser buffer must match the global state key for key and shape for shape."""
    if state.keys() != global_state.keys():
        missing, extra = global_state.keys() - state.keys(), state.keys() - global_state.keys()
        raise ValueError(f"{name}: its {what} state does not match the global state: missing "
                         f"{sorted(missing)[:5]}, unexpected {sorted(extra)[:5]} (was init_state called "
                         "with this model's state?)")
    for k, v in state.items():
        if v.shape != global_state[k].shape:
            raise ValueError(f"{name}: {what} state {k!r} has shape {tuple(v.shape)}, the global tensor "
                             f"{tuple(global_state[k].shape)}")
