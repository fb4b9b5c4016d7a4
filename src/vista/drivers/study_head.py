"""The head probe in the study (design note 88): ``head_shipped`` (``selection=head_probe`` on auto's
shipped sample) and ``head_gbc_shipped`` (``selection=head_gbc`` on it: the probe beside auto's rule,
from the two runs' recorded values, as a live run's server combines them), and the same two with
``selection.head_centre`` (``head_centred_shipped``, ``head_gbc_centred_shipped``; design note 93),
``head_pair_shipped`` (``selection=head_pair``: both probes beside auto_shipped; design note 95) and
``head_pair_min_shipped`` (``selection=head_pair_min``: the same values joined by their minimum; note 103),
re-scored from the probes' kept curves whenever the registry's rule changes, so no client work is
repeated."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from vista.drivers.study_quality import method_quality
from vista.selection.head_scores import head_gbc_rule, head_pair_min_rule, head_pair_rule
from vista.selection.scores import SCORES, safe_value
from vista.selection.search import Cost

HEAD_SHIPPED, HEAD_GBC_SHIPPED = "head_shipped", "head_gbc_shipped"
HEAD_CENTRED, HEAD_GBC_CENTRED = "head_centred_shipped", "head_gbc_centred_shipped"
# (the probe's entry, the probe beside auto_shipped, selection.head_centre): as shipped, and centred (note 93)
HEAD_VARIANTS = ((HEAD_SHIPPED, HEAD_GBC_SHIPPED, False), (HEAD_CENTRED, HEAD_GBC_CENTRED, True))
HEAD_PAIR = "head_pair_shipped"  # both probes' recorded values beside auto_shipped, as head_pair's server combines them
HEAD_PAIR_MIN = "head_pair_min_shipped"  # the same values as head_pair_min's server combines them (note 103)
PAIR_RULES = {HEAD_PAIR: head_pair_rule, HEAD_PAIR_MIN: head_pair_min_rule}  # entry -> the server's rule
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
    return rescore_pair(methods, truth, tie_tol, shipped) or changed


def _probe_cost(entry: dict[str, Any]) -> Cost:
    """One probe's rounds: ``head_cost``, or (a run recorded before it) the whole run less its encode."""
    return Cost(**(entry.get("head_cost") or dataclasses.replace(Cost(**entry["cost"]), forward_passes=0).to_dict()))


def rescore_pair(methods: dict[str, Any], truth: dict[str, float], tie_tol: float, shipped: str) -> bool:
    """Each entry of :data:`PAIR_RULES` from the uncentred and centred probes' scores and ``shipped``'s
    by its rule (:func:`~vista.selection.head_scores.head_pair_rule`, ``head_pair_min_rule``), when
    ``methods`` holds all three; True if one changed. Their cost is what a live ``head_pair`` run spends:
    auto_shipped's, both probes' bytes, and the probe's rounds once (the two train side by side on one
    encode); the rules differ only in the server's arithmetic."""
    probes = [methods.get(HEAD_SHIPPED), methods.get(HEAD_CENTRED)]
    auto = methods.get(shipped)
    if auto is None or None in probes:
        return False
    before = json.dumps([methods.get(e) for e in PAIR_RULES], sort_keys=True)
    raw, cen = probes
    second = dataclasses.replace(_probe_cost(cen), forward_passes=0, rounds=0)
    cost = Cost(**auto["cost"]) + _probe_cost(raw) + second
    for entry, rule in PAIR_RULES.items():
        pair = rule(raw["scores"], cen["scores"], auto["scores"])
        methods[entry] = {**method_quality(entry, truth, pair, tie_tol), "scores": pair, "cost": cost.to_dict(),
                          "sampling": raw["sampling"], "token_share": raw["token_share"],
                          "uses": [HEAD_SHIPPED, HEAD_CENTRED, shipped]}
    return json.dumps([methods.get(e) for e in PAIR_RULES], sort_keys=True) != before


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
        cost = Cost(**auto["cost"]) + _probe_cost(run)
        both = head_gbc_rule(scores, auto["scores"])
        methods[both_entry] = {**method_quality(both_entry, truth, both, tie_tol), "scores": both,
                               "cost": cost.to_dict(), "sampling": run["sampling"],
                               "token_share": run["token_share"], "uses": [probe_entry, shipped]}
    return json.dumps([methods.get(probe_entry), methods.get(both_entry)], sort_keys=True) != before
