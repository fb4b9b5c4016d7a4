"""The head probe under differential privacy: DP-FedSGD with the server's Adam, one noisy report.

Why a rule of its own: the shipped probe's clients run AdamW for local epochs, so how far one text
moves the layer a client sends has no bound, and a DP guarantee needs one. Under DP a client sends,
each training round, the sum of its rows' cross-entropy gradients at the layer the server sent, and
its row count. Its rows are clipped to ``clip_norm`` R (as the statistics round clips them; centred
on the pooled mean and clipped again, for the centred probe), and ``||softmax - onehot|| <= sqrt 2``,
so one text moves the gradient sum by at most ``sqrt(2 (R^2 + 1))`` (weights and bias) and the count
by 1: no per-example clipping is needed beyond the features'. Each cohort member adds its ``1/m``
share of the Gaussian noise (:mod:`vista.selection.privacy.dp`'s distributed mechanism: the masked
sum carries all of it); the server divides by the noisy count and takes one Adam step (post-
processing, free). The held-out rows are reported once, after the last round: the correct
predictions and the rows, noised. One candidate's probe is ``rounds + 1`` releases
(:func:`releases_per_probe`), counted with the statistics round's in the run's budget
(:func:`vista.selection.privacy.accounting.plan`). A text's split (train or held out) is a keyed
hash of the text alone (:func:`dp_split`), so adding or removing one moves no other between them.

Like the statistics, the guarantee is per text of the round's sample (the cap's seeded draw and the
admission taken as given). :func:`simulate_dp` runs it in one process, as the driver does in jobs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from vista.selection.head_probe import Head, HeadSpec, init_head, pooled_mean
from vista.selection.privacy.admission import clip_rows
from vista.selection.privacy.block_sum import exact_total
from vista.selection.privacy.dp import check_fixed_point, share_stds
from vista.selection.privacy.spec import PrivacySpec
from vista.selection.sampling import derived_seed

__all__ = ["Adam", "check_budget", "client_blocks", "dp_rows", "dp_split", "finish_dp_round", "gradient_blocks", "head_noise_stds", "noised",
           "noise_seed", "releases_per_probe", "report_blocks", "sensitivities", "simulate_dp", "zero_blocks"]

SPLIT_TAG, NOISE_TAG = 18, 17  # derived_seed tags of their own (the probe's split hash, its noise)


def releases_per_probe(spec: HeadSpec) -> int:
    """A candidate's probe under DP releases one noisy gradient sum a training round and one report."""
    return spec.rounds + 1


def sensitivities(clip_norm: float, train: bool) -> dict[str, float]:
    """L2 sensitivity of each block to adding or removing one text (module doc)."""
    if train:
        return {"g": math.sqrt(2.0 * (float(clip_norm) ** 2 + 1.0)), "n": 1.0}
    return {"correct": 1.0, "val_n": 1.0}


def head_noise_stds(privacy: PrivacySpec, cohort_size: int, releases: int, train: bool) -> dict[str, float]:
    """The std of each cohort member's noise share per block: the blocks of one release compose to its
    multiplier, as the statistics' blocks do (:func:`~vista.selection.privacy.dp.share_stds`)."""
    return share_stds(privacy, sensitivities(privacy.clip_norm, train), cohort_size, releases)


def check_budget(privacy: PrivacySpec, cohort_size: int, releases: int) -> None:
    """Fail before any client works when a share of the probe's noise would pass secure aggregation's
    fixed point, as :func:`vista.selection.privacy.check_budget` does for the statistics."""
    if not (privacy.dp and privacy.secure_agg):
        return
    worst = max(max(head_noise_stds(privacy, cohort_size, releases, t).values()) for t in (True, False))
    check_fixed_point(privacy, worst, cohort_size, releases, "head probe noise", "lower selection.head_rounds")


