"""The head probe's pieces (vista.selection.head_probe): splits, FedAvg, local AdamW, the curve."""

from __future__ import annotations

import numpy as np
import pytest

from vista.checks import FieldError
from vista.selection.head_probe import (
    HeadSpec,
    centred,
    contribution,
    evaluate,
    finish_round,
    init_head,
    local_update,
    pooled_mean,
    simulate,
    split_rows,
)
from vista.selection.head_scores import head_gbc_rule, head_pair_min_rule, head_pair_rule, head_probe
from vista.selection.privacy import exact_total, masked_blocks, unmasked_total
from vista.selection.ranking import rank_by


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


def _round(sent, updates, train=True):
    """A round's blocks: each client's (trained layer, rows, held-out report)."""
    return [contribution(sent, h, n, rep, train) for h, n, rep in updates]


def test_fedavg_weights_by_rows_adds_the_reports_and_refuses_no_rows():
    sent = (np.zeros((2, 3), np.float32), np.zeros(2, np.float32))
    a = (np.ones((2, 3), np.float32), np.zeros(2, np.float32))
    b = (np.full((2, 3), 4.0, np.float32), np.ones(2, np.float32))
    rep = [{"correct": 3, "loss_sum": 1.25, "n": 4}, {"correct": 1, "loss_sum": 2.5, "n": 2},
           {"correct": 2, "loss_sum": 0.5, "n": 2}]
    # the third client trained nothing (no rows): it adds zeros and its report
    (w, bias), point = finish_round(2, exact_total(_round(sent, [(a, 1, rep[0]), (b, 3, rep[1]), (None, 0, rep[2])]),
                                                   16), train=True)
    assert w.dtype == np.float32 and np.allclose(w, 3.25) and np.allclose(bias, 0.75)
    assert point == {"round": 2, "val_accuracy": 6 / 8, "val_loss": 4.25 / 8, "val_examples": 8}
    head, last = finish_round(3, exact_total(_round(sent, [(None, 0, rep[0])], train=False), 16), train=False)
    assert head is None and last["val_examples"] == 4  # the evaluation round adds reports only
    with pytest.raises(ValueError, match="no client trained"):
        finish_round(1, exact_total(_round(sent, [(a, 0, rep[0])]), 16), train=True)
    with pytest.raises(ValueError, match="diverged on this client: loss_sum, w not finite; lower selection.head_lr"):
        contribution(sent, (np.full((2, 3), np.inf, np.float32), b[1]), 2, {**rep[0], "loss_sum": np.nan}, True)


def test_the_masked_sum_is_the_clear_sum_bit_for_bit_in_any_order_and_after_a_dropout():
    rng = np.random.default_rng(0)
    sent = (np.zeros((3, 5), np.float32), np.zeros(3, np.float32))
    layers = [((rng.standard_normal((3, 5)) * 10.0 ** rng.integers(-9, 2, (3, 5))).astype(np.float32),
               rng.standard_normal(3).astype(np.float32)) for _ in range(4)]
    reports = [{"correct": int(k), "loss_sum": float(rng.random() * 30), "n": 9} for k in (3, 7, 0, 9)]
    blocks = _round(sent, [(h, n, r) for h, n, r in zip(layers, (11, 0, 7, 23), reports, strict=True)])
    clear = exact_total(blocks, 16)
    assert all(np.array_equal(clear[k], v) for k, v in exact_total(blocks[::-1], 16).items())  # order-free
    exact = sum(np.asarray(h[0], np.float64) * n for h, n in zip(layers, (11, 0, 7, 23), strict=True))
    assert np.allclose(clear["w"], exact, rtol=1e-15, atol=2.0**-56)
    cohort = [0, 1, 2, 3]
    uploads = [masked_blocks(b, c, cohort, 16, seed=5) for c, b in enumerate(blocks)]
    assert not np.array_equal(uploads[0]["payload"][:15], masked_blocks(blocks[0], 0, [0], 16, 5)["payload"][:15])
    assert uploads[0]["payload"].nbytes == 16 * (3 * 5 + 3 + 4)  # two uint64 limbs: layer, bias, rows, report
    masked = unmasked_total(uploads, cohort, 16, seed=5)
    assert all(np.array_equal(masked[k], v) for k, v in clear.items())
    # client 1's job failed after the others masked: its masks are removed, its blocks missing
    survivors = unmasked_total([uploads[i] for i in (3, 0, 2)], cohort, 16, seed=5)
    without = exact_total([blocks[i] for i in (0, 2, 3)], 16)
    assert all(np.array_equal(survivors[k], v) for k, v in without.items())


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


