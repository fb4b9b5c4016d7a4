"""Scoring the global model: fixed test shards, per-example predictions, global and per client.

Every test example that the global test split or some client's own test split holds, and
every example of the clients' validation splits (``fl.val_fraction``, held out of their train
splits), is predicted once per evaluated round (shards of ``eval_shard_size``, in a fixed
order), and each split is scored from those predictions, so the numbers do not depend on
which worker ran which shard.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vista.data.fednlp import FederatedData
from vista.data.holdout import hold_out
from vista.fl.client import EvalSums, Predictions, macro_f1, score
from vista.fl.transfer import to_wire
from vista.pipeline import JobResult, Jobs, JobSpec

EVAL_SHARD_SIZE = 128


@dataclass(frozen=True)
class EvalPlan:
    """Which examples to predict (each once) and how to score them."""

    indices: np.ndarray  # sorted unique union of the global test, client test and client validation splits
    labels: np.ndarray  # aligned with indices
    test: np.ndarray  # the global test split
    client_tests: dict[int, np.ndarray]  # client -> its test indices (clients with any)
    num_labels: int
    client_vals: dict[int, np.ndarray] = field(default_factory=dict)  # client -> its validation indices

    @classmethod
    def of(cls, fed: FederatedData, with_clients: bool, val_fraction: float = 0.0, seed: int = 0) -> EvalPlan:
        """``val_fraction`` > 0: also each client's validation split (seeded by ``seed``, the
        run's), scored whatever ``with_clients`` says: the searches rank by it."""
        test = np.asarray(fed.test_indices, dtype=np.int64)
        client_tests = {}
        if with_clients:
            client_tests = {c: np.asarray(s.test, dtype=np.int64) for c, s in fed.partition.clients.items()
                            if len(s.test)}
        client_vals = {}
        if val_fraction > 0:
            held = {c: hold_out(s.train, val_fraction, seed, c).val for c, s in fed.partition.clients.items()}
            client_vals = {c: v for c, v in held.items() if len(v)}
        parts = [test, *client_tests.values(), *client_vals.values()]
        indices = np.unique(np.concatenate(parts))
        labels = fed.data.labels(indices) if len(indices) else np.zeros(0, np.int64)
        return cls(indices, np.asarray(labels, np.int64), test, client_tests, fed.num_labels, client_vals)

    def validation_only(self) -> EvalPlan:
        """The clients' validation splits alone: a round that ranks (``fl.test_every``) and
        does not report test scores predicts only these."""
        idx = np.unique(np.concatenate(list(self.client_vals.values()))) if self.client_vals else self.indices[:0]
        return EvalPlan(idx, self.labels[np.searchsorted(self.indices, idx)], self.test[:0], {}, self.num_labels,
                        self.client_vals)

    def shards(self, size: int = EVAL_SHARD_SIZE) -> list[np.ndarray]:
        return [self.indices[i : i + size] for i in range(0, len(self.indices), size)]

    def sums(self, pred: np.ndarray, loss: np.ndarray, subset: np.ndarray) -> EvalSums:
        pos = np.searchsorted(self.indices, subset)
        return score(self.labels[pos], pred[pos], loss[pos], self.num_labels)

    def metrics(self, results: list[JobResult]) -> dict[str, Any]:
        """Global and per-client metrics from per-example predictions (each example scored once)."""
        preds: list[Predictions] = [r.value for r in results]
        pred = np.concatenate([p.pred for p in preds]) if preds else np.zeros(0, np.int64)
        loss = np.concatenate([p.loss for p in preds]) if preds else np.zeros(0, np.float64)
        out: dict[str, Any] = eval_metrics(self.sums(pred, loss, self.test)) if len(self.test) else {}
        rows: dict[int, dict[str, Any]] = {}
        for c, idx in sorted(self.client_tests.items()):
            s = self.sums(pred, loss, idx)
            rows[c] = {"client": c, "test_examples": s.n, "test_accuracy": s.correct / s.n,
                       "test_macro_f1": macro_f1(s.confusion)}
        if self.client_vals:
            out.update(eval_metrics(self.sums(pred, loss, np.concatenate(list(self.client_vals.values()))), "val_"))
            for c, idx in sorted(self.client_vals.items()):
                s = self.sums(pred, loss, idx)
                rows.setdefault(c, {"client": c}).update(val_examples=s.n, val_accuracy=s.correct / s.n)
        table = [rows[c] for c in sorted(rows)]
        out.update(client_summary(table, "test_accuracy", "client_test_accuracy"))
        out.update(client_summary(table, "val_accuracy", "client_val_accuracy"))
        out["client_eval"] = table
        return out


def eval_jobs(shards: list[np.ndarray], state: dict[str, Any], dtype: Any, tag: str = "") -> Jobs:
    """One job per shard. A worker caches each shard's encoded texts by its key, so another
    plan's shards (``tag``: the validation-only plan's) take keys of their own."""
    specs = [JobSpec("evaluate", f"{tag}{i}" if tag else i, {"indices": s.tolist()}) for i, s in enumerate(shards)]
    return Jobs(specs, shared={"state": to_wire(state, dtype)})


def eval_metrics(sums: EvalSums, prefix: str = "test_") -> dict[str, float]:
    return {f"{prefix}accuracy": sums.correct / max(sums.n, 1), f"{prefix}loss": sums.loss_sum / max(sums.n, 1),
            f"{prefix}macro_f1": macro_f1(sums.confusion)}


SUMMARY_STATS = ("mean", "std", "min", "p10")


def client_summary(rows: list[dict[str, Any]], key: str, prefix: str) -> dict[str, float]:
    """Mean, std, min and 10th percentile of a per-client metric (the fairness view)."""
    vals = np.asarray([r[key] for r in rows if r.get(key) is not None], dtype=np.float64)
    if not len(vals):
        return {}
    return {f"{prefix}_mean": float(vals.mean()), f"{prefix}_std": float(vals.std()),
            f"{prefix}_min": float(vals.min()), f"{prefix}_p10": float(np.percentile(vals, 10))}