def dp_split(indices: np.ndarray, fraction: float, seed: int, client: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of a client's probe-train and held-out rows: a text is held out when a hash of (run
    seed, client, its index) falls under ``fraction``, whatever the client's other texts are."""
    idx = np.asarray(indices, dtype=np.uint64)
    key = np.uint64(derived_seed(seed, SPLIT_TAG, client))
    with np.errstate(over="ignore"):  # splitmix64: wraps mod 2^64 by design
        z = idx * np.uint64(0x9E3779B97F4A7C15) + key
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    held = (z >> np.uint64(11)).astype(np.float64) / float(1 << 53) < fraction
    return np.flatnonzero(~held), np.flatnonzero(held)


def dp_rows(f: np.ndarray, clip_norm: float, centre: np.ndarray | None) -> np.ndarray:
    """The rows the layer reads under DP: clipped to ``clip_norm`` (the statistics round's clip), and
    with ``centre`` less that mean and clipped again, so every row's norm stays within it."""
    rows = clip_rows(np.asarray(f, np.float64), clip_norm)  # float64 on: a float32 row could round past the norm
    if centre is None:
        return rows
    return clip_rows(rows - np.asarray(centre, np.float64), clip_norm)


def gradient_blocks(head: Head, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """A client's training-round blocks: its rows' summed cross-entropy gradient at ``head`` (weights
    then bias, flat) and its row count."""
    w, b = np.asarray(head[0], np.float64), np.asarray(head[1], np.float64)
    x = np.asarray(x, np.float64).reshape(-1, w.shape[1])
    logits = x @ w.T + b
    p = np.exp(logits - logits.max(1, keepdims=True, initial=-np.inf))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(x)), np.asarray(y, np.int64)] -= 1.0  # softmax - onehot: d loss / d logits
    return {"g": np.concatenate([(p.T @ x).ravel(), p.sum(0)]), "n": np.array([len(x)], np.float64)}


