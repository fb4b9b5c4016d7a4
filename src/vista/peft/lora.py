"""LoRA through the peft library, with target modules resolved per architecture."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LoraSpec:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    # "auto": peft's per-architecture defaults (query/value for BERT & RoBERTa, q_lin/v_lin
    # for DistilBERT, ...); or an explicit list of module names.
    target_modules: Any = "auto"
    extra_trainable: list[str] = field(default_factory=list)  # e.g. ["pooler"]

    def apply(self, model: Any) -> Any:
        from peft import LoraConfig, TaskType, get_peft_model

        targets = resolve_target_modules(model, self.target_modules)
        config = LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=targets,
            modules_to_save=list(self.extra_trainable) or None,
        )
        return get_peft_model(model, config)


def resolve_target_modules(model: Any, requested: Any) -> list[str]:
    if requested not in (None, "auto"):
        return [requested] if isinstance(requested, str) else list(requested)
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    model_type = getattr(model.config, "model_type", None)
    if model_type in DEFAULTS:
        return list(DEFAULTS[model_type])
    if model_type == "mpnet":
        return ["q", "v"]
    raise ValueError(
        f"peft has no default LoRA target modules for model_type={model_type!r}; "
        f"set peft.target_modules=[...] to the names of its attention projections"
    )
