"""FedEx-LoRA's residual folded into the frozen base weight: W = W0 + scaling·R."""

from __future__ import annotations

import pytest
import torch

from vista.fl.residual import RESIDUAL_PREFIX, ResidualFolder, split_residuals


def _lora(model, targets, fan_in_fan_out=False):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=2, lora_alpha=6, target_modules=targets, fan_in_fan_out=fan_in_fan_out))


def _roberta():
    from transformers import RobertaConfig, RobertaModel

    torch.manual_seed(0)
    return RobertaModel(RobertaConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=32, max_position_embeddings=20))


def _gpt2():
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    return GPT2Model(GPT2Config(vocab_size=40, n_embd=16, n_layer=1, n_head=2, n_positions=20))


@pytest.mark.parametrize("build,target,fan", [(_roberta, "query", False), (_gpt2, "c_attn", True)])
def test_folded_weight_is_pristine_plus_scaled_residual(build, target, fan):
    model = _lora(build(), [target], fan)
    path = next(n for n, m in model.named_modules() if n.endswith(target) and hasattr(m, "base_layer"))
    module = model.get_submodule(path)
    w0 = module.get_base_layer().weight.detach().clone()
    out_f, in_f = (w0.shape[1], w0.shape[0]) if fan else w0.shape
    folder = ResidualFolder(model)
    for seed in (1, 2):  # each call starts from the pristine weight: residuals are cumulative values
        r = torch.randn(out_f, in_f, generator=torch.Generator().manual_seed(seed))
        folder.apply({path: r})
        expect = w0 + module.scaling["default"] * (r.T if fan else r)
        assert torch.allclose(module.get_base_layer().weight, expect, atol=1e-6)
    assert module.scaling["default"] == 3.0


def test_residual_keys_are_split_from_the_trainable_state():
    state = {"a.lora_A.default.weight": torch.zeros(1), f"{RESIDUAL_PREFIX}a": torch.ones(2, 2)}
    trainable, residuals = split_residuals(state)
    assert list(trainable) == ["a.lora_A.default.weight"] and list(residuals) == ["a"]


def test_residual_for_a_missing_module_or_wrong_shape_is_loud():
    model = _lora(_roberta(), ["query"])
    with pytest.raises(KeyError, match="no such module"):
        ResidualFolder(model).apply({"base_model.model.nowhere": torch.zeros(2, 2)})
    path = next(n for n, m in model.named_modules() if n.endswith("query") and hasattr(m, "base_layer"))
    with pytest.raises(ValueError, match="shape"):
        ResidualFolder(model).apply({path: torch.zeros(3, 3)})
