"""LoRA-aware aggregators: they know that the model update is ``B @ A``, not A and B apart.

Averaging A and B separately gives ``avg(B) @ avg(A)``, which is not ``avg(B @ A)``; these
strategies avoid (FFA-LoRA), correct (FedEx-LoRA) or re-factor (FlexLoRA) that error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from vista.fl.aggregation.base import ClientUpdate, Contribution, State, Stateless, cast_like, contributions, mean64
from vista.fl.lora_math import as_matrix, lora_pairs, rank_of

RESIDUAL_PREFIX = "residual:"


def residual_key(prefix: str) -> str:
    """Global-state key of FedEx-LoRA's folded residual for LoRA module ``prefix``."""
    return RESIDUAL_PREFIX + prefix


def weighted_product(contribs: Sequence[Contribution], global_state: State, a_key: str, b_key: str) -> torch.Tensor:
    """``sum_c w_c B_c @ A_c`` in float64 (a factor a client did not upload is the global one)."""
    ga, gb = global_state[a_key], global_state[b_key]
    acc = torch.zeros(gb.shape[0], ga.shape[1], dtype=torch.float64, device=ga.device)
    for c in contribs:
        a = as_matrix(a_key, c.state.get(a_key, ga)).to(device=ga.device, dtype=torch.float64)
        b = as_matrix(b_key, c.state.get(b_key, gb)).to(device=ga.device, dtype=torch.float64)
        acc += (b @ a) * c.weight
    return acc


