"""The per-worker memory estimate: exact parameter counts from a meta-device model (checked against
the real loaded model + PEFT method), activations that scale as the formula says, no weights read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from vista.models.hub import load_classifier, load_tokenizer
from vista.peft import HeadSpec, IA3Spec, LoraSpec, count_parameters
from vista.scheduler.memory import (
    ESTIMATE,
    MB,
    OVERRIDE,
    RUNTIME_OVERHEAD_MB,
    UPPER_BOUND,
    MemoryEstimate,
    Shape,
    estimate_worker_memory,
    training_activation_bytes,
    upper_bound_memory,
)

LABELS = 3
LORA = LoraSpec(r=4, alpha=8, dropout=0.0)


@pytest.fixture(scope="module")
def tiny(tiny_hub: Path) -> Path:
    """conftest's tiny RoBERTa (support.tiny.build_tiny_roberta): 2 layers, hidden 32, 2 heads."""
    return tiny_hub / "roberta-base"


def _real(model_dir: Path, spec):
    tok = load_tokenizer(model_dir)
    model = load_classifier(model_dir, LABELS, tok.pad_token_id)
    return spec.apply(model) if spec is not None else model


@pytest.mark.parametrize("spec", [LORA, IA3Spec()], ids=["lora", "ia3"])
def test_parameter_counts_match_the_loaded_model(tiny, spec):
    est = estimate_worker_memory(tiny, spec.apply, LABELS, batch_size=4, max_seq_len=16)
    model = _real(tiny, spec)
    trainable, _ = count_parameters(model)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)  # peft's head copy included
    assert trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert est.trainable_mb == trainable * 16 / MB
    assert est.frozen_mb == frozen * 4 / MB
    assert est.source == ESTIMATE and est.overhead_mb == RUNTIME_OVERHEAD_MB
    assert est.total_mb == pytest.approx(
        est.frozen_mb + est.trainable_mb + est.activations_mb + est.overhead_mb + est.heap_slack_mb
    )


def test_full_fine_tuning_and_inference_without_a_method(tiny):
    model = _real(tiny, None)
    params = sum(p.numel() for p in model.parameters())
    full = estimate_worker_memory(tiny, None, LABELS, 4, 16, train=True)
    assert full.frozen_mb == 0 and full.trainable_mb == params * 16 / MB
    infer = estimate_worker_memory(tiny, None, LABELS, 4, 16, train=False)
    assert infer.trainable_mb == 0 and infer.frozen_mb == params * 4 / MB


def test_activations_linear_in_batch_and_growing_with_seq(tiny):
    def act(b, s):
        return estimate_worker_memory(tiny, LORA.apply, LABELS, b, s).activations_mb

    assert act(8, 8) == pytest.approx(2 * act(4, 8), rel=1e-12)
    assert act(12, 8) == pytest.approx(3 * act(4, 8), rel=1e-12)
    # linear in seq up to the attention scores' s^2 term, small at short seq
    assert 2 * act(4, 8) < act(4, 16) < 2.5 * act(4, 8)
    shape = Shape(hidden=32, layers=2, heads=2, intermediate=64)
    assert act(4, 8) == training_activation_bytes(shape, 4, 8) / MB  # the tiny RoBERTa's shape, read from config


def test_forward_only_trains_nothing_and_needs_less(tiny):
    train = estimate_worker_memory(tiny, LORA.apply, LABELS, 8, 32, train=True)
    infer = estimate_worker_memory(tiny, LORA.apply, LABELS, 8, 32, train=False)
    assert infer.trainable_mb == 0 and infer.heap_slack_mb == 0
    assert infer.activations_mb < train.activations_mb
    assert infer.frozen_mb == pytest.approx(train.frozen_mb + train.trainable_mb / 4)  # the adapters, held frozen
    assert train.heap_slack_mb > 0


