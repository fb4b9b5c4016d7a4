"""vista.selection.search: budgeted searches over replayed learning curves."""

from __future__ import annotations

import json

import pytest

from vista.selection.ranking import kendall_tau, rank_by, selection_quality
from vista.selection.search import (
    Cost,
    Oracle,
    ReplayOracle,
    Rung,
    brute_force,
    hybrid,
    successive_halving,
)

KEY = "client_val_accuracy_mean"
ROUND_COST = {
    "forward_passes": 100,
    "backward_passes": 50,
    "bytes_up": 10,
    "bytes_down": 20,
    "round_seconds": 0.5,
}

FOUR = {  # accuracy after rounds 1..4
    "a": [0.50, 0.60, 0.70, 0.80],
    "b": [0.45, 0.55, 0.60, 0.65],
    "c": [0.40, 0.50, 0.55, 0.58],
    "d": [0.30, 0.35, 0.40, 0.45],
}
EIGHT = {
    "c0": [0.10, 0.20, 0.30, 0.90],  # slow starter, best at the end
    "c1": [0.60, 0.61, 0.62, 0.63],
    "c2": [0.50, 0.70, 0.75, 0.80],
    "c3": [0.55, 0.52, 0.50, 0.48],
    "c4": [0.58, 0.66, 0.70, 0.71],
    "c5": [0.20, 0.30, 0.40, 0.50],
    "c6": [0.40, 0.45, 0.50, 0.55],
    "c7": [0.30, 0.35, 0.40, 0.45],
}


def oracle(curves: dict[str, list[float]], **cost) -> ReplayOracle:
    per_round = cost or ROUND_COST
    return ReplayOracle(
        {c: [{KEY: acc, **per_round} for acc in accs] for c, accs in curves.items()}
    )


def per_round(n: int) -> Cost:
    return Cost(
        forward_passes=100 * n,
        backward_passes=50 * n,
        bytes_up=10 * n,
        bytes_down=20 * n,
        rounds=n,
        seconds=0.5 * n,
    )


# --------------------------------------------------------------------------- Cost
def test_cost_add_sum_and_dict():
    total = Cost(1, 2, 3, 4, 5, 0.25) + Cost(10, 20, 30, 40, 50, 0.5)
    assert total == Cost(11, 22, 33, 44, 55, 0.75)
    assert sum([Cost(rounds=1), Cost(rounds=2)]) == Cost(rounds=3)
    assert total.to_dict() == {
        "forward_passes": 11,
        "backward_passes": 22,
        "bytes_up": 33,
        "bytes_down": 44,
        "rounds": 55,
        "seconds": 0.75,
    }


# --------------------------------------------------------------------------- replay oracle
def test_replay_charges_only_new_rounds():
    o = oracle(FOUR)
    assert isinstance(o, Oracle)
    assert o.train_to("a", 2) == (0.60, per_round(2))
    assert o.train_to("a", 3) == (0.70, per_round(1))
    assert o.train_to("a", 3) == (0.70, Cost())  # already there: free
    assert o.trained == {"a": 3, "b": 0, "c": 0, "d": 0}
    with pytest.raises(ValueError, match="already has 3 rounds"):
        o.train_to("a", 1)
    with pytest.raises(ValueError, match="only 4 rounds were recorded"):
        o.train_to("b", 5)
    with pytest.raises(ValueError, match="no recorded history"):
        o.train_to("zz", 1)
    with pytest.raises(ValueError, match="rounds must be an int >= 1"):
        o.train_to("b", 0)


def test_replay_missing_cost_keys_count_zero_and_custom_key():
    o = ReplayOracle(
        {"m": [{"val_acc": 0.1, "bytes_up": 7}, {"val_acc": 0.2}]}, key="val_acc"
    )
    assert o.train_to("m", 2) == (0.2, Cost(bytes_up=7, rounds=2))
    assert o.ground_truth() == {"m": 0.2}
    assert o.ground_truth(rounds=1) == {"m": 0.1}


def test_replay_validation():
    with pytest.raises(
        ValueError, match="lacks accuracy key 'client_val_accuracy_mean' at round"
    ):
        ReplayOracle({"m": [{KEY: 0.1}, {"acc": 0.2}]})
    with pytest.raises(ValueError, match="no rounds recorded"):
        ReplayOracle({"m": []})
    with pytest.raises(ValueError, match="non-empty"):
        ReplayOracle({})


