"""Federated transferability scores: exact against pooled, direct reference implementations."""

import numpy as np
import pytest
from sklearn.covariance import LedoitWolf
from support.selection_refs import REFS as PLAIN_REFS
from support.selection_refs import ref_gbc, ref_logme

from vista.selection import (
    METRICS,
    SCORES,
    SufficientStats,
    federated_score,
    score_features,
)
from vista.selection import metrics as M
from vista.selection.scores import CLIENT, EXACT, PRIOR

N, D, C = 300, 16, 4
REL = 1e-8


def _data(seed=0, n=N, d=D, c=C):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, size=n)
    centres = rng.normal(size=(c, d)) * 1.5
    scales = rng.uniform(0.5, 2.0, size=(c, d))
    f = 0.7 + centres[y] + rng.normal(size=(n, d)) * scales[y]
    return f.astype(np.float32), y


def _skewed_split(f, y, num_clients, seed=0, alpha=0.3):
    """Dirichlet label skew: each class spread over clients by Dirichlet(alpha) proportions."""
    rng = np.random.default_rng(seed)
    owner = np.empty(len(y), dtype=int)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        p = rng.dirichlet(alpha * np.ones(num_clients))
        owner[idx] = rng.choice(num_clients, size=idx.size, p=p)
    clients = [(f[owner == k], y[owner == k]) for k in range(num_clients)]
    assert all(len(ck[1]) >= 20 for ck in clients), [len(ck[1]) for ck in clients]
    return clients


REFS = {**PLAIN_REFS, "avg_logme": ref_logme}  # one pooled client: avg_logme is LogME


# ---------------------------------------------------------------- tests
def test_registry_covers_the_metrics():
    """federated_score computes every exact and client score of the registry; the built-ins
    declare what they need."""
    assert set(METRICS) == {n for n, d in SCORES.items() if d.kind in (EXACT, CLIENT)}
    assert {n for n, d in SCORES.items() if d.kind == EXACT} >= {"logme", "hscore", "reg_hscore", "transrate", "gbc"}
    assert {n for n, d in SCORES.items() if d.kind == CLIENT} >= {"avg_logme", "borda"}
    assert {n for n, d in SCORES.items() if d.kind == PRIOR} >= {"param_prior", "random"}
    assert SCORES["gbc"].rounds == 2 and SCORES["gbc"].per_class and SCORES["transrate"].per_class
    assert "fourth_moments" in SCORES["reg_hscore"].needs and not SCORES["logme"].per_class
    assert "client_logme" in SCORES["avg_logme"].needs


@pytest.mark.parametrize("metric", sorted(REFS))
def test_pooled_score_matches_direct_reference(metric):
    f, y = _data(1)
    got = score_features(f, y, metric)
    want = REFS[metric](f, y)
    assert np.isfinite(got)
    assert got == pytest.approx(want, rel=REL)


@pytest.mark.parametrize(
    "metric", ["logme", "hscore", "reg_hscore", "transrate", "gbc"]
)
@pytest.mark.parametrize("num_clients,seed", [(3, 0), (4, 1), (5, 2)])
def test_federated_equals_pooled(metric, num_clients, seed):
    f, y = _data(seed)
    clients = _skewed_split(f, y, num_clients, seed=seed)
    fed = federated_score(clients, metric)
    pooled = score_features(
        np.concatenate([c[0] for c in clients]),
        np.concatenate([c[1] for c in clients]),
        metric,
    )
    assert fed == pytest.approx(pooled, rel=REL)
    assert fed == pytest.approx(score_features(f, y, metric), rel=REL)


def test_logme_with_fewer_examples_than_dims_matches_svd_reference():
    f, y = _data(3, n=12, d=D, c=3)
    assert score_features(f, y, "logme") == pytest.approx(ref_logme(f, y), rel=REL)


def test_ledoit_wolf_from_stats_matches_sklearn():
    f, y = _data(4)
    cov, a = M.ledoit_wolf(SufficientStats.from_features(f, y, C))
    lw = LedoitWolf(assume_centered=False).fit(np.asarray(f, dtype=np.float64))
    assert a == pytest.approx(lw.shrinkage_, rel=REL)
    np.testing.assert_allclose(cov, lw.covariance_, rtol=REL, atol=1e-12)


