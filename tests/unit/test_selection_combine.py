"""Combined scores and ``auto``: registered like any score, computed by the server from their
components' values; the numbers here are worked by hand."""

from __future__ import annotations

import math

import pytest

from vista.selection import scores as registry
from vista.selection.combine import (
    gbc_prior,
    logme_gbc,
    near_ties,
    resolved,
    server_scores,
    weighted_z,
    zscores,
)
from vista.selection.ranking import rank_by
from vista.selection.spec import METHODS, STATS, SelectionSpec


def test_the_registry_lists_auto_as_an_alias_of_a_combination():
    """auto is head_pair since design note 96: both head probes beside gbc_prior (auto until note 89)."""
    from vista.selection.head_scores import head_pair

    assert {"auto", "gbc_prior", "logme_gbc", "head_gbc", "head_pair"} <= set(registry.names(registry.COMBINED))
    auto = registry.SCORES["auto"]
    assert auto.alias_of == "head_pair" and auto.fn is head_pair
    assert auto.uses == ("head_probe", "head_probe_centred", "gbc", "param_prior")
    assert registry.SCORES["gbc_prior"].uses == ("gbc", "param_prior") and registry.SCORES["gbc_prior"].fn is gbc_prior
    assert registry.SCORES["logme_gbc"].uses == ("logme", "gbc") and registry.SCORES["logme_gbc"].alias_of is None
    assert METHODS["auto"].kind == STATS and METHODS["auto"].score == "auto"  # GBC and the probes need the clients
    spec = SelectionSpec(name="auto", candidates=("a", "b"))
    # the components are recorded beside it; GBC's two rounds, then the probes; no per-class Grams in round 1
    assert spec.wanted_scores() == ("auto", "head_probe", "head_probe_centred", "gbc", "param_prior")
    assert spec.statistics_scores() == ("head_probe", "head_probe_centred", "gbc")
    assert spec.head_scores() == ("head_probe", "head_probe_centred") and spec.head_centrings() == (False, True)
    assert spec.rounds == 2 and not spec.per_class and not spec.client_logme and spec.reuses_features
    assert resolved(spec.wanted_scores())["auto"]["resolved_to"] == "head_pair"
    assert resolved(SelectionSpec(name="gbc", candidates=("a", "b")).wanted_scores()) == {}


def test_auto_scores_what_each_classifier_reads_and_gbc_prior_mean_mean_pooled_features():
    """The registry carries the pooling a score is meant for: auto, what each candidate's
    classifier reads (design note 69); gbc_prior_mean, the same rule on mean-pooled features.
    selection.pooling, when set, wins; hybrid seeded by a score encodes as that score does."""
    from hydra import compose, initialize_config_module

    from vista.config import validate
    from vista.selection.combine import AUTO_POOLING

    assert AUTO_POOLING is None and registry.SCORES["auto"].pooling is None
    assert registry.SCORES["gbc_prior_mean"].alias_of == "gbc_prior" and registry.SCORES["gbc_prior_mean"].pooling == "mean"
    assert registry.SCORES["gbc_prior"].pooling is None  # the same rule under its own name: as configured
    assert SelectionSpec(name="auto", candidates=("a", "b")).feature_pooling == "auto"
    assert SelectionSpec(name="auto", candidates=("a", "b"), pooling="mean").feature_pooling == "mean"
    assert SelectionSpec(name="logme", candidates=("a", "b")).feature_pooling == "auto"
    assert SelectionSpec(name="logme", candidates=("a", "b"), scores=("gbc_prior_mean",)).feature_pooling == "auto"
    assert SelectionSpec(name="hybrid", candidates=("a", "b"), metric="gbc_prior_mean").feature_pooling == "mean"
    assert SelectionSpec(name="hybrid", candidates=("a", "b"), metric="auto").feature_pooling == "auto"
    # hybrid shortlists by gbc_prior unless told (auto from design note 70 to 89, what its replays measured)
    hy = SelectionSpec(name="hybrid", candidates=("a", "b"))
    assert hy.ranking_score == "gbc_prior" and hy.statistics_scores() == ("gbc",) and hy.rounds == 2
    assert SelectionSpec(name="hybrid", candidates=("a", "b"), metric="logme").ranking_score == "logme"
    assert resolved(("auto",))["auto"]["pooling"] is None
    assert resolved(("gbc_prior_mean",))["gbc_prior_mean"]["pooling"] == "mean"
    with initialize_config_module(config_module="vista.conf", version_base="1.3"):
        for overrides, want in ((["selection=auto"], None), (["selection=auto", "selection.pooling=cls"], "cls"),
                                (["selection=logme"], None)):
            assert validate(compose("config", overrides=overrides))["selection"]["pooling"] == want, overrides
        # auto samples at most 48 texts per client (design note 70), and hybrid's shortlist round as auto
        # (design note 74); null encodes them all; others sample none
        for overrides, want in ((["selection=auto"], 48), (["selection=auto", "selection.max_texts_per_client=null"], None),
                                (["selection=hybrid"], 48), (["selection=gbc_prior"], None)):
            got = validate(compose("config", overrides=overrides))["selection"]["max_texts_per_client"]
            assert got == want, overrides


