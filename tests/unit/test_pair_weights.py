"""pair_weights.py: auto's pair recombined at other weights from the recorded probes; the shipped
weights give back the recorded pair, and each weighting is judged against the setting's truth."""

from __future__ import annotations

import json

import pytest
from support.study_scripts import study_script, write_runs

from vista.drivers.study_head import HEAD_PAIR
from vista.selection.head_scores import head_pair_rule


def _entry(scores: dict) -> dict:
    return {"scores": scores}


def _run(seed: int, centred: dict) -> dict:
    truth = {"big": 0.95, "mid": 0.90, "small": 0.75, "tiny": 0.20}
    head = {"big": 0.7, "mid": 0.5, "small": 0.3, "tiny": 0.25}  # the right order
    auto = {"big": 1.9, "mid": -0.1, "small": 0.5, "tiny": -1.7}  # small above mid, as gbc_prior on 20news5
    m = {"head_shipped": _entry(head), "head_centred_shipped": _entry(centred), "auto_shipped": _entry(auto),
         HEAD_PAIR: _entry(head_pair_rule(head, centred, auto))}
    return {"data": "toy", "partition": "iid", "seed": seed, "truth": truth, "tie_tol": 0.01, "methods": m}


def test_the_shipped_weights_give_back_the_recorded_pair_and_the_uncentred_probe_alone_is_judged_right(tmp_path):
    pw = study_script("pair_weights")
    lifts_small = {"big": 0.9, "mid": 0.55, "small": 0.85, "tiny": 0.3}  # centring lifts small above mid
    runs = [_run(0, lifts_small), _run(1, {"big": 0.9, "mid": 0.6, "small": 0.5, "tiny": 0.3})]
    rows = pw.main([str(write_runs(tmp_path, runs)), "--out", str(tmp_path / "out")])
    by = {(r["wc"], r["wg"]): r for r in rows}
    for r in runs:  # the recombination at the shipped weights is the recorded score, value for value
        assert pw.pair(r, *pw.SHIPPED) == pytest.approx(r["methods"][HEAD_PAIR]["scores"], abs=1e-12)
    shipped, uncentred = by[pw.SHIPPED], by[(0.0, 0.5)]
    # seed 0's centred probe lifts small above mid (tau-b 2/3), seed 1's does not (1): the mean is 5/6;
    # the uncentred probe beside gbc_prior orders both seeds right
    assert shipped["tau_b"] == pytest.approx(5 / 6) and shipped["near_cap"] == 0 and shipped["best"] == 2
    assert uncentred["tau_b"] == pytest.approx(1.0) and uncentred["near_cap"] == 1
    assert uncentred["cap"] == pytest.approx(1.0) and uncentred["runs"] == 2 and uncentred["regret_ok"] == 1
    assert (tmp_path / "out" / "pair_weights.md").read_text().count("\n| ") == len(pw.WEIGHTS) + 1
    assert json.loads((tmp_path / "out" / "pair_weights.json").read_text())[0]["wc"] == 1.0


def test_a_recorded_pair_the_shipped_weights_do_not_give_stops_the_script(tmp_path):
    pw = study_script("pair_weights")
    run = _run(0, {"big": 0.9, "mid": 0.6, "small": 0.5, "tiny": 0.3})
    run["methods"][HEAD_PAIR]["scores"] = {"big": 0.0, "mid": 1.0, "small": 2.0, "tiny": 3.0}
    with pytest.raises(SystemExit, match="the shipped weights give"):
        pw.main([str(write_runs(tmp_path, [run])), "--out", str(tmp_path / "out")])