def test_the_centred_probe_trains_on_the_rows_less_their_pooled_mean():
    """Features that share a large offset (a frozen encoder's first token): at the fine-tune's rate
    the raw layer spends its rounds on the offset and stays near the majority rate under skew; less
    the pooled mean it separates the classes. The centred probe is exactly the raw probe on rows
    centred by hand (float64, then float32), and a given centre is used as it is."""
    clients = {c: (i, x + np.float32(40.0), y) for c, (i, x, y) in _clients(1.0, True).items()}
    raw, centre = HeadSpec(rounds=3, lr=1e-2, batch_size=16), HeadSpec(rounds=3, lr=1e-2, batch_size=16, centre=True)
    mu = pooled_mean(clients)
    assert mu.dtype == np.float64 and np.allclose(mu, np.concatenate([f for _, f, _ in clients.values()]).mean(0))
    by_hand = {c: (i, centred(f, mu), y) for c, (i, f, y) in clients.items()}
    assert by_hand[0][1].dtype == np.float32
    assert np.array_equal(by_hand[0][1], (clients[0][1].astype(np.float64) - mu).astype(np.float32))
    curve = simulate(clients, 2, centre, seed=0)
    assert curve == simulate(by_hand, 2, raw, seed=0)
    assert head_probe(curve) >= 0.9 and head_probe(simulate(clients, 2, raw, seed=0)) <= 0.55  # the majority: 0.5
    assert simulate(clients, 2, centre, seed=0, centre=mu + 1.0) != curve  # a given centre is the one used
    assert centred(clients[0][1], None) is clients[0][1]  # off: the rows as they are


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


def test_head_pair_gives_each_probe_a_say_and_needs_both():
    raw = {"a": 0.40, "b": 0.80, "c": 0.60}
    cen = {"a": 0.90, "b": 0.70, "c": 0.50}
    got = head_pair_rule(raw, cen, {"a": 0.0, "b": 0.0, "c": 1.0})
    # z: raw -1.22, 1.22, 0; centred 1.22, 0, -1.22; their sums 0, 1.22, -1.22 standardised again 0, 1.22,
    # -1.22; auto -0.71, -0.71, 1.41 at half weight
    assert got["b"] == pytest.approx(1.2247 - 0.3536, abs=1e-3)
    assert got["a"] == pytest.approx(-0.3536, abs=1e-3) and got["c"] == pytest.approx(-1.2247 + 0.7071, abs=1e-3)
    assert got["b"] > got["a"] > got["c"]  # neither probe alone orders them so
    # the sum is standardised again: two probes that agree weigh as one beside auto's rule, not as two
    agree = head_pair_rule(raw, raw, {"a": 0.0, "b": 0.0, "c": 1.0})
    assert agree == pytest.approx(head_gbc_rule(raw, {"a": 0.0, "b": 0.0, "c": 1.0}))
    missing = head_pair_rule(raw, {**cen, "c": None}, {"a": 0.0, "b": 0.0, "c": 9.0})
    assert missing["c"] is None  # either probe missing: ranks last


def test_head_pair_min_holds_a_candidate_to_its_weaker_probe():
    """head_pair_min (design note 103): the lower of the two probes' z-scores, standardised again, beside
    auto's rule. ``a`` is first by the centred probe alone and last by the uncentred one: the pair's sum
    sets it in the middle, the minimum holds it at its worse and lets gbc_prior order it against ``c``."""
    raw = {"a": 0.40, "b": 0.80, "c": 0.60}
    cen = {"a": 0.90, "b": 0.70, "c": 0.50}
    auto = {"a": 0.0, "b": 0.0, "c": 1.0}
    got = head_pair_min_rule(raw, cen, auto)
    # z: raw -1.22, 1.22, 0; centred 1.22, 0, -1.22; their minimum -1.22, 0, -1.22, standardised -0.71,
    # 1.41, -0.71; auto -0.71, -0.71, 1.41 at half weight
    assert got == pytest.approx({"a": -1.0607, "b": 1.0607, "c": 0.0}, abs=1e-4)
    assert rank_by(got) == ["b", "c", "a"] and rank_by(head_pair_rule(raw, cen, auto)) == ["b", "a", "c"]
    # probes that agree: the minimum is either one, and the rule is head_gbc's
    assert head_pair_min_rule(raw, raw, auto) == pytest.approx(head_gbc_rule(raw, auto))
    missing = head_pair_min_rule(raw, {**cen, "c": None}, {"a": 0.0, "b": 0.0, "c": 9.0})
    assert missing["c"] is None  # either probe missing: ranks last
    assert missing["a"] is not None and missing["b"] is not None


def test_only_a_head_score_says_which_probe_it_reads():
    from vista.selection.scores import SCORES, score

    assert SCORES["head_probe_centred"].centre is True and SCORES["head_probe"].centre is None
    with pytest.raises(ValueError, match="only a head score says which probe"):
        score("toy_centred", centre=True)
    assert "toy_centred" not in SCORES
