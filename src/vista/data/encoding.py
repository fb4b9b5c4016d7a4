"""Text to model inputs: tokenised examples (:class:`Encoded`) and padded batches.

One way to turn texts into batches, shared by local training and evaluation
(``vista.fl.client``) and by frozen-encoder feature extraction for model selection
(``vista.selection.features``): truncation to ``max_seq_len``, right padding with the
tokenizer's pad id, an attention mask over the real tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class Encoded:
    """Tokenised examples of one client (or test shard), unpadded."""

    input_ids: list[list[int]]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)


def encode(tokenizer: Any, texts: list[str], labels: np.ndarray, max_seq_len: int) -> Encoded:
    enc = tokenizer(texts, truncation=True, max_length=max_seq_len, padding=False)
    return Encoded(list(enc["input_ids"]), np.asarray(labels, dtype=np.int64))


def collate(data: Encoded, idx: list[int] | np.ndarray, pad_id: int, device: str) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest member, with an attention mask over the real tokens."""
    seqs = [data.input_ids[i] for i in idx]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[row, : len(s)] = 1
    labels = torch.as_tensor(data.labels[np.asarray(idx)], dtype=torch.long)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}