def report_blocks(head: Head, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """A client's report of ``head`` on its held-out rows: correct predictions and rows."""
    w, b = np.asarray(head[0], np.float32), np.asarray(head[1], np.float32)
    x = np.asarray(x, np.float32).reshape(-1, w.shape[1])
    correct = int(((x @ w.T + b).argmax(1) == np.asarray(y, np.int64)).sum()) if len(x) else 0
    return {"correct": np.array([correct], np.float64), "val_n": np.array([len(x)], np.float64)}


def noised(blocks: Mapping[str, np.ndarray], stds: Mapping[str, float], seed: int) -> dict[str, np.ndarray]:
    """``blocks`` plus this client's noise shares (``seed``: its secret, one per job)."""
    rng = np.random.default_rng(seed)
    return {k: np.asarray(v, np.float64) + rng.normal(0.0, stds[k], size=np.shape(v)) for k, v in blocks.items()}


@dataclass(frozen=True)
class Adam:
    """The server's Adam state of one probe (moments of the flat gradient, steps taken)."""

    m: np.ndarray
    v: np.ndarray
    steps: int = 0

    @staticmethod
    def start(head: Head) -> Adam:
        size = head[0].size + head[1].size
        return Adam(np.zeros(size), np.zeros(size))

    def step(self, head: Head, grad: np.ndarray, spec: HeadSpec, betas: tuple[float, float] = (0.9, 0.999),
             eps: float = 1e-8) -> tuple[Head, Adam]:
        """One AdamW step at ``spec.dp_lr`` (PyTorch's rule: decoupled weight decay, bias-corrected moments)."""
        t = self.steps + 1
        m = betas[0] * self.m + (1 - betas[0]) * grad
        v = betas[1] * self.v + (1 - betas[1]) * grad * grad
        flat = np.concatenate([head[0].ravel(), head[1]]).astype(np.float64) * (1 - spec.dp_lr * spec.weight_decay)
        flat -= spec.dp_lr * (m / (1 - betas[0] ** t)) / (np.sqrt(v / (1 - betas[1] ** t)) + eps)
        c, d = head[0].shape
        return ((flat[: c * d].reshape(c, d).astype(np.float32), flat[c * d:].astype(np.float32)), Adam(m, v, t))


def finish_dp_round(round_: int, head: Head, adam: Adam, total: Mapping[str, np.ndarray], train: bool,
                    spec: HeadSpec) -> tuple[Head, Adam, dict[str, float]]:
    """The server's step from a round's noisy sums: in a training round the mean gradient (the noisy
    count floored at 1) and an Adam step, no report (the point's accuracy is NaN); in the last, the
    held-out accuracy of the layer sent, the noisy ratio clipped to [0, 1]."""
    if train:
        grad = np.asarray(total["g"], np.float64) / max(float(total["n"][0]), 1.0)
        new, adam = adam.step(head, grad, spec)
        return new, adam, {"round": round_, "val_accuracy": float("nan"), "val_loss": float("nan"),
                           "val_examples": 0}
    n = max(float(total["val_n"][0]), 1.0)
    acc = min(max(float(total["correct"][0]) / n, 0.0), 1.0)
    return head, adam, {"round": round_, "val_accuracy": acc, "val_loss": float("nan"), "val_examples": int(round(n))}


def client_blocks(head: Head, f: np.ndarray, y: np.ndarray, indices: np.ndarray, spec: HeadSpec,
                  privacy: PrivacySpec, seed: int, client: int, train: bool, centre: np.ndarray | None
                  ) -> dict[str, np.ndarray]:
    """One client's blocks of a DP round, before noise: its rows (:func:`dp_rows`), split by
    :func:`dp_split`, as gradient blocks (training) or its report (the last round)."""
    rows = dp_rows(f, privacy.clip_norm, centre)
    tr, val = dp_split(indices, spec.val_fraction, seed, client)
    y = np.asarray(y, np.int64)
    return gradient_blocks(head, rows[tr], y[tr]) if train else report_blocks(head, rows[val], y[val])


def zero_blocks(head: Head, train: bool) -> dict[str, np.ndarray]:
    """The blocks of a client with nothing to add (not admitted): zeros, so its noise share still goes up."""
    if train:
        return {"g": np.zeros(head[0].size + head[1].size), "n": np.zeros(1)}
    return {"correct": np.zeros(1), "val_n": np.zeros(1)}


def noise_seed(seed: int, candidate: int, client: int, round_: int, probe: int = 0) -> int:
    """A client's secret noise seed of one job (stands for its own randomness)."""
    return derived_seed(seed, NOISE_TAG, candidate, client, round_, probe)


def simulate_dp(clients: Mapping[int, tuple[np.ndarray, np.ndarray, np.ndarray]], classes: int, spec: HeadSpec,
                seed: int, privacy: PrivacySpec, releases: int, cohort: Sequence[int] | None = None,
                candidate: int = 0, probe: int = 0, frac_bits: int = 16, centre: np.ndarray | None = None
                ) -> list[dict[str, float]]:
    """The DP probe in one process, as the driver's jobs run it: ``clients`` maps a client id to (its
    text indices, its features in that order, their labels); ``cohort`` (default: the clients) every
    member adding its noise share; ``releases``: the run's total, which the budget is split over.
    With ``spec.centre`` the rows are centred on ``centre`` (default: the clipped rows' pooled mean)."""
    cohort = sorted(clients) if cohort is None else list(cohort)
    dims = {np.asarray(f).shape[1] for _, f, _ in clients.values()}
    if len(dims) != 1:
        raise ValueError(f"the clients' features differ in width: {sorted(dims)}")
    if spec.centre and centre is None:
        centre = pooled_mean({c: (i, clip_rows(np.asarray(f, np.float64), privacy.clip_norm), y)
                              for c, (i, f, y) in clients.items()})
    head = init_head(classes, dims.pop(), spec, seed)
    adam, curve = Adam.start(head), []
    for r in range(1, spec.rounds + 2):
        train = r <= spec.rounds
        stds = head_noise_stds(privacy, len(cohort), releases, train)
        parts = []
        for c in cohort:
            if c in clients:
                idx, f, y = clients[c]
                blocks = client_blocks(head, f, y, idx, spec, privacy, seed, c, train, centre if spec.centre else None)
            else:
                blocks = zero_blocks(head, train)
            parts.append(noised(blocks, stds, noise_seed(seed, candidate, c, r, probe)))
        head, adam, point = finish_dp_round(r - 1, head, adam, exact_total(parts, frac_bits), train, spec)
        curve.append(point)
    return curve
