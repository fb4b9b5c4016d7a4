"""The head probe in the study (design note 88): ``head_shipped`` (``selection=head_probe`` on auto's
shipped sample) and ``head_gbc_shipped`` (``selection=head_gbc`` on it: the probe beside auto's rule,
from the two runs' recorded values, as a live run's server combines them), and the same two with
``selection.head_centre`` (``head_centred_shipped``, ``head_gbc_centred_shipped``; design note 93),
re-scored from the probes' kept curves whenever the registry's rule changes, so no client work is
repeated."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from vista.drivers.study_quality import method_quality
from vista.selection.head_scores import head_gbc_rule
from vista.selection.scores import SCORES, safe_value
from vista.selection.search import Cost

HEAD_SHIPPED, HEAD_GBC_SHIPPED = "head_shipped", "head_gbc_shipped"
HEAD_CENTRED, HEAD_GBC_CENTRED = "head_centred_shipped", "head_gbc_centred_shipped"
# (the probe's entry, the probe beside auto_shipped, selection.head_centre): as shipped, and centred (note 93)
HEAD_VARIANTS = ((HEAD_SHIPPED, HEAD_GBC_SHIPPED, False), (HEAD_CENTRED, HEAD_GBC_CENTRED, True))
KEPT = ("sampling", "token_share", "head", "curves", "head_cost")  # what a head_shipped entry keeps of its run


def head_entry(run: dict[str, Any], sampling: dict[str, Any], token_share: float,
               head: dict[str, Any]) -> dict[str, Any]:
    """What ``head_shipped`` keeps of a ``selection=head_probe`` run (its ``selection.json``)."""
    return {"cost": run["cost"], "sampling": sampling, "token_share": token_share, "head": head,
            "curves": run["head_curves"], **({"head_cost": run["head_cost"]} if "head_cost" in run else {})}


def rescore_heads(methods: dict[str, Any], truth: dict[str, float], tie_tol: float, shipped: str) -> bool:
    """Each probe entry of :data:`HEAD_VARIANTS` that ``methods`` holds re-scored
    (:func:`rescore_head`); True if an entry changed."""
    changed = False
    for probe, both, _ in HEAD_VARIANTS:
        if probe in methods:
            changed = rescore_head(methods, truth, tie_tol, shipped, probe, both) or changed
    return changed


def rescore_head(methods: dict[str, Any], truth: dict[str, float], tie_tol: float, shipped: str,
                 probe_entry: str = HEAD_SHIPPED, both_entry: str = HEAD_GBC_SHIPPED) -> bool:
    """``probe_entry``'s scores from its curves by the registry's ``head_probe``, and
    ``both_entry`` from them and ``shipped`` (auto_shipped: the same texts) by
    :func:`~vista.selection.head_scores.head_gbc_rule`; True if an entry changed. Its cost is
    auto_shipped's plus the probe's rounds (``head_cost``, one encode serves both); a run recorded
    before ``head_cost`` existed adds the whole probe run less its encode instead, whose bytes count
    its statistics round too: an upper bound."""
    before = json.dumps([methods.get(probe_entry), methods.get(both_entry)], sort_keys=True)
    run = methods[probe_entry]
    scores = {n: safe_value(SCORES["head_probe"].fn(c)) for n, c in run["curves"].items()}
    methods[probe_entry] = {**method_quality(probe_entry, truth, scores, tie_tol), "scores": scores,
                            "cost": run["cost"], **{k: run[k] for k in KEPT if k in run}}
    auto = methods.get(shipped)
    if auto is not None:
        probe = run.get("head_cost") or dataclasses.replace(Cost(**run["cost"]), forward_passes=0).to_dict()
        cost = Cost(**auto["cost"]) + Cost(**probe)
        both = head_gbc_rule(scores, auto["scores"])
        methods[both_entry] = {**method_quality(both_entry, truth, both, tie_tol), "scores": both,
                               "cost": cost.to_dict(), "sampling": run["sampling"],
                               "token_share": run["token_share"], "uses": [probe_entry, shipped]}
    return json.dumps([methods.get(probe_entry), methods.get(both_entry)], sort_keys=True) != before
