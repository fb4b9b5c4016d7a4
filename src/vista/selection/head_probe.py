"""The federated head probe: how far FedAvg moves a classifier on a candidate's frozen features.

A frozen-feature score (LogME, GBC, H-score) says how separable a candidate's features are; it
cannot see how fast federated training gets there. Under label skew a candidate whose features
separate the classes can still sit at the majority rate after the rounds its fine-tune has (the
study's rotten_tomatoes: SmolLM2, design note 88). The probe trains what a fine-tune trains from
its first step, a softmax layer on the features the classifier reads, with FedAvg over the
clients' cached features of the statistics round at the fine-tune's own rate, batch and local
epochs, and scores the global layer on a split each client holds out of its sample.

It costs no forward pass beyond the statistics round's (the features are cached); each round
moves a ``C x D`` layer and its bias per client and candidate, both ways (centred: and the
features' pooled mean down, from the statistics round's sums). The server adds up the
clients' weighted layers and reports exactly (:func:`contribution`, :func:`finish_round`; the
sums of :mod:`vista.selection.privacy.block_sum`): with ``secure_agg`` masked, so it learns only
the sums, as of the statistics; in the clear it sees each client's. Under DP the probe trains by
:mod:`vista.selection.head_dp`'s rule instead (noisy gradient sums, one noisy report).

Every number is a pure function of the features, the labels, :class:`HeadSpec` and the seed:
:func:`simulate` runs the protocol in one process (a study, the tests), and the selection
driver runs the same :func:`client_round` / :func:`contribution` / :func:`finish_round` as client jobs,
so the two agree exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vista.checks import at_least, check_range
from vista.data.holdout import hold_out
from vista.selection.privacy.block_sum import exact_total
from vista.selection.sampling import derived_seed

__all__ = ["Head", "HeadSpec", "centred", "client_round", "contribution", "evaluate", "finish_round", "init_head",
           "local_update", "pooled_mean", "round_point", "simulate", "split_rows"]

Head = tuple[np.ndarray, np.ndarray]  # (weights C x D, bias C), float32


@dataclass(frozen=True)
class HeadSpec:
    """How the probe trains: ``rounds`` of FedAvg, each client ``local_epochs`` of AdamW at ``lr``
    in batches of ``batch_size``; ``val_fraction`` of each client's sampled texts held out and
    scored; the layer starts at N(0, ``init_std``), as Hugging Face initialises a classifier;
    ``centre``: on features centred on their pooled mean (:func:`centred`)."""

    rounds: int = 6
    lr: float = 2e-3
    local_epochs: int = 1
    batch_size: int = 16
    weight_decay: float = 0.0
    val_fraction: float = 0.2
    init_std: float = 0.02
    # train and score on the features less their pooled mean (the statistics round's, sent down with
    # the layer: D floats a candidate), not as they are (design note 93)
    centre: bool = False
    # under DP (vista.selection.head_dp): the server's Adam rate, one step a round on the noisy mean gradient
    dp_lr: float = 0.03

    def __post_init__(self) -> None:
        for name in ("rounds", "local_epochs", "batch_size"):
            at_least(self, name, 1)
        check_range("HeadSpec", "lr", self.lr, 0.0, None, lo_open=True)
        check_range("HeadSpec", "dp_lr", self.dp_lr, 0.0, None, lo_open=True)
        check_range("HeadSpec", "val_fraction", self.val_fraction, 0.0, 1.0, lo_open=True, hi_open=True)


def split_rows(indices: np.ndarray, fraction: float, seed: int, client: int) -> tuple[np.ndarray, np.ndarray]:
    """Row positions (into features encoded in ``indices``' order) of a client's probe-train and
    held-out rows: :func:`~vista.data.holdout.hold_out`'s seeded draw, the same for every candidate."""
    indices = np.asarray(indices, dtype=np.int64)
    held = hold_out(np.sort(indices), fraction, derived_seed(seed, 13), client)
    val = np.isin(indices, held.val)
    return np.flatnonzero(~val), np.flatnonzero(val)


def centred(f: np.ndarray, centre: np.ndarray | None) -> np.ndarray:
    """A client's rows less the pooled mean ``centre`` (float64, then float32 as the layer reads
    them), or the rows as they are (``None``). Why: a frozen encoder's features share a large
    offset (MPNet's first token on r52), which a layer at the fine-tune's rate spends its rounds
    cancelling; centred, it reaches the classes' directions first (design note 93)."""
    if centre is None:
        return f
    return (np.asarray(f, np.float64) - np.asarray(centre, np.float64)).astype(np.float32)


def pooled_mean(clients: Mapping[int, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """The mean of every client's rows (float64): in one process, what the statistics round's
    summed moments give the server (to float64 rounding)."""
    return np.concatenate([np.asarray(f, np.float64) for _, f, _ in clients.values()]).mean(0)


def init_head(classes: int, dim: int, spec: HeadSpec, seed: int) -> Head:
    """The layer every client starts round 1 from (the same draw on the server and in the tests)."""
    rng = np.random.default_rng(derived_seed(seed, 14, dim))
    w = (rng.standard_normal((classes, dim)) * spec.init_std).astype(np.float32)
    return w, np.zeros(classes, np.float32)


def local_update(head: Head, x: np.ndarray, y: np.ndarray, spec: HeadSpec, seed: int) -> Head:
    """A client's ``local_epochs`` of AdamW from ``head`` on its rows ``x`` (n x D) and labels ``y``,
    in a seeded order; returns the new layer (float32). No rows: the layer unchanged."""
    import torch

    if len(y) == 0:
        return head
    w = torch.tensor(head[0], dtype=torch.float32, requires_grad=True)
    b = torch.tensor(head[1], dtype=torch.float32, requires_grad=True)
    xs, ys = torch.as_tensor(np.asarray(x, np.float32)), torch.as_tensor(np.asarray(y, np.int64))
    opt = torch.optim.AdamW([w, b], lr=spec.lr, weight_decay=spec.weight_decay)
    order = torch.Generator().manual_seed(seed)
    for _ in range(spec.local_epochs):
        perm = torch.randperm(len(ys), generator=order)
        for start in range(0, len(perm), spec.batch_size):
            i = perm[start : start + spec.batch_size]
            loss = torch.nn.functional.cross_entropy(xs[i] @ w.T + b, ys[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return w.detach().numpy().copy(), b.detach().numpy().copy()


def evaluate(head: Head, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """What a client reports of ``head`` on its held-out rows: correct predictions, summed
    cross-entropy, rows (sums the server adds up)."""
    import torch

    if len(y) == 0:
        return {"correct": 0, "loss_sum": 0.0, "n": 0}
    logits = torch.as_tensor(np.asarray(x, np.float32)) @ torch.as_tensor(head[0]).T + torch.as_tensor(head[1])
    ys = torch.as_tensor(np.asarray(y, np.int64))
    loss = torch.nn.functional.cross_entropy(logits, ys, reduction="sum")
    return {"correct": int((logits.argmax(1) == ys).sum()), "loss_sum": float(loss), "n": int(len(ys))}


def contribution(sent: Head, trained: Head | None, n: int, report: Mapping[str, Any], train: bool
                 ) -> dict[str, np.ndarray]:
    """A client's part of a round's sums (float64 blocks): its report and, in a training round,
    its layer weighted by its probe-train rows ``n`` (FedAvg). A client that trained nothing adds
    zeros of the sent layer's shape, so under masks every client sends the same blocks."""
    out = {"correct": np.array([report["correct"]], np.float64), "loss_sum": np.array([report["loss_sum"]], np.float64),
           "val_n": np.array([report["n"]], np.float64)}
    if train:
        w, b = (trained[0], trained[1]) if trained is not None and n > 0 else (np.zeros_like(sent[0]),
                                                                              np.zeros_like(sent[1]))
        out.update(w=np.asarray(w, np.float64) * n, b=np.asarray(b, np.float64) * n,
                   n=np.array([n if trained is not None else 0], np.float64))
    bad = [k for k, v in out.items() if not np.all(np.isfinite(v))]
    if bad:  # a sum cannot hold them (masked or exact): say why instead of a fixed-point error
        raise ValueError(f"the head probe diverged on this client: {', '.join(bad)} not finite; lower "
                         "selection.head_lr (the probe's rate, by default the fine-tune's fl.lr)")
    return out


def finish_round(round_: int, total: Mapping[str, np.ndarray], train: bool) -> tuple[Head | None, dict[str, float]]:
    """The server's step from a round's summed :func:`contribution` s: the curve's point of the
    layer that was sent (:func:`round_point`) and, in a training round, the next layer (FedAvg:
    the weighted sum over the rows, float32)."""
    report = {"correct": int(np.rint(total["correct"][0])), "loss_sum": float(total["loss_sum"][0]),
              "n": int(np.rint(total["val_n"][0]))}
    point = round_point(round_, [report])
    if not train:
        return None, point
    rows = int(np.rint(total["n"][0]))
    if rows == 0:
        raise ValueError("no client trained the head (every client held no probe-train rows)")
    return ((total["w"] / rows).astype(np.float32), (total["b"] / rows).astype(np.float32)), point


def round_point(round_: int, reports: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """One point of the curve: the global layer after ``round_`` rounds on every held-out row."""
    n = sum(int(r["n"]) for r in reports)
    correct = sum(int(r["correct"]) for r in reports)
    loss = sum(float(r["loss_sum"]) for r in reports)
    return {"round": round_, "val_accuracy": correct / n if n else float("nan"),
            "val_loss": loss / n if n else float("nan"), "val_examples": n}


def client_round(head: Head, f: np.ndarray, y: np.ndarray, rows: tuple[np.ndarray, np.ndarray], spec: HeadSpec,
                 seed: int, round_: int, client: int, train: bool) -> tuple[Head | None, int, dict[str, float]]:
    """One client's part of probe round ``round_`` (1-based): its report of the layer it received
    (after ``round_ - 1`` rounds) on its held-out rows and, with ``train``, the layer trained on its
    other rows with its row count (FedAvg's weight); ``rows``: :func:`split_rows`' (train, held out).
    The selection runtime's job and :func:`simulate` both run exactly this."""
    train_rows, val_rows = rows
    report = evaluate(head, f[val_rows], y[val_rows])
    if not train:
        return None, 0, report
    seed_r = derived_seed(seed, 15, round_, client)
    return local_update(head, f[train_rows], y[train_rows], spec, seed_r), len(train_rows), report


def simulate(clients: Mapping[int, tuple[np.ndarray, np.ndarray, np.ndarray]], classes: int, spec: HeadSpec,
             seed: int, frac_bits: int = 16, centre: np.ndarray | None = None) -> list[dict[str, float]]:
    """The probe in one process: ``clients`` maps a client id to (its text indices, its features
    in that order, their labels); returns the curve, one point per round from 0 (the first layer)
    to ``spec.rounds`` (:func:`round_point`), as the driver's rounds report it: round ``r`` of
    ``spec.rounds + 1`` reports the layer after ``r - 1`` rounds, and all but the last train.
    ``frac_bits``: the sums' fixed-point bits, the run's ``privacy.frac_bits`` (masked or not).
    With ``spec.centre`` the rows are centred on ``centre``, by default :func:`pooled_mean`."""
    dims = {np.asarray(f).shape[1] for _, f, _ in clients.values()}
    if len(dims) != 1:
        raise ValueError(f"the clients' features differ in width: {sorted(dims)}")
    if spec.centre:
        mu = pooled_mean(clients) if centre is None else centre
        clients = {c: (idx, centred(f, mu), y) for c, (idx, f, y) in clients.items()}
    head = init_head(classes, dims.pop(), spec, seed)
    rows = {c: split_rows(idx, spec.val_fraction, seed, c) for c, (idx, _, _) in clients.items()}
    curve = []
    for r in range(1, spec.rounds + 2):
        train = r <= spec.rounds
        done = [client_round(head, np.asarray(f), np.asarray(y), rows[c], spec, seed, r, c, train)
                for c, (_, f, y) in sorted(clients.items())]
        total = exact_total([contribution(head, h, n, report, train) for h, n, report in done], frac_bits)
        new, point = finish_round(r - 1, total, train)
        curve.append(point)
        head = new if new is not None else head
    return curve
