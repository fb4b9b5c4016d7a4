"""The H-score-beside-the-pair analysis (experiments/selection_study/hscore_pair.py): its ceiling and rule."""

from __future__ import annotations

import pytest
from support.study_scripts import study_script

from vista.selection.combine import weighted_z


def test_a_sampled_hscore_at_the_classes_less_one_is_at_its_ceiling():
    hp = study_script("hscore_pair")
    assert hp.at_ceiling({"a": 2.0, "b": 1.5, "c": 1.9995, "d": None}) == {"a": True, "b": False, "c": True, "d": False}
    # no candidate separates the sample: the top value is no whole number, nothing is at the ceiling
    assert hp.at_ceiling({"a": 1.7, "b": 1.2}) == {"a": False, "b": False}


def test_the_rule_is_the_pair_at_weight_zero_and_follows_hscore_as_it_grows(monkeypatch):
    hp = study_script("hscore_pair")
    pair = {"x": 1.0, "y": 0.0, "z": -1.0}
    monkeypatch.setattr(hp, "sub_scores", lambda result, pool: {hp.HEAD_PAIR: {c: pair[c] for c in pool}})
    result = {"methods": {"hscore": {"scores": {"x": 1.0, "y": 3.0, "z": 2.0}}}}
    zero = hp.rule(result, ["x", "y", "z"], 0.0, "hscore")
    assert zero == pytest.approx(weighted_z({"p": pair}, {"p": 1.0}, required=("p",)))
    heavy = hp.rule(result, ["x", "y", "z"], 10.0, "hscore")
    assert max(heavy, key=heavy.get) == "y" and min(heavy, key=heavy.get) == "x"
    # on a sub-pool both parts are standardised over the sub-pool
    sub = hp.rule(result, ["y", "z"], 1.0, "hscore")
    assert sub["y"] == pytest.approx(-sub["z"]) and sub["y"] > 0
