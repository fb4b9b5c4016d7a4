"""pool_ablation.py: every method judged again with one candidate left out, without re-training
or re-encoding; a combined score recombined on the sub-pool is the score computed there."""

from __future__ import annotations

import json

import pytest
from support.study_scripts import study_script

from vista.selection.combine import gbc_prior, near_ties
from vista.selection.head_scores import head_gbc_rule
from vista.selection.search import Cost

KEY = "client_val_accuracy_mean"


def _script():
    return study_script("pool_ablation")


def _entry(scores: dict, forward: int = 0) -> dict:
    return {"scores": scores, "cost": Cost(forward_passes=forward).to_dict()}


def _curve(val: list[float], test: float, forward: int) -> list[dict]:
    rounds = [{KEY: v, "forward_passes": forward, "backward_passes": forward} for v in val]
    rounds[-1]["test_accuracy"] = test
    return rounds


def _result() -> dict:
    truth = {"big": 0.90, "mid": 0.80, "small": 0.50, "tiny": 0.40}
    prior = {"big": 8.1, "mid": 8.0, "small": 7.3, "tiny": 7.2}
    gbc = {"big": -0.5, "mid": -0.9, "small": -1.0, "tiny": -2.0}
    sampled = {"big": -0.3, "mid": -1.2, "small": -0.8, "tiny": -2.5}  # another draw of texts: not kept alone
    logme = {"big": 0.4, "mid": 0.1, "small": 0.3, "tiny": 0.0}
    m = {"logme": _entry(logme, 40), "gbc": _entry(gbc, 40), "param_prior": _entry(prior),
         "auto": _entry(gbc_prior({"gbc": gbc, "param_prior": prior}), 40),
         "auto_shipped": {**_entry(gbc_prior({"gbc": sampled, "param_prior": prior}), 20), "token_share": 0.5},
         "logme_gbc": _entry(near_ties(logme, gbc, 0.05), 40)}
    # the probe leaves mid, small and tiny at the majority rate: auto's rule orders them
    head = {"big": 0.7, "mid": 0.5, "small": 0.5, "tiny": 0.5}
    m["head_shipped"] = _entry(head, 20)
    m["head_gbc_shipped"] = {**_entry(head_gbc_rule(head, m["auto_shipped"]["scores"]), 20), "token_share": 0.5}
    curves = {"big": _curve([0.5, 0.9], 0.90, 10), "mid": _curve([0.6, 0.7], 0.80, 10),
              "small": _curve([0.5, 0.5], 0.50, 10), "tiny": _curve([0.3, 0.4], 0.40, 10)}
    return {"data": "toy", "partition": "iid", "seed": 0, "truth": truth, "tie_tol": 0.0, "validation_key": KEY,
            "budget": {"rounds": 2}, "test_texts": 0, "methods": m, "curves": curves, "sampled": sampled}


def test_a_combined_score_recombined_on_a_sub_pool_is_the_score_computed_there():
    pa = _script()
    res = _result()
    pa.check_recombination(res)  # the full pool gives back the kept values
    pool = ["mid", "small", "tiny"]
    got = pa.sub_scores(res, pool)
    sub = {c: res["sampled"][c] for c in pool}, {c: res["methods"]["param_prior"]["scores"][c] for c in pool}
    want = gbc_prior({"gbc": sub[0], "param_prior": sub[1]})
    assert got["auto_shipped"] == pytest.approx(want, abs=1e-12)
    assert got["logme_gbc"] == near_ties({c: res["methods"]["logme"]["scores"][c] for c in pool},
                                         {c: res["methods"]["gbc"]["scores"][c] for c in pool}, 0.05)
    assert set(got["logme"]) == set(pool)
    # auto as shipped (head_gbc): the probe's values as they are, auto_shipped's rule recombined on the pool
    assert got["head_shipped"] == {c: 0.5 for c in pool}
    assert got["head_gbc_shipped"] == pytest.approx(head_gbc_rule(got["head_shipped"], want), abs=1e-12)
    assert max(got["head_gbc_shipped"], key=got["head_gbc_shipped"].get) == "mid"  # by auto_shipped: GBC + size
    res["methods"]["head_gbc_shipped"]["scores"]["tiny"] += 0.1
    with pytest.raises(SystemExit, match="head_gbc_shipped: recombined on the full pool"):
        pa.check_recombination(res)
    res["methods"]["head_gbc_shipped"]["scores"]["tiny"] -= 0.1
    res["methods"]["auto"]["scores"]["mid"] += 0.1
    with pytest.raises(SystemExit, match="auto: recombined on the full pool"):
        pa.check_recombination(res)


