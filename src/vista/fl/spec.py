"""The ``fl.*`` keys: one dataclass that is both the config schema and what clients read."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FLSpec:
    rounds: int = 3
    clients_per_round: int = 5
    local_epochs: int = 1
    batch_size: int = 16
    lr: float = 2e-3
    max_seq_len: int = 128
    eval_every: int = 1
    eval_batch_size: int = 64
    weight_decay: float = 0.0
