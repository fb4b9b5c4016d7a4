"""The head probe's pieces (vista.selection.head_probe): splits, FedAvg, local AdamW, the curve."""

from __future__ import annotations

import numpy as np
import pytest

from vista.checks import FieldError
from vista.selection.head_probe import HeadSpec, average, evaluate, init_head, local_update, simulate, split_rows
from vista.selection.head_scores import head_gbc_rule, head_probe


def _clients(scale: float, skew: bool, seed: int = 0, n: int = 40, dim: int = 8, shift: float = 2.0):
    """Two classes (means +-``shift`` on the first axis) times ``scale``; with ``skew`` each
    client holds 90% of one class."""
    rng = np.random.default_rng(seed)
    out = {}
    for c in range(4):
        p = (0.9 if c % 2 else 0.1) if skew else 0.5
        y = (rng.random(n) < p).astype(np.int64)
        x = rng.standard_normal((n, dim)).astype(np.float32)
        x[:, 0] += np.where(y == 1, shift, -shift)
        out[c] = (np.arange(100 * c, 100 * c + n), x * scale, y)
    return out


def test_split_rows_is_the_same_draw_for_every_candidate_and_disjoint():
    idx = np.array([5, 9, 2, 40, 17, 3, 8, 11, 30, 21])
    tr, va = split_rows(idx, 0.2, seed=3, client=1)
    assert len(va) == 2 and len(tr) == 8 and not set(tr) & set(va)
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(10))
    assert all(np.array_equal(a, b) for a, b in zip((tr, va), split_rows(idx, 0.2, seed=3, client=1), strict=True))
    assert not np.array_equal(va, split_rows(idx, 0.2, seed=3, client=2)[1])  # another client, another draw


def test_average_weights_by_rows_and_refuses_no_rows():
    a = (np.ones((2, 3), np.float32), np.zeros(2, np.float32))
    b = (np.full((2, 3), 4.0, np.float32), np.ones(2, np.float32))
    w, bias = average([(a, 1), (b, 3)])
    assert w.dtype == np.float32 and np.allclose(w, 3.25) and np.allclose(bias, 0.75)
    with pytest.raises(ValueError, match="no client trained"):
        average([(a, 0)])


def test_local_update_learns_and_leaves_a_layer_without_rows_alone():
    spec = HeadSpec(rounds=1, lr=0.05, local_epochs=5, batch_size=8)
    x, y = _clients(1.0, False)[0][1:]
    head = init_head(2, 8, spec, seed=0)
    before = evaluate(head, x, y)
    after = evaluate(local_update(head, x, y, spec, seed=1), x, y)
    assert after["loss_sum"] < before["loss_sum"] and after["correct"] >= 36
    same = local_update(head, x[:0], y[:0], spec, seed=1)
    assert same[0] is head[0]
    assert np.array_equal(local_update(head, x, y, spec, seed=1)[0], local_update(head, x, y, spec, seed=1)[0])


def test_the_curve_rises_on_separable_features_and_repeats_exactly():
    spec = HeadSpec(rounds=4, lr=0.02, batch_size=8, val_fraction=0.25)
    curve = simulate(_clients(1.0, False), 2, spec, seed=0)
    assert [p["round"] for p in curve] == [0, 1, 2, 3, 4] and curve[0]["val_examples"] == 40
    assert curve[-1]["val_accuracy"] >= 0.9 and curve[-1]["val_loss"] < curve[0]["val_loss"]
    assert simulate(_clients(1.0, False), 2, spec, seed=0) == curve
    assert head_probe(curve) == curve[-1]["val_accuracy"]


def test_the_probe_ranks_features_by_how_far_federated_training_gets_on_them():
    """Under label skew, in 3 rounds: classes 2 units apart reach a high held-out accuracy,
    0.2 units apart (the same spread) stay near the majority rate."""
    spec = HeadSpec(rounds=3, lr=1e-2, batch_size=16)
    far = simulate(_clients(1.0, True, shift=2.0), 2, spec, seed=0)
    near = simulate(_clients(1.0, True, shift=0.2), 2, spec, seed=0)
    assert head_probe(far) >= 0.8 > 0.65 >= head_probe(near)


def test_head_spec_checks_its_fields():
    with pytest.raises(FieldError, match="rounds"):
        HeadSpec(rounds=0)
    with pytest.raises(FieldError, match="val_fraction"):
        HeadSpec(val_fraction=1.0)
    with pytest.raises(FieldError, match="lr"):
        HeadSpec(lr=0.0)
    with pytest.raises(ValueError, match="differ in width"):
        simulate({0: (np.arange(4), np.zeros((4, 3)), np.zeros(4, np.int64)),
                  1: (np.arange(4), np.zeros((4, 2)), np.zeros(4, np.int64))}, 2, HeadSpec(), 0)


def test_head_gbc_lets_auto_order_what_the_probe_leaves_tied():
    head = {"a": 0.5, "b": 0.5, "c": 0.9, "d": None}
    auto = {"a": -1.0, "b": 1.0, "c": -2.0, "d": 3.0}
    got = head_gbc_rule(head, auto)
    assert got["d"] is None  # no probe value: ranks last, as the probe alone ranks it
    assert got["c"] > got["b"] > got["a"]  # the probe leads; auto breaks its tie
