from vista.peft.lora import LoraSpec, resolve_target_modules
from vista.peft.state import count_parameters, load_trainable_state, trainable_parameters, trainable_state

__all__ = [
    "LoraSpec", "count_parameters", "load_trainable_state", "resolve_target_modules",
    "trainable_parameters", "trainable_state",
]
