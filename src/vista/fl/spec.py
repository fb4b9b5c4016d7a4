"""The ``fl.*`` keys: one dataclass that is both the config schema and what clients read."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from vista.checks import FieldError, at_least, check_range, positive
from vista.fl.lr_schedule import LR_SCHEDULES


class TransferDtype(str, enum.Enum):
    """dtype of floating tensors in transit between server and clients."""

    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


class ClientFailures(str, enum.Enum):
    """What a failed client training job does to the round."""

    stop = "stop"  # the run stops with the job's error and traceback
    drop = "drop"  # the round goes on without it (the aggregator is told); see fl.min_clients


@dataclass
class FLSpec:
    rounds: int = 3
    clients_per_round: int = 5
    local_epochs: int = 1
    batch_size: int = 16
    lr: float = 2e-3
    # the clients' rate each round (vista.fl.lr_schedule): constant | cosine | exponential, from
    # fl.lr in round 1; cosine falls over fl.rounds towards lr_min, exponential by lr_decay a round
    lr_schedule: str = "constant"
    lr_decay: float = 0.99  # exponential: the factor per round
    lr_min: float = 0.0  # cosine's end and exponential's floor
    # the rounds cosine falls over (None: fl.rounds); a search's stretches, each run to its rung's
    # round, set the search's last round, so every candidate trains as one run of the whole search
    lr_horizon: int | None = None
    max_seq_len: int = 128
    eval_every: int = 1
    # score the test splits (global and clients') only every this many rounds and in the run's
    # last; the other evaluated rounds score only the validation split (needs val_fraction > 0).
    # None: every evaluated round. A search ranks on validation, so it sets this (selection_search)
    test_every: int | None = None
    # with test_every: also in the run's last round (a search's stretch that ends before the
    # search's last round sets False: it is ranked on validation, its test scores unused)
    test_last: bool = True
    eval_batch_size: int = 64
    weight_decay: float = 0.0
    # dtype of the tensors in transit (server <-> clients); training stays in float32
    transfer_dtype: TransferDtype = TransferDtype.float32
    # also score the global model on every client's own test split (personalised view)
    eval_clients: bool = True
    # also score each sampled client's locally trained model on its own test split
    personal_eval: bool = False
    # a failed client job stops the run, or is dropped from its round
    client_failures: ClientFailures = ClientFailures.stop
    # with client_failures=drop: the fewest successful clients a round may aggregate
    min_clients: int = 1
    # hold out this fraction of each client's train split (seeded by the run seed) as its
    # validation split: trained on never, scored as val_* and client_val_accuracy_* (the searches)
    val_fraction: float = 0.0
    # recompute each layer's activations in backward instead of keeping them: a training worker
    # keeps only each layer's input (benchmarks/README.md has what it saves and costs)
    gradient_checkpointing: bool = False
    # the most examples one forward/backward holds (None: batch_size): a step of batch_size
    # accumulates gradients over micro-batches, so activations scale with this, not the batch
    micro_batch_size: int | None = None

    def __post_init__(self) -> None:
        # the enums travel as enums whether the config gave strings or Python gave members
        self.transfer_dtype = _member(TransferDtype, "transfer_dtype", self.transfer_dtype)
        self.client_failures = _member(ClientFailures, "client_failures", self.client_failures)
        for name in ("rounds", "clients_per_round", "local_epochs", "batch_size", "eval_every", "eval_batch_size",
                     "min_clients"):
            at_least(self, name, 1)
        at_least(self, "max_seq_len", 4)
        positive(self, "lr")
        if self.lr_schedule not in LR_SCHEDULES:
            raise FieldError("lr_schedule", f"must be one of {sorted(LR_SCHEDULES)}, got {self.lr_schedule!r}",
                             "FLSpec")
        if self.lr_horizon is not None:
            at_least(self, "lr_horizon", 1)
        if not 0.0 < self.lr_decay <= 1.0:
            raise FieldError("lr_decay", f"must be in (0, 1], got {self.lr_decay}", "FLSpec")
        if not 0.0 <= self.lr_min < self.lr:
            raise FieldError("lr_min", f"must be >= 0 and below fl.lr={self.lr}, got {self.lr_min}", "FLSpec")
        check_range("FLSpec", "val_fraction", self.val_fraction, 0.0, 1.0)
        if self.micro_batch_size is not None:
            at_least(self, "micro_batch_size", 1)
        if self.test_every is not None:
            at_least(self, "test_every", 1)
            if self.val_fraction <= 0:
                raise ValueError(f"fl.test_every={self.test_every} leaves rounds that score only the validation "
                                 "split, but fl.val_fraction is 0: set fl.val_fraction > 0, or fl.eval_every instead")

    @property
    def micro_batch(self) -> int:
        """Examples per forward/backward in local training: ``micro_batch_size`` capped at the batch."""
        return min(self.micro_batch_size or self.batch_size, self.batch_size)


def _member(enum_type: type[enum.Enum], field: str, value: object) -> Any:
    try:
        return enum_type(value)
    except ValueError:
        raise FieldError(field, f"must be one of {[m.value for m in enum_type]}, got {value!r}", "FLSpec") from None
