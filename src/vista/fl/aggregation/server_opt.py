"""Server optimisers: the mean of the uploads gives a pseudo-gradient ``delta = avg - global``
that a server-side optimiser applies to the global model. All buffers are float64 and keyed
like the global state; nothing is mutated, each round returns fresh buffers.

Failures are not reweighted: ``avg`` is over the clients that came back (see FedAvg).
A ``state`` of None is taken as ``init_state(global_state)``, so round 1 may skip the call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from vista.checks import check_range
from vista.fl.aggregation.base import (
    ClientUpdate,
    State,
    cast_like,
    check_state_keys,
    contributions,
    mean64,
)


def pseudo_gradient(name: str, global_state: State, updates: Sequence[ClientUpdate],
                    failures: Sequence[Any]) -> tuple[State, State]:
    """(global in float64, ``avg - global`` in float64)."""
    avg = mean64(global_state, contributions(name, global_state, updates, failures))
    g64 = {k: v.to(torch.float64) for k, v in global_state.items()}
    return g64, {k: avg[k] - g64[k] for k in global_state}


def _zeros64(global_state: State, fill: float = 0.0) -> State:
    return {k: torch.full(v.shape, fill, dtype=torch.float64, device=v.device) for k, v in global_state.items()}


@dataclass(frozen=True)
class FedAvgM:
    """Hsu et al. 2019: server momentum on the pseudo-gradient.

    ``v = momentum*v + delta; x = global + server_lr*v``. ``momentum=0, server_lr=1`` is FedAvg
    (up to float64 rounding of ``global + (avg - global)``). State: ``{"velocity": {key: v}}``.
    """

    server_lr: float = 1.0
    momentum: float = 0.9

    def __post_init__(self) -> None:
        check_range(type(self).__name__, "server_lr", self.server_lr, 0.0, None, lo_open=True)
        check_range(type(self).__name__, "momentum", self.momentum, 0.0, 1.0)

    def client_options(self) -> dict[str, Any]:
        return {}

    def init_state(self, global_state: State) -> dict[str, State]:
        return {"velocity": _zeros64(global_state)}

    def aggregate(self, global_state: State, updates: Sequence[ClientUpdate], failures: Sequence[Any] = (),
                  state: Any = None) -> tuple[State, dict[str, State]]:
        name = type(self).__name__
        state = self.init_state(global_state) if state is None else state
        check_state_keys(name, "velocity", state["velocity"], global_state)
        g64, delta = pseudo_gradient(name, global_state, updates, failures)
        v = {k: self.momentum * state["velocity"][k] + delta[k] for k in global_state}
        new = {k: g64[k] + self.server_lr * v[k] for k in global_state}
        return cast_like(global_state, new), {"velocity": v}


@dataclass(frozen=True)
class _Adaptive:
    """Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2 (no bias correction):

        m = beta1*m + (1 - beta1)*delta
        v = <second-moment rule of the subclass>
        x = global + server_lr * m / (sqrt(v) + tau)

    starting from ``m = 0`` and ``v = tau**2``. ``tau`` bounds the step where ``v`` is tiny.
    State: ``{"m": {key: m}, "v": {key: v}}``.
    """

    server_lr: float = 1e-2
    beta1: float = 0.9
    tau: float = 1e-3

    def __post_init__(self) -> None:
        owner = type(self).__name__
        check_range(owner, "server_lr", self.server_lr, 0.0, None, lo_open=True)
        check_range(owner, "beta1", self.beta1, 0.0, 1.0)
        check_range(owner, "tau", self.tau, 0.0, None, lo_open=True)

    def _second_moment(self, v: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def client_options(self) -> dict[str, Any]:
        return {}

    def init_state(self, global_state: State) -> dict[str, State]:
        return {"m": _zeros64(global_state), "v": _zeros64(global_state, float(self.tau) ** 2)}

    def aggregate(self, global_state: State, updates: Sequence[ClientUpdate], failures: Sequence[Any] = (),
                  state: Any = None) -> tuple[State, dict[str, State]]:
        name = type(self).__name__
        state = self.init_state(global_state) if state is None else state
        check_state_keys(name, "m", state["m"], global_state)
        check_state_keys(name, "v", state["v"], global_state)
        g64, delta = pseudo_gradient(name, global_state, updates, failures)
        m = {k: self.beta1 * state["m"][k] + (1 - self.beta1) * delta[k] for k in global_state}
        v = {k: self._second_moment(state["v"][k], delta[k]) for k in global_state}
        new = {k: g64[k] + self.server_lr * m[k] / (v[k].sqrt() + self.tau) for k in global_state}
        return cast_like(global_state, new), {"m": m, "v": v}


@dataclass(frozen=True)
class FedAdagrad(_Adaptive):
    """FedAdagrad: ``v = v + delta**2`` (Reddi et al. 2021, Alg. 2; beta2 has no role).

    With ``server_lr=1, beta1=0`` the first round steps ``delta / (sqrt(tau**2 + delta**2) + tau)``.
    """

    def _second_moment(self, v: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        return v + delta.square()


@dataclass(frozen=True)
class FedAdam(_Adaptive):
    """FedAdam: ``v = beta2*v + (1 - beta2)*delta**2`` (Reddi et al. 2021, Alg. 2).

    With ``server_lr=1, beta1=beta2=0``: ``m = delta`` and ``v = delta**2``, so the step is
    ``delta / (|delta| + tau)`` -- about ``sign(delta)`` (a unit step) wherever ``|delta| >> tau``,
    and about ``delta / tau`` where ``|delta| << tau``; the initial ``v`` plays no part.
    """

    beta2: float = 0.99

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(type(self).__name__, "beta2", self.beta2, 0.0, 1.0)

    def _second_moment(self, v: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        return self.beta2 * v + (1 - self.beta2) * delta.square()


@dataclass(frozen=True)
class FedYogi(_Adaptive):
    """FedYogi: ``v = v - (1 - beta2)*delta**2*sign(v - delta**2)`` (Reddi et al. 2021, Alg. 2).

    ``v`` moves additively towards ``delta**2``, so it grows no faster than Adagrad's and
    forgets more slowly than Adam's. With ``server_lr=1, beta1=beta2=0`` the first round
    steps ``delta / (sqrt(tau**2 + delta**2) + tau)`` where ``|delta| > tau``.
    """

    beta2: float = 0.99

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(type(self).__name__, "beta2", self.beta2, 0.0, 1.0)

    def _second_moment(self, v: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        d2 = delta.square()
        return v - (1 - self.beta2) * d2 * torch.sign(v - d2)
