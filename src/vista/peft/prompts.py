"""Soft-prompt methods through peft: prefix tuning, prompt tuning, P-tuning.

Prompt tuning and P-tuning prepend virtual-token embeddings and call the model with
``inputs_embeds``, so a decoder's ``*ForSequenceClassification`` no longer sees the pad ids it
pools by and takes position -1, a pad under right padding. ``_LastRealToken`` puts that right:
it records the attention mask the body receives (peft prepends ones for the virtual tokens) and,
on the head's output, copies each row's logits at its last real token to position -1.
Prefix tuning passes ``input_ids`` (the prefix goes in as past keys/values) and needs no fix.
"""

from __future__ import annotations

import inspect
import types
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from vista.peft.base import PeftSpec, arch
from vista.peft.lora import peft_wrap
from vista.peft.targets import head_module_names, pools_last_token


class _LastRealToken:
    def __init__(self) -> None:
        self.mask: torch.Tensor | None = None

    def see_mask(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        self.mask = kwargs.get("attention_mask")

    def pool(self, module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        mask, self.mask = self.mask, None
        if mask is None or mask.dim() != 2 or output.dim() != 3 or mask.shape[1] != output.shape[1]:
            return output
        positions = torch.arange(mask.shape[1], device=output.device)
        last = (positions * (mask.to(output.device) != 0)).argmax(-1)
        fixed = output.clone()
        fixed[:, -1] = output[torch.arange(output.shape[0], device=output.device), last]
        return fixed


def _pool_last_real_token(model: torch.nn.Module, head: str) -> None:
    """Hooks on the model peft wrapped in place: a pre-hook on the body, a hook on the head
    (peft's ModulesToSaveWrapper around it, so the trained copy's output is what is fixed)."""
    hooks = _LastRealToken()
    getattr(model, model.base_model_prefix).register_forward_pre_hook(hooks.see_mask, with_kwargs=True)
    getattr(model, head).register_forward_hook(hooks.pool)


def _wrap_prompt(spec: PeftSpec, model: Any, config: Any, feeds_embeddings: bool) -> Any:
    fix_pooling = feeds_embeddings and pools_last_token(model)
    head = head_module_names(model)[-1]
    wrapped = peft_wrap(spec, model, config)
    if fix_pooling:
        _pool_last_real_token(model, head)
    return wrapped


def _accept_past_key_values(spec: PeftSpec, model: torch.nn.Module) -> None:
    """transformers 5 renamed ``past_key_values`` to ``cache`` (the old name is still accepted
    through ``deprecate_kwarg``), but peft 0.21 looks for ``past_key_values`` in the signature of
    ``model.forward`` before feeding a prefix. When the body takes a cache and the
    classification model passes its ``**kwargs`` on to the body (BERT, RoBERTa) or takes it
    itself (GPT-2, Llama), give this model instance a ``forward`` whose signature also names
    ``past_key_values``. Bodies that take no cache (DistilBERT, MPNet) cannot take a prefix."""
    forward = type(model).forward
    sig = inspect.signature(forward)
    if "past_key_values" in sig.parameters:
        return
    body = inspect.signature(type(getattr(model, model.base_model_prefix)).forward).parameters
    name = "cache" if "cache" in body else "past_key_values" if "past_key_values" in body else None
    passes_on = name in sig.parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    if name is None or not passes_on:
        raise ValueError(
            f"{spec.name} is not supported on {arch(model)}: its attention takes no past keys/values "
            f"(no `cache`/`past_key_values` argument), which is how prefix tuning feeds the prefix to "
            f"every layer; use peft=prompt or peft=p_tuning"
        )

    def forward_with_prefix(self: torch.nn.Module, *args: Any, past_key_values: Any = None, **kwargs: Any) -> Any:
        if past_key_values is not None:
            kwargs[name] = past_key_values
        return forward(self, *args, **kwargs)

    params = list(sig.parameters.values())
    extra = inspect.Parameter("past_key_values", inspect.Parameter.KEYWORD_ONLY, default=None)
    at = next((i for i, p in enumerate(params) if p.kind is inspect.Parameter.VAR_KEYWORD), len(params))
    forward_with_prefix.__signature__ = sig.replace(parameters=[*params[:at], extra, *params[at:]])
    model.forward = types.MethodType(forward_with_prefix, model)  # bound: a deepcopy binds to the copy


def _shape_kwargs(model: torch.nn.Module) -> dict[str, int]:
    """Layer count, width and heads from the config (through its attribute_map, which peft's
    dict lookup misses for DistilBERT's n_layers/dim/n_heads)."""
    cfg = model.config
    return {"num_layers": cfg.num_hidden_layers, "token_dim": cfg.hidden_size,
            "num_attention_heads": cfg.num_attention_heads}


@dataclass(frozen=True)
class PrefixSpec(PeftSpec):
    """Prefix tuning (Li & Liang 2021): trained key/value prefixes in every layer, fed as past
    keys/values. With ``prefix_projection`` (as in FedPETuning) a two-layer MLP of width
    ``encoder_hidden_size`` produces them and is what trains and travels."""

    name: ClassVar[str] = "prefix"
    at_least_one: ClassVar[tuple[str, ...]] = ("num_virtual_tokens", "encoder_hidden_size")
    num_virtual_tokens: int = 16
    prefix_projection: bool = True
    encoder_hidden_size: int = 512
    extra_trainable: list[str] = field(default_factory=list)

    def apply(self, model: Any) -> Any:
        from peft import PrefixTuningConfig, TaskType

        _accept_past_key_values(self, model)
        config = PrefixTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=self.num_virtual_tokens,
                                    prefix_projection=self.prefix_projection,
                                    encoder_hidden_size=self.encoder_hidden_size, **_shape_kwargs(model),
                                    modules_to_save=head_module_names(model) + list(self.extra_trainable))
        return _wrap_prompt(self, model, config, feeds_embeddings=False)


@dataclass(frozen=True)
class PromptSpec(PeftSpec):
    """Prompt tuning (Lester et al. 2021): ``num_virtual_tokens`` trained input embeddings,
    randomly initialised."""

    name: ClassVar[str] = "prompt"
    at_least_one: ClassVar[tuple[str, ...]] = ("num_virtual_tokens",)
    num_virtual_tokens: int = 16
    extra_trainable: list[str] = field(default_factory=list)

    def apply(self, model: Any) -> Any:
        from peft import PromptTuningConfig, TaskType

        config = PromptTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=self.num_virtual_tokens,
                                    **_shape_kwargs(model),
                                    modules_to_save=head_module_names(model) + list(self.extra_trainable))
        return _wrap_prompt(self, model, config, feeds_embeddings=True)


@dataclass(frozen=True)
class PTuningSpec(PeftSpec):
    """P-tuning (Liu et al. 2021): virtual-token embeddings produced by a trained prompt
    encoder (an MLP, or an LSTM) of width ``encoder_hidden_size``."""

    name: ClassVar[str] = "p_tuning"
    at_least_one: ClassVar[tuple[str, ...]] = ("num_virtual_tokens", "encoder_hidden_size")
    num_virtual_tokens: int = 16
    encoder_hidden_size: int = 128
    encoder_reparameterization_type: str = "MLP"  # MLP | LSTM
    extra_trainable: list[str] = field(default_factory=list)

    def apply(self, model: Any) -> Any:
        from peft import PromptEncoderConfig, TaskType

        config = PromptEncoderConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=self.num_virtual_tokens,
                                     encoder_hidden_size=self.encoder_hidden_size,
                                     encoder_reparameterization_type=self.encoder_reparameterization_type,
                                     **_shape_kwargs(model),
                                     modules_to_save=head_module_names(model) + list(self.extra_trainable))
        return _wrap_prompt(self, model, config, feeds_embeddings=True)
