"""A longer truth from one brute-force run: the test split scored every few rounds
(``StudyConfig.test_every``) gives the truth at each of those budgets, and the run's first rounds
are exactly the shorter run's (same seed, same partition), so one run checks a study's budget."""

from __future__ import annotations

import copy
import json

import pytest
from support.study_scripts import study_script

from vista.drivers.study import BudgetMismatch, StudyConfig, run_setting
from vista.models.hub import ModelSpec


@pytest.fixture(scope="module")
def short_and_long(arch_hub, tiny_data, tmp_path_factory, one_torch_thread):
    out = tmp_path_factory.mktemp("longer_truth")
    cands = tuple(ModelSpec(name=n, hub_dir=str(arch_hub), hub_name=n) for n in ("bert", "gpt2"))
    cfg = StudyConfig(candidates=cands, clients=4, clients_per_round=2, rounds=2, batch_size=8, max_seq_len=32,
                      num_workers=0, top_k=2)
    name = tiny_data[0].name.removesuffix("_data.h5")
    short = run_setting(cfg, tiny_data[0], "iid", 0, out / "short" / name / "iid" / "seed0")
    longer = StudyConfig(**{**cfg.__dict__, "rounds": 4, "test_every": 2})
    return short, run_setting(longer, tiny_data[0], "iid", 0, out / "long" / name / "iid" / "seed0"), out


def test_brute_force_scores_the_test_split_every_n_rounds_and_in_the_last(short_and_long):
    _, long, _ = short_and_long
    for c, curve in long["curves"].items():
        assert [("test_accuracy" in r) for r in curve] == [False, True, False, True], c
        assert long["truth"][c] == curve[-1]["test_accuracy"]
    assert long["budget"]["rounds"] == 4


def test_a_best_validation_truth_reads_each_candidate_at_its_best_validation_round(short_and_long, arch_hub,
                                                                                  tiny_data, tmp_path):
    import dataclasses

    short, _, _ = short_and_long
    cands = tuple(ModelSpec(name=n, hub_dir=str(arch_hub), hub_name=n) for n in ("bert", "gpt2"))
    cfg = StudyConfig(candidates=cands, clients=4, clients_per_round=2, rounds=3, batch_size=8, max_seq_len=32,
                      num_workers=0, top_k=2, test_every=1, truth="best_val")
    setting = tmp_path / tiny_data[0].name.removesuffix("_data.h5") / "iid" / "seed0"
    with pytest.raises(ValueError, match="test_every=1"):  # refused before anything trains
        run_setting(dataclasses.replace(cfg, test_every=None), tiny_data[0], "iid", 0, setting)
    assert not setting.exists()
    res = run_setting(cfg, tiny_data[0], "iid", 0, setting)
    assert res["budget"]["truth"] == "best_val" and "truth" not in short["budget"]
    for c, curve in res["curves"].items():
        assert all("test_accuracy" in r for r in curve)
        vals = [r["client_val_accuracy_mean"] for r in curve]
        best = max(i + 1 for i, v in enumerate(vals) if v == max(vals))  # of equal rounds the later
        assert res["truth_rounds"][c] == best
        assert res["truth"][c] == curve[best - 1]["test_accuracy"]
        # the same training as the grid's: its first 2 rounds are the 2-round run's
        assert [r["val_loss"] for r in curve[:2]] == pytest.approx([r["val_loss"] for r in short["curves"][c]],
                                                                   rel=1e-6)
    assert res["methods"]["brute_force"]["top1_regret"] == 0.0  # every method is judged against this truth
    with pytest.raises(BudgetMismatch, match="truth best_val -> None"):  # a setting of the other truth is not mixed in
        run_setting(dataclasses.replace(cfg, truth="last"), tiny_data[0], "iid", 0, setting)


