"""What a FedPEFT run carries from one round to the next, as one object, and how it is saved.

:class:`RoundState` is the whole of it (the rest of a round lives in its FLContext): a run
stopped after round ``round`` continues exactly from it, in memory (budgeted search keeps
one per candidate) or from a checkpoint on disk (``vista resume=RUN_DIR``).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Totals:
    """Running totals since round 1: bytes each way, examples through forward / backward."""

    bytes_up: int = 0
    bytes_down: int = 0
    forward_passes: int = 0
    backward_passes: int = 0
    jobs_retried: int = 0  # job attempts re-run after a failure, a timeout or a dead worker
    workers_respawned: int = 0


@dataclass
class RoundState:
    """Everything that carries from one round to the next, as one object: a run stopped after
    round ``round`` continues exactly from it (``resume=``), and budgeted search keeps one per
    candidate. The rest of a round lives in its FLContext and is gone at the next refresh."""

    round: int
    global_state: dict[str, Any]
    aggregator_state: Any
    trainable_params: int
    total_params: int
    method: str | None
    totals: Totals = field(default_factory=Totals)
    best_test_accuracy: float = -1.0
    best_round: int = 0
    best_state: dict[str, Any] | None = None
    best_eval: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # every recorded round's scalars

    def copy(self) -> "RoundState":
        """A copy to continue from: its next rounds add to their own totals and history."""
        return dataclasses.replace(self, totals=dataclasses.replace(self.totals), history=list(self.history))

    def to_tree(self) -> dict[str, Any]:
        """Plain values and tensors (what a checkpoint stores; no tensor is copied)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["totals"] = dataclasses.asdict(self.totals)
        return out

    @classmethod
    def from_tree(cls, tree: dict[str, Any]) -> "RoundState":
        return cls(**{**tree, "totals": Totals(**tree["totals"])})


def rng_state() -> dict[str, Any]:
    """The main process's global RNGs. Vista's own randomness is seeded per (round, client),
    so these drive nothing a resumed run depends on; kept so a checkpoint is complete."""
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss,
                      "gauss": gauss},
            "torch": torch.get_rng_state()}


def restore_rng(saved: dict[str, Any]) -> None:
    import torch

    version, internal, gauss = saved["python"]
    random.setstate((version, tuple(internal), gauss))
    n = saved["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(saved["torch"])
