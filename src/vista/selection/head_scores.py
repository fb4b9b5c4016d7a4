"""Scores of the federated head probe (:mod:`vista.selection.head_probe`): functions of one
candidate's curve, the global layer's held-out accuracy and loss after each round, and
``head_gbc``, the probe beside the frozen-feature rule auto was, ``gbc_prior`` (design note 88);
``auto`` is its alias since design note 89 (registered here, after ``head_gbc``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vista.selection.combine import AUTO_POOLING, gbc_prior, weighted_z
from vista.selection.scores import COMBINED, HEAD, alias, score

HEAD_WEIGHT_OF_AUTO = 0.5  # auto's (gbc_prior's) weight beside the probe's, in z units (design note 88)


@score(kind=HEAD)
def head_probe(curve: Sequence[dict[str, Any]]) -> float:
    """Held-out accuracy of the federated head after its last round (equal accuracies stay tied)."""
    return float(curve[-1]["val_accuracy"])


def head_gbc_rule(head: Mapping[str, float | None], auto: Mapping[str, float | None]) -> dict[str, float | None]:
    """``z(head_probe) + 0.5 z(gbc_prior)``: the probe leads, auto's rule orders what it barely
    separates (several candidates at the majority rate). The study applies it to the values a run
    recorded; ``head_gbc`` to a run's own."""
    return weighted_z({"head_probe": head, "gbc_prior": auto}, {"head_probe": 1.0, "gbc_prior": HEAD_WEIGHT_OF_AUTO},
                      required=("head_probe",))


@score("head_gbc", kind=COMBINED, uses=("head_probe", "gbc", "param_prior"))
def head_gbc(table: Mapping[str, Mapping[str, float | None]]) -> dict[str, float | None]:
    """z(head_probe) + 0.5 z(z(GBC) + 0.5 z(log10 parameters)): the head probe, then gbc_prior's rule."""
    return head_gbc_rule(table["head_probe"], gbc_prior({"gbc": table["gbc"], "param_prior": table["param_prior"]}))


alias("auto", "head_gbc", "the recommended method (design notes 88, 89): z(head_probe) + 0.5 z(gbc_prior), "
      "the federated head probe beside z(GBC) + 0.5 z(log10 parameters), on the features each candidate's "
      "classifier reads; under DP selection=gbc_prior", pooling=AUTO_POOLING)
