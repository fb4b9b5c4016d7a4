"""Parameter-efficient fine-tuning methods: one spec class per ``peft=`` config option.

See ``src/vista/peft/README.md`` for the method x architecture support matrix and the
trainable-parameter counts.
"""

from vista.peft.adapters import IA3Spec, LoHaSpec, VeraSpec
from vista.peft.base import PeftSpec
from vista.peft.lora import AdaLoraSpec, LoraSpec
from vista.peft.prompts import PrefixSpec, PromptSpec, PTuningSpec
from vista.peft.selective import BitFitSpec, FullSpec, HeadSpec
from vista.peft.state import (
    count_parameters,
    load_trainable_state,
    trainable_parameters,
    trainable_state,
)
from vista.peft.targets import head_module_names, resolve_target_modules

METHODS: dict[str, type[PeftSpec]] = {
    cls.name: cls
    for cls in (LoraSpec, AdaLoraSpec, IA3Spec, PrefixSpec, PromptSpec, PTuningSpec, LoHaSpec, VeraSpec,
                BitFitSpec, HeadSpec, FullSpec)
}


__all__ = [
    "METHODS", "AdaLoraSpec", "BitFitSpec", "FullSpec", "HeadSpec", "IA3Spec", "LoHaSpec", "LoraSpec",
    "PTuningSpec", "PeftSpec", "PrefixSpec", "PromptSpec", "VeraSpec", "count_parameters", "head_module_names",
    "load_trainable_state", "resolve_target_modules", "trainable_parameters", "trainable_state",
]
