"""pair_live.py --earlier: on a machine without a run's kept features, the earlier check's live scores
stand in for that run and are judged again against today's truths (a new seed moves the setting's)."""

from __future__ import annotations

import json

import pytest
from support.study_scripts import study_script, write_runs

from vista.drivers.study_head import HEAD_PAIR

PAIR = {"big": 2.0, "mid": 0.1, "small": 0.4, "tiny": -1.5}  # small above mid


def _result(seed: int, truth: dict) -> dict:
    return {"data": "toy", "partition": "iid", "seed": seed, "truth": truth, "tie_tol": 0.01,
            "methods": {HEAD_PAIR: {"scores": PAIR}}}


def _main(tmp_path, runs, earlier, out: str):
    pl = study_script("pair_live")
    args = [str(runs), "--data", str(tmp_path), "--hub", str(tmp_path / "hub"), "--work", str(tmp_path / "work"),
            "--out", str(tmp_path / out)]
    rc = pl.main(args + (["--earlier", str(earlier)] if earlier else []))
    return rc, json.loads((tmp_path / out / "pair_live.json").read_text())


def test_earlier_rows_are_judged_again_against_the_setting_truth_a_new_seed_moves(tmp_path):
    seed0 = {"big": 0.95, "mid": 0.50, "small": 0.60, "tiny": 0.20}  # small above mid: the pair at the cap
    runs = write_runs(tmp_path, [_result(0, seed0)])
    earlier_row = {"data": "toy", "partition": "iid", "seed": 0, "equal": {"pair's order": True},
                   "gap": {"gbc_prior": 0.0, "head_pair": 0.0}, "head_cost": {"x": 1}, "method": "head_pair",
                   "truth": "run", "scores": PAIR, "chosen": "big", "best": "big", "kendall_tau": 1.0,
                   "kendall_tau_max": 1.0, "top1_regret": 0.0}
    (tmp_path / "earlier.json").write_text(json.dumps({"rows": [earlier_row], "skipped": []}))
    rc, first = _main(tmp_path, runs, tmp_path / "earlier.json", "out1")
    assert rc == 0 and len(first["rows"]) == 2
    assert all(r["kendall_tau"] == pytest.approx(1.0) for r in first["rows"])
    assert first["rows"][0]["head_cost"] == {"x": 1}  # the live run's own fields kept

    # a second seed on which mid beats small by far: the setting's truth flips the pair, its run row does not
    write_runs(tmp_path, [_result(1, {"big": 0.95, "mid": 0.90, "small": 0.55, "tiny": 0.20})])
    rc, second = _main(tmp_path, runs, tmp_path / "out1" / "pair_live.json", "out2")
    seed0_rows = {r["truth"]: r for r in second["rows"] if r["seed"] == 0}
    assert seed0_rows["run"]["kendall_tau"] == pytest.approx(1.0)
    assert seed0_rows["setting"]["kendall_tau"] == pytest.approx(2 / 3)  # mid/small swapped: 5 of 6 pairs
    assert second["skipped"] == ["toy/iid/seed1"]  # no earlier row and no features: said, not invented


def test_without_earlier_rows_or_features_nothing_is_judged(tmp_path):
    runs = write_runs(tmp_path, [_result(0, {"big": 0.9, "mid": 0.5, "small": 0.6, "tiny": 0.2})])
    with pytest.raises(SystemExit, match="kept sampled features"):
        _main(tmp_path, runs, None, "out")
