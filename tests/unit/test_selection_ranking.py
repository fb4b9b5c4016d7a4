"""vista.selection.ranking: orderings, agreement with the ground truth, baselines."""

from __future__ import annotations

import math

import pytest

from vista.selection.ranking import (
    borda,
    kendall_tau,
    max_kendall_tau,
    missing_last,
    param_prior,
    random_scores,
    rank_by,
    selection_quality,
    spearman,
    tie_groups,
    tied_truth,
    top1_regret,
    weighted_tau,
)

TRUTH = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}
SWAP_TOP = {"a": 1.0, "b": 2.0, "c": 4.0, "d": 3.0}  # best two swapped
SWAP_BOTTOM = {"a": 2.0, "b": 1.0, "c": 3.0, "d": 4.0}  # worst two swapped


def test_rank_by_descending_ties_by_name():
    assert rank_by({"z": 1.0, "b": 3.0, "a": 1.0, "c": 2.0}) == ["b", "c", "a", "z"]
    assert rank_by({}) == []
    assert rank_by({"z": None, "b": 3.0, "y": None, "a": -9.0}) == ["b", "a", "y", "z"]  # unscored last


def test_rank_by_puts_nan_and_inf_with_the_missing():
    assert rank_by({"a": float("nan"), "b": 1.0, "c": None, "d": float("-inf"), "e": 0.5}) == ["b", "e", "a", "c", "d"]


def test_missing_last_orders_exactly_as_rank_by():
    scores = {"z": None, "b": 3.0, "y": float("nan"), "a": -9.0, "c": 3.0}
    filled = missing_last(scores)
    assert set(filled) == set(scores) and all(math.isfinite(v) for v in filled.values())
    assert rank_by(filled) == rank_by(scores) == ["b", "c", "a", "y", "z"]
    assert {k: filled[k] for k in ("a", "b", "c")} == {"a": -9.0, "b": 3.0, "c": 3.0}  # real scores kept
    assert missing_last({"a": None, "b": float("nan")}) == {}  # nothing to rank: a live run stops there
    assert missing_last({}) == {}


