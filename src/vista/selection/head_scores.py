"""Scores of the federated head probe (:mod:`vista.selection.head_probe`): functions of one
candidate's curve, the global layer's held-out accuracy and loss after each round."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vista.selection.scores import HEAD, score

# a tie-break, never a reason: held-out accuracy moves in steps of 1 / (held-out rows), ~1/80 in
# auto's round, far above any capped loss / 1000
_LOSS_CAP, _LOSS_WEIGHT = 10.0, 1e-3


@score(kind=HEAD)
def head_probe(curve: Sequence[dict[str, Any]]) -> float:
    """Held-out accuracy of the federated head after its last round (equal accuracies: lower loss first)."""
    last = curve[-1]
    return float(last["val_accuracy"]) - _LOSS_WEIGHT * min(float(last["val_loss"]), _LOSS_CAP)
