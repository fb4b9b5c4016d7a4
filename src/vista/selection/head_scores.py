"""Scores of the federated head probe (:mod:`vista.selection.head_probe`): functions of one
candidate's curve, the global layer's held-out accuracy and loss after each round, and
``head_gbc``, the probe beside the frozen-feature rule auto was, ``gbc_prior`` (design note 88);
``head_pair``, the probe both as the flag leaves it and centred, beside the same rule (design note
95); ``head_pair_min``, the two probes joined by the lower of their z-scores instead (design note 103, a
candidate registered before held-out runs judged it, rejected on one: note 105); ``auto`` is an alias, of
``head_gbc`` from design note 89 and of ``head_pair`` since note 96 (registered here, after both)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vista.selection.combine import AUTO_POOLING, gbc_prior, weighted_z, zscores
from vista.selection.scores import COMBINED, HEAD, alias, score

HEAD_WEIGHT_OF_AUTO = 0.5  # auto's (gbc_prior's) weight beside the probe's, in z units (design note 88)


@score(kind=HEAD)
def head_probe(curve: Sequence[dict[str, Any]]) -> float:
    """Held-out accuracy of the federated head after its last round (equal accuracies stay tied)."""
    return float(curve[-1]["val_accuracy"])


@score(kind=HEAD, centre=True)
def head_probe_centred(curve: Sequence[dict[str, Any]]) -> float:
    """head_probe of the probe on features less their pooled mean, whatever ``selection.head_centre``."""
    return head_probe(curve)


def head_gbc_rule(head: Mapping[str, float | None], auto: Mapping[str, float | None],
                  auto_weight: float = HEAD_WEIGHT_OF_AUTO) -> dict[str, float | None]:
    """``z(head_probe) + 0.5 z(gbc_prior)``: the probe leads, auto's rule orders what it barely
    separates (several candidates at the majority rate). The study applies it to the values a run
    recorded; ``head_gbc`` to a run's own. ``auto_weight``: gbc_prior's weight (the study varies it)."""
    return weighted_z({"head_probe": head, "gbc_prior": auto}, {"head_probe": 1.0, "gbc_prior": auto_weight},
                      required=("head_probe",))


@score("head_gbc", kind=COMBINED, uses=("head_probe", "gbc", "param_prior"))
def head_gbc(table: Mapping[str, Mapping[str, float | None]]) -> dict[str, float | None]:
    """z(head_probe) + 0.5 z(z(GBC) + 0.5 z(log10 parameters)): the head probe, then gbc_prior's rule."""
    return head_gbc_rule(table["head_probe"], gbc_prior({"gbc": table["gbc"], "param_prior": table["param_prior"]}))


def head_pair_rule(head: Mapping[str, float | None], centred: Mapping[str, float | None],
                   auto: Mapping[str, float | None], centred_weight: float = 1.0,
                   auto_weight: float = HEAD_WEIGHT_OF_AUTO) -> dict[str, float | None]:
    """:func:`head_gbc_rule` with the probe's place taken by ``z(head_probe) + z(head_probe_centred)``:
    the two probes have an equal say (centring lifts an encoder whose features share a large offset;
    uncentred, the probe orders the others closer to their fine-tunes), their sum standardised again so
    that auto's rule keeps its half weight beside it and orders what both barely separate. The weights
    default to the shipped ones; the study varies them (``pair_weights.py``)."""
    both = weighted_z({"head_probe": head, "head_probe_centred": centred},
                      {"head_probe": 1.0, "head_probe_centred": centred_weight},
                      required=("head_probe", "head_probe_centred"))
    return head_gbc_rule(both, auto, auto_weight)


@score("head_pair", kind=COMBINED, uses=("head_probe", "head_probe_centred", "gbc", "param_prior"))
def head_pair(table: Mapping[str, Mapping[str, float | None]]) -> dict[str, float | None]:
    """z(z(head_probe) + z(head_probe_centred)) + 0.5 z(gbc_prior): the probe uncentred and centred, then gbc_prior."""
    return head_pair_rule(table["head_probe"], table["head_probe_centred"],
                          gbc_prior({"gbc": table["gbc"], "param_prior": table["param_prior"]}))


def head_pair_min_rule(head: Mapping[str, float | None], centred: Mapping[str, float | None],
                       auto: Mapping[str, float | None],
                       auto_weight: float = HEAD_WEIGHT_OF_AUTO) -> dict[str, float | None]:
    """:func:`head_gbc_rule` with the probe's place taken by ``min(z(head_probe), z(head_probe_centred))``:
    a fine-tune needs both what the uncentred probe sees (FedAvg moving a classifier on the features as
    the model emits them, its first step) and what the centred one sees (classes that separate once the
    shared offset is gone), so the weaker of the two bounds a candidate, where :func:`head_pair_rule`'s
    sum lets one outvote the other. A candidate missing either probe's value ranks last."""
    zh, zc = zscores(head), zscores(centred)
    lower = {n: None if zh[n] is None or zc.get(n) is None else min(zh[n], zc[n]) for n in zh}
    return head_gbc_rule(lower, auto, auto_weight)


@score("head_pair_min", kind=COMBINED, uses=("head_probe", "head_probe_centred", "gbc", "param_prior"))
def head_pair_min(table: Mapping[str, Mapping[str, float | None]]) -> dict[str, float | None]:
    """z(min(z(head_probe), z(head_probe_centred))) + 0.5 z(gbc_prior): the pair's probes by their lower z.

    Rejected as auto (design note 105): a probe that ties every candidate gives each z = 0, so the minimum
    drops the other probe's lead and gbc_prior alone picks among the candidates it holds at 0."""
    return head_pair_min_rule(table["head_probe"], table["head_probe_centred"],
                              gbc_prior({"gbc": table["gbc"], "param_prior": table["param_prior"]}))


alias("auto", "head_pair", "the recommended method (design notes 88, 89, 96): z(z(head_probe) + "
      "z(head_probe_centred)) + 0.5 z(gbc_prior), the federated head probe on the features as they are and less "
      "their pooled mean, beside z(GBC) + 0.5 z(log10 parameters), on the features each candidate's classifier "
      "reads; under DP the probes train by DP-FedSGD (design note 97)", pooling=AUTO_POOLING)