# --------------------------------------------------------------------------- successive halving
def test_sh_four_candidates_exact_cost():
    r = successive_halving(list(FOUR), oracle(FOUR), r0=1, eta=2, max_rounds=4)
    # rung 0: 4 x 1 round, keep a, b; rung 1: a, b to 2 (+1 each), keep a;
    # a alone: trained on from 2 to 4 (+2). 4 + 2 + 2 = 8 rounds.
    assert r.method == "successive_halving"
    assert r.chosen == "a"
    assert r.rounds_trained == {"a": 4, "b": 2, "c": 1, "d": 1}
    assert r.cost == per_round(8)
    assert r.ranking == ["a", "b", "c", "d"]
    assert r.rank_scores == {"a": 3.0, "b": 2.0, "c": 1.0, "d": 0.0}
    assert r.scores == {"a": 0.80, "b": 0.55, "c": 0.40, "d": 0.30}
    assert r.rungs == [
        Rung(0, 1, {"a": 0.50, "b": 0.45, "c": 0.40, "d": 0.30}, ["a", "b"]),
        Rung(1, 2, {"a": 0.60, "b": 0.55}, ["a"]),
        Rung(2, 4, {"a": 0.80}, ["a"]),  # the lone survivor finished to max_rounds
    ]


def test_sh_ranking_order_rules_and_crossing_curves():
    truth = oracle(EIGHT).ground_truth()
    r = successive_halving(list(EIGHT), oracle(EIGHT), r0=1, eta=2, max_rounds=4)
    # rung 0 (round 1): c1 .60 c4 .58 c3 .55 c2 .50 | c6 .40 c7 .30 c5 .20 c0 .10
    # rung 1 (round 2): c2 .70 c4 .66 | c1 .61 c3 .52
    # rung 2 (round 4 = max_rounds): c2 .80 c4 .71, both kept, search ends
    assert [(g.rounds, g.kept) for g in r.rungs] == [
        (1, ["c1", "c4", "c3", "c2"]),
        (2, ["c2", "c4"]),
        (4, ["c2", "c4"]),
    ]
    assert r.ranking == ["c2", "c4", "c1", "c3", "c6", "c7", "c5", "c0"]
    assert r.rank_scores == {c: float(7 - i) for i, c in enumerate(r.ranking)}
    assert r.cost == per_round(8 + 4 + 2 * 2)
    assert sum(r.rounds_trained.values()) == r.cost.rounds
    # c0 starts slowest but ends best: halving drops it in rung 0
    assert rank_by(truth)[0] == "c0"
    q = selection_quality(truth, r.rank_scores)
    assert q["chosen"] == "c2" and q["best"] == "c0"
    assert q["top1_regret"] == pytest.approx(0.90 - 0.80)


def test_sh_two_crossing_curves():
    curves = {"fast": [0.60, 0.62, 0.63, 0.64], "slow": [0.30, 0.40, 0.60, 0.80]}
    r = successive_halving(["fast", "slow"], oracle(curves), r0=1, eta=2, max_rounds=4)
    assert r.chosen == "fast" and r.ranking == ["fast", "slow"]
    assert r.scores["fast"] == 0.64
    truth = brute_force(["fast", "slow"], oracle(curves), max_rounds=4).scores
    assert selection_quality(truth, r.rank_scores)["top1_regret"] == pytest.approx(0.16)
    assert r.cost.rounds == 2 + 3


def test_sh_r0_at_max_is_brute_force():
    sh = successive_halving(list(EIGHT), oracle(EIGHT), r0=4, eta=3, max_rounds=4)
    bf = brute_force(list(EIGHT), oracle(EIGHT), max_rounds=4)
    assert sh.ranking == bf.ranking and sh.cost == bf.cost and len(sh.rungs) == 1


def test_sh_uneven_schedule():
    # 8 candidates, rounds 3, 6, then min(12, 10) = 10 where both survivors stop together
    curves = {
        c: [0.1 * i + 0.01 * j for j in range(10)] for i, c in enumerate("pqrstuvw")
    }
    r = successive_halving(list(curves), oracle(curves), r0=3, eta=2, max_rounds=10)
    assert [(g.rounds, g.kept) for g in r.rungs] == [
        (3, ["w", "v", "u", "t"]),
        (6, ["w", "v"]),
        (10, ["w", "v"]),
    ]
    assert r.ranking == list("wvutsrqp")
    assert r.cost.rounds == 8 * 3 + 4 * (6 - 3) + 2 * (10 - 6)
    # eta = 3 shrinks 5 -> 2 -> 1, and the lone survivor is finished from 6 to 10 rounds
    r = successive_halving(list("pqrst"), oracle(curves), r0=2, eta=3, max_rounds=10)
    assert [(g.rounds, g.kept) for g in r.rungs] == [
        (2, ["t", "s"]),
        (6, ["t"]),
        (10, ["t"]),
    ]
    assert r.ranking == list("tsrqp")
    assert r.cost.rounds == 5 * 2 + 2 * 4 + 4


