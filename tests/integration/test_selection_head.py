"""The federated head probe in a selection run: the driver's rounds give exactly the curve that
:func:`vista.selection.head_probe.simulate` computes in one process from the same features, with or
without the feature cache, and the score is its function of that curve."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from support.experiments import tiny_parts

from vista.checks import FieldError
from vista.data.fednlp import FedNLPData, FedNLPPartition
from vista.drivers.selection import run_selection
from vista.models.hub import ModelSpec
from vista.selection.combine import gbc_prior
from vista.selection.feature_cache import FeatureCache, feature_key
from vista.selection.head_probe import simulate
from vista.selection.head_scores import head_gbc_rule, head_pair_min_rule, head_pair_rule, head_probe
from vista.selection.privacy import GUARDED, PrivacySpec, admit
from vista.selection.runtime import StatisticsRuntime
from vista.selection.spec import SelectionSpec
from vista.selection.stats import SufficientStats

NAMES = ("bert", "gpt2")


@pytest.fixture(scope="module")
def candidates(arch_hub):
    return tuple(ModelSpec(name=n, hub_dir=str(arch_hub), hub_name=n) for n in NAMES)


def _run(tiny_hub, tiny_data, candidates, out, name_="head_probe", fl=None, **spec):
    parts = tiny_parts(tiny_hub, *tiny_data)
    if fl:
        parts = dataclasses.replace(parts, fl=dataclasses.replace(parts.fl, **fl))
    sel = SelectionSpec(name=name_, candidates=candidates, max_seq_len=32, head_rounds=3, **spec)
    return run_selection(dataclasses.replace(parts, selection=sel), out)["selection"], parts


def _stored_rows(store, tiny_data, name: str) -> dict[int, tuple]:
    """Each admitted client's (texts, stored features, labels) of candidate ``name``: the probe's rows."""
    data, part = tiny_data
    fed, clients = FedNLPData(data), FedNLPPartition(part, "uniform").clients
    cache = FeatureCache(store, 2**30)
    rows = {}
    for c in sorted(clients):
        idx = np.asarray(clients[c].train, dtype=np.int64)
        y = fed.labels(idx)
        adm = admit(y, fed.num_labels, GUARDED)
        if adm.eligible:
            kept = idx[adm.keep]
            f = cache.get(feature_key(name, c, "auto", 32, kept))
            assert f is not None and f.shape[0] == len(kept)
            rows[c] = (kept, f, y[adm.keep])
    return rows


def test_the_run_gives_the_simulated_curve_from_the_stored_features(arch_hub, tiny_hub, tiny_data, candidates,
                                                                     tmp_path, one_torch_thread):
    store = tmp_path / "store"
    sel, parts = _run(tiny_hub, tiny_data, candidates, tmp_path / "run", feature_store=str(store), scores=("logme",))
    fed = FedNLPData(tiny_data[0])
    head = SelectionSpec(head_rounds=3).head_spec(parts.fl)
    assert head.lr == parts.fl.lr and head.batch_size == parts.fl.batch_size  # the fine-tune's own rate and batch
    for name in NAMES:
        curve = simulate(_stored_rows(store, tiny_data, name), fed.num_labels, head, parts.seed)
        assert sel["head_curves"][name] == curve  # every float, round 0 (the first layer) to 3
        assert [p["round"] for p in curve] == [0, 1, 2, 3]
        assert sel["scores"]["head_probe"][name] == head_probe(curve)
        assert sel["scores"]["logme"][name] is not None  # the statistics round's scores beside it
    assert sel["ranked_by"] == "head_probe"
    # the statistics round, then 3 training rounds and the evaluation round; no forward pass added
    assert sel["cost"]["rounds"] == 1 + 3 + 1
    assert sel["cost"]["bytes_up"] > 0 and sel["cost"]["bytes_down"] > 0


def test_the_centred_probe_is_the_simulated_one_on_the_statistics_round_mean(tiny_hub, tiny_data, candidates,
                                                                               tmp_path, one_torch_thread):
    """selection.head_centre: each client trains and scores on its rows less the pooled mean that the
    statistics round's (masked) sums give the server: the curve ``simulate`` computes centred on the
    pooled mean in one process. The centre goes down with every job (8 bytes a dimension); a run of
    head scores alone then uploads moments, not counts."""
    store = tmp_path / "store"
    raw, _ = _run(tiny_hub, tiny_data, candidates, tmp_path / "raw", feature_store=str(store))
    sel, parts = _run(tiny_hub, tiny_data, candidates, tmp_path / "centred", feature_store=str(store),
                      head_centre=True)
    fed = FedNLPData(tiny_data[0])
    head = SelectionSpec(head_rounds=3, head_centre=True).head_spec(parts.fl)
    assert head.centre
    for name in NAMES:
        curve = simulate(_stored_rows(store, tiny_data, name), fed.num_labels, head, parts.seed)
        assert sel["head_curves"][name] == curve
    assert sel["head_curves"] != raw["head_curves"]
    jobs = 4 * len(sel["cohort"])  # 3 training rounds and the evaluation round, each candidate
    assert sel["head_cost"]["bytes_down"] - raw["head_cost"]["bytes_down"] == jobs * 8 * sum(sel["dims"].values())
    assert sel["head_cost"]["bytes_up"] == raw["head_cost"]["bytes_up"]  # the same blocks go up
    assert sel["cost"]["bytes_up"] - sel["head_cost"]["bytes_up"] > 50 * (
        raw["cost"]["bytes_up"] - raw["head_cost"]["bytes_up"])  # moments, where the raw probe sent counts


def test_head_centre_refuses_a_projection(candidates):
    with pytest.raises(FieldError, match="head_centre .* selection.project_dim=16 projects away"):
        SelectionSpec(name="head_probe", candidates=candidates, head_centre=True, project_dim=16)
    assert SelectionSpec(name="head_probe", candidates=candidates, head_centre=True).uploads_moments
    assert not SelectionSpec(name="head_probe", candidates=candidates).uploads_moments


def test_without_the_cache_the_clients_encode_again_and_the_curve_is_the_same(tiny_hub, tiny_data, candidates,
                                                                                tmp_path, one_torch_thread, caplog):
    cached, _ = _run(tiny_hub, tiny_data, candidates, tmp_path / "cached")
    assert "encoded their texts again" not in caplog.text
    again, _ = _run(tiny_hub, tiny_data, candidates, tmp_path / "again", feature_cache_mb=0)
    assert "head probe round 2: 8 client jobs encoded their texts again" in caplog.text  # said, not silent
    assert again["head_curves"] == cached["head_curves"]
    assert again["scores"]["head_probe"] == cached["scores"]["head_probe"]
    # each of the 4 head rounds re-encodes every admitted text of every candidate
    assert again["cost"]["forward_passes"] == 5 * cached["cost"]["forward_passes"]
    assert not (tmp_path / "cached" / "feature_cache").exists()  # the clients' features do not outlive the run


def test_masked_and_clear_rounds_give_the_same_curve_also_when_a_client_job_fails(
        tiny_hub, tiny_data, candidates, tmp_path, one_torch_thread, caplog, monkeypatch):
    """The default guard masks the probe's sums (the server sees only them); in the clear it sees
    each client's layer and report. Both sum exactly, so the curves agree bit for bit, and a job
    that fails after the others masked has its masks removed: still the clear path's curve."""
    masked, _ = _run(tiny_hub, tiny_data, candidates, tmp_path / "masked")
    assert "in the clear" not in caplog.text
    clear, _ = _run(tiny_hub, tiny_data, candidates, tmp_path / "clear", privacy=dataclasses.replace(
        GUARDED, secure_agg=False))
    assert "the head probe's layers reach the server in the clear" in caplog.text
    assert clear["head_curves"] == masked["head_curves"]
    assert masked["cost"]["bytes_up"] > clear["cost"]["bytes_up"]  # two 8-byte limbs an entry, not a float

    real = StatisticsRuntime.head_train

    def flaky(self, key, payload, shared):  # noqa: ANN001
        if key[:2] == (0, 1) and payload["round"] == 2:
            raise ConnectionError("client 1 lost its connection")
        return real(self, key, payload, shared)

    monkeypatch.setattr(StatisticsRuntime, "head_train", flaky)
    runs = {}
    for name, secure in (("masked", True), ("clear", False)):
        runs[name], _ = _run(tiny_hub, tiny_data, candidates, tmp_path / f"{name}-drop", fl={"client_failures": "drop"},
                             privacy=dataclasses.replace(GUARDED, secure_agg=secure))
    assert runs["masked"]["head_curves"] == runs["clear"]["head_curves"]
    assert runs["masked"]["head_curves"][NAMES[1]] == masked["head_curves"][NAMES[1]]  # the other candidate's
    assert runs["masked"]["head_curves"][NAMES[0]] != masked["head_curves"][NAMES[0]]
    (failed,) = runs["masked"]["failed_jobs"]
    assert (failed["candidate"], failed["client"], failed["head_round"]) == (NAMES[0], 1, 2)
    assert "lost its connection" in failed["error"]


