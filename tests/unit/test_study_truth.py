"""study_truth: which round of a candidate's brute-force curve its truth reads."""

from __future__ import annotations

import pytest

from vista.drivers.study_truth import check_truth, truth_of, truth_rounds

KEY = "client_val_accuracy_mean"


def curve(tests, vals):
    return [{"test_accuracy": t, KEY: v} for t, v in zip(tests, vals)]


def test_last_reads_the_last_round_and_best_val_the_later_of_the_best_validation_rounds():
    h = {"a": curve([0.5, 0.9, 0.6, 0.85], [0.5, 0.9, 0.6, 0.9]), "b": curve([0.4, 0.7, 0.8], [0.3, 0.8, 0.7])}
    assert truth_rounds(h, "last", KEY) == {"a": 4, "b": 3}
    at = truth_rounds(h, "best_val", KEY)
    assert at == {"a": 4, "b": 2}  # a: rounds 2 and 4 tie on validation, the later; b: round 2
    assert truth_of(h, at) == {"a": 0.85, "b": 0.7}


def test_a_round_without_its_test_score_is_never_the_best_validation_round():
    h = {"a": [{KEY: 0.99}, *curve([0.6, 0.7], [0.5, 0.6])]}
    assert truth_rounds(h, "best_val", KEY) == {"a": 3}
    with pytest.raises(ValueError, match="test split scored every round"):
        truth_rounds({"a": [{KEY: 0.9}]}, "best_val", KEY)


def test_check_truth_says_what_a_rule_needs_in_one_line():
    check_truth("last", None)
    check_truth("best_val", 1)
    with pytest.raises(ValueError, match=r"not one of \['best_val', 'last'\]"):
        check_truth("mean", None)
    with pytest.raises(ValueError, match="set test_every=1"):
        check_truth("best_val", 2)
