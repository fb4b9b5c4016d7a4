"""The head probe's DP rule (:mod:`vista.selection.head_dp`, design note 97): its gradient is the
cross-entropy's, one text moves a client's blocks by at most the stated sensitivity, a text's split
ignores the others, the server's Adam is PyTorch's AdamW, and the noise and releases compose back to
the budget."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from vista.selection.head_dp import (
    Adam,
    check_budget,
    dp_rows,
    dp_split,
    gradient_blocks,
    head_noise_stds,
    noised,
    releases_per_probe,
    report_blocks,
    sensitivities,
    simulate_dp,
)
from vista.selection.head_probe import HeadSpec, init_head, simulate
from vista.selection.privacy import GUARDED, composed_epsilon, release_multiplier


def _head(c: int = 3, d: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 0.5, (c, d)).astype(np.float32), rng.normal(0, 0.5, c).astype(np.float32)


def test_the_gradient_blocks_are_the_summed_cross_entropy_gradient():
    rng = np.random.default_rng(1)
    head, x, y = _head(), rng.normal(size=(7, 5)), rng.integers(0, 3, 7)
    w = torch.tensor(head[0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor(head[1], dtype=torch.float64, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(torch.tensor(x) @ w.T + b, torch.tensor(y), reduction="sum")
    loss.backward()
    g = gradient_blocks(head, x, y)
    np.testing.assert_allclose(g["g"], np.concatenate([w.grad.numpy().ravel(), b.grad.numpy()]), rtol=1e-10)
    assert g["n"].tolist() == [7.0]
    empty = gradient_blocks(head, np.zeros((0, 5)), np.zeros(0, np.int64))
    assert not empty["g"].any() and empty["n"].tolist() == [0.0]


def test_one_text_moves_a_clients_blocks_by_at_most_the_sensitivity():
    """Worst cases included: a row at the clip norm whose layer is confidently wrong."""
    r = 2.0
    sens = sensitivities(r, train=True)
    assert sens == {"g": pytest.approx(math.sqrt(2 * (r * r + 1))), "n": 1.0}
    assert sensitivities(r, train=False) == {"correct": 1.0, "val_n": 1.0}
    rng = np.random.default_rng(2)
    worst = 0.0
    for trial in range(200):
        head = (rng.normal(0, 5.0, (4, 6)).astype(np.float32), rng.normal(0, 5.0, 4).astype(np.float32))
        rows = dp_rows(rng.normal(0, 3.0, (9, 6)), r, rng.normal(0, 1.0, 6) if trial % 2 else None)
        assert np.all(np.linalg.norm(rows, axis=1) <= r * (1 + 1e-6))
        y = rng.integers(0, 4, 9)
        full, less = gradient_blocks(head, rows, y), gradient_blocks(head, rows[1:], y[1:])
        worst = max(worst, float(np.linalg.norm(full["g"] - less["g"])) / sens["g"])
        assert np.linalg.norm(full["n"] - less["n"]) == 1.0
        rep = report_blocks(head, rows, y)["correct"] - report_blocks(head, rows[1:], y[1:])["correct"]
        assert abs(rep[0]) <= 1.0
    assert 0.5 < worst <= 1.0  # the bound holds and is not loose by orders


def test_a_texts_split_ignores_the_other_texts():
    idx = np.arange(1000, 3000)
    tr, val = dp_split(idx, 0.2, seed=3, client=4)
    assert 0.17 < len(val) / len(idx) < 0.23 and len(tr) + len(val) == len(idx)
    held = set(idx[val].tolist())
    fewer = idx[::3]  # removing texts moves none of the rest between the splits
    _, val2 = dp_split(fewer, 0.2, seed=3, client=4)
    assert set(fewer[val2].tolist()) == held & set(fewer.tolist())
    assert set(idx[dp_split(idx, 0.2, seed=3, client=5)[1]].tolist()) != held  # another client, another draw


def test_the_servers_adam_is_torchs_adamw():
    spec = HeadSpec(dp_lr=0.05, weight_decay=0.01)
    head = _head()
    w = torch.tensor(head[0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor(head[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.AdamW([w, b], lr=0.05, weight_decay=0.01)
    adam, rng = Adam.start(head), np.random.default_rng(4)
    for _ in range(3):
        g = rng.normal(size=head[0].size + head[1].size)
        head, adam = adam.step(head, g, spec)
        w.grad = torch.tensor(g[:15].reshape(3, 5))
        b.grad = torch.tensor(g[15:])
        opt.step()
    np.testing.assert_allclose(head[0], w.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(head[1], b.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert adam.steps == 3


def test_the_shares_add_up_to_the_releases_noise_and_the_releases_to_the_budget():
    dp = dataclasses.replace(GUARDED, dp_epsilon=4.0)
    releases, m = 30, 8
    stds = head_noise_stds(dp, m, releases, train=True)
    z = release_multiplier(dp, releases)
    # two blocks: each at z sqrt(2) x its sensitivity in the sum, so the release's multiplier is z
    assert stds["g"] * math.sqrt(m) == pytest.approx(z * math.sqrt(2) * sensitivities(dp.clip_norm, True)["g"])
    total = sum(noised({"g": np.zeros(20000), "n": np.zeros(1)}, stds, seed)["g"] for seed in range(m))
    assert np.std(total) == pytest.approx(stds["g"] * math.sqrt(m), rel=0.03)
    assert composed_epsilon([(z, releases)], dp.dp_delta) == pytest.approx(4.0, rel=1e-3)
    assert releases_per_probe(HeadSpec(rounds=6)) == 7


def test_the_fixed_point_refuses_noise_it_cannot_carry():
    check_budget(dataclasses.replace(GUARDED, dp_epsilon=1.0), 8, 100)  # fits
    with pytest.raises(ValueError, match="past secure aggregation's fixed point"):
        check_budget(dataclasses.replace(GUARDED, dp_epsilon=1e-6, frac_bits=40), 8, 100)


def _blobs(seed: int, clients: int = 4, per: int = 60, d: int = 8, classes: int = 3):
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 1.0, (classes, d))
    out = {}
    for c in range(clients):
        y = rng.integers(0, classes, per)
        out[c] = (np.arange(c * per, (c + 1) * per), (means[y] + rng.normal(0, 0.3, (per, d))).astype(np.float32), y)
    return out


def test_without_noise_it_learns_and_noise_is_reproducible():
    clients = _blobs(5)
    spec = HeadSpec(rounds=8, val_fraction=0.3, dp_lr=0.1)
    loose = dataclasses.replace(GUARDED, dp_epsilon=1e7, clip_norm=10.0)
    curve = simulate_dp(clients, 3, spec, seed=0, privacy=loose, releases=10)
    assert [p["round"] for p in curve] == list(range(9))
    assert all(math.isnan(p["val_accuracy"]) for p in curve[:-1])
    assert curve[-1]["val_accuracy"] > 0.9  # separable blobs: learnt in 8 noisy-free steps
    assert curve[-1]["val_examples"] == pytest.approx(0.3 * 240, abs=20)
    tight = dataclasses.replace(GUARDED, dp_epsilon=1.0, clip_norm=10.0)
    a = simulate_dp(clients, 3, spec, seed=0, privacy=tight, releases=10)
    again = simulate_dp(clients, 3, spec, seed=0, privacy=tight, releases=10)[-1]
    assert (a[-1]["val_accuracy"], a[-1]["val_examples"]) == (again["val_accuracy"], again["val_examples"])  # seeded
    assert a[-1]["val_accuracy"] != simulate_dp(clients, 3, spec, seed=1, privacy=tight, releases=10)[-1]["val_accuracy"]
    # the no-DP probe is untouched by dp_lr: same curve at any DP rate
    assert simulate(clients, 3, spec, 0) == simulate(clients, 3, dataclasses.replace(spec, dp_lr=0.5), 0)
    first = init_head(3, 8, spec, 0)
    assert first[0].shape == (3, 8)