def test_leaving_out_the_best_asks_who_is_next_and_searches_cost_a_share_of_the_sub_pool(tmp_path):
    pa = _script()
    res = _result()
    rows = pa.ablate(res, top_k=2, r0=1, eta=2)
    by = {(r["dropped"], r["method"]): r for r in rows}
    # logme ranks small over mid: harmless with big in the pool, a miss of 0.30 without it
    assert by[(pa.FULL, "logme")]["top1_regret"] == 0
    assert by[("big", "logme")]["chosen"] == "small" and by[("big", "logme")]["top1_regret"] == pytest.approx(0.30)
    assert by[("big", "param_prior")]["chosen"] == "mid" and by[("big", "param_prior")]["top1_regret"] == 0
    # successive halving without big: round 1 keeps mid (0.6) and small (0.5; tiny 0.3 cut), both to round 2
    sh = by[("big", "successive_halving")]
    assert sh["chosen"] == "mid" and sh["compute_vs_brute_force"] == pytest.approx((2 + 2 + 1) / (3 * 2))
    # without big the sampled GBC shortlists small and mid; round 1 cuts small (0.5 against 0.6), and
    # the shortlist's statistics round counts 3/4 of the kept one's
    assert by[("big", pa.SEARCHES[2])]["chosen"] == "mid"
    assert by[("big", pa.SEARCHES[2])]["compute_vs_brute_force"] == pytest.approx((30 * 1 + 30 * 2 + 20 * 0.5 * 3 / 4) / (3 * 2 * 30))
    # hybrid top 2 by auto_shipped over the full pool: round 1 cuts big (0.5 against mid's 0.6), a miss;
    # a round costs 10 forward + 10 backward = 30 forward equivalents, its statistics round 20 at half the tokens
    hy = by[(pa.FULL, pa.SEARCHES[2])]
    shortlist = sorted(res["methods"]["auto_shipped"]["scores"], key=lambda c: -res["methods"]["auto_shipped"]["scores"][c])[:2]
    assert shortlist == ["big", "mid"] and hy["chosen"] == "mid" and hy["top1_regret"] == pytest.approx(0.10)
    assert hy["compute_vs_brute_force"] == pytest.approx((30 * 1 + 30 * 2 + 20 * 0.5) / (4 * 2 * 30))
    # by size alone (the floor): the same two, no statistics round
    assert by[(pa.FULL, "hybrid top 2 by param_prior")]["compute_vs_brute_force"] == pytest.approx((30 + 60) / 240)
    runs = tmp_path / "runs" / "toy" / "iid" / "seed0"
    runs.mkdir(parents=True)
    (runs / "result.json").write_text(json.dumps(res))
    assert pa.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--top-k", "2"]) == 0
    md = (tmp_path / "out" / "pool_ablation.md").read_text()
    assert "## without big (1 run x pool)" in md and "| logme | " in md and "every leave-one-out" in md
    # without big the probe ties every candidate: tau-b undefined, counted 0 in the mean (it orders nothing)
    assert by[("big", "head_shipped")]["kendall_tau"] != by[("big", "head_shipped")]["kendall_tau"]  # nan
    assert pa.summary([by[("big", "head_shipped")]], "big")["head_shipped"]["kendall_tau"] == 0.0
    assert "hybrid top 2 by head_gbc_shipped" in md
