"""vista.selection.privacy.accounting: one DP budget for everything a selection run releases,
checked against dp-accounting's own accountants and calibration."""

import json
import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting import mechanism_calibration
from dp_accounting.gaussian_mechanism import get_epsilon_gaussian
from dp_accounting.pld.pld_privacy_accountant import PLDAccountant
from dp_accounting.rdp.rdp_privacy_accountant import RdpAccountant

from vista.drivers.selection import statistics_releases
from vista.selection.privacy import (
    PrivacySpec,
    Releases,
    check_budget,
    composed_epsilon,
    epsilon_for,
    guard_client_score,
    noise_multiplier_for,
    noise_stds,
    plan,
    privacy_report,
    release_multiplier,
)
from vista.selection.spec import SelectionSpec


def _gaussians(z, k):
    return dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), k)


def _pld(event, delta):
    return PLDAccountant().compose(event).get_epsilon(delta)


# ------------------------------------------------------------------ composition
@pytest.mark.parametrize("sigma,k", [(2.0, 1), (3.0, 5), (8.0, 12), (30.0, 40)])
def test_k_fold_gaussian_composition_is_dp_accountings(sigma, k):
    """k releases of multiplier sigma: dp-accounting's PLD at its default grid, and the exact
    answer (one Gaussian of multiplier sigma / sqrt(k), analytic); RDP is looser."""
    got = composed_epsilon([(sigma, k)], 1e-5)
    assert got == pytest.approx(_pld(_gaussians(sigma, k), 1e-5), rel=1e-3)
    exact = get_epsilon_gaussian(sigma / math.sqrt(k), 1e-5)
    assert exact <= got * (1 + 1e-9) and got == pytest.approx(exact, rel=1e-3)
    assert got < RdpAccountant().compose(_gaussians(sigma, k)).get_epsilon(1e-5)


def test_known_values_and_mixed_multipliers():
    z1 = noise_multiplier_for(1.0, 1e-5)
    assert z1 == pytest.approx(3.7306, abs=1e-4)  # Balle & Wang
    # epsilon 1 per release, what the report said before: five candidates are 2.44 in total
    assert composed_epsilon([(z1, 5)], 1e-5) == pytest.approx(2.4421, abs=1e-3)
    assert get_epsilon_gaussian(z1 / math.sqrt(5), 1e-5) == pytest.approx(2.4421, abs=1e-3)
    assert composed_epsilon([(z1, 11)], 1e-5) == pytest.approx(epsilon_for(z1 / math.sqrt(11), 1e-5), rel=1e-3)
    # (2, x3) and (4, x5): one Gaussian of multiplier (3/4 + 5/16)^-1/2
    mixed = composed_epsilon([(2.0, 3), (4.0, 5), (9.0, 0)], 1e-6)
    assert mixed == pytest.approx(epsilon_for((3 / 4 + 5 / 16) ** -0.5, 1e-6), rel=1e-3)
    assert mixed == pytest.approx(_pld(dp_accounting.ComposedDpEvent([_gaussians(2.0, 3), _gaussians(4.0, 5)]),
                                       1e-6), rel=1e-3)
    for bad in ([], [(1.0, 0)], [(0.0, 1)], [(1.0, -1)]):
        with pytest.raises(ValueError):
            composed_epsilon(bad, 1e-5)


@pytest.mark.parametrize("eps,delta,releases", [(1.0, 1e-5, 1), (1.0, 1e-5, 11), (8.0, 1e-6, 5), (0.5, 1e-8, 40)])
def test_split_composes_back_to_the_budget(eps, delta, releases):
    spec = PrivacySpec(dp_epsilon=eps, dp_delta=delta)
    z = release_multiplier(spec, releases)
    assert z == pytest.approx(noise_multiplier_for(eps, delta) * math.sqrt(releases), rel=1e-12)
    assert composed_epsilon([(z, releases)], delta) == pytest.approx(eps, rel=1e-3)
    assert _pld(_gaussians(z, releases), delta) == pytest.approx(eps, rel=1e-3)


def test_split_is_dp_accountings_own_calibration():
    """dp-accounting's bisection on the noise multiplier (PLD) finds the same multiplier."""
    for eps, delta, r in ((1.0, 1e-5, 11), (8.0, 1e-6, 5)):
        spec = PrivacySpec(dp_epsilon=eps, dp_delta=delta)
        guess = release_multiplier(spec, r)  # the bracket [guess / 2, 2 guess] only has to hold the answer
        found = mechanism_calibration.calibrate_dp_mechanism(
            lambda e=eps: PLDAccountant(value_discretization_interval=1e-4 * e),
            lambda z, r=r: _gaussians(z, r), eps, delta,
            mechanism_calibration.ExplicitBracketInterval(0.5 * guess, 2 * guess), tol=1e-6)
        assert release_multiplier(spec, r) == pytest.approx(found, rel=1e-3)


