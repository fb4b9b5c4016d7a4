"""The random baseline as the study reports it: its expectation over 1,000 seeded rankings."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from vista.drivers.study import method_quality, quality_of
from vista.selection.ranking import random_expectation, selection_quality

TRUTH = {"a": 0.80, "b": 0.72, "c": 0.55, "d": 0.40, "e": 0.33}


def _enumerated(truth: dict[str, float]) -> dict[str, float]:
    """The exact expectation: every ranking of the candidates, equally likely."""
    names = sorted(truth)
    qs = [selection_quality(truth, dict(zip(names, map(float, p)))) for p in itertools.permutations(range(len(names)))]
    return {m: float(np.mean([q[m] for q in qs])) for m in ("kendall_tau", "spearman", "top1_regret")}


def test_expectation_over_1000_draws_is_near_the_known_values():
    e = random_expectation(TRUTH)
    assert e["draws"] == 1000 and e["seed"] == 0 and e["chosen"] is None and e["best"] == "a"
    # known: E[regret] = best - mean accuracy = 0.80 - 0.56 = 0.24; E[tau] = E[rho] = 0; P(best) = 1/5
    assert e["top1_regret"] == pytest.approx(0.80 - np.mean(list(TRUTH.values())), abs=0.01)
    assert abs(e["kendall_tau"]) < 0.03 and abs(e["spearman"]) < 0.03 and abs(e["weighted_tau"]) < 0.05
    assert e["picked_best"] == pytest.approx(0.2, abs=0.03)
    exact = _enumerated(TRUTH)  # all 120 rankings
    assert exact["top1_regret"] == pytest.approx(0.24) and exact["kendall_tau"] == pytest.approx(0.0, abs=1e-12)
    for m, v in exact.items():
        assert e[m] == pytest.approx(v, abs=0.03), m


def test_expectation_is_seeded_and_counts_ties_in_the_truth():
    assert random_expectation(TRUTH) == random_expectation(TRUTH)
    other = random_expectation(TRUTH, seed=1)
    assert other["kendall_tau"] != random_expectation(TRUTH)["kendall_tau"]
    tied = {"a": 0.9, "b": 0.5, "c": 0.5, "d": 0.5}  # three candidates at chance
    assert random_expectation(tied)["top1_regret"] == pytest.approx(0.9 - 0.6, abs=0.02)
    assert random_expectation({"a": 1.0, "b": 0.0}, draws=1)["top1_regret"] in (0.0, 1.0)
    with pytest.raises(ValueError, match="draws must be an int >= 1"):
        random_expectation(TRUTH, draws=0)
    with pytest.raises(ValueError, match="at least 2 candidates"):
        random_expectation({"a": 1.0})


def test_the_study_reports_random_as_its_expectation_and_keeps_the_live_draw():
    """Two different seeded draws (two live runs) give the study the same number; the draw
    itself is kept under 'draw', ranked as a live run ranks it."""
    draw1 = {"a": 0.1, "b": 0.9, "c": 0.5, "d": 0.3, "e": 0.7}
    draw2 = {"a": 0.9, "b": 0.1, "c": 0.5, "d": 0.3, "e": 0.7}
    q1, q2 = method_quality("random", TRUTH, draw1), method_quality("random", TRUTH, draw2)
    assert {k: v for k, v in q1.items() if k != "draw"} == {k: v for k, v in q2.items() if k != "draw"}
    assert q1["draw"] == quality_of(TRUTH, draw1) and q1["draw"]["chosen"] == "b"
    assert q2["draw"]["top1_regret"] == 0.0 and q1["draw"]["top1_regret"] == pytest.approx(0.08)
    assert method_quality("param_prior", TRUTH, draw1) == quality_of(TRUTH, draw1)  # others: as scored
