"""Quantity-skew, natural and k-means partitioners: disjoint, covering, non-empty, seeded."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vista.data.partition import (
    dirichlet_quantity_partition,
    kmeans_partition,
    natural_partition,
)


def _check(parts: dict[int, np.ndarray], indices: np.ndarray, n_clients: int, min_size: int = 1) -> None:
    assert sorted(parts) == list(range(n_clients))
    for arr in parts.values():
        assert arr.dtype == np.int64
        assert len(arr) >= min_size
        assert np.all(np.diff(arr) > 0)
    allidx = np.concatenate(list(parts.values()))
    assert len(allidx) == len(indices)
    assert np.array_equal(np.sort(allidx), np.sort(indices))


def _indices(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).choice(10 * n + 10, size=n, replace=False).astype(np.int64)


@st.composite
def _quantity_problem(draw):
    n = draw(st.integers(1, 300))
    n_clients = draw(st.integers(1, min(n, 40)))
    min_size = draw(st.integers(1, max(1, n // n_clients)))
    beta = draw(st.sampled_from([1e-3, 0.05, 0.5, 1.0, 5.0, 100.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    return _indices(seed, n), n_clients, beta, seed, min_size


@settings(max_examples=60, deadline=None)
@given(_quantity_problem())
def test_quantity_partition_properties(problem):
    idx, n_clients, beta, seed, min_size = problem
    parts = dirichlet_quantity_partition(idx, n_clients, beta, seed, min_size=min_size)
    _check(parts, idx, n_clients, min_size)
    assert sum(len(v) for v in parts.values()) == len(idx)
    again = dirichlet_quantity_partition(idx, n_clients, beta, seed, min_size=min_size)
    assert all(np.array_equal(parts[c], again[c]) for c in parts)


def test_quantity_rejects_impossible_min_size():
    with pytest.raises(ValueError, match="at least"):
        dirichlet_quantity_partition(np.arange(10), 4, 1.0, 0, min_size=3)
    with pytest.raises(ValueError):
        dirichlet_quantity_partition(np.arange(10), 2, 0.0, 0)


def test_quantity_tiny_beta_terminates_and_respects_min_size():
    idx = np.arange(1000)
    parts = dirichlet_quantity_partition(idx, 100, 1e-4, 3, min_size=5)
    _check(parts, idx, 100, 5)


def test_quantity_skew_grows_as_beta_falls():
    idx = np.arange(2000)
    cv = {}
    for beta in (0.1, 1.0, 10.0, 1000.0):
        vals = []
        for seed in range(20):
            sizes = np.array([len(v) for v in dirichlet_quantity_partition(idx, 20, beta, seed).values()])
            vals.append(sizes.std() / sizes.mean())
        cv[beta] = float(np.mean(vals))
    assert cv[0.1] > cv[1.0] > cv[10.0] > cv[1000.0]
    assert cv[1000.0] < 0.05  # near-equal sizes


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 200), st.integers(1, 30), st.integers(0, 2**32 - 1))
def test_natural_partition(n, n_groups, seed):
    rng = np.random.default_rng(seed)
    idx = _indices(seed, n)
    groups = rng.integers(0, n_groups, size=n) * 7 - 3
    parts = natural_partition(idx, groups)
    distinct = np.unique(groups)
    _check(parts, idx, len(distinct))
    group_of = dict(zip(idx.tolist(), groups.tolist()))
    for c, arr in parts.items():
        assert {group_of[int(i)] for i in arr} == {int(distinct[c])}  # client c = c-th sorted group


def test_natural_partition_string_groups():
    parts = natural_partition(np.array([5, 6, 7, 8]), np.array(["bob", "al", "bob", "cy"]))
    assert [p.tolist() for p in parts.values()] == [[6], [5, 7], [8]]


def _blobs(seed: int, n: int, k: int, dim: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)) * 5
    return centres[rng.integers(0, k, size=n)] + rng.normal(size=(n, dim)) * 0.3


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 150), st.integers(1, 12), st.integers(0, 2**32 - 1), st.booleans())
def test_kmeans_partition_properties(n, k, seed, duplicates):
    k = min(k, n)
    x = _blobs(seed, n, max(1, k // 2))
    if duplicates:  # many identical points: the hard case for empty clusters
        x[: n // 2] = x[0]
    idx = _indices(seed, n)
    parts, assign = kmeans_partition(x, idx, k, seed)
    _check(parts, idx, k)
    assert assign.dtype == np.int64 and assign.shape == (n,)
    for c, arr in parts.items():
        assert np.array_equal(np.sort(idx[assign == c]), arr)
    _parts2, assign2 = kmeans_partition(x, idx, k, seed)
    assert np.array_equal(assign, assign2)


def test_kmeans_recovers_blobs():
    rng = np.random.default_rng(0)
    dirs = np.eye(4, 16) * 10
    truth = rng.integers(0, 4, size=400)
    x = dirs[truth] + rng.normal(size=(400, 16)) * 0.5
    _, assign = kmeans_partition(x, np.arange(400), 4, seed=1)
    # each cluster is pure
    for c in range(4):
        assert len(np.unique(truth[assign == c])) == 1


def test_kmeans_all_identical_points_no_empty_client():
    x = np.ones((10, 3))
    parts, _ = kmeans_partition(x, np.arange(10), 5, seed=0)
    _check(parts, np.arange(10), 5)