def test_noise_scales_with_the_releases():
    spec = PrivacySpec(dp_epsilon=2.0, clip_norm=1.5)
    one, nine = noise_stds(spec, True, 4), noise_stds(spec, True, 4, releases=9)
    assert nine == pytest.approx({b: 3 * v for b, v in one.items()})
    with pytest.raises(ValueError, match="releases"):
        release_multiplier(spec, 0)


# ------------------------------------------------------------------ what a run releases
NAMES = ("a", "b", "c", "d", "e")


@pytest.mark.parametrize("method,scores,expected", [
    ("logme", (), Releases(5, 0, 0)),
    ("hscore", ("transrate",), Releases(5, 0, 0)),
    ("gbc", (), Releases(10, 0, 0)),  # the PCA round: a second sum per candidate
    ("avg_logme", (), Releases(5, 5, 1)),  # the sums still go up, then the scores, the weights once
    ("borda", (), Releases(5, 5, 1)),
    ("logme", ("gbc", "borda", "avg_logme"), Releases(10, 5, 1)),
    ("hybrid", (), Releases(10, 0, 0)),  # its shortlist score, auto: GBC's two rounds (the training is not DP)
    ("hybrid", ("logme",), Releases(10, 0, 0)),  # LogME shares round 1
])
def test_releases_counted_per_method(method, scores, expected):
    spec = SelectionSpec(name=method, candidates=NAMES, scores=scores)
    got = statistics_releases(spec)
    assert got == expected and got.total == expected.statistics + expected.client_scores + expected.client_weights
    assert plan(3, 2, True) == Releases(6, 3, 1)
    with pytest.raises(ValueError, match="rounds"):
        plan(3, 0, False)


# ------------------------------------------------------------------ the report
def test_report_composes_every_release():
    spec = PrivacySpec(secure_agg=True, dp_epsilon=2.0, clip_norm=1.5, score_min=-1.0, score_max=2.0)
    rel = Releases(10, 5, 1)
    rep = json.loads(json.dumps(privacy_report(spec, 10, per_class=True, releases=rel)))
    z = noise_multiplier_for(2.0, 1e-5) * 4  # sqrt(16 releases)
    assert rep["epsilon"] == pytest.approx(2.0, rel=1e-3) and rep["budget"] == 2.0 and rep["delta"] == 1e-5
    comp = rep["composition"]
    assert comp["releases"] == {"statistics": 10, "client_scores": 5, "client_weights": 1, "head": 0}
    assert comp["total"] == 16
    assert comp["release_noise_multiplier"] == pytest.approx(z) == rep["effective_noise_multiplier"]
    assert comp["release_epsilon"] == pytest.approx(epsilon_for(z, 1e-5)) and comp["release_epsilon"] < 0.5
    assert comp["accountant"].startswith("dp_accounting PLD") and comp["split"].startswith("equal")
    assert rep["noise_multiplier"] == pytest.approx(z * math.sqrt(8))
    assert rep["client_scores"] == "noised" and rep["score_sigma"] == pytest.approx(3 * z)
    assert rep["weight_sigma"] == pytest.approx(z)
    # without secure aggregation the server sees each client's statistics with 1/m of the noise
    local = epsilon_for(((10 * 10 + 6) / z**2) ** -0.5, 1e-5)
    assert rep["local_epsilon"] == pytest.approx(local, rel=1e-3) and rep["local_epsilon"] > 2.5 * rep["epsilon"]


def test_the_head_probes_sums_share_the_budget_and_their_lost_shares_count():
    """Under DP the head probe's noisy sums (design note 97) are releases like the statistics': in the
    split, composed back to the budget, seen with 1/m of the noise without masks, and a sum that lost a
    failed job's share is counted whether it is the statistics' or the probe's."""
    spec = PrivacySpec(dp_epsilon=4.0)
    rel = plan(5, 2, False, head=70)
    assert (rel.statistics, rel.head, rel.total) == (10, 70, 80)
    z = release_multiplier(spec, 80)
    rep = privacy_report(spec, 8, False, rel)
    assert rep["epsilon"] == pytest.approx(4.0, rel=1e-3) and rep["effective_noise_multiplier"] == pytest.approx(z)
    assert rep["local_epsilon"] == pytest.approx(epsilon_for(((80 * 8) / z**2) ** -0.5, 1e-5), rel=1e-3)
    lost = privacy_report(spec, 8, False, rel, missing_shares=[1] * 12)  # more sums than the statistics' 10
    assert lost["epsilon"] > 4.0 and lost["composition"]["missing_shares"] == [1] * 12
    with pytest.raises(ValueError, match="at most 80 counts"):
        privacy_report(spec, 8, False, rel, missing_shares=[1] * 81)


