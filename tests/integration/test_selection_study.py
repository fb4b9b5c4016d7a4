"""The selection study, small: tiny candidates, the tiny corpus, two partitions, then its table."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

from vista.drivers.study import StudyConfig, quality_of, run_setting
from vista.models.hub import ModelSpec
from vista.selection.ranking import rank_by

ROOT = Path(__file__).resolve().parents[2]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / "selection_study" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_study_small_on_tiny_models(arch_hub, tiny_data, tmp_path, one_torch_thread):
    names = ("bert", "roberta", "gpt2")
    cfg = StudyConfig(candidates=tuple(ModelSpec(name=n, hub_dir=str(arch_hub), hub_name=n) for n in names),
                      clients=4, clients_per_round=2, rounds=2, batch_size=8, max_seq_len=32, num_workers=0,
                      top_k=2)
    data = tiny_data[0]
    results = [run_setting(cfg, data, part, seed, tmp_path / "runs" / part / f"seed{seed}")
               for part in ("iid", "alpha=1") for seed in (0, 1)]
    for res in results:
        m = res["methods"]
        assert set(m) == {"logme", "hscore", "reg_hscore", "transrate", "gbc", "avg_logme", "borda", "param_prior",
                          "random", "successive_halving", "hybrid", "brute_force"}
        truth = res["truth"]
        best = max(truth, key=truth.get)
        assert m["brute_force"]["top1_regret"] == 0 and m["brute_force"]["kendall_tau"] == pytest.approx(1.0)
        for name, e in m.items():  # regret is exactly truth[best] - truth[chosen]
            q = e["draw"] if name == "random" else e  # random: its one live draw, beside its expectation
            assert q["top1_regret"] == pytest.approx(truth[best] - truth[q["chosen"]]), name
            assert -1.0 <= e["kendall_tau"] <= 1.0
        # random is reported as its expectation: regret near best minus the mean accuracy (1000 draws)
        assert m["random"]["chosen"] is None and m["random"]["draws"] == 1000
        assert m["random"]["top1_regret"] == pytest.approx(truth[best] - sum(truth.values()) / 3, abs=0.02)
        assert res["val_fraction"] == 0.1 and res["validation_key"] == "client_val_accuracy_mean"
        bf, sh, lg = (m[k]["cost"] for k in ("brute_force", "successive_halving", "logme"))
        assert bf["rounds"] == 3 * 2 and sh["rounds"] < bf["rounds"]  # 3 x r0=1, 1 survivor to 2: 4 rounds
        assert lg["backward_passes"] == 0 and lg["forward_passes"] < bf["forward_passes"]
        assert m["transrate"]["cost"]["bytes_up"] > lg["bytes_up"]  # per-class Grams cost bytes
        assert m["hybrid"]["cost"]["forward_passes"] > lg["forward_passes"]  # statistics + its search
        setting = tmp_path / "runs" / res["partition"] / f"seed{res['seed']}"
        assert json.loads((setting / "result.json").read_text())["truth"] == truth
        measured_cost = json.loads((setting / "statistics" / "selection.json").read_text())["cost"]
        measured = measured_cost["bytes_up"]
        assert m["gbc"]["cost"]["bytes_down"] == measured_cost["bytes_down"] > 0  # the PCA bases sent out
        # the per-score bytes formula = the wire's bytes: TransRate's round 1 + GBC's round 2
        assert m["transrate"]["cost"]["bytes_up"] + m["gbc"]["cost"]["bytes_up"] - lg["bytes_up"] == measured
        assert m["gbc"]["cost"]["rounds"] == 2 and m["gbc"]["cost"]["forward_passes"] == 2 * lg["forward_passes"]

    table = _script("table")
    out = tmp_path / "results"
    table.main([str(tmp_path / "runs"), "--out", str(out)])
    md = (out / "table.md").read_text()
    assert "| logme |" in md and "4 settings" in md and (out / "plot.png").stat().st_size > 10_000
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert len(rows) == 4 * 12

    bench = _script_bench()
    bench.main(["--results", str(tmp_path / "runs")])


def test_a_missing_score_ranks_last_in_the_study_as_in_a_live_run():
    """A score undefined for a candidate (None, NaN in old results) ranks it last, in name order
    among the unscored, exactly as rank_by ranks it in a live run; the table recomputes old
    result.json files (which dropped it) the same way."""
    truth = {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.6}
    scores = {"a": None, "b": 2.0, "c": 1.0, "d": float("nan")}
    q = quality_of(truth, scores)
    assert rank_by(scores) == ["b", "c", "a", "d"] and q["chosen"] == "b" and q["best"] == "a"
    assert q["kendall_tau"] == pytest.approx(1 / 3)  # b>c>a>d against a>b>c>d: 4 concordant pairs, 2 discordant
    assert quality_of(truth, {"a": None, "b": None}) == {}
    cost = {"forward_passes": 1, "backward_passes": 0, "bytes_up": 0, "bytes_down": 0, "rounds": 1, "seconds": 0.0}
    old = {"data": "x", "partition": "iid", "seed": 0, "truth": truth, "methods": {
        "logme": {"kendall_tau": 1.0, "top1_regret": 0.1, "chosen": "b", "best": "b", "scores": scores, "cost": cost},
        "brute_force": {"scores": truth, "cost": cost}}}
    [row] = [r for r in _script("table").rows_of(_script("table").requalify([old])) if r["method"] == "logme"]
    assert row["kendall_tau"] == pytest.approx(1 / 3) and row["best"] == "a" and row["top1_regret"] == pytest.approx(0.1)


def _script_bench():
    spec = importlib.util.spec_from_file_location("selection_cost", ROOT / "benchmarks" / "selection_cost.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_table_reports_random_as_its_expectation_and_flags_searches_on_test():
    """An old result.json holds random's one seeded draw and predates the validation split: the
    table re-scores random as its expectation over 1,000 seeded rankings and says that the
    searches of that setting ranked on the test split."""
    from vista.selection.ranking import random_expectation

    table = _script("table")
    truth = {"a": 0.9, "b": 0.7, "c": 0.5, "d": 0.3}
    cost = {"forward_passes": 1, "backward_passes": 0, "bytes_up": 0, "bytes_down": 0, "rounds": 1, "seconds": 0.0}
    old = {"data": "x", "partition": "iid", "seed": 0, "truth": truth, "methods": {
        "random": {"kendall_tau": 1.0, "top1_regret": 0.0, "chosen": "a", "best": "a",
                   "scores": {"a": 0.9, "b": 0.8, "c": 0.2, "d": 0.1}, "cost": cost},
        "brute_force": {"scores": truth, "cost": cost}}}
    results = table.requalify([old])
    [row] = [r for r in table.rows_of(results) if r["method"] == "random"]
    expected = random_expectation(truth)
    assert row["kendall_tau"] == expected["kendall_tau"] and abs(row["kendall_tau"]) < 0.05
    assert row["top1_regret"] == pytest.approx(0.9 - 0.6, abs=0.02) and row["picked_best"] == pytest.approx(0.25, abs=0.04)
    assert row["chosen"] is None and results[0]["methods"]["random"]["draw"]["kendall_tau"] == pytest.approx(1.0)
    md = table.markdown(results, table.rows_of(results))
    assert "1 of 1 settings predate the held-out validation split" in md and "(expectation, 1000 draws)" in md
    assert not table.searched_on_test({**old, "val_fraction": 0.1})
