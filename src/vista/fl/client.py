"""Local training and evaluation of one client, on whatever device the worker has.

Plain functions over (model, trainable params, encoded examples): the worker runtime calls
them, and so do tests and the overhead benchmark, so "what a client does" has one home.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vista.fl.spec import FLSpec


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


@dataclass(frozen=True)
class TrainStats:
    num_examples: int
    steps: int
    loss: float  # mean training loss over the steps


def local_train(
    model: torch.nn.Module,
    params: dict[str, torch.nn.Parameter],
    data: Encoded,
    spec: FLSpec,
    seed: int,
    pad_id: int,
    device: str = "cpu",
) -> TrainStats:
    """``spec.local_epochs`` of AdamW over ``data`` in a seeded order; updates ``params``."""
    torch.manual_seed(seed)  # dropout
    order = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(list(params.values()), lr=spec.lr, weight_decay=spec.weight_decay)
    model.train()
    steps, loss_sum = 0, 0.0
    for _ in range(spec.local_epochs):
        perm = torch.randperm(len(data), generator=order).numpy()
        for start in range(0, len(perm), spec.batch_size):
            batch = collate(data, perm[start : start + spec.batch_size], pad_id, device)
            loss = model(**batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            steps += 1
            loss_sum += float(loss.detach())
    return TrainStats(len(data), steps, loss_sum / max(steps, 1))


@dataclass(frozen=True)
class EvalSums:
    """Additive evaluation statistics: shards sum to the whole test set exactly."""

    loss_sum: float
    correct: int
    n: int
    confusion: np.ndarray  # (num_labels, num_labels), rows = true label

    def __add__(self, other: "EvalSums") -> "EvalSums":
        return EvalSums(self.loss_sum + other.loss_sum, self.correct + other.correct, self.n + other.n,
                        self.confusion + other.confusion)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, data: Encoded, batch_size: int, pad_id: int, num_labels: int, device: str = "cpu"
) -> EvalSums:
    model.eval()
    loss_sum, confusion = 0.0, np.zeros((num_labels, num_labels), dtype=np.int64)
    for start in range(0, len(data), batch_size):
        idx = np.arange(start, min(start + batch_size, len(data)))
        batch = collate(data, idx, pad_id, device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        loss_sum += float(torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="sum"))
        pred = logits.argmax(-1).cpu().numpy()
        np.add.at(confusion, (data.labels[idx], pred), 1)
    correct = int(np.trace(confusion))
    return EvalSums(loss_sum, correct, len(data), confusion)


def macro_f1(confusion: np.ndarray) -> float:
    """Mean F1 over the classes present in the true labels (a class only ever predicted,
    never true, does not enter the mean; sklearn's ``average="macro"`` would count it as 0)."""
    tp = np.diag(confusion).astype(np.float64)
    precision = np.divide(tp, confusion.sum(0), out=np.zeros_like(tp), where=confusion.sum(0) > 0)
    recall = np.divide(tp, confusion.sum(1), out=np.zeros_like(tp), where=confusion.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=(precision + recall) > 0)
    present = confusion.sum(1) > 0
    return float(f1[present].mean()) if present.any() else 0.0