def test_single_candidate_is_finished():
    r = successive_halving(
        ["only"], oracle({"only": FOUR["a"]}), r0=1, eta=2, max_rounds=4
    )
    assert r.chosen == "only" and r.rounds_trained == {"only": 4}
    assert r.scores == {"only": 0.80} and r.cost == per_round(4)


def test_search_result_to_dict_is_json():
    r = successive_halving(list(FOUR), oracle(FOUR), r0=1, eta=2, max_rounds=4)
    d = json.loads(json.dumps(r.to_dict()))
    assert d["chosen"] == "a"
    assert d["cost"]["rounds"] == 8
    assert d["rungs"][1] == {
        "index": 1,
        "rounds": 2,
        "scores": {"a": 0.6, "b": 0.55},
        "kept": ["a"],
    }


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"r0": 0}, "r0 must be an int >= 1"),
        ({"eta": 1}, "eta must be an int >= 2"),
        ({"eta": 2.0}, "eta must be an int >= 2"),
        ({"r0": 3, "max_rounds": 2}, "max_rounds must be >= r0"),
        ({"candidates": []}, "candidates is empty"),
        ({"candidates": ["a", "b", "a"]}, r"duplicates: \['a'\]"),
    ],
)
def test_sh_validation(kwargs, match):
    args = {
        "candidates": list(FOUR),
        "oracle": oracle(FOUR),
        "r0": 1,
        "eta": 2,
        "max_rounds": 4,
        **kwargs,
    }
    with pytest.raises(ValueError, match=match):
        successive_halving(**args)


def test_candidates_string_and_bad_accuracy():
    with pytest.raises(TypeError, match="not the string"):
        successive_halving("abcd", oracle(FOUR), r0=1, eta=2, max_rounds=4)

    class NanOracle:
        def train_to(self, candidate: str, rounds: int) -> tuple[float, Cost]:
            return float("nan"), Cost(rounds=1)

    with pytest.raises(
        ValueError, match="oracle returned accuracy nan for 'a' at 1 rounds"
    ):
        successive_halving(["a", "b"], NanOracle(), r0=1, eta=2, max_rounds=4)


# --------------------------------------------------------------------------- hybrid
def test_hybrid_keeps_top_k_and_costs_less():
    metric = {"d": 5.0, "a": 4.0, "c": 1.0, "b": 0.0}
    r = hybrid(metric, oracle(FOUR), k=2, r0=1, eta=2, max_rounds=4)
    # shortlist d, a; rung 0: a .50 > d .30, keep a; a on to 4 rounds
    assert r.method == "hybrid"
    assert r.chosen == "a"
    assert r.ranking == ["a", "d", "c", "b"]  # then the rest in metric order
    assert r.rank_scores == {"a": 3.0, "d": 2.0, "c": 1.0, "b": 0.0}
    assert set(r.scores) == {"a", "d"}
    assert r.rounds_trained == {"a": 4, "d": 1, "c": 0, "b": 0}
    assert r.cost == per_round(2 + 3)
    bf = brute_force(list(FOUR), oracle(FOUR), max_rounds=4)
    assert (
        r.cost.rounds < bf.cost.rounds
        and r.cost.forward_passes < bf.cost.forward_passes
    )


def test_hybrid_ranks_a_candidate_without_a_score_after_the_scored():
    metric = {"d": None, "a": 4.0, "c": 1.0, "b": None}  # e.g. a metric undefined for d and b
    r = hybrid(metric, oracle(FOUR), k=2, r0=1, eta=2, max_rounds=4)
    assert r.ranking[2:] == ["b", "d"] and r.rounds_trained["b"] == r.rounds_trained["d"] == 0


