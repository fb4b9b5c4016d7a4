"""pair_min.py: head_pair_min beside the shipped pair, judged on development runs the table's way and on
held-out runs each against its own truth, with the registered decision rule."""

from __future__ import annotations

import json

import pytest
from support.study_scripts import study_script, write_runs

from vista.drivers.study_head import HEAD_PAIR, HEAD_PAIR_MIN
from vista.selection.head_scores import head_pair_min_rule, head_pair_rule

TRUTH = {"big": 0.95, "mid": 0.90, "small": 0.75, "tiny": 0.20}
HEAD = {"big": 0.7, "mid": 0.5, "small": 0.3, "tiny": 0.25}  # the right order
AUTO = {"big": 1.9, "mid": -0.1, "small": 0.5, "tiny": -1.7}  # small above mid, as gbc_prior on 20news5
LIFTS_SMALL = {"big": 0.9, "mid": 0.55, "small": 0.85, "tiny": 0.3}  # centring lifts small above mid


def _run(data: str, seed: int, centred: dict) -> dict:
    m = {"head_shipped": {"scores": HEAD}, "head_centred_shipped": {"scores": centred},
         "auto_shipped": {"scores": AUTO},
         HEAD_PAIR: {"scores": head_pair_rule(HEAD, centred, AUTO)},
         HEAD_PAIR_MIN: {"scores": head_pair_min_rule(HEAD, centred, AUTO)}}
    return {"data": data, "partition": "iid", "seed": seed, "truth": TRUTH, "tie_tol": 0.01, "methods": m}


def test_development_and_held_out_are_judged_apart_and_the_decision_needs_enough_runs(tmp_path, monkeypatch):
    pm = study_script("pair_min")
    monkeypatch.setattr(pm, "HELD_OUT", {"20news5/iid/seed5": "abc1234", "bbc/iid/seed5": "abc1235"})
    # the pair's sum lets the centred probe lift small above mid (tau-b 2/3); the minimum holds small at its
    # uncentred value (tau-b 1). Development: two toy seeds; held out: one in a differing setting, one not
    runs = [_run("toy", 0, LIFTS_SMALL), _run("toy", 1, LIFTS_SMALL), _run("20news5", 5, LIFTS_SMALL),
            _run("bbc", 5, {"big": 0.9, "mid": 0.6, "small": 0.5, "tiny": 0.3})]
    got = pm.main([str(write_runs(tmp_path, runs)), "--out", str(tmp_path / "out")])
    dev = got["development"]
    assert dev["head_pair (auto)"]["tau_b"] == pytest.approx(2 / 3) and dev["head_pair (auto)"]["runs"] == 2
    assert dev["head_pair_min"]["tau_b"] == pytest.approx(1.0) and dev["head_pair_min"]["near_cap"] == 1
    rows = {r["run"]: r for r in got["held_out"]}
    assert set(rows) == {"20news5/iid/seed5", "bbc/iid/seed5"}
    assert rows["20news5/iid/seed5"]["differing"] and not rows["bbc/iid/seed5"]["differing"]
    assert rows["20news5/iid/seed5"]["head_pair (auto)"]["kendall_tau"] == pytest.approx(2 / 3)
    assert rows["20news5/iid/seed5"]["head_pair_min"]["kendall_tau"] == pytest.approx(1.0)
    assert rows["bbc/iid/seed5"]["head_pair_min"]["kendall_tau"] == pytest.approx(1.0) == rows["bbc/iid/seed5"]["cap"]
    verdict = got["decision"]
    assert (verdict["runs"], verdict["differing"], verdict["enough"], verdict["adopt"]) == (2, 1, False, False)
    assert not verdict["rejected"] and verdict["regret_misses"] == []
    assert verdict["mean_tau_b"]["head_pair_min"] > verdict["mean_tau_b"]["head_pair (auto)"]
    assert "not enough held-out runs yet" in (tmp_path / "out" / "pair_min.md").read_text()
    assert json.loads((tmp_path / "out" / "pair_min.json").read_text())["decision"] == verdict
    # with the thresholds met, the same rows adopt it; a regret above 0.01 on any held-out run refuses it
    monkeypatch.setattr(pm, "MIN_RUNS", 2)
    monkeypatch.setattr(pm, "MIN_DIFFERING", 1)
    assert pm.decision(got["held_out"])["adopt"]
    worse = json.loads(json.dumps(got["held_out"]))
    worse[1]["head_pair_min"]["top1_regret"] = 0.02
    refused = pm.decision(worse)
    assert not refused["adopt"] and refused["rejected"] and refused["regret_misses"] == [worse[1]["run"]]
    # a regret miss rejects the rule for good, before the thresholds are met, and the report says so
    monkeypatch.setattr(pm, "MIN_RUNS", 6)
    early = pm.decision(worse)
    assert early["rejected"] and not early["enough"] and not early["adopt"]
    text = pm.markdown(got["development"], worse, early)
    assert "head_pair_min is rejected" in text and worse[1]["run"] in text and "not enough" not in text


def test_runs_without_the_rule_recorded_are_refused_with_what_to_do(tmp_path):
    pm = study_script("pair_min")
    run = _run("toy", 0, LIFTS_SMALL)
    del run["methods"][HEAD_PAIR_MIN]
    with pytest.raises(SystemExit, match="refresh_head.py --pair"):
        pm.main([str(write_runs(tmp_path, [run])), "--out", str(tmp_path / "out")])
