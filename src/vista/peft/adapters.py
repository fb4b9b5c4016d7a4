"""Other weight-space adapters through peft: (IA)^3, LoHa, VeRA."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from vista.peft.base import PeftSpec
from vista.peft.lora import _common, peft_wrap
from vista.peft.targets import (
    FAN_IN_FAN_OUT,
    head_module_names,
    model_type,
    resolve_target_modules,
    target_paths,
)


@dataclass(frozen=True)
class IA3Spec(PeftSpec):
    """(IA)^3 (Liu et al. 2022): learned vectors that rescale the key, value and feed-forward
    activations. ``feedforward_modules`` (a subset of ``target_modules``) are scaled on their
    input, the others on their output. Defaults from peft's IA3 mappings, MPNet and
    DistilBERT from Vista's gap table."""

    name: ClassVar[str] = "ia3"
    target_modules: Any = "auto"
    feedforward_modules: Any = "auto"
    extra_trainable: list[str] = field(default_factory=list)

    def apply(self, model: Any) -> Any:
        from peft import IA3Config, TaskType

        common = _common(model, self.name, self.target_modules, self.extra_trainable)
        if self.feedforward_modules in (None, "auto") and self.target_modules not in (None, "auto"):
            ff_names: list[str] = []  # explicit targets, no feed-forward ones named
        else:
            ff_names = resolve_target_modules(model, self.feedforward_modules, "ia3_feedforward")
        ff = target_paths(model, ff_names, head_module_names(model), self.name, "feedforward_modules") if ff_names else []
        outside = sorted(set(ff) - set(common["target_modules"]))
        if outside:
            raise ValueError(f"ia3: feedforward_modules must be among target_modules; not targeted: {outside[:3]}")
        config = IA3Config(task_type=TaskType.SEQ_CLS, feedforward_modules=ff,
                           fan_in_fan_out=model_type(model) in FAN_IN_FAN_OUT, **common)
        return peft_wrap(self, model, config)


@dataclass(frozen=True)
class LoHaSpec(PeftSpec):
    """LoHa (Hyeon-Woo et al. 2022, LyCORIS): a low-rank Hadamard product update,
    ``(A1 B1) * (A2 B2)``, on the same modules as LoRA. On GPT-2 the targeted ``Conv1D`` layers
    are first swapped for equivalent ``nn.Linear`` ones (peft's LoHa has no Conv1D layer)."""

    name: ClassVar[str] = "loha"
    at_least_one: ClassVar[tuple[str, ...]] = ("r",)
    r: int = 8
    alpha: int = 8
    rank_dropout: float = 0.0
    module_dropout: float = 0.0
    target_modules: Any = "auto"
    extra_trainable: list[str] = field(default_factory=list)

    def apply(self, model: Any) -> Any:
        from peft import LoHaConfig, TaskType

        common = _common(model, self.name, self.target_modules, self.extra_trainable)
        _conv1d_to_linear(model, common["target_modules"])
        config = LoHaConfig(task_type=TaskType.SEQ_CLS, r=self.r, alpha=self.alpha, rank_dropout=self.rank_dropout,
                            module_dropout=self.module_dropout, **common)
        return peft_wrap(self, model, config)


def _conv1d_to_linear(model: torch.nn.Module, paths: list[str]) -> None:
    """peft's LoHa has no layer for transformers' ``Conv1D`` (GPT-2's c_attn, c_proj, c_fc: an
    affine map with the weight stored in x out). Swap each targeted one for the ``nn.Linear``
    computing exactly the same function (weight transposed), so LoHa can wrap it. Only the
    frozen base weight's layout changes; parameter names stay."""
    from transformers.pytorch_utils import Conv1D

    for path in paths:
        module = model.get_submodule(path)
        if not isinstance(module, Conv1D):
            continue
        n_in, n_out = module.weight.shape
        linear = torch.nn.Linear(n_in, n_out, bias=module.bias is not None,
                                 device=module.weight.device, dtype=module.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(module.weight.T)
            if module.bias is not None:
                linear.bias.copy_(module.bias)
        linear.weight.requires_grad_(module.weight.requires_grad)
        parent, _, name = path.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, name, linear)


@dataclass(frozen=True)
class VeraSpec(PeftSpec):
    """VeRA (Kopiczko et al. 2024): frozen random low-rank matrices shared by all layers
    (buffers regenerated from ``projection_prng_key``, identical in every worker) and trained
    per-layer scaling vectors ``lambda_b``, ``lambda_d``. Rank is typically large (256)."""

    name: ClassVar[str] = "vera"
    at_least_one: ClassVar[tuple[str, ...]] = ("r",)
    r: int = 256
    d_initial: float = 0.1
    dropout: float = 0.0
    projection_prng_key: int = 0
    target_modules: Any = "auto"
    extra_trainable: list[str] = field(default_factory=list)

    def apply(self, model: Any) -> Any:
        from peft import TaskType, VeraConfig

        config = VeraConfig(task_type=TaskType.SEQ_CLS, r=self.r, d_initial=self.d_initial, vera_dropout=self.dropout,
                            projection_prng_key=self.projection_prng_key,
                            fan_in_fan_out=model_type(model) in FAN_IN_FAN_OUT,
                            **_common(model, self.name, self.target_modules, self.extra_trainable))
        return peft_wrap(self, model, config)
