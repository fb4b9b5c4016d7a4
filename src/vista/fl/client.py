"""Local training and evaluation of one client, on whatever device the worker has.

Plain functions over (model, trainable params, encoded examples): the worker runtime calls
them, and so do tests and the overhead benchmark, so "what a client does" has one home.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vista.data.encoding import Encoded, collate
from vista.fl.spec import FLSpec
from vista.scheduler.faults import fire_oom


@dataclass(frozen=True)
class TrainStats:
    num_examples: int
    steps: int
    loss: float  # mean training loss over the steps


@dataclass(frozen=True)
class LocalOptions:
    """What the server's strategy asks of a client's local training.

    ``prox_mu``: FedProx's proximal term (mu/2)·||w - w_global||² over the trained tensors.
    ``frozen``: substrings of parameter names the client keeps fixed (FFA-LoRA: "lora_A").
    ``lc_tau``: FedLC's logit calibration (:class:`LogitCalibration`); 0 trains on the plain loss.
    """

    prox_mu: float = 0.0
    frozen: tuple[str, ...] = ()
    lc_tau: float = 0.0

    @classmethod
    def from_payload(cls, options: dict[str, Any] | None) -> "LocalOptions":
        options = dict(options or {})
        known = {"prox_mu", "frozen", "lc_tau"}
        unknown = set(options) - known
        if unknown:
            raise ValueError(f"unknown client options {sorted(unknown)}; the client understands {sorted(known)}")
        return cls(float(options.get("prox_mu", 0.0)), tuple(options.get("frozen", ())),
                   float(options.get("lc_tau", 0.0)))

    def is_frozen(self, name: str) -> bool:
        return any(f in name for f in self.frozen)


def model_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's own mean cross-entropy of the batch (what a client trains on by default)."""
    return model(**batch).loss


@dataclass(frozen=True)
class LogitCalibration:
    """FedLC (Zhang et al. 2022, Federated Learning with Label Distribution Skew via Logits
    Calibration): a client trains on the cross-entropy of ``logit_c - tau * n_c^(-1/4)``, ``n_c``
    its training examples of class ``c``, so its rare classes are not pushed down for being rare.
    A class it holds none of has an infinite shift and leaves its softmax, as in the reference
    implementations (which compute ``0^(-1/4)``): a client of one class then has nothing to learn.
    The loss is the plain cross-entropy of the calibrated logits, as FL-bench and fluke compute it
    (the paper's form leaves the true class out of the denominator; FL-bench reports that it
    collapsed in training). Evaluation is unchanged; ``train_loss`` reports the calibrated loss."""

    tau: float
    counts: np.ndarray  # (classes seen so far,) the client's training examples per class

    @classmethod
    def of(cls, tau: float, labels: np.ndarray) -> "LogitCalibration":
        return cls(float(tau), np.bincount(np.asarray(labels, np.int64)))

    def shift(self, num_labels: int) -> torch.Tensor:
        counts = np.zeros(num_labels, np.float64)
        counts[: len(self.counts)] = self.counts
        return self.tau * torch.as_tensor(counts).pow(-0.25)  # 0 -> inf

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
        shift = self.shift(logits.shape[-1]).to(device=logits.device, dtype=logits.dtype)
        return torch.nn.functional.cross_entropy(logits - shift, batch["labels"])


class NoHooks:
    """Per-step hooks of a PEFT method (AdaLoRA's rank allocation, extra losses): none."""

    def on_step(self, model: torch.nn.Module, step: int) -> None:
        return None

    def loss_extra(self, model: torch.nn.Module) -> torch.Tensor | None:
        return None


def local_train(
    model: torch.nn.Module,
    params: dict[str, torch.nn.Parameter],
    data: Encoded,
    spec: FLSpec,
    seed: int,
    pad_id: int,
    device: str = "cpu",
    options: LocalOptions | None = None,
    hooks: Any = None,
    micro_batch: int | None = None,
) -> TrainStats:
    """``spec.local_epochs`` of AdamW over ``data`` in a seeded order; updates ``params``.

    Frozen tensors are left out of the optimiser and get no gradient, so they stay bit for
    bit what the server sent. ``hooks`` (the PEFT spec) may add a loss term and act after
    each optimiser step.

    ``micro_batch`` (None: ``spec.batch_size``) below the batch size accumulates gradients:
    each optimiser step still covers the same ``spec.batch_size`` examples in the same order,
    cut into consecutive micro-batches whose losses are weighted by their share of the batch,
    so the step's gradient is the full batch's (up to float rounding; dropout masks are drawn
    per micro-batch, so with dropout the runs differ by more). ``loss_extra`` and the FedProx
    term enter once per step. At the full batch the path is today's, and each step starts
    with :func:`~vista.scheduler.faults.fire_oom` (the reliability tests' injected OOM).
    """
    micro = spec.batch_size if micro_batch is None else int(micro_batch)
    if micro < 1:
        raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
    options = options or LocalOptions()
    on_step = getattr(hooks, "on_step", None) or NoHooks().on_step
    loss_extra = getattr(hooks, "loss_extra", None) or NoHooks().loss_extra
    torch.manual_seed(seed)  # dropout
    order = torch.Generator().manual_seed(seed)
    trained = {n: p for n, p in params.items() if not options.is_frozen(n)}
    frozen = [p for n, p in params.items() if n not in trained]
    if not trained:
        raise ValueError(f"every trainable tensor is frozen by {options.frozen}: nothing to train")
    anchor = {n: p.detach().clone() for n, p in trained.items()} if options.prox_mu > 0 else None
    task_loss = LogitCalibration.of(options.lc_tau, data.labels) if options.lc_tau > 0 else model_loss
    opt = torch.optim.AdamW(list(trained.values()), lr=spec.lr, weight_decay=spec.weight_decay)
    for p in frozen:
        p.requires_grad_(False)
    model.train()
    steps, loss_sum = 0, 0.0
    try:
        for _ in range(spec.local_epochs):
            perm = torch.randperm(len(data), generator=order).numpy()
            for start in range(0, len(perm), spec.batch_size):
                if micro >= spec.batch_size:
                    fire_oom()
                idx = perm[start : start + spec.batch_size]
                if len(idx) <= micro:  # one micro-batch: the whole batch, exactly as without accumulation
                    step_loss = _backward(model, collate(data, idx, pad_id, device), 1.0, True, task_loss,
                                          loss_extra, anchor, trained, options.prox_mu)
                else:
                    step_loss = _accumulate(model, data, idx, micro, pad_id, device, task_loss, loss_extra, anchor,
                                            trained, options.prox_mu)
                opt.step()
                steps += 1
                on_step(model, steps)  # before zero_grad: AdaLoRA's allocator reads the gradients
                opt.zero_grad(set_to_none=True)
                loss_sum += step_loss
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return TrainStats(len(data), steps, loss_sum / max(steps, 1))


