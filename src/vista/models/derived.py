"""Candidates derived from a real checkpoint, for model-selection studies.

A pool of real models alone has no known-bad member; these give honest reference points:
a layer-truncated model (cheaper, somewhat worse) and a randomly initialised model of the
same shape (the floor any selection method must beat). Both are deterministic.
"""

from __future__ import annotations

from pathlib import Path


def first_layers(src: Path, target: Path, keep: int) -> None:
    """Save the embeddings and the first ``keep`` encoder layers of the BERT-like model in ``src``."""
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(str(src), local_files_only=True)
    layers = model.base_model.encoder.layer
    if not 0 < keep <= len(layers):
        raise ValueError(f"cannot keep {keep} of the {len(layers)} layers of {src}")
    model.base_model.encoder.layer = layers[:keep]
    model.config.num_hidden_layers = keep
    model.save_pretrained(str(target))
    AutoTokenizer.from_pretrained(str(src), local_files_only=True).save_pretrained(str(target))


def random_like(src: Path, target: Path, seed: int) -> None:
    """Save a model with ``src``'s config and tokenizer but weights freshly initialised from ``seed``."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    config = AutoConfig.from_pretrained(str(src), local_files_only=True)
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG state alone
        torch.manual_seed(seed)
        model = AutoModel.from_config(config)
    model.save_pretrained(str(target))
    AutoTokenizer.from_pretrained(str(src), local_files_only=True).save_pretrained(str(target))