def test_a_longer_run_begins_with_the_shorter_run_exactly(short_and_long):
    short, long, _ = short_and_long
    for c, curve in short["curves"].items():
        prefix = long["curves"][c][:2]
        assert [r["client_val_accuracy_mean"] for r in prefix] == [r["client_val_accuracy_mean"] for r in curve]
        assert [r["val_loss"] for r in prefix] == pytest.approx([r["val_loss"] for r in curve], rel=1e-6)
        assert prefix[-1]["test_accuracy"] == short["truth"][c]
    # the statistics round does not depend on the rounds: the same scores
    assert long["methods"]["logme"]["scores"] == pytest.approx(short["methods"]["logme"]["scores"], rel=1e-9)


def test_longer_truth_judges_every_method_at_every_scored_round(short_and_long, tmp_path):
    short, long, out = short_and_long
    lt = study_script("longer_truth")
    assert lt.main([str(out / "long"), "--short", str(out / "short"), "--out", str(tmp_path)]) == 0
    (rep,) = json.loads((tmp_path / "longer_truth.json").read_text())
    assert rep["rounds"] == [2, 4] and rep["budget_rounds"] == 4
    assert rep["reproduction"]["reproduced"] and rep["reproduction"]["short_rounds"] == 2
    assert rep["test_accuracy"] == {c: [h[1]["test_accuracy"], h[3]["test_accuracy"]]
                                    for c, h in long["curves"].items()}
    rows = {(r["method"], r["rounds"]): r for r in rep["methods"]}
    assert {m for m, _ in rows} >= {"auto_shipped", "logme", "successive_halving", "hybrid_shipped"}
    for r in (2, 4):  # a statistics score's pick judged against that round's truth
        truth = {c: accs[r // 2 - 1] for c, accs in rep["test_accuracy"].items()}
        row = rows[("logme", r)]
        assert row["top1_regret"] == pytest.approx(max(truth.values()) - truth[row["chosen"]])
    # at the short budget the longer run's judgement is the grid run's own
    for m in ("logme", "auto_shipped", "param_prior"):
        assert rows[(m, 2)]["top1_regret"] == pytest.approx(short["methods"][m]["top1_regret"])
        assert rows[(m, 2)]["chosen"] == short["methods"][m]["chosen"]
    sh = rows[("successive_halving", 2)]
    assert sh["chosen"] == short["methods"]["successive_halving"]["chosen"]
    assert "reproduced" in (tmp_path / "longer_truth.md").read_text()


def test_a_longer_run_that_drifted_from_the_grid_is_flagged(short_and_long):
    short, long, _ = short_and_long
    lt = study_script("longer_truth")
    drifted = copy.deepcopy(long)
    c = next(iter(drifted["curves"]))
    drifted["curves"][c][0]["client_val_accuracy_mean"] += 0.25
    got = lt.reproduction(drifted, short)
    assert not got["reproduced"] and got["max_val_diff"] == pytest.approx(0.25)
    assert lt.reproduction(long, short)["reproduced"]
    pruned = {k: v for k, v in short.items() if k != "curves"}  # a grid run kept without its curves
    got = lt.reproduction(long, pruned)
    assert not got["reproduced"] and got["max_truth_diff"] == 0


def test_centralised_is_one_client_holding_every_training_text(arch_hub, tiny_data, tmp_path, one_torch_thread):
    import h5py

    cen = study_script("centralised")
    cfg = StudyConfig(candidates=(ModelSpec(name="bert", hub_dir=str(arch_hub), hub_name="bert"),), rounds=2,
                      batch_size=8, max_seq_len=32, num_workers=0)
    curve = cen.centralised_curve(cfg, tiny_data[0], tmp_path / "c")
    assert len(curve) == 2 and all(0.0 <= a <= 1.0 for a in curve)
    (part,) = (tmp_path / "c").glob("*_partition_seed0.h5")
    with h5py.File(part) as f, h5py.File(tiny_data[0]) as d:
        (group,) = f.keys()
        clients = f[group]["partition_data"]
        assert list(clients) == ["0"]
        assert len(clients["0"]["train"]) == sum(1 for _ in d["X"]) - len(clients["0"]["test"])
    metrics = [json.loads(x) for x in (tmp_path / "c" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["test_accuracy"] for m in metrics if "test_accuracy" in m] == curve


def test_centralised_sets_the_grids_truth_beside_its_level(tmp_path):
    cen = study_script("centralised")
    for part, seed, acc in (("iid", 0, 0.80), ("iid", 1, 0.84), ("alpha=0.1", 0, 0.60)):
        d = tmp_path / "runs" / "r8" / part / f"seed{seed}"
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps({"data": "r8", "partition": part, "seed": seed,
                                                   "truth": {"minilm": acc, "mpnet": 0.9}}))
    got = cen.federated_truths(tmp_path / "runs", "r8", "minilm")
    assert got == {"alpha=0.1": {"mean": 0.60, "seeds": 1}, "iid": {"mean": pytest.approx(0.82), "seeds": 2}}
    md = cen.markdown([{"corpus": "r8", "centralised": [0.5, 0.9], "best_in_budget": 0.9,
                        "federated": {p: {**v, "gap": v["mean"] - 0.9} for p, v in got.items()}}], "minilm", 2)
    assert "| r8 | 0.500 | 0.900 | 0.900 | alpha=0.1 0.600 (1): -0.300; iid 0.820 (2): -0.080 |" in md


@pytest.fixture(scope="module")
def probed(short_and_long, arch_hub, tiny_data):
    """The short run's setting again under a probed budget: 2 local epochs a round, test every round."""
    short, _, out = short_and_long
    cands = tuple(ModelSpec(name=n, hub_dir=str(arch_hub), hub_name=n) for n in ("bert", "gpt2"))
    cfg = StudyConfig(candidates=cands, clients=4, clients_per_round=2, rounds=2, batch_size=8, max_seq_len=32,
                      num_workers=0, top_k=2, local_epochs=2, test_every=1)
    name = tiny_data[0].name.removesuffix("_data.h5")
    return short, run_setting(cfg, tiny_data[0], "iid", 0, out / "probe" / name / "iid" / "seed0"), out, name


def test_a_probed_budget_trains_its_local_epochs_on_the_grids_clients(probed):
    short, probe, _, _ = probed
    assert probe["budget"]["local_epochs"] == 2 and short["budget"]["local_epochs"] == 1
    for c, curve in probe["curves"].items():
        assert all("test_accuracy" in r for r in curve)
        # the same clients' texts each round, seen twice: exactly twice the backward passes
        assert [r["backward_passes"] for r in curve] == [2 * r["backward_passes"] for r in short["curves"][c]]


def test_budget_probe_sets_the_probe_beside_the_grid_and_the_centralised_level(probed, tmp_path):
    short, probe, out, name = probed
    bp = study_script("budget_probe")
    accs = [r["test_accuracy"] for r in probe["curves"]["bert"]]
    level = accs[0] + 0.04  # round 1 is 0.04 under it, within 0.05; the probe's last round is what counts
    cen = tmp_path / "centralised.json"
    cen.write_text(json.dumps({"candidate": "bert", "rows": [{"corpus": name, "centralised": [level - 0.1, level],
                                                              "best_in_budget": level}]}))
    args = [str(out / "probe"), "--grid", str(out / "short"), "--centralised", str(cen), "--candidate", "bert",
            "--out", str(tmp_path / "bp")]
    assert bp.main(args) == 0
    (row,) = json.loads((tmp_path / "bp" / "budget_probe.json").read_text())["rows"]
    assert row["test_accuracy"] == accs and row["final"] == accs[-1]
    assert row["grid"] == short["truth"]["bert"] and row["grid_budget"]["local_epochs"] == 1
    assert row["gap"] == pytest.approx(accs[-1] - level) and row["grid_gap"] == pytest.approx(row["grid"] - level)
    assert row["within"] == (accs[-1] >= level - 0.05)
    assert row["first_round_within"] == 1
    assert row["backward_ratio"] == pytest.approx(2.0)
    assert row["others"] == {"gpt2": probe["truth"]["gpt2"]}
    md = (tmp_path / "bp" / "budget_probe.md").read_text()
    assert f"| {name} iid seed 0 | 2 local epochs, 2 rounds" in md
    assert f"{int(row['within'])} of 1 settings" in md
    # a level of another candidate is refused in one line
    cen.write_text(json.dumps({"candidate": "gpt2", "rows": []}))
    with pytest.raises(SystemExit) as e:
        bp.main(args)
    assert e.value.code == 2


def test_a_run_under_another_budget_reports_how_the_truth_moved_not_a_reproduction(probed, tmp_path):
    short, probe, out, _ = probed
    lt = study_script("longer_truth")
    assert lt.budget_shift(probe, short)["differs"] == {"local_epochs": [1, 2]}
    longer = copy.deepcopy(short)
    longer["budget"]["rounds"] = 4  # more rounds alone: the reproduction check, not a shift
    assert lt.budget_shift(longer, short) is None
    assert lt.main([str(out / "probe"), "--short", str(out / "short"), "--out", str(tmp_path)]) == 0
    (rep,) = json.loads((tmp_path / "longer_truth.json").read_text())
    assert "reproduction" not in rep
    shift = rep["budget_shift"]
    here = {c: h[1]["test_accuracy"] for c, h in probe["curves"].items()}  # round 2, the grid's budget
    assert shift["truth_here"] == here and shift["grid_truth"] == short["truth"]
    assert shift["max_score_rel_diff"] < 1e-9  # the statistics round does not depend on the budget
    # the grid's truth judged as a ranking of this run's: its best, regretted under this budget
    grid_best = max(short["truth"], key=short["truth"].get)
    assert shift["grid_pick"] == grid_best
    assert shift["top1_regret"] == pytest.approx(max(here.values()) - here[grid_best])
    md = (tmp_path / "longer_truth.md").read_text()
    assert "Budget against the grid's run: local_epochs 1 -> 2." in md and "reproduced" not in md



@pytest.mark.slow  # over 7 s on 2 cores: out of the fast tier (pytest -m 'not slow'), still in CI
def test_budget_probe_reads_a_vista_main_run_and_checks_it_against_the_grid(probed, arch_hub, tiny_data, tmp_path):
    """A probe run through the user-facing CLI (e.g. under another server rule): under the grid's own
    budget and FedAvg it must retrace the grid's curve; under another rule it is a probe row."""
    import shutil
    import subprocess
    import sys

    import yaml

    short, _, out, name = probed
    run = tmp_path / "probes" / "fedavg"
    args = [f"paths.model_hub={arch_hub}", "model=minilm", "model.name=bert", "model.hub_name=bert", "model.package=null",
            "dataset=fednlp", f"dataset.name={name}", f"dataset.data_file={tiny_data[0]}", "partition=uniform",
            "partition.clients=4", f"partition.file={tmp_path / 'part.h5'}", "seed=0", "fl.rounds=2",
            "fl.clients_per_round=2", "fl.batch_size=8", "fl.max_seq_len=32", "fl.val_fraction=0.1",
            "scheduler.num_workers=0", "checkpoint.every=0", f"hydra.run.dir={run}"]
    for extra in ([], ["fl.rounds=3", f"hydra.run.dir={tmp_path / 'probes' / 'fedavg_longer'}"]):
        p = subprocess.run([sys.executable, "-m", "vista.main", *args, *extra], capture_output=True, text=True,
                           cwd=tmp_path, timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
    # the same run under server momentum, as the probe would read it (its config names the rule)
    momentum = tmp_path / "probes" / "fedavgm"
    shutil.copytree(run, momentum)
    cfg = yaml.safe_load((momentum / "config.yaml").read_text())
    cfg["aggregator"] = {"_target_": "vista.fl.aggregators.FedAvgM", "server_lr": 1.0, "momentum": 0.9}
    (momentum / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    bp = study_script("budget_probe")
    probe = bp.main_run(run)
    assert (probe["data"], probe["partition"], probe["seed"]) == (name, "iid", 0)
    assert {k: v for k, v in probe["budget"].items() if k != "aggregator"} == short["budget"]
    assert probe["budget"]["aggregator"] == "FedAvg()"
    level = 0.9
    cen = tmp_path / "centralised.json"
    cen.write_text(json.dumps({"candidate": "bert", "rows": [{"corpus": name, "centralised": [level],
                                                              "best_in_budget": level}]}))
    assert bp.main([str(tmp_path / "probes"), "--grid", str(out / "short"), "--centralised", str(cen),
                    "--candidate", "bert", "--out", str(tmp_path / "bp")]) == 0
    rows = {r["server_rule"]: r for r in json.loads((tmp_path / "bp" / "budget_probe.json").read_text())["rows"]}
    longer = json.loads((tmp_path / "bp" / "budget_probe.json").read_text())["rows"]
    assert sorted(len(r["test_accuracy"]) for r in longer if r["server_rule"] == "FedAvg()") == [2, 3]
    # a longer FedAvg run at the grid's budget begins with the grid's curve
    assert all(r["reproduces_grid"] for r in longer if r["server_rule"] == "FedAvg()")
    rows = {r["server_rule"]: r for r in longer if len(r["test_accuracy"]) == 2}
    assert set(rows) == {"FedAvg()", "FedAvgM(server_lr=1.0, momentum=0.9)"}
    # the CLI's FedAvg run is the grid's training of the candidate, round by round
    assert rows["FedAvg()"]["reproduces_grid"] is True
    grid_curve = short["curves"]["bert"]
    moved = [{**r, "val_loss": r["val_loss"] * (1 + 1e-4)} for r in probe["curves"]["bert"]]
    assert bp.reproduces(probe["curves"]["bert"], grid_curve) and not bp.reproduces(moved, grid_curve)
    assert rows["FedAvg()"]["final"] == short["truth"]["bert"] == rows["FedAvg()"]["grid"]
    assert rows["FedAvg()"]["backward_ratio"] == pytest.approx(1.0)
    assert rows["FedAvgM(server_lr=1.0, momentum=0.9)"]["reproduces_grid"] is None  # another rule: no such check
    md = (tmp_path / "bp" / "budget_probe.md").read_text()
    assert "lr 0.002, FedAvgM(server_lr=1.0, momentum=0.9) |" in md
    assert "(3 rounds): reproduces the grid's curve of bert over its 2 rounds" in md
    # a run cut short is named and left out, not read as a finished probe
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text(lines[0] + "\n")
    assert bp.main([str(tmp_path / "probes"), "--grid", str(out / "short"), "--centralised", str(cen),
                    "--candidate", "bert", "--out", str(tmp_path / "bp")]) == 0
    assert "Not finished, left out: " in (tmp_path / "bp" / "budget_probe.md").read_text()
    assert len(json.loads((tmp_path / "bp" / "budget_probe.json").read_text())["rows"]) == 2  # FedAvgM, the longer
    # of several centralised files, a later one's level of a corpus wins (the 8-epoch reference)
    longer = tmp_path / "centralised_8.json"
    longer.write_text(json.dumps({"candidate": "bert", "rows": [{"corpus": name, "centralised": [0.5, 0.8],
                                                                 "best_in_budget": 0.8}]}))
    assert bp.main([str(tmp_path / "probes"), "--grid", str(out / "short"), "--centralised", str(cen), str(longer),
                    "--candidate", "bert", "--out", str(tmp_path / "bp")]) == 0
    assert {r["level"] for r in json.loads((tmp_path / "bp" / "budget_probe.json").read_text())["rows"]} == {0.8}