def test_avg_logme_differs_from_logme_under_label_skew():
    f, y = _data(0)
    clients = _skewed_split(f, y, 4, seed=0)
    exact = federated_score(clients, "logme")
    naive = federated_score(clients, "avg_logme")
    assert abs(naive - exact) > 1e-3 * abs(exact)
    # and avg_logme is the example-weighted mean of per-client scores
    per = [score_features(cf, cy, "logme") for cf, cy in clients]
    w = [len(cy) for _, cy in clients]
    assert naive == pytest.approx(np.average(per, weights=w), rel=1e-12)


def test_unknown_metric_lists_known_ones():
    f, y = _data(0)
    with pytest.raises(ValueError, match="known metrics:.*logme.*transrate"):
        score_features(f, y, "leep")
    with pytest.raises(ValueError, match="unknown metric"):
        federated_score([(f, y)], "nope")


def _assert_stats_close(a, b, rtol=1e-12):
    assert (a.num_classes, a.dim, a.n) == (b.num_classes, b.dim, b.n)
    np.testing.assert_array_equal(a.counts, b.counts)
    for name in ("s", "B", "G", "Gc", "q"):
        x, z = getattr(a, name), getattr(b, name)
        assert (x is None) == (z is None)
        if x is not None:
            np.testing.assert_allclose(x, z, rtol=rtol, atol=1e-9)
    assert a.sq4 == pytest.approx(b.sq4, rel=rtol)


def test_merge_is_commutative_and_associative():
    f, y = _data(5)
    parts = [
        SufficientStats.from_features(cf, cy, C, per_class=True)
        for cf, cy in _skewed_split(f, y, 3, seed=5)
    ]
    a, b, c = parts
    ab, ba = a + b, b + a
    for name in ("s", "B", "G", "Gc", "q"):
        np.testing.assert_array_equal(getattr(ab, name), getattr(ba, name))  # bitwise
    _assert_stats_close((a + b) + c, a + (b + c))
    _assert_stats_close(
        sum(parts), SufficientStats.from_features(f, y, C, per_class=True)
    )
    assert a.n == len(_skewed_split(f, y, 3, seed=5)[0][1])  # + left the operands alone


def test_merge_rejects_mismatched_stats():
    f, y = _data(6)
    base = SufficientStats.from_features(f, y, C)
    with pytest.raises(ValueError, match="num_classes"):
        base + SufficientStats.from_features(f, y, C + 1)
    with pytest.raises(ValueError, match="dimension"):
        base + SufficientStats.from_features(f[:, :5], y, C)
    with pytest.raises(ValueError, match="per-class"):
        base + SufficientStats.from_features(f, y, C, per_class=True)