def test_head_gbc_is_the_probe_beside_auto_from_one_encode(tiny_hub, tiny_data, candidates, tmp_path,
                                                         one_torch_thread):
    sel, _ = _run(tiny_hub, tiny_data, candidates, tmp_path / "hg")
    both, _ = _run(tiny_hub, tiny_data, candidates, tmp_path / "both", name_="head_gbc")
    s = both["scores"]
    assert s["head_probe"] == sel["scores"]["head_probe"] and both["head_curves"] == sel["head_curves"]
    assert s["head_gbc"] == head_gbc_rule(s["head_probe"], gbc_prior({"gbc": s["gbc"], "param_prior": s["param_prior"]}))
    # the statistics round with GBC's PCA round, then the probe's 3 + 1 rounds, all on one encode
    assert both["cost"]["rounds"] == 2 + 3 + 1 and both["cost"]["forward_passes"] == sel["cost"]["forward_passes"]
    # the probe alone reads no moment: its statistics round sends each client's counts (masked: two
    # 8-byte limbs of the width-1 wire), where head_gbc's sends D x D moments for GBC
    assert sel["head_cost"] == {**both["head_cost"], "seconds": sel["head_cost"]["seconds"]}
    classes = FedNLPData(tiny_data[0]).num_labels
    counts_up = len(NAMES) * len(sel["cohort"]) * 16 * SufficientStats.wire_floats(classes, 1, False)
    assert sel["cost"]["bytes_up"] - sel["head_cost"]["bytes_up"] == counts_up
    assert both["cost"]["bytes_up"] - both["head_cost"]["bytes_up"] > 50 * counts_up


