"""FedAvg, seeded client sampling, per-client seeds and macro-F1."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from vista.fl.aggregators import ClientUpdate, FedAvg
from vista.fl.client import macro_f1
from vista.fl.sampling import client_seed, sample_clients


def _state(gen: torch.Generator, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    return {
        "lora_A": torch.randn(4, 8, generator=gen, dtype=torch.float64).to(dtype),
        "lora_B": torch.randn(8, 4, generator=gen, dtype=torch.float64).to(dtype),
        "head.bias": torch.randn(3, generator=gen, dtype=torch.float64).to(dtype),
    }


def _updates(n_examples: list[int], dtype: torch.dtype = torch.float32, seed: int = 0) -> list[ClientUpdate]:
    gen = torch.Generator().manual_seed(seed)
    return [ClientUpdate(client=c, state=_state(gen, dtype), num_examples=n) for c, n in enumerate(n_examples)]


# ---- FedAvg ----------------------------------------------------------------------------------


def _fedavg(global_state: dict[str, torch.Tensor], updates: list[ClientUpdate]) -> dict[str, torch.Tensor]:
    out, state = FedAvg().aggregate(global_state, updates, [], None)
    assert state is None  # stateless
    return out


def test_fedavg_is_the_example_weighted_mean() -> None:
    ns = [10, 30, 60]
    updates = _updates(ns)
    global_state = {k: torch.zeros_like(v) for k, v in updates[0].state.items()}
    out = _fedavg(global_state, updates)
    assert set(out) == set(global_state)
    for name, ref in global_state.items():
        stacked = np.stack([u.state[name].double().numpy() for u in updates])
        expected = (stacked * np.array([0.1, 0.3, 0.6]).reshape(-1, *[1] * (stacked.ndim - 1))).sum(0)
        np.testing.assert_allclose(out[name].double().numpy(), expected, rtol=1e-6, atol=1e-7)
        assert out[name].shape == ref.shape
    # a hand check on one element
    a = updates[0].state["head.bias"][1].item()
    b = updates[1].state["head.bias"][1].item()
    c = updates[2].state["head.bias"][1].item()
    assert out["head.bias"][1].item() == pytest.approx(0.1 * a + 0.3 * b + 0.6 * c, rel=1e-6)


def test_fedavg_equal_weights_is_plain_mean() -> None:
    updates = _updates([5, 5, 5, 5], dtype=torch.float64)
    out = _fedavg({k: torch.zeros_like(v) for k, v in updates[0].state.items()}, updates)
    for name, t in out.items():
        expected = torch.stack([u.state[name] for u in updates]).mean(0)
        torch.testing.assert_close(t, expected, rtol=1e-12, atol=1e-12)


def test_fedavg_only_aggregates_global_keys() -> None:
    updates = _updates([1, 2])
    global_state = {"lora_A": torch.zeros(4, 8)}
    out = _fedavg(global_state, updates)
    assert list(out) == ["lora_A"]


def test_fedavg_does_not_depend_on_update_order() -> None:
    updates = _updates([7, 1, 13, 4, 9], seed=3)
    global_state = {k: torch.zeros_like(v) for k, v in updates[0].state.items()}
    ref = _fedavg(global_state, updates)
    for perm in itertools.islice(itertools.permutations(updates), 0, 120, 7):
        out = _fedavg(global_state, list(perm))
        for name in ref:
            assert torch.equal(out[name], ref[name])  # bit for bit


@pytest.mark.parametrize("n", [1, 3, 17, 10_000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_fedavg_single_client_is_bit_exact(n: int, dtype: torch.dtype) -> None:
    (upd,) = _updates([n], dtype=dtype, seed=n)
    global_state = {k: torch.full_like(v, 123.0) for k, v in upd.state.items()}
    out = _fedavg(global_state, [upd])
    for name, t in upd.state.items():
        assert out[name].dtype == dtype
        assert torch.equal(out[name], t)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_fedavg_preserves_global_dtype(dtype: torch.dtype) -> None:
    updates = _updates([2, 3], dtype=torch.float32)
    global_state = {k: torch.zeros_like(v, dtype=dtype) for k, v in updates[0].state.items()}
    out = _fedavg(global_state, updates)
    assert all(t.dtype == dtype for t in out.values())
    # the value is the float64 mean, rounded once to dtype
    for name, t in out.items():
        exact = updates[0].state[name].double() * 0.4 + updates[1].state[name].double() * 0.6
        assert torch.equal(t, exact.to(dtype))


def test_fedavg_does_not_modify_inputs() -> None:
    updates = _updates([2, 3])
    copies = [{k: v.clone() for k, v in u.state.items()} for u in updates]
    global_state = {k: torch.zeros_like(v) for k, v in updates[0].state.items()}
    _fedavg(global_state, updates)
    for u, c in zip(updates, copies):
        assert all(torch.equal(u.state[k], c[k]) for k in c)
    assert all(torch.count_nonzero(v) == 0 for v in global_state.values())


def test_fedavg_no_updates_raises() -> None:
    with pytest.raises(ValueError, match="no client updates"):
        _fedavg({"w": torch.zeros(2)}, [])


def test_fedavg_no_updates_error_names_the_failures() -> None:
    with pytest.raises(ValueError, match=r"no client updates this round \(2 failed job\(s\): client 3 OOM"):
        FedAvg().aggregate({"w": torch.zeros(2)}, [], ["client 3 OOM", "client 4 OOM"], None)


def test_fedavg_ignores_failures_in_the_weights() -> None:
    updates = _updates([10, 30])
    g = {k: torch.zeros_like(v) for k, v in updates[0].state.items()}
    with_failures, _ = FedAvg().aggregate(g, updates, ["client 9 died"], None)
    assert all(torch.equal(with_failures[k], v) for k, v in _fedavg(g, updates).items())


def test_fedavg_zero_examples_raises() -> None:
    updates = [ClientUpdate(0, {"w": torch.ones(2)}, 0), ClientUpdate(1, {"w": torch.ones(2)}, 0)]
    with pytest.raises(ValueError, match="no training examples"):
        _fedavg({"w": torch.zeros(2)}, updates)


def test_fedavg_client_with_zero_examples_has_no_weight() -> None:
    updates = [ClientUpdate(0, {"w": torch.full((2,), 5.0)}, 4), ClientUpdate(1, {"w": torch.full((2,), 99.0)}, 0)]
    out = _fedavg({"w": torch.zeros(2)}, updates)
    assert torch.equal(out["w"], torch.full((2,), 5.0))


# ---- sample_clients ------------------------------------------------------------------------------


def test_sample_clients_deterministic_sorted_distinct() -> None:
    ids = list(range(100))
    for r in range(1, 11):
        a = sample_clients(ids, 10, seed=42, round=r)
        b = sample_clients(ids, 10, seed=42, round=r)
        assert a == b
        assert a == sorted(a)
        assert len(a) == len(set(a)) == 10
        assert set(a) <= set(ids)
        assert all(type(c) is int for c in a)


def test_sample_clients_from_non_contiguous_ids() -> None:
    ids = [3, 17, 99, 250, 1000, 4]
    a = sample_clients(ids, 4, seed=1, round=2)
    assert set(a) <= set(ids) and len(set(a)) == 4 and a == sorted(a)
    assert sample_clients(ids, 6, seed=1, round=2) == sorted(ids)  # k == n: everyone


def test_sample_clients_differs_across_rounds_and_seeds() -> None:
    ids = list(range(100))
    draws = [tuple(sample_clients(ids, 10, seed=0, round=r)) for r in range(1, 11)]
    assert len(set(draws)) > 1
    assert len(set(draws)) == 10  # 10-of-100 collisions are astronomically unlikely
    other_seed = [tuple(sample_clients(ids, 10, seed=1, round=r)) for r in range(1, 11)]
    assert draws != other_seed


@pytest.mark.parametrize("k", [0, -1, 6])
def test_sample_clients_k_out_of_range_raises(k: int) -> None:
    with pytest.raises(ValueError, match=f"clients_per_round={k}"):
        sample_clients([0, 1, 2, 3, 4], k, seed=0, round=1)


# ---- client_seed -----------------------------------------------------------------------------


def test_client_seed_distinct_and_stable() -> None:
    seeds = {(r, c): client_seed(7, r, c) for r in range(1, 6) for c in range(20)}
    assert len(set(seeds.values())) == len(seeds)  # differs across clients and rounds
    assert all(isinstance(s, int) and 0 <= s < 2**32 for s in seeds.values())
    assert all(client_seed(7, r, c) == s for (r, c), s in seeds.items())  # stable
    assert client_seed(7, 1, 0) != client_seed(8, 1, 0)
    # (round, client) is not symmetric
    assert client_seed(7, 1, 2) != client_seed(7, 2, 1)


def test_client_seed_known_value() -> None:
    """Pinned from numpy's SeedSequence: runs stay reproducible across versions of this code."""
    expected = int(np.random.SeedSequence([0, 1, 2]).generate_state(1)[0])
    assert client_seed(0, 1, 2) == expected


