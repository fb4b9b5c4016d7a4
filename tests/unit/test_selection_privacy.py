"""vista.selection.privacy: exact secure aggregation, admission, calibrated distributed DP."""

import itertools
import json
import math
import pickle

import numpy as np
import pytest
from scipy import integrate
from scipy.stats import norm

from vista.selection import SufficientStats
from vista.selection import metrics as M
from vista.selection.privacy import (
    PrivacySpec,
    admit,
    client_upload,
    clip_rows,
    epsilon_for,
    from_ring,
    mask_upload,
    merge_uploads,
    noise_multiplier_for,
    noise_stds,
    pairwise_mask,
    prepare_stats,
    privacy_report,
    recover_dropped,
    repair,
    sensitivities,
    to_ring,
)

D, C = 6, 3
SCORES = {"logme": M.logme, "hscore": M.hscore, "reg_hscore": M.reg_hscore,
          "transrate": M.transrate, "gbc": M.gbc}


def _clients(num_clients=4, n=1200, seed=0, alpha=0.5):
    """Gaussian class clusters, Dirichlet label skew over the clients."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, size=n)
    f = 0.5 + rng.normal(size=(C, D))[y] + rng.normal(size=(n, D)) * rng.uniform(0.5, 1.5, (C, D))[y]
    owner = np.empty(n, dtype=int)
    for c in range(C):
        idx = np.flatnonzero(y == c)
        owner[idx] = rng.choice(num_clients, size=idx.size, p=rng.dirichlet(alpha * np.ones(num_clients)))
    return [(f[owner == k], y[owner == k]) for k in range(num_clients)]


def _stats(clients, per_class=True):
    return [SufficientStats.from_features(f, y, C, per_class=per_class) for f, y in clients]


def _assert_stats_equal(a, b):
    for name in ("n", "counts", "s", "B", "G", "Gc", "sq4", "q"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def _ring_upload(stats, client, frac_bits=PrivacySpec().frac_bits, max_clients=4):
    vec, layout = to_ring(stats.to_wire(), frac_bits, max_clients)
    return {"kind": "ring", "client": client, "payload": vec, "layout": layout}


# ------------------------------------------------------------------ secure aggregation
@pytest.mark.parametrize("m", range(2, 8))
def test_pairwise_masks_cancel_exactly(m):
    cohort = [3 * k + 1 for k in range(m)]  # ids need not be 0..m-1
    masks = [pairwise_mask(i, cohort, seed=42, length=257) for i in cohort]
    assert all(mk.dtype == np.uint64 and np.count_nonzero(mk) > 250 for mk in masks)
    assert np.array_equal(np.sum(masks, axis=0, dtype=np.uint64), np.zeros(257, np.uint64))
    # another seed gives other masks
    assert not np.array_equal(masks[0], pairwise_mask(cohort[0], cohort, seed=43, length=257))


def test_masked_upload_hides_the_encoding():
    (f, y), *_ = _clients()
    vec, _ = to_ring(SufficientStats.from_features(f, y, C).to_wire(), PrivacySpec().frac_bits, 4)
    masked = mask_upload(vec, 0, [0, 1, 2, 3], seed=7)
    assert masked.dtype == np.uint64 and np.count_nonzero(masked == vec) == 0
    # as signed fixed point the clear encoding is small, the masked one uniform over the ring
    assert np.max(np.abs(vec.view(np.int64))) < 2**50
    assert np.mean(np.abs(masked.view(np.int64).astype(float)) > 2.0**60) > 0.7


def test_ring_round_trip_and_pickle():
    stats = _stats(_clients())[0]
    wire = stats.to_wire()
    vec, layout = to_ring(wire, 30, 4)
    back = from_ring(vec, layout, 30)
    assert back["n"] == stats.n and np.array_equal(back["counts"], stats.counts)
    np.testing.assert_allclose(back["G_triu"], wire["G_triu"], rtol=0, atol=2.0**-31)
    up = client_upload(stats, 1, [0, 1, 2, 3], PrivacySpec(secure_agg=True), seed=1, rng_seed=2)
    up2 = pickle.loads(pickle.dumps(up))
    assert up2["layout"] == up["layout"] and np.array_equal(up2["payload"], up["payload"])


def test_secure_agg_equals_unmasked_bitwise_and_plain_scores():
    stats = _stats(_clients())
    cohort = [0, 1, 2, 3]
    spec = PrivacySpec(secure_agg=True)
    masked = [client_upload(s, i, cohort, spec, seed=11, rng_seed=i) for i, s in enumerate(stats)]
    assert all(isinstance(u["payload"], np.ndarray) and u["payload"].dtype == np.uint64 for u in masked)
    for u, s in zip(masked, stats):  # the server never holds a clear single-client vector
        assert not np.array_equal(u["payload"], to_ring(s.to_wire(), PrivacySpec().frac_bits, 4)[0])
    secure = merge_uploads(masked, spec, seed=11, cohort=cohort)
    unmasked = merge_uploads([_ring_upload(s, i) for i, s in enumerate(stats)], spec)
    _assert_stats_equal(secure, unmasked)

    plain_spec = PrivacySpec()
    plain = merge_uploads([client_upload(s, i, cohort, plain_spec, 0, 0) for i, s in enumerate(stats)],
                          plain_spec)
    _assert_stats_equal(plain, sum(stats[1:], stats[0]))
    for name, fn in SCORES.items():
        assert fn(secure) == pytest.approx(fn(plain), rel=1e-9, abs=0), name


def test_dropout_after_masking_is_recovered_exactly():
    stats = _stats(_clients(num_clients=5))
    cohort, gone = [0, 1, 2, 3, 4], 2
    spec = PrivacySpec(secure_agg=True)
    ups = [client_upload(s, i, cohort, spec, seed=5, rng_seed=0) for i, s in enumerate(stats)]
    survivors = [u for u in ups if u["client"] != gone]
    clear = sum(to_ring(s.to_wire(), PrivacySpec().frac_bits, 5)[0] for i, s in enumerate(stats) if i != gone)
    masked_sum = np.sum([u["payload"] for u in survivors], axis=0, dtype=np.uint64)
    assert not np.array_equal(masked_sum, clear)
    got = recover_dropped(masked_sum, [0, 1, 3, 4], [gone], seed=5, length=clear.size)
    assert np.array_equal(got, clear)
    # through the API: dropped inferred from the cohort, or given explicitly
    ref = merge_uploads([_ring_upload(s, i, max_clients=5) for i, s in enumerate(stats) if i != gone], spec)
    _assert_stats_equal(merge_uploads(survivors, spec, seed=5, cohort=cohort), ref)
    _assert_stats_equal(merge_uploads(survivors, spec, seed=5, dropped=[gone]), ref)
    with pytest.raises(ValueError, match="mask seed"):
        merge_uploads(survivors, spec, cohort=cohort)


def test_overflow_raises_useful_error():
    stats = _stats(_clients())[0]
    wire = stats.to_wire()
    wire["sq4"] = 1e12
    with pytest.raises(ValueError, match=r"'sq4'.*Lower frac_bits \(at most 12 fits\).*clip"):
        to_ring(wire, 24, 1024)
    to_ring(wire, 12, 1024)  # the advised precision fits, one more bit does not
    with pytest.raises(ValueError, match="overflow"):
        to_ring(wire, 13, 1024)
    with pytest.raises(ValueError, match="non-finite"):
        to_ring({**wire, "sq4": math.nan}, 24)


# ------------------------------------------------------------------ admission
def test_admit_withholds_rare_classes_and_rejects_small_clients():
    y = np.array([0] * 10 + [1] * 2 + [2] * 5)
    adm = admit(y, 4, PrivacySpec(min_per_class=3, min_examples=16))
    assert adm.withheld_classes == [1] and not adm.eligible and not adm.keep.any()
    assert adm.reason == ("15 admitted examples < min_examples=16 (2 withheld in classes [1] "
                          "held < min_per_class=3 times)")
    adm = admit(y, 4, PrivacySpec(min_per_class=3, min_examples=15))
    assert adm.eligible and adm.reason is None and adm.withheld_classes == [1]
    assert np.array_equal(adm.keep, y != 1)
    adm = admit(y, 4, PrivacySpec(min_examples=20))
    assert not adm.eligible and adm.reason == "17 admitted examples < min_examples=20"
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        admit(y, 2, PrivacySpec())
    # withheld rows are gone from every statistic
    f = np.random.default_rng(0).normal(size=(y.size, D))
    stats, _ = prepare_stats(f, y, 4, PrivacySpec(min_per_class=3), per_class=True)
    _assert_stats_equal(stats, SufficientStats.from_features(f[y != 1], y[y != 1], 4, per_class=True))


def test_ineligible_client_uploads_zeros_and_masks_still_cancel():
    clients = _clients()
    clients[2] = (clients[2][0][:5], clients[2][1][:5])  # too small
    spec = PrivacySpec(secure_agg=True, min_examples=20)
    cohort = [0, 1, 2, 3]
    prepared = [prepare_stats(f, y, C, spec, per_class=True) for f, y in clients]
    assert [a.eligible for _, a in prepared] == [True, True, False, True]
    assert prepared[2][0].n == 0 and prepared[2][1].reason == "5 admitted examples < min_examples=20"
    ups = [client_upload(s, i, cohort, spec, seed=3, rng_seed=0) for i, (s, _) in enumerate(prepared)]
    merged = merge_uploads(ups, spec, seed=3, cohort=cohort)
    eligible = [s for s, a in prepared if a.eligible]
    ref = merge_uploads([_ring_upload(s, i) for i, s in enumerate(eligible)], spec)
    _assert_stats_equal(merged, ref)
    exact = sum(eligible[1:], eligible[0])
    assert merged.n == exact.n and np.array_equal(merged.counts, exact.counts)
    np.testing.assert_allclose(merged.G, exact.G, rtol=1e-9)


# ------------------------------------------------------------------ DP accounting
def test_analytic_gaussian_known_value_and_round_trip():
    assert noise_multiplier_for(1.0, 1e-5) == pytest.approx(3.7306, abs=1e-4)  # Balle & Wang
    for eps in (0.05, 0.5, 1.0, 3.0, 30.0, 1e4):
        for delta in (1e-3, 1e-5, 1e-9):
            z = noise_multiplier_for(eps, delta)
            assert epsilon_for(z, delta) == pytest.approx(eps, rel=1e-9)
            x1, x2 = 0.5 / z - eps * z, -0.5 / z - eps * z
            if eps < 100:  # the naive formula (e^eps overflows beyond)
                assert norm.cdf(x1) - math.exp(eps) * norm.cdf(x2) == pytest.approx(delta, rel=1e-6)
            if eps < 1:  # the classical bound is valid there, and looser
                assert z < math.sqrt(2 * math.log(1.25 / delta)) / eps


def test_analytic_delta_matches_hockey_stick_integral():
    """delta(eps) = int max(0, p - e^eps q), p = N(1, z^2), q = N(0, z^2), by quadrature."""
    for z, eps in ((2.0, 0.7), (5.0, 0.2), (0.8, 2.0)):
        cross = eps * z * z + 0.5
        def gap(x, z=z, eps=eps):
            return norm.pdf(x, 1, z) - math.exp(eps) * norm.pdf(x, 0, z)

        val, _ = integrate.quad(gap, cross, np.inf, epsabs=1e-14)
        e = epsilon_for(z, val)
        assert e == pytest.approx(eps, rel=1e-6)


def test_accounting_is_monotone_and_validated():
    zs = [noise_multiplier_for(e, 1e-5) for e in (0.1, 0.3, 1, 3, 10)]
    assert all(a > b for a, b in itertools.pairwise(zs))
    es = [epsilon_for(z, 1e-5) for z in (0.5, 1, 2, 4, 8)]
    assert all(a > b for a, b in itertools.pairwise(es))
    assert epsilon_for(1e4, 0.5) == 0.0
    with pytest.raises(ValueError, match="delta"):
        noise_multiplier_for(1.0, 1.5)
    for bad in ({"dp_epsilon": -1.0}, {"dp_delta": 0.0}, {"clip_norm": 0}, {"frac_bits": 60},
                {"min_examples": -1}, {"min_per_class": 1.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            PrivacySpec(**bad)


def test_sensitivities_are_attained():
    c = 2.0
    sens = sensitivities(c, per_class=True)
    assert sens == {"n": 1, "counts": 1, "s": 2, "B": 2, "G_triu": 4, "Gc_triu": 4, "sq4": 16, "q": 8}
    # worst case of the upper triangle of f f^T: an axis-aligned f; a dense one is below
    rng = np.random.default_rng(0)
    for f in (np.array([c, 0, 0, 0]), *clip_rows(rng.normal(size=(50, 4)) * 9, c)):
        one = SufficientStats.from_features(f[None], [1], C, per_class=True).to_wire()
        for b in sens:
            assert np.linalg.norm(np.ravel(one[b])) <= sens[b] * (1 + 1e-12), b
    one = SufficientStats.from_features(np.array([[c, 0, 0, 0]]), [0], C).to_wire()
    assert np.linalg.norm(one["G_triu"]) == pytest.approx(sens["G_triu"])


def test_clip_rows():
    f = np.array([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]], dtype=np.float32)
    out = clip_rows(f, 1.0)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.3, 0.4], [0, 0]], rtol=1e-7)


def test_report_is_json_and_consistent():
    spec = PrivacySpec(secure_agg=True, dp_epsilon=1.0, clip_norm=2.0, min_examples=10)
    rep = json.loads(json.dumps(privacy_report(spec, cohort_size=10, per_class=True)))
    z = noise_multiplier_for(1.0, 1e-5) * math.sqrt(8)
    assert rep["epsilon"] == pytest.approx(1.0) and rep["noise_multiplier"] == pytest.approx(z)
    assert rep["local_epsilon"] == pytest.approx(epsilon_for(z / math.sqrt(80), 1e-5))
    assert rep["local_epsilon"] > 3 * rep["epsilon"]
    assert rep["sigma"]["G_triu"] == pytest.approx(4 * z) and rep["sigma"]["sq4"] == pytest.approx(16 * z)
    assert privacy_report(PrivacySpec(), 5, False)["epsilon"] is None


# ------------------------------------------------------------------ DP end to end
def test_dp_noise_has_the_calibrated_std():
    spec = PrivacySpec(dp_epsilon=2.0, clip_norm=1.5)
    cohort = list(range(4))
    zero = SufficientStats.empty(C, D, per_class=True)
    ups = [client_upload(zero, i % 4, cohort, spec, seed=0, rng_seed=i) for i in range(400)]
    stds = noise_stds(spec, True, 4)
    z = noise_multiplier_for(2.0, 1e-5) * math.sqrt(8)
    for b, sens in sensitivities(1.5, True).items():
        assert stds[b] == pytest.approx(z * sens / 2)
        draws = np.array([np.ravel(u["payload"][b]) for u in ups])
        assert draws.std() == pytest.approx(stds[b], rel=0.1), b
        sums = draws.reshape(100, 4, -1).sum(axis=1)  # four shares: the full noise
        assert sums.std() == pytest.approx(z * sens, rel=0.15), b


def test_dp_requires_clipped_features():
    f, y = _clients()[0]
    stats = SufficientStats.from_features(f, y, C)
    with pytest.raises(ValueError, match="not clipped.*prepare_stats"):
        client_upload(stats, 0, [0], PrivacySpec(dp_epsilon=1.0), seed=0, rng_seed=0)


@pytest.mark.parametrize("secure", [False, True])
def test_dp_small_epsilon_gives_finite_scores(secure):
    spec = PrivacySpec(dp_epsilon=0.5, clip_norm=2.0, secure_agg=secure)
    cohort = [0, 1, 2, 3]
    for rep in range(3):
        stats = [prepare_stats(f, y, C, spec, per_class=True)[0] for f, y in _clients(seed=rep)]
        ups = [client_upload(s, i, cohort, spec, seed=9, rng_seed=100 * rep + i) for i, s in enumerate(stats)]
        merged = merge_uploads(ups, spec, seed=9, cohort=cohort)
        assert merged.n == merged.counts.sum() and (merged.counts >= 0).all()
        # law of total covariance: the within-class scatter is positive definite ...
        between = (merged.B / merged.counts) @ merged.B.T
        assert np.linalg.eigvalsh(merged.G - between).min() > 0
        # ... so the H-score is bounded like a real one: tr((W + Sb)^-1 Sb) < C - 1
        assert 0 <= M.hscore(merged) < C - 1
        for name, fn in SCORES.items():
            assert np.isfinite(fn(merged)), (name, rep)


def test_repair_leaves_real_statistics_alone():
    stats = sum(_stats(_clients()))
    fixed = SufficientStats.from_wire(repair(stats.to_wire()))
    assert fixed.n == stats.n and np.array_equal(fixed.counts, stats.counts)
    for name in ("s", "B", "G", "Gc", "q"):
        np.testing.assert_allclose(getattr(fixed, name), getattr(stats, name), rtol=1e-9, atol=1e-9)
    assert fixed.sq4 == stats.sq4


def test_dp_large_epsilon_keeps_logme():
    clients = _clients()
    clip = 1.01 * max(np.linalg.norm(f, axis=1).max() for f, _ in clients)
    spec = PrivacySpec(dp_epsilon=1e4, clip_norm=clip, secure_agg=True)
    stats = [prepare_stats(f, y, C, spec, per_class=True)[0] for f, y in clients]
    exact = sum(stats[1:], stats[0])
    ups = [client_upload(s, i, range(4), spec, seed=1, rng_seed=i) for i, s in enumerate(stats)]
    merged = merge_uploads(ups, spec, seed=1, cohort=range(4))
    assert abs(M.logme(merged) - M.logme(exact)) < 2e-3 * abs(M.logme(exact))
    assert M.hscore(merged) == pytest.approx(M.hscore(exact), rel=1e-2)


def test_dp_dropout_warns_about_lost_noise():
    spec = PrivacySpec(dp_epsilon=1.0, secure_agg=True)
    stats = [prepare_stats(f, y, C, spec)[0] for f, y in _clients()]
    ups = [client_upload(s, i, range(4), spec, seed=1, rng_seed=i) for i, s in enumerate(stats)]
    with pytest.warns(RuntimeWarning, match="1 of 4 clients dropped"):
        merged = merge_uploads(ups[:3], spec, seed=1, cohort=range(4))
    assert merged.n > 0
