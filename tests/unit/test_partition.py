"""Partitioners: disjoint, covering, non-empty, seeded, and label-skewed as FedNLP's."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vista.data.partition import dirichlet_label_partition, uniform_partition


def _check_partition(parts: dict[int, np.ndarray], indices: np.ndarray, n_clients: int) -> None:
    assert sorted(parts) == list(range(n_clients))
    for arr in parts.values():
        assert arr.dtype == np.int64
        assert len(arr) > 0
        assert np.all(np.diff(arr) > 0)  # sorted, no duplicates inside a client
    allidx = np.concatenate(list(parts.values()))
    assert len(allidx) == len(indices)  # disjoint ...
    assert np.array_equal(np.sort(allidx), np.sort(indices))  # ... and covering


def _mean_label_entropy(parts: dict[int, np.ndarray], label_of: dict[int, int]) -> float:
    ents = []
    for arr in parts.values():
        counts = np.bincount([label_of[int(i)] for i in arr])
        q = counts[counts > 0] / counts.sum()
        ents.append(float(-(q * np.log(q)).sum()))
    return float(np.mean(ents))


@st.composite
def _problem(draw):
    n = draw(st.integers(1, 300))
    n_clients = draw(st.integers(1, min(n, 40)))
    n_labels = draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # Non-contiguous, unordered indices, and skewed label frequencies.
    indices = rng.permutation(rng.choice(10 * n + 10, size=n, replace=False)).astype(np.int64)
    weights = rng.dirichlet(np.full(n_labels, 0.5))
    labels = rng.choice(n_labels, size=n, p=weights)
    return indices, labels, n_clients, seed


@settings(max_examples=150, deadline=None)
@given(_problem())
def test_uniform_disjoint_covering_balanced(problem):
    indices, _, n_clients, seed = problem
    parts = uniform_partition(indices, n_clients, seed)
    _check_partition(parts, indices, n_clients)
    sizes = [len(a) for a in parts.values()]
    assert max(sizes) - min(sizes) <= 1


@settings(max_examples=200, deadline=None)
@given(_problem(), st.sampled_from([1e-4, 0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 1000.0]))
def test_dirichlet_disjoint_covering_equal_sizes(problem, alpha):
    indices, labels, n_clients, seed = problem
    parts = dirichlet_label_partition(indices, labels, n_clients, alpha, seed)
    _check_partition(parts, indices, n_clients)
    n = len(indices)
    expected = [n // n_clients + (1 if c < n % n_clients else 0) for c in range(n_clients)]
    assert [len(parts[c]) for c in range(n_clients)] == expected


def test_deterministic_for_seed():
    rng = np.random.default_rng(0)
    indices = np.arange(500)
    labels = rng.integers(0, 5, size=500)
    for fn in (
        lambda s: uniform_partition(indices, 7, s),
        lambda s: dirichlet_label_partition(indices, labels, 7, 0.5, s),
    ):
        a, b, c = fn(3), fn(3), fn(4)
        assert all(np.array_equal(a[k], b[k]) for k in a)
        assert any(not np.array_equal(a[k], c[k]) for k in a)


def test_label_skew_grows_as_alpha_shrinks():
    rng = np.random.default_rng(1)
    indices = np.arange(2000, dtype=np.int64)
    labels = rng.integers(0, 5, size=2000)
    label_of = dict(zip(indices.tolist(), labels.tolist()))
    for seed in range(5):
        ent = {
            a: _mean_label_entropy(dirichlet_label_partition(indices, labels, 10, a, seed), label_of)
            for a in (0.1, 1.0, 10.0)
        }
        assert ent[0.1] < ent[1.0] < ent[10.0], ent
        iid = _mean_label_entropy(uniform_partition(indices, 10, seed), label_of)
        assert ent[10.0] <= iid + 1e-9


def test_labels_may_be_strings():
    labels = np.array(["a", "b", "c"] * 20)
    parts = dirichlet_label_partition(np.arange(60), labels, 4, 1.0, 0)
    _check_partition(parts, np.arange(60), 4)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_clients": 0},
        {"n_clients": 11},  # more clients than indices
        {"alpha": 0.0},
        {"alpha": float("nan")},
        {"labels": np.zeros(9, dtype=int)},
        {"indices": np.array([0, 1, 1, 2, 3, 4, 5, 6, 7, 8])},
    ],
)
def test_rejects_bad_arguments(kwargs):
    args = {"indices": np.arange(10), "labels": np.zeros(10, dtype=int), "n_clients": 3, "alpha": 1.0, "seed": 0}
    args.update(kwargs)
    with pytest.raises(ValueError):
        dirichlet_label_partition(**args)