def test_a_head_only_method_keeps_no_activations_for_backward(tiny):
    head = estimate_worker_memory(tiny, HeadSpec().apply, LABELS, 8, 32, train=True)
    infer = estimate_worker_memory(tiny, None, LABELS, 8, 32, train=False)
    assert head.trainable_mb > 0 and head.activations_mb == infer.activations_mb


def test_reads_no_weight_file_and_leaves_the_rng_alone(tiny, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(tiny / "config.json", bare / "config.json")  # no weights, no tokenizer
    state = torch.random.get_rng_state()
    est = estimate_worker_memory(bare, LORA.apply, LABELS, 4, 16)
    assert torch.equal(state, torch.random.get_rng_state())
    assert est == estimate_worker_memory(tiny, LORA.apply, LABELS, 4, 16)


def test_frozen_weights_counted_at_the_dtype_they_load_in(tiny, tmp_path):
    from safetensors.torch import save_file

    f32 = estimate_worker_memory(tiny, LORA.apply, LABELS, 4, 16)
    config = json.loads((tiny / "config.json").read_text())
    declared = tmp_path / "declared"
    declared.mkdir()
    (declared / "config.json").write_text(json.dumps({**config, "dtype": "bfloat16"}))
    assert estimate_worker_memory(declared, LORA.apply, LABELS, 4, 16).frozen_mb == f32.frozen_mb / 2
    header = tmp_path / "header"  # no dtype in the config: the checkpoint's own (safetensors header)
    header.mkdir()
    (header / "config.json").write_text(
        json.dumps({k: v for k, v in config.items() if k not in ("dtype", "torch_dtype")})
    )
    save_file({"w": torch.zeros(2, dtype=torch.float16)}, str(header / "model.safetensors"))
    assert estimate_worker_memory(header, LORA.apply, LABELS, 4, 16).frozen_mb == f32.frozen_mb / 2


def test_to_dict_and_the_override():
    est = MemoryEstimate(
        frozen_mb=86.64, trainable_mb=1.14, activations_mb=558.04, source=ESTIMATE, heap_slack_mb=279.02
    )
    d = est.to_dict()
    assert d == {
        "frozen_mb": 86.6,
        "trainable_mb": 1.1,
        "activations_mb": 558.0,
        "overhead_mb": RUNTIME_OVERHEAD_MB,
        "heap_slack_mb": 279.0,
        "source": ESTIMATE,
        "frozen_shared": False,
        "total_mb": round(est.total_mb, 1),
    }
    assert json.loads(json.dumps(d)) == d
    assert est.gpu_mb == pytest.approx(86.64 + 1.14 + 558.04)
    user = MemoryEstimate.override(3000)
    assert user.source == OVERRIDE and user.total_mb == user.gpu_mb == 3000


@pytest.mark.parametrize("arch", ["bert", "distilbert", "mpnet", "gpt2", "llama"])
def test_every_architecture_counts_exactly(arch_hub, arch):
    est = estimate_worker_memory(arch_hub / arch, LoraSpec().apply, LABELS, 4, 16)
    model = _real(arch_hub / arch, LoraSpec())
    assert est.trainable_mb == count_parameters(model)[0] * 16 / MB
    assert est.frozen_mb == sum(p.numel() for p in model.parameters() if not p.requires_grad) * 4 / MB
    gated = (
        est.activations_mb > estimate_worker_memory(arch_hub / "bert", LoraSpec().apply, LABELS, 4, 16).activations_mb
    )
    assert gated == (arch == "llama")  # Llama's MLP keeps gate and up projections (same shapes otherwise)


# ---------------------------------------------------------------- the bound read from the files alone
@pytest.mark.parametrize("arch", ["bert", "distilbert", "mpnet", "roberta", "gpt2", "llama"])
@pytest.mark.parametrize("spec", [LORA, None], ids=["lora", "full"])
def test_the_files_bound_is_never_below_the_exact_estimate(arch_hub, arch, spec):
    exact = estimate_worker_memory(arch_hub / arch, spec.apply if spec else None, LABELS, 4, 16)
    bound = upper_bound_memory(arch_hub / arch, 4, 16, train=True, num_labels=LABELS)
    assert bound is not None and bound.source == UPPER_BOUND
    assert bound.frozen_mb + bound.trainable_mb >= exact.frozen_mb + exact.trainable_mb
    assert bound.activations_mb == pytest.approx(exact.activations_mb)  # same formula, same shape (gated too)
    assert bound.total_mb >= exact.total_mb
    if spec is None:  # full fine-tuning: the bound is the exact count, up to the head it adds
        assert bound.trainable_mb == pytest.approx(exact.trainable_mb, rel=0.05)


def test_the_files_bound_needs_safetensors_and_a_known_config(tiny, tmp_path):
    assert upper_bound_memory(tmp_path, 4, 16) is None  # no config.json
    shutil.copy(tiny / "config.json", tmp_path / "config.json")
    assert upper_bound_memory(tmp_path, 4, 16) is None  # no safetensors file


def test_auto_takes_the_bound_unless_it_changes_the_plan(tiny, monkeypatch):
    """Where memory cannot limit the workers the bound answers, with no model built (no
    transformers import on the way to the first job); where it would, the exact estimate."""
    from vista.drivers import run
    from vista.models.hub import ModelSpec
    from vista.scheduler import SchedulerSpec
    from vista.scheduler import arrangement as A

    model = ModelSpec(name="tiny", path=str(tiny))
    spec = SchedulerSpec(num_workers="auto", device="cpu", cpus=2)
    built = []
    monkeypatch.setattr(run, "_exact_estimate", lambda *a, **k: built.append(a) or "exact")
    plenty = A.Inventory(cpus=2, gpus=(), host_available_mb=64_000)
    monkeypatch.setattr(A.Inventory, "probe", classmethod(lambda cls: plenty))
    got = run.estimate_memory(model, LORA.apply, LABELS, 4, 16, scheduler=spec, useful_workers=4)
    assert got.source == UPPER_BOUND and built == []
    bound_mb = got.total_mb
    tight = A.Inventory(cpus=2, gpus=(), host_available_mb=int(bound_mb * 2 / A.HOST_HEADROOM) - 1)
    monkeypatch.setattr(A.Inventory, "probe", classmethod(lambda cls: tight))  # 2 workers fit only below the bound
    assert run.estimate_memory(model, LORA.apply, LABELS, 4, 16, scheduler=spec, useful_workers=4) == "exact"
    assert len(built) == 1
    assert run.estimate_memory(model, LORA.apply, LABELS, 4, 16) == "exact"  # no scheduler given: exact


def test_gradient_checkpointing_keeps_layer_inputs_and_one_layer(tiny):
    """fl.gradient_checkpointing: kept for backward are each layer's input (float32) and one
    layer's activations (recomputed one at a time); with 30 layers (SmolLM2's shape) that is a
    fraction of the full set."""
    smol = Shape(hidden=576, layers=30, heads=9, intermediate=1536, gated=True)
    full = training_activation_bytes(smol, 16, 128)
    kept = training_activation_bytes(smol, 16, 128, checkpointing=True)
    one_layer = (full - training_activation_bytes(Shape(576, 0, 9, 1536, True), 16, 128)) / 30
    embeddings = training_activation_bytes(Shape(576, 0, 9, 1536, True), 16, 128)
    assert kept == pytest.approx(30 * 16 * 128 * 4 * 576 + one_layer + embeddings, rel=1e-12)
    assert kept < 0.15 * full
    plain = estimate_worker_memory(tiny, LORA.apply, LABELS, 8, 32)
    ckpt = estimate_worker_memory(tiny, LORA.apply, LABELS, 8, 32, checkpointing=True)
    assert ckpt.activations_mb < plain.activations_mb and ckpt.heap_slack_mb < plain.heap_slack_mb
    assert (ckpt.frozen_mb, ckpt.trainable_mb) == (plain.frozen_mb, plain.trainable_mb)
