"""Seeded partitioners that split example indices among federated clients.

They follow the semantics of the FedNLP benchmark's partition files (see
``shared/design/FEDNLP_FORMAT.md``), so a partition made here means the same as one
read from a FedNLP ``*_partition.h5`` file. They do no I/O: each returns
``{client_id: sorted int64 array of example indices}``, and the caller writes it out
(``vista.data.fednlp_writer.write_partition_file``).

Every result is disjoint, covers every input index exactly once, gives no client an
empty share, and depends only on the arguments (same seed, same partition).
"""

from __future__ import annotations

import numpy as np

__all__ = ["uniform_partition", "dirichlet_label_partition"]


def _check_inputs(indices: np.ndarray, n_clients: int) -> np.ndarray:
    """Validate common arguments; return the indices as a 1-d int64 array."""
    idx = np.asarray(indices)
    if idx.ndim != 1:
        raise ValueError(f"indices must be 1-d, got shape {idx.shape}")
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"indices must be integers, got dtype {idx.dtype}")
    idx = idx.astype(np.int64, copy=False)
    if len(np.unique(idx)) != len(idx):
        raise ValueError("indices contain duplicates")
    if int(n_clients) != n_clients or n_clients < 1:
        raise ValueError(f"n_clients must be a positive integer, got {n_clients!r}")
    if n_clients > len(idx):
        # Otherwise some client would be empty, which breaks weighted aggregation.
        raise ValueError(f"cannot give {n_clients} clients a non-empty share of {len(idx)} indices")
    return idx


def _client_sizes(n_items: int, n_clients: int) -> np.ndarray:
    """Equal sizes, the remainder spread one each over the first clients (FedNLP)."""
    sizes = np.full(n_clients, n_items // n_clients, dtype=np.int64)
    sizes[: n_items % n_clients] += 1
    return sizes


def _apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """Split the integer ``total`` in proportion to ``weights`` (largest remainder).

    Rounding each share on its own can over- or undershoot ``total``; the largest
    remainder method rounds so that the parts sum to ``total`` exactly. Integer
    weights are split in exact integer arithmetic, so a part never exceeds
    ``ceil(total * w / sum(w))`` (in particular never exceeds ``w`` when
    ``total <= sum(w)``). Ties go to the lower position, so the result is
    deterministic.
    """
    w = np.asarray(weights)
    if total == 0 or w.sum() <= 0:
        return np.zeros(len(w), dtype=np.int64)
    if np.issubdtype(w.dtype, np.integer):
        w = w.astype(np.int64)
        s = int(w.sum())
        base = (total * w) // s
        frac = ((total * w) % s).astype(np.float64)
    else:
        w = w.astype(np.float64)
        exact = total * (w / w.sum())
        base = np.floor(exact).astype(np.int64)
        frac = exact - base
    short = int(total - base.sum())
    if short > 0:
        base[np.argsort(-frac, kind="stable")[:short]] += 1
    elif short < 0:  # float round-off only: take back from the smallest remainders
        for k in np.argsort(frac, kind="stable"):
            if short == 0:
                break
            if base[k] > 0:
                base[k] -= 1
                short += 1
    return base


def uniform_partition(indices: np.ndarray, n_clients: int, seed: int) -> dict[int, np.ndarray]:
    """IID split: shuffle the indices with ``seed``, cut into near-equal chunks.

    This is FedNLP's ``uniform`` partition, the IID baseline that the non-IID ones are
    compared against. Chunk sizes differ by at most one.
    """
    idx = _check_inputs(indices, n_clients)
    shuffled = np.random.default_rng(seed).permutation(idx)
    sizes = _client_sizes(len(idx), n_clients)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return {c: np.sort(shuffled[bounds[c] : bounds[c + 1]]) for c in range(n_clients)}


def _draw_proportions(rng: np.random.Generator, concentration: np.ndarray, p: np.ndarray) -> np.ndarray:
    """One draw of ``Dir(concentration)``, robust to underflow at tiny alpha.

    With very small concentrations every gamma variate can underflow to zero and the
    draw comes out NaN; such a draw is (in the limit) a single label, so fall back to
    a one-hot vector on a label drawn from the global distribution ``p``.
    """
    q = rng.dirichlet(concentration)
    if not np.all(np.isfinite(q)) or q.sum() <= 0:
        q = np.zeros(len(p))
        q[rng.choice(len(p), p=p)] = 1.0
    return q


def dirichlet_label_partition(
    indices: np.ndarray,
    labels: np.ndarray,
    n_clients: int,
    alpha: float,
    seed: int,
) -> dict[int, np.ndarray]:
    """Label-skewed split: each client's label mix is drawn from ``Dir(alpha * p)``.

    FedNLP's ``niid_label_clients=<n>_alpha=<alpha>`` partition, which simulates
    clients whose data covers only a few labels. ``p`` is the global label
    distribution; clients get equal sizes (``len // n_clients``, remainder over the
    first clients). Client ``k`` (in order) draws ``q ~ Dir(alpha * p)`` and takes
    ``round(q_c * size)`` examples of label ``c`` (rounded so the counts sum to its
    size); where a label's pool has fewer left, it takes what is left and fills the
    rest from the remaining labels in proportion to what remains of each. The pools
    always hold exactly as many examples as the remaining clients need, so this never
    loops or runs short. Small alpha (0.1) leaves most clients with one or two labels;
    large alpha (10+) approaches the IID split.

    ``labels[i]`` is the label of ``indices[i]``; labels may be any sortable values.
    """
    idx = _check_inputs(indices, n_clients)
    lab = np.asarray(labels)
    if lab.shape != idx.shape:
        raise ValueError(f"labels shape {lab.shape} does not match indices shape {idx.shape}")
    if not (np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a positive finite number, got {alpha!r}")

    rng = np.random.default_rng(seed)
    classes, inverse, counts = np.unique(lab, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    p = counts / counts.sum()
    # One shuffled pool per label; clients take from the front of each pool.
    pools = [rng.permutation(idx[inverse == k]) for k in range(len(classes))]
    taken = np.zeros(len(classes), dtype=np.int64)

    result: dict[int, np.ndarray] = {}
    for client, size in enumerate(_client_sizes(len(idx), n_clients)):
        q = _draw_proportions(rng, alpha * p, p)
        want = _apportion(int(size), q)
        left = counts - taken
        take = np.minimum(want, left)
        deficit = int(size - take.sum())
        if deficit:
            # Fill from what remains of each label, in proportion; never exceeds it.
            take += _apportion(deficit, left - take)
        parts = [pools[k][taken[k] : taken[k] + take[k]] for k in range(len(classes))]
        taken += take
        assert int(take.sum()) == size and np.all(taken <= counts)  # by construction
        result[client] = np.sort(np.concatenate(parts)).astype(np.int64, copy=False)
    return result