def test_logme_gbc_lets_gbc_order_logmes_near_ties():
    # a and b tie on LogME (1e-4 apart, spread 0.4: within 5%); GBC separates them, a first
    logme = {"a": 0.5, "b": 0.5001, "c": 0.1}
    gbc = {"a": -1.0, "b": -3.0, "c": -0.5}
    assert rank_by(logme) == ["b", "a", "c"]
    got = logme_gbc({"logme": logme, "gbc": gbc})
    assert got == {"a": 3.0, "b": 2.0, "c": 1.0}  # ordinal; c's better GBC does not lift it over a real gap
    # 0.03 apart is 7.5% of the spread: no longer a near-tie, LogME decides
    assert rank_by(logme_gbc({"logme": {"a": 0.5, "b": 0.53, "c": 0.1}, "gbc": gbc})) == ["b", "a", "c"]
    # a chain: each within 5% of the run's first member, not of its neighbour
    assert rank_by(near_ties({"a": 1.0, "b": 0.96, "c": 0.92, "d": 0.0}, {"a": 0, "b": 1, "c": 2, "d": 3}, 0.05)) \
        == ["b", "a", "c", "d"]
    # no LogME: last (None); no GBC inside a near-tie: after the ones that have one
    assert near_ties({"a": 1.0, "b": 1.0, "c": None}, {"a": None, "b": 0.0, "c": 9.0}, 0.05) == \
        {"a": 1.0, "b": 2.0, "c": None}


def test_auto_moves_gbcs_near_ties_by_size_but_not_a_clear_gbc_gap():
    # GBC near-ties a and b; the size prior (log10 parameters) separates them: b, the bigger, first.
    # c is the biggest, but its GBC is far below: it stays last.
    table = {"gbc": {"a": -1.0, "b": -1.0001, "c": -5.0}, "param_prior": {"a": 7.0, "b": 8.0, "c": 9.0}}
    got = gbc_prior(table)
    zg, zp = zscores(table["gbc"]), zscores(table["param_prior"])
    assert zp == pytest.approx({"a": -math.sqrt(1.5), "b": 0.0, "c": math.sqrt(1.5)})
    assert got == pytest.approx({k: zg[k] + 0.5 * zp[k] for k in "abc"})
    assert got == pytest.approx({"a": 0.09476, "b": 0.70708, "c": -0.80184}, abs=1e-5)
    assert rank_by(table["gbc"]) == ["a", "b", "c"] and rank_by(got) == ["b", "a", "c"]
    # a clear GBC gap (evenly spread: z 1.22, 0, -1.22) outweighs the size prior (half its z): a stays first
    clear = {"gbc": {"a": -1.0, "b": -3.0, "c": -5.0}, "param_prior": {"a": 7.0, "b": 8.0, "c": 9.0}}
    assert gbc_prior(clear) == pytest.approx({"a": math.sqrt(1.5) / 2, "b": 0.0, "c": -math.sqrt(1.5) / 2})


def test_a_missing_component_value():
    table = {"gbc": {"a": -1.0, "b": None, "c": -3.0}, "param_prior": {"a": None, "b": 8.0, "c": 9.0}}
    got = weighted_z(table, {"gbc": 1.0, "param_prior": 0.5}, required=("gbc",))
    # no GBC: None (ranks last, as GBC alone ranks it); no size: adds 0, the mean
    assert got["b"] is None and got["a"] == pytest.approx(1.0) and got["c"] == pytest.approx(-1.0 + 0.5)
    assert zscores({"a": 2.0, "b": 2.0}) == {"a": 0.0, "b": 0.0} and zscores({"a": None}) == {"a": None}


def test_the_server_computes_priors_then_combinations():
    scores = {"gbc": {"a": -1.0, "b": -1.0001, "c": -5.0}}
    out = server_scores(("gbc_prior", "gbc", "param_prior"), ["a", "b", "c"], {"a": 10**7, "b": 10**8, "c": 10**9}, 0,
                        scores)
    assert out["param_prior"] == pytest.approx({"a": 7.0, "b": 8.0, "c": 9.0})
    assert rank_by(out["gbc_prior"]) == ["b", "a", "c"] and out["gbc_prior"]["b"] == pytest.approx(0.70708, abs=1e-5)
    # auto (head_pair): the probes' values arrived with the statistics; both tie a and b, gbc_prior orders them
    scores["head_probe"] = {"a": 0.5, "b": 0.5, "c": 0.2}
    scores["head_probe_centred"] = {"a": 0.7, "b": 0.7, "c": 0.3}
    out = server_scores(("auto", "head_probe", "head_probe_centred", "gbc", "param_prior"), ["a", "b", "c"],
                        {"a": 10**7, "b": 10**8, "c": 10**9}, 0, scores)
    assert rank_by(out["auto"]) == ["b", "a", "c"]
    assert out["auto"] == pytest.approx(server_scores(("head_gbc", "head_probe", "gbc", "param_prior"), ["a", "b", "c"],
                                        {"a": 10**7, "b": 10**8, "c": 10**9}, 0, scores)["head_gbc"])  # probes agree


def test_registration_rules():
    with pytest.raises(ValueError, match="names the scores it uses"):
        registry.score("toy_combo", kind=registry.COMBINED)(lambda table: {})
    with pytest.raises(ValueError, match="names the scores it uses"):
        registry.score("toy_exact", uses=("logme",))(lambda stats: 0.0)
    with pytest.raises(ValueError, match="not combined; 'gbc_prior' is"):
        registry.score("toy_combo", kind=registry.COMBINED, uses=("gbc_prior",))(lambda table: {})
    with pytest.raises(ValueError, match="a score of its own"):
        registry.alias("logme", "gbc")
    with pytest.raises(ValueError, match="itself an alias"):
        registry.alias("toy_alias", "auto")
    assert "toy_combo" not in registry.SCORES and "toy_alias" not in registry.SCORES
    # a combination of a score nobody registered is refused when a run asks for it, in one line
    registry.score("toy_combo", kind=registry.COMBINED, uses=("no_such_score",))(lambda table: {})
    try:
        with pytest.raises(ValueError, match="uses 'no_such_score', which is not a registered score"):
            SelectionSpec(name="toy_combo", candidates=("a", "b"))
    finally:
        registry.unregister("toy_combo")