def _accumulate(model: torch.nn.Module, data: Encoded, idx: np.ndarray, micro: int, pad_id: int, device: str,
                task_loss: Any, loss_extra: Any, anchor: dict[str, torch.Tensor] | None,
                trained: dict[str, torch.nn.Parameter], prox_mu: float) -> float:
    """Backward of one optimiser step's batch ``idx`` in micro-batches of ``micro``: each
    mean loss weighted by its share of the batch, the step-level terms (``loss_extra``, the
    proximal term: functions of the parameters alone) added once, with the first. Returns
    the batch's mean task loss."""
    step_loss = 0.0
    for first in range(0, len(idx), micro):
        chunk = idx[first : first + micro]
        share = len(chunk) / len(idx)
        step_loss += _backward(model, collate(data, chunk, pad_id, device), share, first == 0, task_loss, loss_extra,
                               anchor, trained, prox_mu) * share
    return step_loss


def _backward(model: torch.nn.Module, batch: dict[str, torch.Tensor], share: float, step_terms: bool,
              task_loss_of: Any, loss_extra: Any, anchor: dict[str, torch.Tensor] | None,
              trained: dict[str, torch.nn.Parameter], prox_mu: float) -> float:
    """Forward and backward of one (micro-)batch, its mean loss weighted by ``share`` (1.0: the
    whole batch, left unscaled), with the step-level terms when ``step_terms``; returns the mean
    task loss. A function of its own so that the last reference to the graph dies on return:
    a loss kept alive into the next forward keeps what its autograd nodes hold beyond their
    saved tensors, measured at ~1 GB of peak memory for SmolLM2 at batch 16 x length 128."""
    task_loss = task_loss_of(model, batch)
    loss = task_loss if share == 1.0 else task_loss * share
    if step_terms:
        extra = loss_extra(model)
        if extra is not None:
            loss = loss + extra
        if anchor is not None:
            prox = sum(((p - anchor[n]) ** 2).sum() for n, p in trained.items())
            loss = loss + 0.5 * prox_mu * prox
    loss.backward()
    return float(task_loss.detach())


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


@dataclass(frozen=True)
class Predictions:
    """Per-example predictions and losses: any split of the examples can be scored from them."""

    pred: np.ndarray  # int64 (n,)
    loss: np.ndarray  # float64 (n,)


@torch.no_grad()
def predict(model: torch.nn.Module, data: Encoded, batch_size: int, pad_id: int, device: str = "cpu") -> Predictions:
    model.eval()
    preds, losses = [], []
    for start in range(0, len(data), batch_size):
        idx = np.arange(start, min(start + batch_size, len(data)))
        batch = collate(data, idx, pad_id, device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        losses.append(torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="none").double().cpu().numpy())
        preds.append(logits.argmax(-1).cpu().numpy().astype(np.int64))
    if not preds:
        return Predictions(np.zeros(0, np.int64), np.zeros(0, np.float64))
    return Predictions(np.concatenate(preds), np.concatenate(losses))


def score(labels: np.ndarray, pred: np.ndarray, loss: np.ndarray, num_labels: int) -> EvalSums:
    """Additive sums of a set of examples from their labels, predictions and losses."""
    confusion = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(confusion, (np.asarray(labels, np.int64), np.asarray(pred, np.int64)), 1)
    return EvalSums(float(np.sum(loss, dtype=np.float64)), int(np.trace(confusion)), len(labels), confusion)


def evaluate(
    model: torch.nn.Module, data: Encoded, batch_size: int, pad_id: int, num_labels: int, device: str = "cpu"
) -> EvalSums:
    p = predict(model, data, batch_size, pad_id, device)
    return score(data.labels, p.pred, p.loss, num_labels)


def macro_f1(confusion: np.ndarray) -> float:
    """Mean F1 over the classes present in the true labels (a class only ever predicted,
    never true, does not enter the mean; sklearn's ``average="macro"`` would count it as 0)."""
    tp = np.diag(confusion).astype(np.float64)
    precision = np.divide(tp, confusion.sum(0), out=np.zeros_like(tp), where=confusion.sum(0) > 0)
    recall = np.divide(tp, confusion.sum(1), out=np.zeros_like(tp), where=confusion.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=(precision + recall) > 0)
    present = confusion.sum(1) > 0
    return float(f1[present].mean()) if present.any() else 0.0
