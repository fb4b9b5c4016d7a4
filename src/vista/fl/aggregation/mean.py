"""Aggregators whose server step is the example-weighted mean itself."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vista.checks import check_range
from vista.fl.aggregation.base import ClientUpdate, State, Stateless, cast_like, contributions, mean64


@dataclass(frozen=True)
class FedAvg(Stateless):
    """McMahan et al. 2017: the example-weighted mean of the clients' trainable tensors.

    Summed in float64 in client-id order, so the result does not depend on which worker
    finished first; a single client with weight 1 gives back its own tensors bit for bit.
    Lower-rank LoRA uploads are zero-padded to the global rank first; keys a client did not
    upload count as the global value; keys the global state lacks are ignored. Failures are
    not reweighted: the mean is over the clients that came back. Stateless (state is None).
    """

    def aggregate(self, global_state: State, updates: Sequence[ClientUpdate], failures: Sequence[Any] = (),
                  state: Any = None) -> tuple[State, Any]:
        contribs = contributions(type(self).__name__, global_state, updates, failures)
        return cast_like(global_state, mean64(global_state, contribs)), None


@dataclass(frozen=True)
class HetLoRA(FedAvg):
    """FedAvg over zero-padded LoRA factors of heterogeneous ranks, named so configs can say so.

    Cho et al. 2024 (HetLoRA): clients train at their own rank ``r_c <= r_max``; the server pads
    A's rows and B's columns beyond ``r_c`` with zeros and averages. That padding is what every
    Vista aggregator does first, so this is exactly FedAvg. Not implemented from the paper:
    local rank self-pruning and sparsity-weighted aggregation.
    """


@dataclass(frozen=True)
class FedProx(FedAvg):
    """Li et al. 2020: clients add ``(mu/2)*||w - w_global||^2`` over their trainable tensors.

    The server side is FedAvg unchanged; ``mu`` only travels to the clients as ``prox_mu``.
    ``mu=0`` is FedAvg exactly.
    """

    mu: float = 0.01

    def __post_init__(self) -> None:
        check_range(type(self).__name__, "mu", self.mu, 0.0, None)

    def client_options(self) -> dict[str, Any]:
        return {"prox_mu": float(self.mu)}


@dataclass(frozen=True)
class FedLC(FedAvg):
    """Zhang et al. 2022 (FedLC): clients train on logits calibrated by their own label counts,
    ``logit_c - tau * n_c^(-1/4)`` (:class:`vista.fl.client.LogitCalibration`), against label skew.

    The server side is FedAvg unchanged; ``tau`` only travels to the clients as ``lc_tau``.
    ``tau=0`` is FedAvg exactly.
    """

    tau: float = 1.0

    def __post_init__(self) -> None:
        check_range(type(self).__name__, "tau", self.tau, 0.0, None)

    def client_options(self) -> dict[str, Any]:
        return {"lc_tau": float(self.tau)}
