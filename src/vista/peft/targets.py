"""Where each PEFT method goes in each architecture: the one table-driven place.

* Target modules come from peft's own per-method mappings
  (``peft.utils.constants.TRANSFORMERS_MODELS_TO_<METHOD>_TARGET_MODULES_MAPPING``), keyed by
  ``config.model_type``; ``_GAPS`` fills the architectures peft has no entry for (DistilBERT,
  MPNet in peft 0.21). An explicit ``target_modules`` always wins.
* The classification head is found generically: every top-level child of a
  ``*ForSequenceClassification`` model other than the pretrained body
  (``model.base_model_prefix``) that holds parameters, i.e. ``classifier`` (BERT, RoBERTa, MPNet),
  ``pre_classifier`` + ``classifier`` (DistilBERT), ``score`` (GPT-2, Llama, other decoders).
  It is freshly initialised, so every method trains it.
* Names are then expanded to full module paths outside the head, so a short name like peft's
  ``dense`` (AdaLoRA on RoBERTa) never lands on ``classifier.dense``, and a name that matches
  nothing is an error here rather than a silent no-op.
"""

from __future__ import annotations

from typing import Any

# method -> the peft constant that holds its per-architecture default target modules
_PEFT_MAPPING = {
    "lora": "TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING",
    "adalora": "TRANSFORMERS_MODELS_TO_ADALORA_TARGET_MODULES_MAPPING",
    "ia3": "TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING",
    "ia3_feedforward": "TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING",
    "loha": "TRANSFORMERS_MODELS_TO_LOHA_TARGET_MODULES_MAPPING",
    "vera": "TRANSFORMERS_MODELS_TO_VERA_TARGET_MODULES_MAPPING",
}

# Architectures peft 0.21 has no defaults for, checked against the module names of the models:
#   DistilBERT: transformer.layer.N.attention.{q_lin,k_lin,v_lin,out_lin}, ffn.{lin1,lin2}
#   MPNet:      encoder.layer.N.attention.attn.{q,k,v,o}, intermediate.dense, output.dense
# Query/value for the LoRA family (as peft does for BERT), key/value/FFN-out for IA3.
_ATTENTION_QV = {"distilbert": ["q_lin", "v_lin"], "mpnet": ["q", "v"]}
_GAPS: dict[str, dict[str, list[str]]] = {
    "lora": _ATTENTION_QV,
    "adalora": _ATTENTION_QV,
    "loha": _ATTENTION_QV,
    "vera": _ATTENTION_QV,
    "ia3": {"distilbert": ["k_lin", "v_lin", "ffn.lin2"], "mpnet": ["k", "v", "output.dense"]},
    "ia3_feedforward": {"distilbert": ["ffn.lin2"], "mpnet": ["output.dense"]},
}

# Architectures whose weights are transformers' Conv1D (in x out): peft needs fan_in_fan_out=True.
FAN_IN_FAN_OUT = {"gpt2"}


def model_type(model: Any) -> str | None:
    return getattr(getattr(model, "config", None), "model_type", None)


def resolve_target_modules(model: Any, requested: Any = "auto", method: str = "lora") -> list[str]:
    """Short module names for ``method`` on this architecture: ``requested`` when given,
    else peft's default for ``config.model_type``, else Vista's gap table."""
    if requested not in (None, "auto"):
        return [requested] if isinstance(requested, str) else list(requested)
    from peft.utils import constants

    kind = model_type(model)
    defaults = getattr(constants, _PEFT_MAPPING[method]).get(kind) or _GAPS.get(method, {}).get(kind)
    if defaults:
        return list(defaults)
    what = "feedforward_modules" if method == "ia3_feedforward" else "target_modules"
    raise ValueError(
        f"peft has no default {method} target modules for model_type={kind!r}; "
        f"set peft.{what}=[...] to the names of its attention (and feed-forward) projections"
    )


def head_module_names(model: Any) -> list[str]:
    """Top-level modules of a sequence-classification model that are not its pretrained body."""
    body = getattr(model, "base_model_prefix", "")
    if not body or not hasattr(model, body):
        raise ValueError(
            f"cannot tell the classification head of {type(model).__name__} from its body "
            f"(base_model_prefix={body!r}); load it with AutoModelForSequenceClassification"
        )
    heads = [name for name, child in model.named_children()
             if name != body and any(True for _ in child.parameters())]
    if not heads:
        raise ValueError(f"{type(model).__name__} has no classification head besides its body {body!r}")
    return heads


def pools_last_token(model: Any) -> bool:
    """transformers' decoder ``*ForSequenceClassification`` classes (GPT-2, Llama, Mistral, Qwen2,
    OPT, ...) name their head ``score`` and classify from the last non-pad token."""
    return "score" in head_module_names(model)


def target_paths(model: Any, names: list[str], head: list[str], method: str, option: str = "target_modules") -> list[str]:
    """Full paths of the modules that ``names`` select (peft's rule: the path equals a name or
    ends with ``.name``), outside the classification head."""
    paths = [p for p, _ in model.named_modules() if p and p.split(".")[0] not in head]
    selected = [p for p in paths if any(p == n or p.endswith("." + n) for n in names)]
    unmatched = [n for n in names if not any(p == n or p.endswith("." + n) for p in selected)]
    if unmatched:
        raise ValueError(
            f"{method}: peft.{option} names {unmatched} match no module of {type(model).__name__} "
            f"(model_type={model_type(model)!r}) outside its head {head}; set peft.{option} to names "
            f"that exist, e.g. from [n for n, _ in model.named_modules()]"
        )
    return selected
