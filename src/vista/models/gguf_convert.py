"""Turn a GGUF checkpoint (llama.cpp format) into a Hugging Face safetensors directory.

transformers reads GGUF (de-quantising to float32) but refuses to ``save_pretrained`` a model
loaded that way, so the weights move into a fresh model built from the same config, which
saves normally. Decoder-only tokenizers have no pad token; classification batches need one,
so pad = eos.
"""

from __future__ import annotations

from pathlib import Path

from vista.models.packaged import require_module

GGUF_PIP = "pip install gguf"


def convert_gguf(gguf_file: Path, target: Path) -> None:
    """Write config, ``model.safetensors`` and the tokenizer of ``gguf_file`` into ``target``."""
    require_module("gguf", GGUF_PIP, f"reading {gguf_file.name}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)  # de-quantised to float32
    settings = loaded.config.to_dict()
    settings.pop("quantization_config", None)  # the saved weights are plain float32, not GGUF blocks
    settings.pop("_model_name_or_path", None)  # GGUF's free-text "general.name", not a path
    config = type(loaded.config).from_dict(settings)
    config.pad_token_id = tokenizer.pad_token_id
    with torch.device("meta"):  # no second random init: the loaded tensors are assigned as they are
        fresh = AutoModelForCausalLM.from_config(config)
    fresh.load_state_dict(loaded.state_dict(), strict=True, assign=True)
    fresh.tie_weights()
    fresh.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