def test_a_missing_score_counts_last_in_the_agreement():
    """Dropping the unscored candidate (what the study did) would report tau 1 here."""
    truth = {"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0}
    scores = {"a": None, "b": 2.0, "c": 1.0, "d": 0.0}
    q = selection_quality(truth, missing_last(scores))
    assert q["chosen"] == "b" and q["top1_regret"] == pytest.approx(1.0)
    assert q["kendall_tau"] == pytest.approx(kendall_tau(truth, {"a": -1.0, "b": 2.0, "c": 1.0, "d": 0.0}))
    assert q["kendall_tau"] < kendall_tau({k: truth[k] for k in "bcd"}, {k: scores[k] for k in "bcd"}) == 1.0


def test_identical_and_reversed_orderings():
    rev = {k: -v for k, v in TRUTH.items()}
    for fn in (kendall_tau, weighted_tau, spearman):
        assert fn(TRUTH, TRUTH) == pytest.approx(1.0)
        assert fn(TRUTH, rev) == pytest.approx(-1.0)


def test_one_adjacent_swap_by_hand():
    # 6 pairs, 1 discordant: tau = (5 - 1) / 6; rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert kendall_tau(TRUTH, SWAP_TOP) == pytest.approx(2 / 3)
    assert spearman(TRUTH, SWAP_TOP) == pytest.approx(0.8)
    # hyperbolic weights 1/(r+1) for ranks r = 0..3; a pair weighs w_i + w_j; all pairs
    # sum to (n-1) * sum(w) = 3 * 25/12 = 6.25. The discordant pair costs twice its weight.
    total = 3 * (1 + 1 / 2 + 1 / 3 + 1 / 4)
    assert weighted_tau(TRUTH, SWAP_TOP) == pytest.approx(
        (total - 2 * (1 + 1 / 2)) / total
    )
    assert weighted_tau(TRUTH, SWAP_BOTTOM) == pytest.approx(
        (total - 2 * (1 / 3 + 1 / 4)) / total
    )
    # same plain tau, but the swap at the top hurts weighted tau more
    assert kendall_tau(TRUTH, SWAP_BOTTOM) == pytest.approx(2 / 3)
    assert weighted_tau(TRUTH, SWAP_TOP) < weighted_tau(TRUTH, SWAP_BOTTOM)


def test_common_keys_only():
    scores = {**SWAP_TOP, "extra": 99.0}
    truth = {**TRUTH, "untrained": 0.0}
    assert kendall_tau(truth, scores) == pytest.approx(2 / 3)
    assert top1_regret(truth, scores) == pytest.approx(1.0)  # "extra" cannot be chosen


def test_constant_side_is_nan():
    const = {k: 0.5 for k in TRUTH}
    for fn in (kendall_tau, weighted_tau, spearman):
        assert math.isnan(fn(TRUTH, const))
        assert math.isnan(fn(const, TRUTH))


def test_too_few_common_keys():
    with pytest.raises(ValueError, match="share 1 candidate"):
        kendall_tau({"a": 1.0, "b": 2.0}, {"a": 1.0, "c": 2.0})
    with pytest.raises(ValueError, match="share 0"):
        top1_regret({"a": 1.0}, {"b": 1.0})


def test_nan_scores_rejected():
    with pytest.raises(ValueError, match="scores has NaN"):
        spearman(TRUTH, {**TRUTH, "a": float("nan")})
    with pytest.raises(ValueError, match="truth has NaN"):
        top1_regret({**TRUTH, "b": float("nan")}, TRUTH)
    with pytest.raises(TypeError, match="scores must be a dict"):
        rank_by([1.0, 2.0])  # type: ignore[arg-type]


def test_top1_regret():
    truth = {"a": 0.90, "b": 0.70, "c": 0.80}
    assert top1_regret(truth, {"a": 0.1, "b": 0.9, "c": 0.5}) == pytest.approx(0.20)
    assert top1_regret(truth, {"a": 5.0, "b": 0.0, "c": 1.0}) == 0.0
    # a tie at the top goes to the first name: "b" over "c"
    assert top1_regret(truth, {"a": 0.0, "b": 1.0, "c": 1.0}) == pytest.approx(0.20)


def test_selection_quality():
    q = selection_quality(TRUTH, SWAP_TOP)
    assert set(q) == {
        "kendall_tau",
        "kendall_tau_max",
        "weighted_tau",
        "spearman",
        "top1_regret",
        "chosen",
        "best",
    }
    assert q["chosen"] == "c" and q["best"] == "d"
    assert q["top1_regret"] == pytest.approx(1.0)
    assert q["kendall_tau"] == pytest.approx(2 / 3)
    assert q["spearman"] == pytest.approx(0.8)


def test_borda_worked_example():
    clients = [
        {"x": 0.9, "y": 0.5, "z": 0.1},  # x 2, y 1, z 0
        {"x": 0.2, "y": 0.8, "z": 0.2},  # y 2, x and z tie for 1 and 0: 0.5 each
        {"x": 0.3, "y": 0.1, "z": 0.7},  # z 2, x 1, y 0
    ]
    assert borda(clients) == pytest.approx({"x": 3.5 / 3, "y": 3 / 3, "z": 2.5 / 3})
    # weighted by example counts 1, 2, 1: x (2 + 1 + 1) / 4, y (1 + 4 + 0) / 4, z (0 + 1 + 2) / 4
    assert borda(clients, weights=[1, 2, 1]) == pytest.approx(
        {"x": 1.0, "y": 1.25, "z": 0.75}
    )
    assert rank_by(borda(clients, weights=[1, 2, 1])) == ["y", "x", "z"]


def test_borda_errors():
    with pytest.raises(ValueError, match="at least one client"):
        borda([])
    with pytest.raises(ValueError, match=r"client_scores\[1\] scores"):
        borda([{"a": 1.0, "b": 2.0}, {"a": 1.0}])
    with pytest.raises(ValueError, match="weights has 1 entries for 2 clients"):
        borda([{"a": 1.0}, {"a": 2.0}], weights=[3])
    with pytest.raises(ValueError, match="weights must be"):
        borda([{"a": 1.0}, {"a": 2.0}], weights=[0, 0])
    with pytest.raises(ValueError, match="weights must be"):
        borda([{"a": 1.0}, {"a": 2.0}], weights=[-1, 2])


def test_param_prior():
    prior = param_prior({"small": 1_000_000, "base": 110_000_000, "tiny": 10})
    assert prior == pytest.approx(
        {"small": 6.0, "base": math.log10(1.1e8), "tiny": 1.0}
    )
    assert rank_by(prior) == ["base", "small", "tiny"]
    with pytest.raises(ValueError, match="param_counts must be positive"):
        param_prior({"a": 0})


def test_random_scores_seeded_and_order_free():
    names = ["m1", "m2", "m3", "m4", "m5"]
    a = random_scores(names, seed=3)
    assert a == random_scores(list(reversed(names)), seed=3)
    assert a != random_scores(names, seed=4)
    assert random_scores(names[:2], seed=3) == {k: a[k] for k in names[:2]}
    assert all(0.0 <= v < 1.0 for v in a.values())
    with pytest.raises(ValueError, match="duplicates"):
        random_scores(["a", "a"], seed=0)
    with pytest.raises(TypeError, match="seed must be an int"):
        random_scores(["a"], seed=0.5)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- ties in the truth
def _best_tau_by_enumeration(truth: dict[str, float]) -> float:
    """Max tau-b over every strict ranking of the candidates (what a real-valued score gives)."""
    import itertools

    names = sorted(truth)
    return max(kendall_tau(truth, dict(zip(names, map(float, p)))) for p in itertools.permutations(range(len(names))))


def test_max_kendall_tau_closed_form_equals_the_best_ranking():
    three_at_chance = {"a": 0.9, "b": 0.7, "c": 0.2, "d": 0.2, "e": 0.2}  # n0 = 10 pairs, n1 = 3 tied
    assert max_kendall_tau(three_at_chance) == pytest.approx(math.sqrt(0.7)) == pytest.approx(0.83666, abs=1e-5)
    assert _best_tau_by_enumeration(three_at_chance) == pytest.approx(math.sqrt(0.7))
    three_and_two = {"a": 0.9, "b": 0.9, "c": 0.2, "d": 0.2, "e": 0.2}  # n1 = 1 + 3
    assert max_kendall_tau(three_and_two) == pytest.approx(math.sqrt(0.6)) == pytest.approx(
        _best_tau_by_enumeration(three_and_two))
    assert max_kendall_tau(TRUTH) == 1.0 == pytest.approx(_best_tau_by_enumeration(TRUTH))
    assert math.isnan(max_kendall_tau({"a": 0.5, "b": 0.5})) and math.isnan(max_kendall_tau({"a": 0.5}))


def test_tau_b_against_a_tied_truth_by_hand():
    truth = {"a": 0.9, "b": 0.5, "c": 0.5, "d": 0.5}  # 6 pairs, 3 tied: tau-b = (nc - nd) / sqrt(3 * 6)
    assert kendall_tau(truth, {"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0}) == pytest.approx(3 / math.sqrt(18))
    assert kendall_tau(truth, {"b": 4.0, "a": 3.0, "c": 2.0, "d": 1.0}) == pytest.approx(1 / math.sqrt(18))
    assert max_kendall_tau(truth) == pytest.approx(math.sqrt(0.5)) == pytest.approx(3 / math.sqrt(18))


def test_tie_groups_within_a_tolerance_do_not_chain():
    truth = {"a": 0.90, "b": 0.91, "c": 0.92, "d": 0.5}
    assert tie_groups(truth) == [["c"], ["b"], ["a"], ["d"]]
    assert tie_groups(truth, 0.015) == [["c", "b"], ["a"], ["d"]]  # a is 0.02 from c: a group of its own
    assert tie_groups(truth, 0.02) == [["c", "b", "a"], ["d"]]
    assert tied_truth(truth, 0.015) == {"a": 0.90, "b": 0.92, "c": 0.92, "d": 0.5}
    assert tied_truth(truth) == truth
    assert max_kendall_tau(truth, 0.015) == pytest.approx(math.sqrt(5 / 6))
    with pytest.raises(ValueError, match="tol must be"):
        tie_groups(truth, -0.1)


def test_selection_quality_ranks_against_the_tied_truth_and_regrets_against_the_real_one():
    truth = {"a": 0.900, "b": 0.895, "c": 0.5, "d": 0.45}
    scores = {"b": 4.0, "a": 3.0, "c": 2.0, "d": 1.0}  # swaps the two within 0.01
    q = selection_quality(truth, scores, tie_tol=0.01)
    assert q["kendall_tau"] == pytest.approx(math.sqrt(5 / 6)) == pytest.approx(q["kendall_tau_max"])  # 5 / sqrt(5 * 6)
    assert q["chosen"] == "b" and q["best"] == "a" and q["top1_regret"] == pytest.approx(0.005)
    exact = selection_quality(truth, scores)
    assert exact["kendall_tau"] == pytest.approx(4 / 6) and exact["kendall_tau_max"] == 1.0
