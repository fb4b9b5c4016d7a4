"""The clients' learning rate in each round (``fl.lr_schedule``).

A fixed step does not let FedAvg settle under non-IID data: the clients' local optima pull the
average apart every round, and only a step that decays removes that floor (Li et al., "On the
Convergence of FedAvg on Non-IID Data", ICLR 2020). The selection study saw it as a period-2
oscillation of MiniLM's test accuracy on r8 under label skew (alpha = 0.1; up to 0.28 between
two rounds). The server computes the round's rate and sends it with each training job, so a
resumed run trains exactly as an uninterrupted one; every client restarts AdamW at that rate.

One function per schedule, keyed by name in :data:`LR_SCHEDULES`; each maps the spec and the
1-based round to the rate, with ``fl.lr`` the first round's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vista.fl.spec import FLSpec


def constant(spec: FLSpec, round: int) -> float:
    """``fl.lr`` every round (the default; what every run before the schedules trained with)."""
    return spec.lr


def cosine(spec: FLSpec, round: int) -> float:
    """Half a cosine over T = ``fl.lr_horizon`` rounds (None: ``fl.rounds``), from ``fl.lr`` in
    round 1 towards ``fl.lr_min``: round t trains at ``lr_min + (lr - lr_min) * (1 + cos(pi * (t -
    1) / T)) / 2``, so the last round still trains (at a small rate) rather than at ``lr_min``
    itself; rounds past T stay at ``lr_min``. A run resumed with more ``fl.rounds`` than it began
    with stretches the horizon from there on (set ``fl.lr_horizon`` to keep the first one)."""
    t = min((round - 1) / (spec.lr_horizon or spec.rounds), 1.0)
    return spec.lr_min + (spec.lr - spec.lr_min) * 0.5 * (1.0 + math.cos(math.pi * t))


def exponential(spec: FLSpec, round: int) -> float:
    """``fl.lr * fl.lr_decay ** (round - 1)``, floored at ``fl.lr_min`` (the per-round decay of
    the FedAvg literature, e.g. 0.99 or 0.998)."""
    return max(spec.lr * spec.lr_decay ** (round - 1), spec.lr_min)


LR_SCHEDULES: dict[str, Callable[[FLSpec, int], float]] = {
    "constant": constant,
    "cosine": cosine,
    "exponential": exponential,
}


def round_lr(spec: FLSpec, round: int) -> float:
    """The learning rate the clients train with in ``round`` (1-based) under ``spec``'s schedule."""
    if round < 1:
        raise ValueError(f"rounds count from 1, got {round}")
    return LR_SCHEDULES[spec.lr_schedule](spec, round)