def stacked_factors(contribs: Sequence[Contribution], global_state: State, a_key: str,
                    b_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``[w_1 B_1, ..., w_C B_C]`` and ``[A_1; ...; A_C]`` in float64: their product is
    ``sum_c w_c B_c @ A_c`` without forming any ``out x in`` matrix."""
    ga, gb = global_state[a_key], global_state[b_key]
    bs, as_ = [], []
    for c in contribs:
        as_.append(as_matrix(a_key, c.state.get(a_key, ga)).to(device=ga.device, dtype=torch.float64))
        bs.append(as_matrix(b_key, c.state.get(b_key, gb)).to(device=ga.device, dtype=torch.float64) * c.weight)
    return torch.cat(bs, dim=1), torch.cat(as_, dim=0)


def _refuse_keys(name: str, updates: Sequence[ClientUpdate], bad: Any, why: str) -> None:
    for u in updates:
        found = sorted(k for k in u.state if bad(k))
        if found:
            raise ValueError(f"{name}: client {u.client} uploaded {found[:3]}; {why}")


@dataclass(frozen=True)
class FFALoRA(Stateless):
    """Sun et al. 2024 (FFA-LoRA): A stays at its (random) initialisation, only B and the
    non-LoRA tensors train. With A shared and fixed, ``avg(B) @ A == avg(B @ A)``: plain
    averaging is exact, and clients upload half the LoRA bytes.

    Clients are told ``frozen=["lora_A"]``; an upload that contains lora_A anyway is a client
    bug and an error. Everything uploaded is example-weighted averaged; A is the global A.
    Failures: as FedAvg (not reweighted). Stateless.
    """

    def client_options(self) -> dict[str, Any]:
        return {"frozen": ["lora_A"]}

    def aggregate(self, global_state: State, updates: Sequence[ClientUpdate], failures: Sequence[Any] = (),
                  state: Any = None) -> tuple[State, Any]:
        name = type(self).__name__
        _refuse_keys(name, updates, lambda k: "lora_A" in k, "FFA-LoRA clients must not train nor upload lora_A")
        contribs = contributions(name, global_state, updates, failures)
        return cast_like(global_state, mean64(global_state, contribs)), None


@dataclass(frozen=True)
class ExactLoRA(Stateless):
    """Singhal et al. 2024 (FedEx-LoRA): A and B averaged as FedAvg does, and the error
    ``avg(B @ A) - avg(B) @ avg(A)`` folded into a per-module residual, so the served model
    equals the exact average of the client models.

    The residual lives in the global state as ``"residual:<module prefix>"``, shape
    ``(out, in)``, in ``B @ A`` space *without* the LoRA scaling (the runtime multiplies by
    the module's scaling and adds it to the frozen base weight). It is cumulative:
    ``R_new = R_old + avg(B @ A) - avg(B) @ avg(A)``, ``R_old`` from the global state (zeros
    when absent). ``avg(B)``, ``avg(A)`` are taken as stored (rounded to the global dtype), so
    the served weight matches ``avg(B @ A)`` as closely as that dtype allows. Clients never
    upload residual keys (an error if one does). Failures: as FedAvg. Stateless.
    """

    def aggregate(self, global_state: State, updates: Sequence[ClientUpdate], failures: Sequence[Any] = (),
                  state: Any = None) -> tuple[State, Any]:
        name = type(self).__name__
        _refuse_keys(name, updates, lambda k: k.startswith(RESIDUAL_PREFIX),
                     "residuals are server state, clients never upload them")
        contribs = contributions(name, global_state, updates, failures)
        out = cast_like(global_state, mean64(global_state, contribs))
        for prefix, (a_key, b_key) in lora_pairs(global_state).items():
            exact = weighted_product(contribs, global_state, a_key, b_key)
            served = out[b_key].to(torch.float64) @ out[a_key].to(torch.float64)
            key = residual_key(prefix)
            old = global_state.get(key)
            if old is not None and old.shape != exact.shape:
                raise ValueError(f"{name}: global {key!r} has shape {tuple(old.shape)}, the module's B @ A "
                                 f"is {tuple(exact.shape)}")
            r_old = old.to(torch.float64) if old is not None else torch.zeros_like(exact)
            dtype = old.dtype if old is not None else global_state[a_key].dtype
            out[key] = (r_old + (exact - served)).to(dtype)
        return out, None


@dataclass(frozen=True)
class FlexLoRA(Stateless):
    """Bai et al. 2024 (FlexLoRA): heterogeneous ranks merged in weight space.

    Per LoRA module ``W = sum_c w_c B_c @ A_c`` (each client at its own rank), then the
    truncated SVD to the global rank ``r`` (computed from the stacked factors, see svd_factors): ``B = U_r sqrt(S_r)``, ``A = sqrt(S_r) V_r^T``.
    Because singular values come sorted, ``truncate_to_rank(state, r_c)`` of the result is
    the best rank-``r_c`` approximation of ``W`` for each client. Whatever lies beyond rank
    ``r`` is dropped (no residual). Non-LoRA tensors: example-weighted mean. Failures: as
    FedAvg. Stateless.
    """

    def aggregate(self, global_state: State, updates: Sequence[ClientUpdate], failures: Sequence[Any] = (),
                  state: Any = None) -> tuple[State, Any]:
        contribs = contributions(type(self).__name__, global_state, updates, failures)
        out = cast_like(global_state, mean64(global_state, contribs))
        for a_key, b_key in lora_pairs(global_state).values():
            b_cat, a_cat = stacked_factors(contribs, global_state, a_key, b_key)
            b, a = svd_factors(b_cat, a_cat, rank_of(global_state, a_key))
            out[a_key] = a.to(global_state[a_key].dtype)
            out[b_key] = b.to(global_state[b_key].dtype)
        return out, None


def svd_factors(b_cat: torch.Tensor, a_cat: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, A)`` of shapes ``(out, r)``, ``(r, in)`` with ``B @ A`` the best rank-r approximation
    of ``W = b_cat @ a_cat``, balanced as ``U_r sqrt(S_r)``, ``sqrt(S_r) V_r^T`` (zero columns/rows
    when ``W`` has fewer than ``r`` singular values).

    W is never formed: with ``b_cat = Q_b R_b`` and ``a_cat^T = Q_a R_a``, ``W = Q_b (R_b R_a^T) Q_a^T``
    and only the small ``k x k`` core (``k`` = sum of client ranks) is decomposed, so the cost is
    ``O((out + in) k^2)`` rather than a dense SVD of every ``out x in`` module.
    """
    qb, rb = torch.linalg.qr(b_cat)
    qa, ra = torch.linalg.qr(a_cat.T)
    u, s, vh = torch.linalg.svd(rb @ ra.T, full_matrices=False)
    k = min(r, s.numel())
    root = s[:k].sqrt()
    b = torch.zeros(b_cat.shape[0], r, dtype=b_cat.dtype, device=b_cat.device)
    a = torch.zeros(r, a_cat.shape[1], dtype=a_cat.dtype, device=a_cat.device)
    b[:, :k] = (qb @ u[:, :k]) * root
    a[:k] = root[:, None] * (vh[:k] @ qa.T)
    return b, a