def test_head_pair_trains_both_probes_side_by_side_as_two_runs_would(tiny_hub, tiny_data, candidates, tmp_path,
                                                                    one_torch_thread):
    """head_pair (design note 95): the uncentred and the centred probe in the same rounds, each curve the one
    its own run gives (masks of their own: the masked sums are exact), the pair recombined from them as the
    study recombines recorded runs; the same rounds and encode, both probes' bytes."""
    raw, _ = _run(tiny_hub, tiny_data, candidates, tmp_path / "raw", name_="head_gbc")
    cen, _ = _run(tiny_hub, tiny_data, candidates, tmp_path / "cen", name_="head_gbc", head_centre=True)
    pair, _ = _run(tiny_hub, tiny_data, candidates, tmp_path / "pair", name_="head_pair")
    assert pair["head_curves"] == raw["head_curves"] and pair["head_curves_centred"] == cen["head_curves"]
    assert pair["head_curves"] != pair["head_curves_centred"]
    s = pair["scores"]
    assert s["head_probe"] == raw["scores"]["head_probe"] and s["head_probe_centred"] == cen["scores"]["head_probe"]
    auto = gbc_prior({"gbc": s["gbc"], "param_prior": s["param_prior"]})
    assert s["head_pair"] == head_pair_rule(raw["scores"]["head_probe"], cen["scores"]["head_probe"], auto)
    assert pair["cost"]["rounds"] == raw["cost"]["rounds"] and pair["cost"]["forward_passes"] == raw["cost"]["forward_passes"]
    for key in ("bytes_up", "bytes_down"):
        assert pair["head_cost"][key] == raw["head_cost"][key] + cen["head_cost"][key]
    # head_pair_min (design note 103): the same two probes, rounds and bytes; only the server's rule differs
    low, _ = _run(tiny_hub, tiny_data, candidates, tmp_path / "min", name_="head_pair_min")
    assert low["head_curves"] == pair["head_curves"] and low["head_curves_centred"] == pair["head_curves_centred"]
    assert low["scores"]["head_pair_min"] == head_pair_min_rule(s["head_probe"], s["head_probe_centred"], auto)
    for key in ("cost", "head_cost"):  # all but the wall clock
        unclocked = [{k: v for k, v in run[key].items() if k != "seconds"} for run in (low, pair)]
        assert unclocked[0] == unclocked[1]


def test_head_pair_refuses_the_flag_and_a_projection(candidates):
    with pytest.raises(FieldError, match="head_centre would centre both probes that selection.name reads"):
        SelectionSpec(name="head_pair", candidates=candidates, head_centre=True)
    with pytest.raises(FieldError, match="selection.project_dim projects away the pooled mean that head_probe_centred"):
        SelectionSpec(name="head_pair", candidates=candidates, project_dim=16)
    pair = SelectionSpec(name="head_pair", candidates=candidates)
    assert pair.head_centrings() == (False, True) and pair.uploads_moments
    assert SelectionSpec(name="head_probe_centred", candidates=candidates, head_centre=True).head_centrings() == (True,)
    assert SelectionSpec(name="head_gbc", candidates=candidates).head_centrings() == (False,)


def test_dp_takes_the_head_probe_and_counts_its_releases(candidates):
    """Under DP the probe trains by head_dp's rule (design note 97): no refusal; each probe's rounds + 1
    noisy sums per candidate join the statistics' releases that share the budget."""
    from vista.drivers.selection_stats import statistics_releases

    dp = PrivacySpec(dp_epsilon=1.0)
    auto = SelectionSpec(name="auto", candidates=candidates, privacy=dp, head_rounds=6)
    rel = statistics_releases(auto)
    assert (rel.statistics, rel.head) == (2 * len(NAMES), 2 * len(NAMES) * 7)  # GBC's 2 rounds; both probes
    one = statistics_releases(SelectionSpec(name="head_probe", candidates=candidates, privacy=dp, head_rounds=3))
    assert (one.statistics, one.head) == (len(NAMES), len(NAMES) * 4)
    assert statistics_releases(SelectionSpec(name="gbc_prior", candidates=candidates, privacy=dp)).head == 0
