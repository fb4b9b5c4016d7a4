"""Client-side behaviour the server's strategy asks for: FedProx's proximal term, FedLC's
calibrated logits, frozen tensors (FFA-LoRA), per-example predictions, and what travels in which
dtype."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.tiny import tiny_lora

from vista.data.encoding import Encoded, collate
from vista.fl.client import LocalOptions, LogitCalibration, evaluate, local_train, predict, score
from vista.fl.spec import FLSpec
from vista.fl.transfer import to_wire
from vista.peft.state import trainable_state
from vista.pipeline import payload_nbytes


@pytest.fixture(scope="module")
def lora_model(tiny_hub):
    return tiny_lora(tiny_hub)


SPEC = FLSpec(local_epochs=2, batch_size=4, lr=1e-2)


def _train(build, data, pad, options=None):
    model, params = build()
    start = trainable_state(model)
    local_train(model, params, data, SPEC, seed=5, pad_id=pad, options=options or LocalOptions())
    return start, trainable_state(model)


def _dist(a, b):
    return sum(float(((a[k] - b[k]) ** 2).sum()) for k in a) ** 0.5


@pytest.mark.parametrize("off", [LocalOptions(prox_mu=0.0), LocalOptions(lc_tau=0.0)], ids=["prox_mu", "lc_tau"])
def test_a_strategy_option_at_zero_is_plain_training_bit_for_bit(lora_model, off):
    build, data, pad = lora_model
    _, plain = _train(build, data, pad)
    _, zero = _train(build, data, pad, off)
    assert all(torch.equal(plain[k], zero[k]) for k in plain)


def test_proximal_term_keeps_the_client_near_the_global_model(lora_model):
    build, data, pad = lora_model
    start, plain = _train(build, data, pad)
    _, prox = _train(build, data, pad, LocalOptions(prox_mu=50.0))
    assert _dist(prox, start) < 0.7 * _dist(plain, start)


def test_fedlc_loss_is_cross_entropy_of_logits_shifted_by_tau_over_the_fourth_root_of_counts(lora_model):
    build, data, pad = lora_model
    model, _ = build()
    labels = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2])  # 16 of class 0, 1 of class 2, none of 1
    calib = LogitCalibration.of(0.7, labels)
    assert calib.shift(3).tolist() == pytest.approx([0.7 / 2, float("inf"), 0.7])
    batch = collate(data, np.arange(len(data)), pad, "cpu")
    batch["labels"] = torch.tensor([0, 2] * (len(data) // 2) + [0] * (len(data) % 2))
    with torch.no_grad():
        got = float(calib(model, batch))
        z = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double().numpy()
    # by hand: class 1 leaves the softmax; 0 and 2 are lowered by 0.7 * 16^(-1/4) and 0.7 * 1
    zc = z[:, [0, 2]] - np.array([0.7 / 2, 0.7])
    y = np.where(batch["labels"].numpy() == 0, 0, 1)
    want = np.mean(np.log(np.exp(zc).sum(1)) - zc[np.arange(len(y)), y])
    assert got == pytest.approx(want, rel=1e-5)


def test_fedlc_client_of_one_class_has_nothing_to_learn(lora_model):
    """Its one class is the whole calibrated softmax: loss 0, no gradient, parameters as sent;
    plain training on the same texts pulls the classifier towards that class."""
    build, data, pad = lora_model
    one = Encoded(data.input_ids, np.zeros(len(data), np.int64))
    start, lc = _train(build, one, pad, LocalOptions(lc_tau=1.0))
    assert all(torch.equal(start[k], lc[k]) for k in start)
    _, plain = _train(build, one, pad)
    assert _dist(plain, start) > 0


def test_frozen_tensors_stay_exactly_as_sent(lora_model):
    build, data, pad = lora_model
    start, after = _train(build, data, pad, LocalOptions(frozen=("lora_A",)))
    a_keys = [k for k in start if "lora_A" in k]
    b_keys = [k for k in start if "lora_B" in k]
    assert a_keys and b_keys
    assert all(torch.equal(start[k], after[k]) for k in a_keys)
    assert all(not torch.equal(start[k], after[k]) for k in b_keys)


def test_freezing_everything_is_refused(lora_model):
    build, data, pad = lora_model
    model, params = build()
    with pytest.raises(ValueError, match="nothing to train"):
        local_train(model, params, data, SPEC, 1, pad, options=LocalOptions(frozen=("",)))


def test_unknown_client_option_is_refused():
    with pytest.raises(ValueError, match="unknown client options"):
        LocalOptions.from_payload({"prox_mu": 0.1, "mystery": 1})
    assert LocalOptions.from_payload({"lc_tau": 1}) == LocalOptions(lc_tau=1.0)


def test_predictions_score_to_the_same_sums_as_evaluate(lora_model):
    build, data, pad = lora_model
    model, _ = build()
    p = predict(model, data, 5, pad)
    sums = evaluate(model, data, 7, pad, 3)
    again = score(data.labels, p.pred, p.loss, 3)
    assert sums.correct == again.correct and sums.n == again.n == len(data)
    assert sums.loss_sum == pytest.approx(again.loss_sum, rel=1e-12)
    np.testing.assert_array_equal(sums.confusion, again.confusion)


@pytest.mark.parametrize("dtype,size", [("float32", 4), ("float16", 2), ("bfloat16", 2)])
def test_wire_bytes_are_the_tensor_bytes_in_the_transfer_dtype(dtype, size):
    state = {"a": torch.randn(3, 5), "b": torch.randn(7), "ids": torch.arange(4)}
    wire = to_wire(state, dtype)
    assert payload_nbytes(wire) == (15 + 7) * size + 4 * 8  # integer tensors travel as they are
    assert wire["ids"].dtype == torch.int64
    tol = {"float32": 0, "float16": 1e-3, "bfloat16": 1e-2}[dtype]
    assert torch.allclose(wire["a"].float(), state["a"], rtol=tol, atol=tol)


def test_unknown_transfer_dtype_is_refused():
    with pytest.raises(ValueError, match="transfer_dtype"):
        to_wire({"a": torch.zeros(1)}, "float8")


@pytest.mark.parametrize("micro", [None, 2])
def test_no_graph_outlives_its_step(lora_model, micro):
    """A step's loss (and with it the autograd graph) is gone before the next forward starts,
    whole batch or micro-batches: a graph kept alive into the next forward held ~1 GB more at
    peak on SmolLM2 (benchmarks/README.md)."""
    import weakref

    build, data, pad = lora_model
    model, params = build()
    losses: list[weakref.ref] = []
    alive_at_forward: list[bool] = []

    def before(_module, _args, _kwargs):
        alive_at_forward.append(any(r() is not None for r in losses))

    def after(_module, _args, _kwargs, output):
        losses.append(weakref.ref(output.loss))

    model.register_forward_pre_hook(before, with_kwargs=True)
    model.register_forward_hook(after, with_kwargs=True)
    local_train(model, params, data, SPEC, seed=5, pad_id=pad, micro_batch=micro)
    assert len(alive_at_forward) >= 4 and not any(alive_at_forward)