# ---- macro_f1 ---------------------------------------------------------------------------------


def _confusion(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def test_macro_f1_hand_computed() -> None:
    cm = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 4]])  # rows = true
    # class 0: p = 5/7, r = 5/6; class 1: p = 3/4, r = 3/6; class 2: p = 4/5, r = 4/4
    f1 = [2 * p * r / (p + r) for p, r in [(5 / 7, 5 / 6), (3 / 4, 3 / 6), (4 / 5, 1.0)]]
    assert macro_f1(cm) == pytest.approx(sum(f1) / 3, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_macro_f1_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = 6
    y_true = np.concatenate([np.arange(k), rng.integers(0, k, 300)])  # every class present
    y_pred = np.where(rng.random(y_true.size) < 0.6, y_true, rng.integers(0, k, y_true.size))
    assert macro_f1(_confusion(y_true, y_pred, k)) == pytest.approx(
        f1_score(y_true, y_pred, average="macro"), abs=1e-12
    )


def test_macro_f1_class_never_predicted_counts_as_zero() -> None:
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 1, 0, 1, 0])  # class 2 never predicted: its F1 is 0
    got = macro_f1(_confusion(y_true, y_pred, 3))
    assert got == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0), abs=1e-12)


def test_macro_f1_averages_over_classes_present_in_y_true() -> None:
    """Convention: a class with no true examples is left out of the average (even if it is
    predicted). sklearn's default average='macro' would include a predicted-only class with
    F1 = 0; this matches sklearn with labels restricted to the true classes."""
    y_true = np.array([0, 0, 1, 1, 1])
    y_pred = np.array([0, 2, 1, 1, 0])  # class 2 predicted once, never true; class 3 absent
    cm = _confusion(y_true, y_pred, 4)
    got = macro_f1(cm)
    assert got == pytest.approx(f1_score(y_true, y_pred, labels=[0, 1], average="macro"), abs=1e-12)
    assert got == pytest.approx((0.5 + 0.8) / 2, abs=1e-12)
    assert got != pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))


def test_macro_f1_edge_cases() -> None:
    assert macro_f1(np.eye(4, dtype=np.int64) * 7) == 1.0
    assert macro_f1(np.zeros((3, 3), dtype=np.int64)) == 0.0
    assert macro_f1(np.array([[0, 5], [5, 0]])) == 0.0
