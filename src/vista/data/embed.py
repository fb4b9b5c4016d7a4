"""Sentence embeddings for label-free partitioning (k-means clients).

Mean-pooled last hidden states of a local Hugging Face encoder, masked by the attention
mask so padding does not count. Offline only: the model directory must hold the model
and its tokenizer (``local_files_only=True``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["embed_texts"]


def embed_texts(
    model_dir: Path,
    texts: list[str],
    batch_size: int = 32,
    max_seq_len: int = 128,
) -> np.ndarray:
    """Return a ``(len(texts), hidden)`` float32 array of mean-pooled embeddings."""
    import torch
    from transformers import AutoModel

    from vista.models.hub import load_tokenizer

    model_dir = Path(model_dir).expanduser()
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    tok = load_tokenizer(model_dir)
    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True)
    model.eval()
    hidden = int(getattr(model.config, "hidden_size", 0) or 0)
    out: list[np.ndarray] = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = [str(t) for t in texts[start : start + batch_size]]
            enc = tok(batch, padding=True, truncation=True, max_length=max_seq_len, return_tensors="pt")
            enc = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            states = model(**enc).last_hidden_state  # (B, T, H)
            mask = enc["attention_mask"].unsqueeze(-1).to(states.dtype)
            summed = (states * mask).sum(1)
            counts = mask.sum(1).clamp(min=1.0)
            out.append((summed / counts).float().cpu().numpy())
    if not out:
        return np.zeros((0, hidden), dtype=np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)
