"""The selection study, small: tiny candidates, the tiny corpus, two partitions, then its table."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from support.study_scripts import study_script

from vista.data.fednlp import FedNLPData
from vista.drivers.study import (
    SHIPPED,
    SHIPPED_AUTO,
    TIE_TOL,
    BudgetMismatch,
    StudyConfig,
    budget_of,
    check_budget,
    quality_of,
    rescore_own_poolings,
    run_setting,
    setting_parts,
)
from vista.drivers.study_compute import corpus_token_counts, selection_compute
from vista.models.hub import ModelSpec
from vista.selection.head_scores import head_gbc_rule, head_pair_min_rule, head_pair_rule
from vista.selection.ranking import rank_by
from vista.selection.sampling import token_share
from vista.selection.search import Cost

ROOT = Path(__file__).resolve().parents[2]


def _script(name: str):
    return study_script(name)


def _pstd(centred: dict[str, float]) -> float:
    return math.sqrt(sum(v * v for v in centred.values()) / len(centred))


@pytest.mark.slow  # over 7 s on 2 cores: out of the fast tier (pytest -m 'not slow'), still in CI
def test_study_small_on_tiny_models(arch_hub, tiny_data, tmp_path, one_torch_thread, capsys):
    names = ("bert", "roberta", "gpt2")
    cfg = StudyConfig(candidates=tuple(ModelSpec(name=n, hub_dir=str(arch_hub), hub_name=n) for n in names),
                      clients=4, clients_per_round=2, rounds=2, batch_size=8, max_seq_len=32, num_workers=0,
                      top_k=2, tie_tol=TIE_TOL, keep_features=True)
    data = tiny_data[0]
    results = [run_setting(cfg, data, part, seed, tmp_path / "runs" / part / f"seed{seed}")
               for part in ("iid", "alpha=1") for seed in (0, 1)]
    for res in results:
        m = res["methods"]
        assert set(m) == {"logme", "hscore", "reg_hscore", "transrate", "gbc", "avg_logme", "borda", "param_prior",
                          "random", "gbc_prior", "logme_gbc", "gbc_prior_mean", "auto_shipped",
                          "head_shipped", "head_gbc_shipped", "head_centred_shipped", "head_gbc_centred_shipped",
                          "head_pair_shipped", "head_pair_min_shipped",
                          "successive_halving", "hybrid", "brute_force"}
        # auto as shipped (48 texts per client, 384 a round, 32 tokens): these clients hold fewer, so every
        # text, at the study's own length here; the round's directory is named by its sampling
        shipped = json.loads((tmp_path / "runs" / res["partition"] / f"seed{res['seed']}"
                              / "statistics_shipped_48-384-32" / "selection.json").read_text())
        assert m["auto_shipped"]["sampling"] == SHIPPED_AUTO and shipped["clients"] == res["clients"]
        # auto_shipped: gbc_prior (auto until design note 89) on auto's sample; head_gbc_shipped is auto since
        assert m["auto_shipped"]["scores"] == pytest.approx(m["gbc_prior"]["scores"], rel=1e-9)
        assert m["auto_shipped"]["cost"]["forward_passes"] == m["gbc_prior"]["cost"]["forward_passes"]
        # ... and at the study's length (32 here), so every token: its compute counts them all
        assert m["auto_shipped"]["token_share"] == 1.0
        assert selection_compute(res, "auto_shipped") == selection_compute(res, "gbc_prior")
        # the head probe as shipped: the same sample, then 6 rounds at the setting's own rate and batch
        # (design note 88), on the features the statistics round cached: no forward pass more
        head = m["head_shipped"]
        assert head["sampling"] == SHIPPED_AUTO and head["token_share"] == 1.0
        assert (head["head"]["lr"], head["head"]["batch_size"], head["head"]["rounds"]) == (cfg.lr, 8, 6)
        assert head["cost"]["rounds"] == 1 + 6 + 1 and head["cost"]["backward_passes"] == 0
        assert head["cost"]["forward_passes"] == m["auto_shipped"]["cost"]["forward_passes"]
        assert all([p["round"] for p in c] == list(range(7)) for c in head["curves"].values())
        assert rank_by(head["scores"])[0] == head["chosen"]
        assert head["scores"] == {n: c[-1]["val_accuracy"] for n, c in head["curves"].items()}
        # the probe beside auto's rule: the server's rule on the two runs' values, one encode
        both = m["head_gbc_shipped"]
        assert both["scores"] == head_gbc_rule(head["scores"], m["auto_shipped"]["scores"])
        assert both["cost"]["forward_passes"] == m["auto_shipped"]["cost"]["forward_passes"]
        # its cost: auto_shipped's plus the probe's 6 + 1 rounds alone (head_cost), not the probe run's
        # statistics round: one statistics round serves both
        probe = head["head_cost"]
        assert probe["rounds"] == 7 and probe["forward_passes"] == 0 and 0 < probe["bytes_up"] < head["cost"]["bytes_up"]
        assert both["cost"]["rounds"] == m["auto_shipped"]["cost"]["rounds"] + 7
        assert both["cost"]["bytes_up"] == m["auto_shipped"]["cost"]["bytes_up"] + probe["bytes_up"]
        # the same probe centred (selection.head_centre, design note 93): the same blocks up, the
        # centre down with every job, and its statistics round uploads moments (the probe reads their mean)
        cen, cboth = m["head_centred_shipped"], m["head_gbc_centred_shipped"]
        assert cen["head"] == {**head["head"], "centre": True} and cen["curves"] != head["curves"]
        assert cen["head_cost"]["bytes_up"] == probe["bytes_up"] and cen["head_cost"]["bytes_down"] > probe["bytes_down"]
        assert cen["cost"]["bytes_up"] - cen["head_cost"]["bytes_up"] > head["cost"]["bytes_up"] - probe["bytes_up"]
        assert cboth["scores"] == head_gbc_rule(cen["scores"], m["auto_shipped"]["scores"])
        assert cboth["cost"]["bytes_up"] == m["auto_shipped"]["cost"]["bytes_up"] + probe["bytes_up"]
        truth = res["truth"]
        best = max(truth, key=truth.get)
        assert m["brute_force"]["top1_regret"] == 0 and res["tie_tol"] == 0.01
        # the truth's own accuracies against the truth tied within 0.01: at least the cap (1 without ties)
        bf_tau, cap = m["brute_force"]["kendall_tau"], m["brute_force"]["kendall_tau_max"]
        assert bf_tau >= cap - 1e-9 or (math.isnan(bf_tau) and math.isnan(cap))
        for name, e in m.items():  # regret is exactly truth[best] - truth[chosen]
            q = e["draw"] if name == "random" else e  # random: its one live draw, beside its expectation
            assert q["top1_regret"] == pytest.approx(truth[best] - truth[q["chosen"]]), name
            # undefined only where a method ties every candidate (the tiny centred probe can)
            assert -1.0 <= e["kendall_tau"] <= 1.0 or (math.isnan(e["kendall_tau"]) and len(set(e["scores"].values())) == 1)
        # random is reported as its expectation: regret near best minus the mean accuracy (1000 draws)
        assert m["random"]["chosen"] is None and m["random"]["draws"] == 1000
        assert m["random"]["top1_regret"] == pytest.approx(truth[best] - sum(truth.values()) / 3, abs=0.02)
        assert res["val_fraction"] == 0.1 and res["validation_key"] == "client_val_accuracy_mean"
        assert res["budget"] == budget_of(cfg) and res["budget"]["rounds"] == 2
        bf, sh, lg = (m[k]["cost"] for k in ("brute_force", "successive_halving", "logme"))
        # 3 x r0=1, then 1 survivor to 2 rounds, or more where tiny models tie at the cut (note 76)
        kept = len(m["successive_halving"]["search"]["rungs"][0]["kept"])
        assert bf["rounds"] == 3 * 2 and sh["rounds"] == 3 + kept == sum(
            m["successive_halving"]["search"]["rounds_trained"].values()) <= bf["rounds"]
        assert lg["backward_passes"] == 0 and lg["forward_passes"] < bf["forward_passes"]
        assert m["transrate"]["cost"]["bytes_up"] > lg["bytes_up"]  # per-class Grams cost bytes
        assert m["hybrid"]["cost"]["forward_passes"] > lg["forward_passes"]  # statistics + its search
        setting = tmp_path / "runs" / res["partition"] / f"seed{res['seed']}"
        assert json.loads((setting / "result.json").read_text())["truth"] == truth
        # kept: candidates x (clients + the server's probe), for the classifiers' pooling and for
        # gbc_prior_mean's own (mean)
        assert len(list((setting / "features").glob("*.npy"))) == 3 * (4 + 1) * 2
        measured_cost = json.loads((setting / "statistics" / "selection.json").read_text())["cost"]
        measured = measured_cost["bytes_up"]
        assert m["gbc"]["cost"]["bytes_down"] == measured_cost["bytes_down"] > 0  # the PCA bases sent out
        # the per-score bytes formula = the wire's bytes: TransRate's round 1 + GBC's round 2
        assert m["transrate"]["cost"]["bytes_up"] + m["gbc"]["cost"]["bytes_up"] - lg["bytes_up"] == measured
        assert m["gbc"]["cost"]["rounds"] == 2 and m["gbc"]["cost"]["forward_passes"] == lg["forward_passes"]  # cached features
        # the combined scores: computed by the server from their components' recorded values, at
        # the cost of the dearest component (they share its encode); gbc_prior on what each classifier
        # reads (design note 69), gbc_prior_mean the same rule scored as a live run with it scores it:
        # on mean-pooled features, a statistics round of its own. auto (head_gbc since design note 89)
        # is studied on auto's sample only (head_gbc_shipped above)
        assert m["gbc_prior"]["cost"] == m["gbc"]["cost"] == m["logme_gbc"]["cost"]
        assert m["gbc_prior"]["pooling"] == "auto" and "auto" not in m
        assert m["gbc"]["pooling"] == "auto" and m["gbc_prior_mean"]["pooling"] == "mean" and "pooling" not in m["random"]
        pooled = json.loads((setting / "statistics_mean" / "selection.json").read_text())
        mean_rule = m["gbc_prior_mean"]
        assert pooled["pooling"] == "mean" and mean_rule["uses"] == ["gbc", "param_prior"]
        assert mean_rule["scores"] == pooled["scores"]["gbc_prior"] == pooled["scores"]["gbc_prior_mean"]
        assert {k: v for k, v in mean_rule["cost"].items() if k != "seconds"} == \
            {k: v for k, v in m["gbc"]["cost"].items() if k != "seconds"}
        z = {s: (lambda v: {c: (v[c] - sum(v.values()) / 3) for c in v})(pooled["scores"][s]) for s in ("gbc", "param_prior")}
        assert rank_by(mean_rule["scores"]) == rank_by({c: z["gbc"][c] / _pstd(z["gbc"]) + 0.5 * z["param_prior"][c]
                                                        / _pstd(z["param_prior"]) for c in names})

    # a setting finished under an earlier rule (gbc_prior, then auto, on mean-pooled features, before
    # gbc_prior_mean existed) gets gbc_prior_mean scored on its own pooling's round and gbc_prior back
    # on the setting's own round, the truth and everything else kept
    setting = tmp_path / "runs" / "iid" / "seed0"
    before = json.loads((setting / "result.json").read_text())
    old = json.loads(json.dumps(before))
    old["methods"]["gbc_prior"] = {**old["methods"].pop("gbc_prior_mean")}  # what the old rule recorded
    del old["methods"]["auto_shipped"]  # ... before auto shipped a sample of the texts (design note 71)
    (setting / "result.json").write_text(json.dumps(old))
    assert old["methods"]["gbc_prior"]["pooling"] == "mean"
    mean_round = setting / "statistics_mean" / "selection.json"  # ... whose round never computed gbc_prior_mean
    stats = json.loads(mean_round.read_text())
    del stats["scores"]["gbc_prior_mean"]
    mean_round.write_text(json.dumps(stats))
    again = rescore_own_poolings(cfg, data, setting)
    # as JSON: a tau-b undefined on both sides (NaN: a method tying every candidate) compares equal
    assert json.dumps(again["methods"], sort_keys=True) == json.dumps(before["methods"], sort_keys=True)
    assert again["truth"] == before["truth"]
    # auto_shipped scored before its compute counted tokens: given its share, not a new round
    shipped_round = setting / "statistics_shipped_48-384-32" / "selection.json"
    stamp = shipped_round.stat().st_mtime_ns
    old = json.loads((setting / "result.json").read_text())
    del old["methods"]["auto_shipped"]["token_share"]
    (setting / "result.json").write_text(json.dumps(old))
    assert json.dumps(rescore_own_poolings(cfg, data, setting)["methods"], sort_keys=True) == json.dumps(
        before["methods"], sort_keys=True)
    assert shipped_round.stat().st_mtime_ns == stamp
    assert json.loads((setting / "result.json").read_text())["methods"]["gbc_prior"] == before["methods"]["gbc_prior"]

    # the setting's runs are reused only under the budget they were made with
    with pytest.raises(BudgetMismatch, match=r"lr 0.002 -> 0.005"):
        run_setting(dataclasses.replace(cfg, lr=5e-3), data, "iid", 0, setting)
    with pytest.raises(BudgetMismatch, match=r"rounds 2 -> 3"):
        rescore_own_poolings(dataclasses.replace(cfg, rounds=3), data, setting)

    # probe_centring.py: the probe in one process on a setting's kept features, as they are, centred and
    # standardised, beside the truth
    pc = _script("probe_centring")
    setting = tmp_path / "runs" / "iid" / "seed0"
    assert pc.main([str(setting), "--data", str(data.parent), "--lr", str(cfg.lr), "--length", "32",
                    "--candidates", *names]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line]
    truth = json.loads((setting / "result.json").read_text())["truth"]
    assert [line.split(" | ")[0][2:] for line in printed[1:]] == list(names)
    for line in printed[1:]:
        cells = line.strip("| ").split(" | ")
        assert float(cells[1]) == pytest.approx(truth[cells[0]], abs=5e-4)
        assert all(0.0 <= float(x) <= 1.0 for x in cells[2:5])
    rows = pc.client_rows(setting, FedNLPData(data), "bert", 32)
    centred = np.concatenate([f for _, f, _ in pc.variants(rows)["centred"].values()])
    assert np.abs(centred.mean(0)).max() < 1e-5  # on the pooled mean, which the server has from the sums

    # pooling_cost.py: every setting's statistics round re-run per pooling, from the kept features
    pooling = _script("pooling_cost")
    assert pooling.main(["--runs", str(tmp_path / "runs"), "--data", str(data.parent), "--hub", str(arch_hub),
                         "--candidates", *names, "--clients", "4", "--max-seq-len", "32", "--poolings", "auto",
                         "mean", "--out", str(tmp_path / "pool")]) == 0
    rows = json.loads((tmp_path / "pool" / "pooling.json").read_text())["rows"]
    mean_auto = [r for r in rows if r["pooling"] == "mean" and r["method"] == "gbc_prior"
                 and (r["partition"], r["seed"]) == ("iid", 0)]
    assert mean_auto[0]["scores"] == before["methods"]["gbc_prior_mean"]["scores"]  # the same round as the study's
    assert "| gbc |" in (tmp_path / "pool" / "pooling.md").read_text()

    table = _script("table")
    out = tmp_path / "results"
    table.main([str(tmp_path / "runs"), "--out", str(out)])
    md = (out / "table.md").read_text()
    assert "| logme |" in md and "2 settings, 4 runs (2 with 2 seeds)" in md and (out / "plot.png").stat().st_size > 10_000
    assert "but gbc_prior_mean on mean-pooled features" in md
    assert "| auto_shipped |" in md and "(max_texts_per_client 48, min_texts_per_round 384, max_seq_len 32)" in md
    assert "in 4 of 4 runs" in md and "Its compute counts tokens" in md and "1.00 to 1.00" in md
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert len(rows) == 4 * 22  # 16 methods (auto is studied as head_pair_shipped), the head probe's 6 entries

    # head_rounds.py: one longer probe per run gives every shorter one; its first 6 rounds are head_shipped's
    hr = _script("head_rounds")
    assert hr.main([str(tmp_path / "runs"), "--data", str(data.parent), "--hub", str(arch_hub), "--candidates", *names,
                    "--work", str(tmp_path / "hr"), "--rounds", "8", "--out", str(tmp_path / "hro")]) == 0
    got = json.loads((tmp_path / "hro" / "head_rounds.json").read_text())
    assert [(s["method"], s["rounds"]) for s in got["summary"]] == [(m, r) for m in ("head_probe", "head_gbc")
                                                                   for r in range(1, 9)]
    assert all(s["runs"] == 4 and s["settings"] == 2 for s in got["summary"])
    for res in results:  # at 6 rounds: the study's own head_shipped and head_gbc_shipped picks
        kept = json.loads((tmp_path / "runs" / res["partition"] / f"seed{res['seed']}" / "result.json").read_text())
        for method, entry in (("head_probe", "head_shipped"), ("head_gbc", "head_gbc_shipped")):
            [row] = [r for r in got["rows"] if (r["partition"], r["seed"], r["rounds"], r["method"])
                     == (res["partition"], res["seed"], 6, method)]
            assert row["chosen"] == kept["methods"][entry]["chosen"]

    # refresh_head.py: a head_shipped recorded before head_cost existed is run again (the curves checked
    # equal) and takes the new run's costs; head_gbc_shipped's cost becomes auto_shipped's plus head_cost
    kept_path = tmp_path / "runs" / "iid" / "seed0" / "result.json"
    now = json.loads(kept_path.read_text())
    old = json.loads(kept_path.read_text())
    del old["methods"]["head_shipped"]["head_cost"]
    old["methods"]["head_gbc_shipped"]["cost"]["bytes_up"] += 12345  # the old upper bound
    kept_path.write_text(json.dumps(old))
    rh = _script("refresh_head")
    args = [str(tmp_path / "runs"), "--data", str(data.parent), "--hub", str(arch_hub), "--candidates", *names,
            "--work", str(tmp_path / "rh"), "--keep-features"]
    assert rh.main(args) == 0
    # the sampled features are kept, so probe variants re-run offline: every candidate x client (4) and the probe texts
    assert len(list((tmp_path / "rh").rglob("features/*.npy"))) == 3 * (4 + 1)  # the one run refreshed
    # probe_variants.py: from those features the shipped probe is rebuilt (equal to the recorded curves, or it
    # stops) and run centred; the run without kept features is left out and said
    pv = _script("probe_variants")
    assert pv.main([str(tmp_path / "runs"), "--data", str(data.parent), "--work", str(tmp_path / "rh"),
                    "--out", str(tmp_path / "pv")]) == 0
    got = json.loads((tmp_path / "pv" / "probe_variants.json").read_text())
    assert len(got["skipped"]) == 3 and {(r["variant"], r["method"]) for r in got["rows"]} == {
        (v, m) for v in ("shipped", "centred") for m in ("head_probe", "head_gbc")}
    shipped = next(r for r in got["rows"] if (r["variant"], r["method"]) == ("shipped", "head_probe"))
    assert shipped["scores"] == now["methods"]["head_shipped"]["scores"]
    assert "| centred | head_gbc | 1 |" in (tmp_path / "pv" / "probe_variants.md").read_text()
    # centred_live.py: the centred probe as a selection run (selection.head_centre) on those stored features
    # gives probe_variants' offline centred curves float for float, and is judged beside head_gbc as shipped
    cl = _script("centred_live")
    assert cl.main([str(tmp_path / "runs"), "--data", str(data.parent), "--hub", str(arch_hub), "--candidates",
                    *names, "--work", str(tmp_path / "rh"), "--out", str(tmp_path / "cl")]) == 0
    live = json.loads((tmp_path / "cl" / "centred_live.json").read_text())["rows"]
    assert {(r["method"], r["truth"]) for r in live} == {(m, t) for m in ("head_probe_centred", "head_gbc_centred",
                                                                          "head_gbc_shipped") for t in ("run", "setting")}
    assert all(r["equal_to_offline"] for r in live)
    centred = next(r for r in got["rows"] if (r["variant"], r["method"]) == ("centred", "head_gbc"))
    assert next(r for r in live if (r["method"], r["truth"]) == ("head_gbc_centred", "setting"))["scores"] == \
        centred["scores"]
    assert (tmp_path / "rh" / "tiny" / "iid" / "seed0" / "head_6_centred" / "selection.json").is_file()
    # refresh_head.py --centred: a run recorded without the centred entries gets them from that run (reused),
    # the same scores as the study's own centred probe on the run's store
    lacking = json.loads(kept_path.read_text())
    for e in ("head_centred_shipped", "head_gbc_centred_shipped"):
        del lacking["methods"][e]
    kept_path.write_text(json.dumps(lacking))
    elsewhere = next(p for p in (tmp_path / "runs").rglob("result.json") if p != kept_path)  # no features in rh
    original = elsewhere.read_text()
    other = json.loads(original)
    del other["methods"]["head_centred_shipped"]
    elsewhere.write_text(json.dumps(other))
    assert rh.main([*args, "--centred"]) == 0
    assert "head_centred_shipped" not in json.loads(elsewhere.read_text())["methods"]  # left as it is: no encode
    elsewhere.write_text(original)
    added = json.loads(kept_path.read_text())["methods"]
    for e in ("head_centred_shipped", "head_gbc_centred_shipped"):
        assert added[e]["scores"] == now["methods"][e]["scores"]
    assert added["head_centred_shipped"]["curves"] == now["methods"]["head_centred_shipped"]["curves"]
    # read from the store, its compute is still the encode a live run makes (head_shipped's)
    assert added["head_centred_shipped"]["cost"]["forward_passes"] == now["methods"]["head_shipped"]["cost"][
        "forward_passes"] > 0
    # head_pair_shipped: the two probes' values beside auto_shipped as head_pair's server combines them, at
    # both probes' bytes and the probe's rounds once (side by side); refresh_head.py --pair recombines it
    m = now["methods"]
    pair = m["head_pair_shipped"]
    assert pair["scores"] == head_pair_rule(m["head_shipped"]["scores"], m["head_centred_shipped"]["scores"],
                                            m["auto_shipped"]["scores"])
    raw_c, cen_c = m["head_shipped"]["head_cost"], m["head_centred_shipped"]["head_cost"]
    assert pair["cost"]["bytes_up"] == m["auto_shipped"]["cost"]["bytes_up"] + raw_c["bytes_up"] + cen_c["bytes_up"]
    assert pair["cost"]["rounds"] == m["auto_shipped"]["cost"]["rounds"] + raw_c["rounds"]
    # head_pair_min_shipped (design note 103): the same values joined by their minimum, at the same cost
    low = m["head_pair_min_shipped"]
    assert low["scores"] == head_pair_min_rule(m["head_shipped"]["scores"], m["head_centred_shipped"]["scores"],
                                               m["auto_shipped"]["scores"])
    assert low["cost"] == pair["cost"] and low["uses"] == pair["uses"]
    unpaired = json.loads(json.dumps(now))
    del unpaired["methods"]["head_pair_shipped"], unpaired["methods"]["head_pair_min_shipped"]
    kept_path.write_text(json.dumps(unpaired))
    assert rh.main([*args, "--pair"]) == 0
    readded = json.loads(kept_path.read_text())["methods"]
    assert readded["head_pair_shipped"] == pair and readded["head_pair_min_shipped"] == low
    kept_path.write_text(json.dumps(now))
    # pair_live.py: selection=head_pair live on the kept features gives the recorded probes, gbc_prior and
    # pair float for float (both probes at once against three recorded runs); runs without features skipped
    pl = _script("pair_live")
    assert pl.main([str(tmp_path / "runs"), "--data", str(data.parent), "--hub", str(arch_hub), "--candidates",
                    *names, "--work", str(tmp_path / "rh"), "--out", str(tmp_path / "pl")]) == 0
    got = json.loads((tmp_path / "pl" / "pair_live.json").read_text())
    assert len(got["rows"]) == 2 and len(got["skipped"]) == 3 and all(all(r["equal"].values()) for r in got["rows"])
    assert got["rows"][0]["gap"] == {"gbc_prior": 0.0, "head_pair": 0.0}  # recorded by today's code: no gap
    assert got["rows"][0]["scores"] == pair["scores"]
    # privacy_head.py: auto live under DP on the kept features (design note 97), beside a no-DP run at the
    # same seed; its releases (the statistics' and both probes' 7 sums per candidate) make up the budget
    ph = _script("privacy_head")
    assert ph.main([str(tmp_path / "runs"), "--data", str(data.parent), "--hub", str(arch_hub), "--candidates",
                    *names, "--work", str(tmp_path / "rh"), "--only", "tiny/iid/seed0", "--epsilons", "8",
                    "--draws", "1", "--out", str(tmp_path / "ph")]) == 0
    dp_rows = json.loads((tmp_path / "ph" / "privacy_head.json").read_text())["rows"]
    assert {(r["epsilon"], r["method"]) for r in dp_rows} == {(e, m) for e in (None, 8.0) for m in ph.METHODS}
    assert {r["seed"] for r in dp_rows} == {ph.live_seed(now, 0, 0)} != {ph.live_seed(now, 0, 1)}
    noisy = [r for r in dp_rows if r["epsilon"] == 8.0]
    assert all(r["spent_epsilon"] == pytest.approx(8.0, rel=1e-3) for r in noisy)
    assert noisy[0]["releases"]["head"] == len(names) * 2 * 7 and noisy[0]["release_noise_multiplier"] > 1
    assert all(r["spent_epsilon"] is None for r in dp_rows if r["epsilon"] is None)
    assert "| auto | " in (tmp_path / "ph" / "privacy_head.md").read_text()
    # --head-rounds: the probes at fewer rounds spend fewer releases (2 probes x (rounds + 1) per candidate)
    assert ph.main([str(tmp_path / "runs"), "--data", str(data.parent), "--hub", str(arch_hub), "--candidates",
                    *names, "--work", str(tmp_path / "rh"), "--only", "tiny/iid/seed0", "--epsilons", "8",
                    "--draws", "1", "--head-rounds", "2", "--out", str(tmp_path / "ph2")]) == 0
    few = json.loads((tmp_path / "ph2" / "privacy_head.json").read_text())["rows"]
    assert {r["head_rounds"] for r in few} == {2}
    assert [r for r in few if r["epsilon"] == 8.0][0]["releases"]["head"] == len(names) * 2 * 3
    assert [r for r in few if r["epsilon"] == 8.0][0]["release_noise_multiplier"] < noisy[0]["release_noise_multiplier"]
    # --method head_gbc: one uncentred probe, half the probe releases; its rows judged under its own name
    assert ph.main([str(tmp_path / "runs"), "--data", str(data.parent), "--hub", str(arch_hub), "--candidates",
                    *names, "--work", str(tmp_path / "rh"), "--only", "tiny/iid/seed0", "--epsilons", "8",
                    "--draws", "1", "--method", "head_gbc", "--out", str(tmp_path / "ph3")]) == 0
    one = json.loads((tmp_path / "ph3" / "privacy_head.json").read_text())["rows"]
    assert {r["method"] for r in one} == {"head_gbc", "head_probe", "gbc_prior", "param_prior"}
    assert [r for r in one if r["epsilon"] == 8.0][0]["releases"]["head"] == len(names) * 7
    assert "| head_gbc | " in (tmp_path / "ph3" / "privacy_head.md").read_text()
    # hscore_pair.py: H-score on auto's sample, live from the kept features, beside the pair; w = 0 is the pair
    hp = _script("hscore_pair")
    assert hp.main([str(tmp_path / "runs"), "--data", str(data.parent), "--hub", str(arch_hub), "--candidates",
                    *names, "--work", str(tmp_path / "rh"), "--out", str(tmp_path / "hp")]) == 0
    hj = json.loads((tmp_path / "hp" / "hscore_pair.json").read_text())
    assert list(hj["sampled"]) == ["tiny/iid/seed0"] and hj["skipped"] == got["skipped"]  # as pair_live.py
    assert all(v is not None and 0 <= v for h in hj["sampled"].values() for v in h.values())
    at_zero = [r for r in hj["rows"] if r["w"] == 0]
    assert len(at_zero) == 2 and at_zero[0]["per_setting"] == at_zero[1]["per_setting"]
    assert {r["hscore"] for r in hj["rows"]} == {"hscore", "hscore_sampled"}
    # privacy_scale.py: auto live at two text caps, paired draws; a DP ranking judged against the no-DP one
    psc = _script("privacy_scale")
    assert psc.main(["--src", str(data.parent), "--corpus", "tiny", "--train", "64", "--hub", str(arch_hub),
                     "--candidates", *names, "--work", str(tmp_path / "ps"), "--caps", "8", "16", "--floor", "0", "--clients", "4",
                     "--epsilons", "8", "--draws", "1", "--workers", "0", "--runs", str(tmp_path / "runs")]) == 0
    ps = json.loads((tmp_path / "ps" / "out" / "privacy_scale.json").read_text())
    assert [(r["cap"], r["epsilon"]) for r in ps["rows"]] == [(8, None), (8, 8.0), (16, None), (16, 8.0)]
    clear = [r for r in ps["rows"] if r["epsilon"] is None]
    assert all(r["tau_vs_clear"] == pytest.approx(1.0) and r["same_pick"] for r in clear)  # no DP: itself
    assert clear[0]["clear"] != clear[1]["clear"]  # another cap, other texts
    noisy = [r for r in ps["rows"] if r["epsilon"] == 8.0]
    assert noisy[0]["noise_multiplier"] == noisy[1]["noise_multiplier"] > 1 and "top1_regret" in noisy[0]
    assert len(list((tmp_path / "ps").glob("cap*_seed*"))) == 5  # the uncapped run, then 2 caps x (clear, DP)
    new = json.loads(kept_path.read_text())["methods"]

    def _no_seconds(c):
        return {k: v for k, v in c.items() if k != "seconds"}

    assert _no_seconds(new["head_shipped"]["head_cost"]) == _no_seconds(now["methods"]["head_shipped"]["head_cost"])
    assert _no_seconds(new["head_gbc_shipped"]["cost"]) == _no_seconds(now["methods"]["head_gbc_shipped"]["cost"])
    assert new["head_gbc_shipped"]["scores"] == now["methods"]["head_gbc_shipped"]["scores"]
    stamp = kept_path.stat().st_mtime_ns
    assert rh.main(args) == 0 and kept_path.stat().st_mtime_ns == stamp  # nothing left to refresh
    curves = json.loads(kept_path.read_text())
    curves["methods"]["head_shipped"]["curves"]["bert"][2]["val_loss"] += 1e-9
    del curves["methods"]["head_shipped"]["head_cost"]
    kept_path.write_text(json.dumps(curves))
    with pytest.raises(SystemExit, match="differ from head_shipped's for \\['bert'\\]"):
        rh.main(args)
    kept_path.write_text(json.dumps(now))

    # refresh_results.py: a result scored before the share was recorded, at a study length of 64, gets
    # the share of 64-token texts a 32-token round keeps; searches recorded under another rule are
    # replayed from the curves as the study replays them; the others are left as they are
    old_runs = tmp_path / "old_runs"
    shutil.copytree(tmp_path / "runs", old_runs, ignore=shutil.ignore_patterns("features", "statistics*", "brute*"))
    path = old_runs / "iid" / "seed1" / "result.json"
    old = json.loads(path.read_text())
    del old["methods"]["auto_shipped"]["token_share"]
    old["budget"]["max_seq_len"] = 64
    fresh = json.loads(json.dumps({m: old["methods"][m] for m in ("successive_halving", "hybrid")}))
    old["methods"]["hybrid"] = {**old["methods"]["hybrid"], "chosen": "stale", "cost": {}}
    del old["methods"]["successive_halving"]["search"]
    path.write_text(json.dumps(old))
    refresh = _script("refresh_results")
    assert refresh.main([str(old_runs), "--data", str(data.parent), "--hub", str(arch_hub), "--top-k", "2"]) == 0
    assert {m: json.loads(path.read_text())["methods"][m] for m in fresh} == fresh
    with pytest.raises(SystemExit, match="shortlisted 2, not --top-k 3"):
        refresh.main([str(old_runs), "--data", str(data.parent), "--hub", str(arch_hub)])
    counts = corpus_token_counts(cfg.candidates, data)
    want = token_share(counts, 32, 64)
    assert max(counts) > 32 and 0 < want < 1  # some tiny texts run past 32 tokens
    assert json.loads(path.read_text())["methods"]["auto_shipped"]["token_share"] == pytest.approx(want)
    fixed = json.loads(path.read_text())
    assert selection_compute(fixed, "auto_shipped") == pytest.approx(
        Cost(**fixed["methods"]["auto_shipped"]["cost"]).forward_equivalents * want)
    assert json.loads((old_runs / "iid" / "seed0" / "result.json").read_text()) == \
        json.loads((tmp_path / "runs" / "iid" / "seed0" / "result.json").read_text())

    bench = _script_bench()
    bench.main(["--results", str(tmp_path / "runs")])

    # search_replay.py: the searches replayed from the curves kept in result.json reproduce the
    # study's own (hybrid at the study's top_k 2, successive halving), and other top_k cost less
    # or the same; a result written before the curves were kept gets them from the work folder
    replay = _script("search_replay")
    setting = tmp_path / "runs" / "iid" / "seed0"
    kept = json.loads((setting / "result.json").read_text())
    assert set(kept["curves"]) == set(names) and all(len(h) == 2 for h in kept["curves"].values())
    del kept["curves"]
    (setting / "result.json").write_text(json.dumps(kept))
    work_of = tmp_path / "work_layout" / data.name.removesuffix("_data.h5") / "iid" / "seed0"
    work_of.mkdir(parents=True)
    (work_of / "brute_force").symlink_to(setting / "brute_force")
    assert replay.main([str(tmp_path / "runs"), "--top-k", "1", "2", "3", "--out", str(tmp_path / "rp")]) == 0
    assert "Not replayable" in (tmp_path / "rp" / "search_replay.md").read_text()  # iid/seed0 had no curves
    assert replay.main([str(tmp_path / "runs"), "--work", str(tmp_path / "work_layout"), "--top-k", "1", "2", "3",
                        "--out", str(tmp_path / "rp")]) == 0
    assert "curves" in json.loads((setting / "result.json").read_text())  # filled in, in place
    rp = json.loads((tmp_path / "rp" / "search_replay.json").read_text())
    assert len(rp["runs"]) == 4 and not rp["missing"]
    # --tie-break loss (design note 77): the kept curves carry the validation loss; beside its own rows
    # it replays the live rule on the same runs, which are the rows above
    assert replay.main([str(tmp_path / "runs"), "--top-k", "1", "2", "3", "--tie-break", "loss",
                        "--out", str(tmp_path / "rpl")]) == 0
    rpl = json.loads((tmp_path / "rpl" / "search_replay.json").read_text())
    assert rpl["runs"] == rp["runs"] and rpl["rows_waiting"] == rp["rows"] and len(rpl["rows"]) == len(rp["rows"])
    assert "## The same runs under the live rule" in (tmp_path / "rpl" / "search_replay.md").read_text()
    for res in results:
        run = f"{res['data']}/{res['partition']}/seed{res['seed']}"
        mine = {(r["method"], r["score"], r["top_k"]): r for r in rp["rows"] if r["run"] == run}
        bf = selection_compute(res, "brute_force")
        for key, method in ((("successive_halving", None, None), "successive_halving"), (("hybrid", "logme", 2), "hybrid")):
            assert mine[key]["top1_regret"] == res["methods"][method]["top1_regret"]
            assert mine[key]["kendall_tau"] == pytest.approx(res["methods"][method]["kendall_tau"])
            assert mine[key]["compute_vs_brute_force"] == pytest.approx(selection_compute(res, method) / bf)
        cost = [mine[("hybrid", "logme", k)]["compute_vs_brute_force"] for k in (1, 2, 3)]
        assert cost == sorted(cost) and cost[0] < cost[2]
        # top 1 trains only its pick, to the end: its overhead is the statistics round alone
        assert mine[("hybrid", "logme", 1)]["overhead_vs_brute_force"] == pytest.approx(
            Cost(**res["methods"]["logme"]["cost"]).forward_equivalents / bf)
        # the default shortlists include auto as shipped, at its own (sampled) statistics round's cost
        assert mine[("hybrid", SHIPPED, 1)]["overhead_vs_brute_force"] == pytest.approx(
            selection_compute(res, SHIPPED) / bf)
        # brute force less its test-split predictions: the 18 tiny test texts once per candidate, in
        # its last round (the searches score the test splits nowhere else), out of every round's count
        raw = Cost(**res["methods"]["brute_force"]["cost"]).forward_equivalents
        assert res["test_texts"] == 18 and raw - bf == 18 * 3
        assert [("test_accuracy" in h) for h in res["curves"]["bert"]] == [False, True]

    # the privacy guard's cost: every run re-scored from its kept features, without DP (equal to
    # the study's own scores, or the script stops) and at total epsilon 8, two noise draws
    privacy = _script("privacy_cost")
    assert privacy.main(["--runs", str(tmp_path / "runs"), "--data", str(data.parent), "--hub", str(arch_hub),
                         "--candidates", *names, "--epsilons", "8", "--draws", "2", "--clients", "4",
                         "--max-seq-len", "32", "--out", str(tmp_path / "priv")]) == 0
    out = json.loads((tmp_path / "priv" / "privacy.json").read_text())
    per_draw = 15 - 4  # every score but random, the searches and brute force (auto, now head_gbc, refuses DP)
    assert len(out["rows"]) == 4 * (1 + 2) * per_draw and {r["epsilon"] for r in out["rows"]} == {None, 8.0}
    assert out["report"]["8.0"]["epsilon"] == pytest.approx(8.0, rel=1e-3)
    assert out["report"]["8.0"]["composition"]["total"] == 3 * 2 + 3 + 1  # sums x 2 rounds, client scores, weights
    # next to the study's runs (not in the results), named data / partition / seed
    setting = Path(data.name.removesuffix("_data.h5"), "iid", "seed0")
    runs = tmp_path / "privacy_runs" / setting
    draws = [json.loads((runs / "eps8" / f"draw{d}" / "selection.json").read_text()) for d in (0, 1)]
    assert draws[0]["scores"]["logme"] != draws[1]["scores"]["logme"]  # other noise
    assert all(d["cost"]["forward_passes"] == 0 for d in draws)  # read back from the store, nothing encoded
    md = (tmp_path / "priv" / "privacy.md").read_text()
    assert "| logme |" in md and "| random |" not in md
    # a public projection first (selection.project_dim): its own files; the no-DP run is not the study's
    assert privacy.main(["--runs", str(tmp_path / "runs"), "--data", str(data.parent), "--hub", str(arch_hub),
                         "--candidates", *names, "--epsilons", "8", "--draws", "1", "--clients", "4",
                         "--max-seq-len", "32", "--project-dim", "4", "--out", str(tmp_path / "priv")]) == 0
    k4 = json.loads((tmp_path / "priv" / "privacy_k4.json").read_text())
    assert len(k4["rows"]) == 4 * 2 * per_draw and list(k4["report"]) == ["8.0"]
    sel = json.loads((tmp_path / "privacy_k4_runs" / setting / "no_dp" / "selection.json").read_text())
    assert sel["dims"] == dict.fromkeys(names, 4) and sel["cost"]["forward_passes"] == 0
    assert "4 dimensions" in (tmp_path / "priv" / "privacy_k4.md").read_text()

    # sampling_cost.py: every run re-scored at a text cap and at half the clients, two draws each,
    # from the kept features (a capped client's rows sliced out of its uncapped ones)
    sampling = _script("sampling_cost")
    assert sampling.main(["--runs", str(tmp_path / "runs"), "--data", str(data.parent), "--hub", str(arch_hub),
                          "--candidates", *names, "--caps", "10", "--fractions", "0.5", "--draws", "2",
                          "--clients", "4", "--max-seq-len", "32", "--out", str(tmp_path / "samp")]) == 0
    out = json.loads((tmp_path / "samp" / "sampling.json").read_text())
    knobs = ("uncapped", "max_texts_per_client=10", "client_fraction=0.5")
    assert len(out["rows"]) == 4 * (1 + 2 + 2) * 3 and {r["knob"] for r in out["rows"]} == set(knobs)
    for res in results:
        bf = selection_compute(res, "brute_force")
        mine = [r for r in out["rows"] if (r["partition"], r["seed"], r["method"]) == (res["partition"], res["seed"],
                                                                                       "auto")]
        own = next(r for r in mine if r["knob"] == "uncapped")
        # what it measures as auto is gbc_prior, auto when it was measured (design note 89)
        assert own["chosen"] == res["methods"]["gbc_prior"]["chosen"] and own["kept_pick"]
        assert own["compute_vs_bf"] == pytest.approx(res["methods"]["gbc_prior"]["cost"]["forward_passes"] / bf)
        for r in mine:
            if r["knob"] != "uncapped":
                assert r["compute_vs_bf"] < own["compute_vs_bf"] and r["kept_pick"] == (r["chosen"] == own["chosen"])
        runs = tmp_path / "sampling_runs" / data.name.removesuffix("_data.h5") / res["partition"] / f"seed{res['seed']}"
        capped = [json.loads((runs / "max_texts_per_client=10" / f"draw{d}" / "selection.json").read_text())
                  for d in (0, 1)]
        assert all(d["cost"]["forward_passes"] == 0 for d in capped)  # sliced from the store, nothing encoded
        assert all(r["examples"] <= 10 for d in capped for r in d["clients"])
        halves = [json.loads((runs / "client_fraction=0.5" / f"draw{d}" / "selection.json").read_text())
                  for d in (0, 1)]
        assert all(len(d["cohort"]) == 2 for d in halves)
    summary = {(s["knob"], s["method"]): s for s in out["summary"]}
    assert set(summary) == {(k, m) for k in knobs for m in ("auto", "gbc", "logme")}
    best, why = sampling.decide(out["summary"])
    assert out["decision"] == best and len(why) == 2 and "Decision:" in (tmp_path / "samp" / "sampling.md").read_text()
    # a cap crossed with a share of the clients (a smaller federation): its own files, no decision
    assert sampling.main(["--runs", str(tmp_path / "runs"), "--data", str(data.parent), "--hub", str(arch_hub),
                          "--candidates", *names, "--caps", "10", "--fractions", "--with-fraction", "0.5",
                          "--draws", "1", "--clients", "4", "--max-seq-len", "32", "--out", str(tmp_path / "samp")]) == 0
    few = json.loads((tmp_path / "samp" / "sampling_fraction0.5.json").read_text())
    assert few["decision"] is None and {r["knob"] for r in few["rows"]} == {"uncapped",
                                                                           "max_texts_per_client=10,client_fraction=0.5"}
    assert all(r["compute_vs_bf"] < out["summary"][0]["compute_vs_bf"] for r in few["rows"] if r["knob"] != "uncapped")
    # the floor on the round's texts (selection.min_texts_per_round): 4 clients x cap 10 meet a floor of
    # 40, so at every client it changes nothing; at half of them the cap rises to 20 (every text here)
    assert sampling.main(["--runs", str(tmp_path / "runs"), "--data", str(data.parent), "--hub", str(arch_hub),
                          "--candidates", *names, "--caps", "10", "--fractions", "--floor", "40", "--shares", "1",
                          "0.5", "--draws", "1", "--clients", "4", "--max-seq-len", "32", "--out", str(tmp_path / "samp")]) == 0
    floor = json.loads((tmp_path / "samp" / "sampling_floor40_shares1-0.5.json").read_text())
    assert {r["knob"] for r in floor["rows"]} == {
        "uncapped", "max_texts_per_client=10", "max_texts_per_client=10,min_texts_per_round=40", "client_fraction=0.5",
        "max_texts_per_client=10,client_fraction=0.5", "max_texts_per_client=10,min_texts_per_round=40,client_fraction=0.5"}
    assert floor["decision"] == sampling.decide_floor(floor["rows"], [10], 40, [1.0, 0.5])[0]
    assert len(floor["why"]) == 2 and "Decision:" in (tmp_path / "samp" / "sampling_floor40_shares1-0.5.md").read_text()
    for res in results:
        runs = tmp_path / "sampling_runs" / data.name.removesuffix("_data.h5") / res["partition"] / f"seed{res['seed']}"
        capped, whole, raised = (json.loads((runs / k / "draw0" / "selection.json").read_text()) for k in (
            "max_texts_per_client=10", "max_texts_per_client=10,min_texts_per_round=40",
            "max_texts_per_client=10,min_texts_per_round=40,client_fraction=0.5"))
        assert whole["clients"] == capped["clients"] and whole["scores"] == capped["scores"]
        every = {r["client"]: r["examples"] for r in res["clients"]}
        assert len(raised["cohort"]) == 2 and [r["examples"] for r in raised["clients"]] == [
            every[c] for c in raised["cohort"]] and max(every.values()) > 10  # the floor lifted the cap of 10
    fake = [{"data": "d", "partition": "iid", "seed": 0, "draw": 0, "method": "auto", "knob": k, "chosen": c,
             "kept_pick": kept, "compute_vs_bf": 0.01} for k, c, kept in (
        ("max_texts_per_client=4", "a", True), ("max_texts_per_client=4,min_texts_per_round=16", "a", True),
        ("max_texts_per_client=4,client_fraction=0.5", "b", False), ("client_fraction=0.5", "a", True),
        ("max_texts_per_client=4,min_texts_per_round=16,client_fraction=0.5", "b", False))]
    ok, why = sampling.decide_floor(fake, [4], 16, [1.0, 0.5])
    assert ok and why[0].endswith("passes") and "cap 0 of 1, floor 0 of 1, every text 1 of 1): passes" in why[1]
    fake[1]["chosen"] = "b"  # at every client the floor must pick what the cap picks
    ok, why = sampling.decide_floor(fake, [4], 16, [1.0, 0.5])
    assert not ok and "the cap's pick in every draw" in why[0]
    fake[1]["chosen"], fake[-1]["compute_vs_bf"] = "a", 0.06  # and cost <= 1/20 of brute force at every share
    ok, why = sampling.decide_floor(fake, [4], 16, [1.0, 0.5])
    assert not ok and "compute <= 1/20" in why[1] and why[0].endswith("passes")
    # the length check (selection.max_seq_len): auto as shipped at the study's 32 tokens and at 16 and 8, the
    # same draws; each length's features encoded once per run (every text), the draws sliced from them
    assert sampling.main(["--runs", str(tmp_path / "runs"), "--data", str(data.parent), "--hub", str(arch_hub),
                          "--candidates", *names, "--seq-lens", "16", "8", "--draws", "2", "--clients", "4",
                          "--max-seq-len", "32", "--out", str(tmp_path / "samp")]) == 0
    length = json.loads((tmp_path / "samp" / "sampling_length16-8.json").read_text())
    shipped = "max_texts_per_client=48,min_texts_per_round=384"
    assert {r["knob"] for r in length["rows"]} == {"uncapped", "max_seq_len=16", "max_seq_len=8", shipped,
                                                   f"{shipped},max_seq_len=16", f"{shipped},max_seq_len=8"}
    share = {r["knob"]: r["token_share"] for r in length["rows"]}
    assert share["uncapped"] == share[shipped] == 1.0 and share["max_seq_len=16"] == share[f"{shipped},max_seq_len=16"]
    assert 0 < share["max_seq_len=8"] < share["max_seq_len=16"] <= 1.0  # tiny texts run past 8 tokens
    for r in length["rows"]:
        bf = selection_compute(next(x for x in results if (x["partition"], x["seed"]) == (r["partition"], r["seed"])),
                               "brute_force")
        assert r["compute_vs_bf"] == pytest.approx(r["forward_passes"] * r["token_share"] / bf)
    for res in results:
        runs = tmp_path / "sampling_runs" / data.name.removesuffix("_data.h5") / res["partition"] / f"seed{res['seed']}"
        own16 = json.loads((runs / "max_seq_len=16" / "selection.json").read_text())
        assert own16["cost"]["forward_passes"] > 0  # encoded once at 16 tokens (not in the store at 32)
        draws16 = [json.loads((runs / f"{shipped},max_seq_len=16" / f"draw{d}" / "selection.json").read_text())
                   for d in (0, 1)]
        assert all(d["cost"]["forward_passes"] == 0 for d in draws16)  # sliced from the 16-token features
        at32 = json.loads((runs / shipped / "draw0" / "selection.json").read_text())
        assert at32["clients"] == draws16[0]["clients"]  # the same texts: a draw samples indices, not tokens
    assert length["decision"] == sampling.decide_length(length["summary"], [16, 8])[0]
    assert len(length["why"]) == 2 and "Decision:" in (tmp_path / "samp" / "sampling_length16-8.md").read_text()
    lengths = (shipped, f"{shipped},max_seq_len=64", f"{shipped},max_seq_len=32")
    fake = [{"data": "d", "partition": "iid", "seed": 0, "draw": d, "method": "auto", "knob": k, "chosen": "a",
             "best": "a", "compute_vs_bf": 0.01, "kept_pick": kept, "kendall_tau": tau, "top1_regret": regret}
            for d in (0, 1) for k, kept, tau, regret in zip(lengths, (True, True, d == 0), (0.8, 0.79, 0.8), (0.0,) * 3)]

    def with_peers() -> list[dict]:  # summary() reads every method's rows; these copy auto's
        return [{**r, "method": m} for r in fake for m in sampling.METHODS]

    best, why = sampling.decide_length(sampling.summary(with_peers(), list(lengths)), [64, 32])
    assert best == 64 and why[0].endswith("passes") and "kept at least as many picks" in why[1]
    fake[1]["kendall_tau"] = fake[4]["kendall_tau"] = 0.7  # 64 loses tau-b, 32 a pick and a regret too
    fake[5]["top1_regret"] = 0.05
    best, why = sampling.decide_length(sampling.summary(with_peers(), list(lengths)), [64, 32])
    assert best is None and "tau-b within 0.02" in why[0] and "no larger worst regret" in why[1]
    # the registered rule: a knob that kept every pick, kept the tau-b and spent <= 1/20 passes
    fake = [{"knob": "uncapped", "method": "auto", "kendall_tau": 0.8, "kept_pick": 1.0, "worst_compute_vs_bf": 0.06,
             "compute_vs_bf": 0.06},
            {"knob": "a", "method": "auto", "kendall_tau": 0.79, "kept_pick": 1.0, "worst_compute_vs_bf": 0.04,
             "compute_vs_bf": 0.04},
            {"knob": "b", "method": "auto", "kendall_tau": 0.8, "kept_pick": 0.9, "worst_compute_vs_bf": 0.02,
             "compute_vs_bf": 0.02},
            {"knob": "c", "method": "auto", "kendall_tau": 0.7, "kept_pick": 1.0, "worst_compute_vs_bf": 0.02,
             "compute_vs_bf": 0.02},
            {"knob": "d", "method": "auto", "kendall_tau": 0.8, "kept_pick": 1.0, "worst_compute_vs_bf": 0.051,
             "compute_vs_bf": 0.03}]
    best, why = sampling.decide(fake)
    assert best == "a" and why[0] == "a: passes" and "kept the pick" in why[1] and "tau-b" in why[2]
    assert "compute" in why[3]


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


def test_the_table_pools_seeds_into_one_truth_and_reports_the_spread_and_the_tie_cap():
    """Two seeds of one setting: the truth is the mean over seeds (c and d within 0.01 tie), each
    seed's scores are ranked against it, and the table gives mean, sd over seeds and the cap."""
    table = _script("table")
    cost = {"forward_passes": 1, "backward_passes": 0, "bytes_up": 0, "bytes_down": 0, "rounds": 1, "seconds": 0.0}

    def run(seed: int, truth: dict, logme: dict) -> dict:
        return {"data": "x", "partition": "iid", "seed": seed, "truth": truth, "val_fraction": 0.1, "methods": {
            "logme": {"scores": logme, "cost": cost}, "brute_force": {"scores": truth, "cost": cost}}}

    results = table.requalify([
        run(0, {"a": 0.90, "b": 0.70, "c": 0.20, "d": 0.20}, {"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0}),
        run(1, {"a": 0.80, "b": 0.70, "c": 0.21, "d": 0.20}, {"b": 4.0, "a": 3.0, "d": 2.0, "c": 1.0})])
    assert results[0]["truth_mean"] == pytest.approx({"a": 0.85, "b": 0.70, "c": 0.205, "d": 0.20})
    lg0, lg1 = (r["methods"]["logme"] for r in results)
    cap = 5 / 30 ** 0.5  # 6 pairs, c = d tied: tau-b = (nc - nd) / sqrt(5 * 6) for a strict score
    assert lg0["kendall_tau"] == pytest.approx(cap) == pytest.approx(lg0["kendall_tau_max"])  # a > b > c, d
    assert lg1["kendall_tau"] == pytest.approx(3 / 30 ** 0.5)  # a, b swapped (c, d swapped: a tie, no cost)
    assert lg0["top1_regret"] == 0 and lg1["top1_regret"] == pytest.approx(0.85 - 0.70)  # against the mean
    bf0, bf1 = (r["methods"]["brute_force"] for r in results)
    assert bf0["kendall_tau"] == pytest.approx(1.0)  # seed 0 ties c = d exactly as the truth does: tau-b 5 / 5
    assert bf1["kendall_tau"] == pytest.approx(cap)
    rows = [r for r in table.rows_of(results) if r["method"] == "logme"]
    tau = table.spread(rows, "kendall_tau")
    assert tau["mean"] == pytest.approx((5 + 3) / 2 / 30 ** 0.5) and tau["seed_sd"] == pytest.approx(2 / 60 ** 0.5)
    assert table.spread(rows, "top1_regret")["seed_sd"] == pytest.approx(0.15 / 2 ** 0.5)
    md = table.markdown(results, table.rows_of(results))
    assert "1 setting, 2 runs (1 with 2 seeds)" in md and "Tied within 0.01: c = d. Best reachable tau-b: 0.913" in md
    assert "| logme | 0.73 | 0.26 | 0.73 to 0.73 | 0.91 |" in md
    assert "a 0.850 +- 0.071, b 0.700 +- 0.000, c 0.205 +- 0.007, d 0.200 +- 0.000" in md
    assert "Scored in fewer runs" not in md
    # a method added later (scored in some runs only) is said, with its count, not averaged unsaid
    first = run(0, {"a": 0.9, "b": 0.7, "c": 0.2, "d": 0.2}, {"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0})
    first["methods"]["hscore"] = {"scores": {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}, "cost": cost}
    partial = table.requalify([first, run(1, {"a": 0.8, "b": 0.7, "c": 0.21, "d": 0.2}, {"a": 1.0, "b": 2.0, "c": 3.0,
                                                                                         "d": 4.0})])
    assert "Scored in fewer runs than the table holds (their rows average over those runs alone): hscore in 1 of 2." \
        in table.markdown(partial, table.rows_of(partial))
    exact = table.requalify([run(0, {"a": 0.9, "b": 0.7, "c": 0.21, "d": 0.2}, {"a": 4, "b": 3, "c": 2, "d": 1})], 0.0)
    assert exact[0]["methods"]["logme"]["kendall_tau"] == pytest.approx(1.0)  # --tie-tol 0: exact ties only


def test_prepare_subsamples_any_imported_corpus_the_same_way_twice(tiny_data, tmp_path):
    """prepare.py reads <src>/<corpus>_data.h5 (what `vista-data import` writes: r52, rotten_tomatoes,
    ...), keeps n train + n test texts drawn with the seed, and writes the same file again on a rerun."""
    from vista.data.fednlp import FedNLPData

    prep = _script("prepare")
    src = tiny_data[0].parent
    prep.main(["--src", str(src), "--out", str(tmp_path / "a"), "--corpora", "tiny", "--train", "20", "--test", "10"])
    prep.main(["--src", str(src), "--out", str(tmp_path / "b"), "--corpora", "tiny", "--train", "20", "--test", "10"])
    a, b = tmp_path / "a" / "tiny_data.h5", tmp_path / "b" / "tiny_data.h5"
    assert a.read_bytes() == b.read_bytes()
    d = FedNLPData(a)
    assert len(d.train_indices) == 20 and len(d.test_indices) == 10
    d.close()


def test_a_setting_records_its_budget_and_refuses_runs_of_another(tiny_data, tmp_path):
    cfg = StudyConfig(candidates=(), rounds=6, lr=2e-3, max_seq_len=128)
    fresh = tmp_path / "fresh"
    assert check_budget(cfg, fresh) == json.loads((fresh / "budget.json").read_text()) == budget_of(cfg)
    assert check_budget(cfg, fresh)["lr"] == 2e-3  # the same budget again: fine
    with pytest.raises(BudgetMismatch, match=r"max_seq_len 128 -> 64"):
        check_budget(dataclasses.replace(cfg, max_seq_len=64), fresh)
    old = tmp_path / "old"  # finished runs from before budgets were recorded: not trusted silently
    (old / "brute_force").mkdir(parents=True)
    (old / "brute_force" / "selection.json").write_text("{}")
    with pytest.raises(BudgetMismatch, match="no budget.json"):
        check_budget(cfg, old)
    assert not (old / "budget.json").exists()
    # a rate schedule is a budget item only away from the constant rate every earlier run trained at
    assert "lr_schedule" not in budget_of(cfg)
    with pytest.raises(BudgetMismatch, match=r"lr_schedule None -> cosine"):
        check_budget(dataclasses.replace(cfg, lr_schedule="cosine"), fresh)
    cosine = dataclasses.replace(cfg, lr_schedule="cosine")
    assert check_budget(cosine, tmp_path / "cosine")["lr_schedule"] == "cosine"
    one = dataclasses.replace(cosine, clients=2, candidates=(ModelSpec(name="bert", hub_dir=str(tmp_path)),))
    assert setting_parts(one, tiny_data[0], "iid", 0, tmp_path).fl.lr_schedule == "cosine"


def test_run_study_takes_one_corpus_budget_of_its_own():
    run_study = _script("run_study")
    assert run_study.corpus_budgets(["r8.lr=5e-3", "r8.rounds=8", "bbc.max_seq_len=64"]) == {
        "r8": {"lr": 0.005, "rounds": 8}, "bbc": {"max_seq_len": 64}}
    for bad in ("r8.lr", "lr=5e-3", "r8.seed=1", "r8.rounds=x"):
        with pytest.raises(ValueError):
            run_study.corpus_budgets([bad])