def test_hybrid_k_beyond_pool_is_sh():
    metric = {"a": 0.0, "b": 1.0, "c": 2.0, "d": 3.0}
    h = hybrid(metric, oracle(FOUR), k=10, r0=1, eta=2, max_rounds=4)
    sh = successive_halving(list(FOUR), oracle(FOUR), r0=1, eta=2, max_rounds=4)
    assert (h.ranking, h.cost, h.rungs) == (sh.ranking, sh.cost, sh.rungs)
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        hybrid(metric, oracle(FOUR), k=0, r0=1, eta=2, max_rounds=4)
    with pytest.raises(ValueError, match="metric_scores must be"):
        hybrid({}, oracle(FOUR), k=1, r0=1, eta=2, max_rounds=4)


@pytest.mark.parametrize("names", [("mpnet", "smollm2"), ("smollm2", "mpnet")])
def test_a_rung_does_not_cut_a_tie_by_name(names):
    # rotten_tomatoes under label skew: after one round both sit at the majority rate (0.516);
    # round 2 separates them. Whichever name sorts first, the slow starter is not kept by luck
    good, slow = names
    curves = {good: [0.516, 0.688, 0.719, 0.844], slow: [0.516, 0.516, 0.516, 0.656]}
    r = hybrid({slow: 2.0, good: 1.0}, oracle(curves), k=2, r0=1, eta=2, max_rounds=4)
    # the tied pair listed in the shortlist score's order (slow first), not by name
    assert [(g.rounds, g.kept) for g in r.rungs] == [(1, [slow, good]), (2, [good]), (4, [good])]
    assert r.chosen == good and r.rounds_trained == {good: 4, slow: 2}
    assert r.cost == per_round(2 + 2 + 2)  # the tie cost the slow starter a second round


@pytest.mark.parametrize("names", [("minilm", "random_bert"), ("random_bert", "minilm")])
def test_a_tie_no_round_separates_is_ranked_by_the_shortlist_score_not_by_name(names):
    # rotten_tomatoes under label skew without MPNet: both shortlisted candidates sit at the
    # majority rate to the end; hybrid's ranking keeps the score's order whichever name sorts first
    scored_higher, scored_lower = names
    curves = {scored_higher: [0.545] * 4, scored_lower: [0.545] * 4, "other": [0.6] * 4}
    r = hybrid({scored_higher: 1.0, scored_lower: 0.5, "other": 0.1}, oracle(curves), k=2, r0=1, eta=2, max_rounds=4)
    assert r.chosen == scored_higher and r.ranking == [scored_higher, scored_lower, "other"]
    assert r.rounds_trained == {scored_higher: 4, scored_lower: 4, "other": 0}
    # successive halving has no score: equal accuracies fall back to name order, deterministically
    sh = successive_halving(names, oracle(curves), r0=1, eta=2, max_rounds=4)
    assert sh.ranking == sorted(names)


def test_a_tie_below_the_cut_is_still_cut_and_a_tie_at_it_is_kept_whole():
    curves = {"a": [0.9, 0.9], "b": [0.5, 0.6], "c": [0.5, 0.7], "d": [0.1, 0.1], "e": [0.5, 0.5]}
    r = successive_halving(list(curves), oracle(curves), r0=1, eta=2, max_rounds=2)
    # ceil(5 / 2) = 3 kept: a, then b, c, e tied at 0.5 on the line: all three stay; d goes
    assert r.rungs[0].kept == ["a", "b", "c", "e"] and r.rounds_trained["d"] == 1
    assert r.chosen == "a" and r.ranking == ["a", "c", "b", "e", "d"]
    four = {"a": [0.9, 0.9], "b": [0.8, 0.8], "c": [0.5, 0.5], "d": [0.5, 0.5]}
    r = successive_halving(list(four), oracle(four), r0=1, eta=2, max_rounds=2)
    assert r.rungs[0].kept == ["a", "b"]  # the tie lies below the cut: c and d both go


# --------------------------------------------------------------------------- brute force
def test_brute_force_is_ground_truth():
    o = oracle(EIGHT)
    truth = o.ground_truth()
    r = brute_force(list(EIGHT), o, max_rounds=4)
    assert r.method == "brute_force"
    assert r.scores == truth
    assert r.ranking == rank_by(truth)
    assert r.chosen == "c0"
    assert r.cost == per_round(8 * 4)
    assert r.rounds_trained == {c: 4 for c in EIGHT}
    assert kendall_tau(truth, r.rank_scores) == pytest.approx(1.0)
    assert selection_quality(truth, r.rank_scores)["top1_regret"] == 0.0
    with pytest.raises(ValueError, match="only 4 rounds were recorded"):
        brute_force(list(EIGHT), oracle(EIGHT), max_rounds=5)