def test_report_counts_lost_noise_shares():
    spec = PrivacySpec(dp_epsilon=1.0)
    rel = Releases(4, 0, 0)
    z = release_multiplier(spec, 4)
    rep = privacy_report(spec, 10, False, rel, missing_shares=[2, 5])  # two sums lost 2 and 5 of 10 shares
    exact = epsilon_for((2 / z**2 + 1 / (0.8 * z**2) + 1 / (0.5 * z**2)) ** -0.5, 1e-5)
    assert rep["epsilon"] == pytest.approx(exact, rel=1e-3) and rep["epsilon"] > 1.15
    assert rep["composition"]["missing_shares"] == [2, 5]
    with pytest.raises(ValueError, match="missing_shares"):
        privacy_report(spec, 10, False, rel, missing_shares=[10])


def test_report_without_dp_says_what_leaves_in_the_clear():
    rep = privacy_report(PrivacySpec(secure_agg=True), 5, False, Releases(3, 3, 1))
    assert rep["epsilon"] is None and rep["client_scores"] == "clear"
    assert rep["composition"]["releases"] == {"statistics": 3, "client_scores": 3, "client_weights": 1, "head": 0}
    assert privacy_report(PrivacySpec(), 5, False)["client_scores"] is None


# ------------------------------------------------------------------ the clients' own scores
def test_client_score_is_clipped_and_noised_to_the_range():
    spec = PrivacySpec(dp_epsilon=4.0, score_min=-1.0, score_max=2.0)
    z = release_multiplier(spec, 7)
    draws = np.array([guard_client_score(9.0, 50, spec, releases=7, score_seed=s, weight_seed=10_000 + s)
                      for s in range(2000)])
    assert draws[:, 0].mean() == pytest.approx(2.0, abs=4 * 3 * z / math.sqrt(2000))  # clipped to score_max
    assert draws[:, 0].std() == pytest.approx(3 * z, rel=0.05)
    assert draws[:, 1].std() == pytest.approx(z, rel=0.05) and draws[:, 1].mean() == pytest.approx(50, abs=0.1)
    low = [guard_client_score(None, 1, spec, releases=7, score_seed=s, weight_seed=s)[0] for s in range(2000)]
    assert np.mean(low) == pytest.approx(-1.0, abs=4 * 3 * z / math.sqrt(2000))  # undefined: the bottom
    assert min(guard_client_score(0.5, 1, spec, releases=7, score_seed=s, weight_seed=s)[1] for s in range(500)) == 1
    # one weight per client: the same seed for every candidate gives the same noisy count
    a = guard_client_score(0.1, 30, spec, releases=7, score_seed=1, weight_seed=5)
    b = guard_client_score(0.9, 30, spec, releases=7, score_seed=2, weight_seed=5)
    assert a[1] == b[1] and a[0] != b[0]
    # without DP: as they are
    assert guard_client_score(9.0, 50, PrivacySpec(), score_seed=0, weight_seed=0) == (9.0, 50.0)
    assert guard_client_score(None, 3, PrivacySpec(), score_seed=0, weight_seed=0) == (None, 3.0)
    with pytest.raises(ValueError, match="score_max"):
        PrivacySpec(score_min=1.0, score_max=1.0)


def test_an_impossible_budget_is_one_line_saying_what_to_do():
    spec = PrivacySpec(dp_epsilon=1e-9, dp_delta=1e-12, secure_agg=True, clip_norm=2.0)
    check_budget(spec, True, 10, 11)  # fits (a cohort's noise shares shrink as 1/sqrt(m), the ring as 1/m)
    with pytest.raises(ValueError, match=r"^dp_epsilon=1e-09 split over 11 releases .* raise dp_epsilon") as err:
        check_budget(spec, True, 1000, 11)
    assert "\n" not in str(err.value)
    check_budget(PrivacySpec(dp_epsilon=1e-9, dp_delta=1e-12, clip_norm=2.0), True, 1000, 11)  # no ring: nothing to overflow