@pytest.mark.parametrize("per_class", [False, True])
def test_wire_round_trip_is_exact(per_class):
    f, y = _data(7)
    st = SufficientStats.from_features(f, y, C, per_class=per_class, batch_size=37)
    wire = st.to_wire()
    assert wire["G_triu"].shape == (D * (D + 1) // 2,)
    assert ("Gc_triu" in wire) == per_class
    back = SufficientStats.from_wire(wire)
    for name in ("counts", "s", "B", "G", "q"):
        np.testing.assert_array_equal(getattr(back, name), getattr(st, name))
    if per_class:
        np.testing.assert_array_equal(back.Gc, st.Gc)
    else:
        assert back.Gc is None
    assert (back.n, back.sq4, back.num_classes, back.dim) == (st.n, st.sq4, C, D)


def test_streaming_batches_equals_one_batch():
    f, y = _data(8)
    one = SufficientStats.from_features(f, y, C, per_class=True, batch_size=len(y))
    for bs in (1, 7, 64):
        _assert_stats_close(
            SufficientStats.from_features(f, y, C, per_class=True, batch_size=bs), one
        )
    streamed = SufficientStats.from_batches(
        ((f[i : i + 50], y[i : i + 50]) for i in range(0, len(y), 50)),
        C,
        D,
        per_class=True,
    )
    _assert_stats_close(streamed, one)
    for metric in ("logme", "transrate", "gbc", "reg_hscore"):
        fn = getattr(M, metric)
        assert fn(streamed) == pytest.approx(fn(one), rel=REL)


def test_stats_reject_bad_labels():
    f, y = _data(9)
    with pytest.raises(ValueError, match="labels must lie"):
        SufficientStats.from_features(f, y, num_classes=2)


def test_per_class_metrics_need_per_class_stats():
    f, y = _data(10)
    st = SufficientStats.from_features(f, y, C)
    for fn in (M.transrate, M.gbc):
        with pytest.raises(ValueError, match="per_class=True"):
            fn(st)


def test_two_round_gbc_truncates_to_64_principal_directions_and_matches_pooled():
    """D = 80 > 64: round 1's merged statistics give the PCA basis, round 2 scores projections."""
    rng = np.random.default_rng(5)
    n, d = 600, 80
    y = rng.integers(0, 4, n)
    f = rng.normal(size=(n, d)) * np.linspace(0.2, 3.0, d) + rng.normal(size=(4, d))[y]
    order = np.argsort(y, kind="stable")  # label-skewed clients
    clients = [(f[order][a:b], y[order][a:b]) for a, b in [(0, 150), (150, 380), (380, 600)]]
    fed = federated_score(clients, "gbc")
    assert fed == pytest.approx(ref_gbc(f, y), rel=1e-8)
    assert fed != pytest.approx(ref_gbc(f, y, k=80), rel=1e-3)  # the truncation matters here
    assert M.pca_basis(SufficientStats.from_features(f, y, 4)).shape == (80, 64)


def test_gbc_survives_a_constant_feature():
    rng = np.random.default_rng(6)
    f = rng.normal(size=(90, 5))
    f[:, 2] = 1.0  # zero variance in every class
    y = np.arange(90) % 3
    assert np.isfinite(score_features(f, y, "gbc"))


def test_logme_of_degenerate_statistics_is_finite():
    """All-zero features carry no information: the evidence of predicting the target by 0
    (the prior's alpha drops out), finite, with the epsilon of You et al.'s fixed point."""
    stats = SufficientStats.from_features(np.zeros((4, 3)), np.array([0, 0, 1, 1]), 2)
    got = M.logme(stats)
    beta = 4 / (2 + M.LOGME_EPSILON)  # per class: t^T t = 2, no features
    want = (2 * np.log(beta) - 2 * np.log(2 * np.pi) - beta / 2 * (2 + M.LOGME_EPSILON)) / 4
    assert got == pytest.approx(want, rel=1e-12)


def test_logme_with_fewer_examples_than_dimensions_is_finite():
    """A small client (n << D, the federated reality) fits its labels exactly: gamma -> N,
    which the stable N - gamma keeps away from 0, so the evidence is finite."""
    rng = np.random.default_rng(9)
    for n in (2, 3, 5, 8):
        f = rng.normal(size=(n, 64))
        y = np.arange(n) % 2
        score = M.logme(SufficientStats.from_features(f, y, 3))
        assert np.isfinite(score)
        assert score == pytest.approx(ref_logme(f, y), rel=1e-8)


@pytest.mark.parametrize("per_class", [False, True])
def test_wire_floats_counts_what_to_wire_sends(per_class):
    stats = SufficientStats.from_features(np.ones((4, 6)), np.array([0, 1, 2, 0]), 3, per_class=per_class)
    sent = sum(np.size(v) for k, v in stats.to_wire().items() if k not in ("num_classes", "dim"))
    assert stats.num_floats() == SufficientStats.wire_floats(3, 6, per_class) == sent


# -- H-score's chance level and its caveat (N not much larger than D) ------------------------------
def test_hscore_chance_is_its_mean_over_random_labellings():
    """(C - 1) r / (N - 1) is the exact expectation over permutations of the labels: checked
    against 3,000 permutations (standard error of their mean ~0.2% here)."""
    rng = np.random.default_rng(3)
    n, d, c = 40, 12, 3
    f = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + 5.0  # correlated, off-centre
    y = np.arange(n) % c
    stats = SufficientStats.from_features(f, y, c)
    expected = M.hscore_chance(stats)
    assert expected == pytest.approx((c - 1) * d / (n - 1), rel=1e-12)
    draws = [M.hscore(SufficientStats.from_features(f, rng.permutation(y), c)) for _ in range(3000)]
    assert np.mean(draws) == pytest.approx(expected, rel=0.01)
    # and the true structure scores far above it
    g = f + 4.0 * np.eye(c)[y] @ rng.normal(size=(c, d))
    assert M.hscore(SufficientStats.from_features(g, y, c)) > 2 * M.hscore_chance(SufficientStats.from_features(g, y, c))


@pytest.mark.parametrize("labels", ["structured", "random"])
def test_hscore_is_saturated_at_c_minus_1_when_n_le_d(labels):
    """N <= D: every labelling scores C - 1 exactly (what made MPNet's H-score 4.000 in the study),
    and the caveat says so."""
    rng = np.random.default_rng(4)
    n, d, c = 30, 64, 5
    y = np.arange(n) % c if labels == "structured" else rng.integers(0, c, size=n)
    f = rng.normal(size=(n, d)) + (3.0 * np.eye(c)[y] @ rng.normal(size=(c, d)) if labels == "structured" else 0)
    stats = SufficientStats.from_features(f, y, c)
    present = len(np.unique(y))
    assert M.hscore(stats) == pytest.approx(present - 1, rel=1e-9)
    assert M.hscore_chance(stats) == pytest.approx(present - 1, rel=1e-12)
    assert "saturated" in M.hscore_caveat(stats) and f"N - 1 = {n - 1}" in M.hscore_caveat(stats)


def test_hscore_caveat_only_where_random_labels_come_near_the_maximum():
    rng = np.random.default_rng(5)
    c = 4
    wide = SufficientStats.from_features(rng.normal(size=(100, 60)), np.arange(100) % c, c)  # r/(N-1) = 0.61
    said = M.hscore_caveat(wide)
    assert said is not None and "saturated" not in said and f"{3 * 60 / 99:.3f}" in said
    assert M.hscore_caveat(SufficientStats.from_features(rng.normal(size=(400, 60)), np.arange(400) % c, c)) is None
    one_class = SufficientStats.from_features(rng.normal(size=(10, 60)), np.zeros(10, dtype=int), c)
    assert M.hscore_caveat(one_class) is None  # H-score is 0 there: no width to mistake for knowledge


def test_caveats_of_the_registry():
    from vista.selection import scores as registry

    rng = np.random.default_rng(6)
    merged = {"narrow": SufficientStats.from_features(rng.normal(size=(200, 8)), np.arange(200) % 3, 3),
              "wide": SufficientStats.from_features(rng.normal(size=(20, 48)), np.arange(20) % 3, 3),
              "empty": SufficientStats.empty(3, 8)}
    got = registry.caveats(["logme", "hscore"], merged)
    assert list(got) == ["hscore"] and list(got["hscore"]) == ["wide"] and "saturated" in got["hscore"]["wide"]
    with pytest.raises(ValueError, match="only an exact score"):
        registry.score("toy_prior", kind=PRIOR, caveat=lambda s: "x")(lambda names, params, seed: {})

    def broken(stats):
        raise RuntimeError("boom")

    registry.score("toy_caveat", caveat=broken)(lambda stats: 0.0)
    try:
        assert registry.caveats(["toy_caveat"], {"a": merged["narrow"]}) == {
            "toy_caveat": {"a": "its caveat could not be computed (RuntimeError: boom)"}}
    finally:
        registry.unregister("toy_caveat")


def test_counts_only_keeps_the_counts_and_drops_every_moment():
    """What a client of a head-only run uploads: C counts and n, not D^2 moments; sums like any."""
    rng = np.random.default_rng(0)
    a = SufficientStats.from_features(rng.standard_normal((6, 5)), np.array([0, 1, 1, 2, 2, 2]), 3)
    b = SufficientStats.from_features(rng.standard_normal((2, 5)), np.array([0, 0]), 3)
    both = a.counts_only() + b.counts_only()
    assert both.dim == 1 and both.n == 8 and both.counts.tolist() == [3, 2, 3]
    assert not np.any(both.G) and not np.any(both.s) and both.sq4 == 0.0
    assert SufficientStats.wire_floats(3, 1, False) < SufficientStats.wire_floats(3, 5, False) / 3
    assert a.counts.tolist() == [1, 2, 3]  # its own counts untouched
