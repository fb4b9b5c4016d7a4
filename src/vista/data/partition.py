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

__all__ = [
    "dirichlet_label_partition",
    "dirichlet_quantity_partition",
    "kmeans_partition",
    "natural_partition",
    "uniform_partition",
]


def _check_inputs(indices: np.ndarray, n_clients: int, allow_empty: bool = False) -> np.ndarray:
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
    if n_clients > len(idx) and not allow_empty:
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


def uniform_partition(
    indices: np.ndarray, n_clients: int, seed: int, allow_empty: bool = False
) -> dict[int, np.ndarray]:
    """IID split: shuffle the indices with ``seed``, cut into near-equal chunks.

    This is FedNLP's ``uniform`` partition, the IID baseline that the non-IID ones are
    compared against. Chunk sizes differ by at most one. ``allow_empty`` permits fewer
    indices than clients (for clients' local test lists, where an empty one is harmless).
    """
    idx = _check_inputs(indices, n_clients, allow_empty)
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


def dirichlet_quantity_partition(
    indices: np.ndarray,
    n_clients: int,
    beta: float,
    seed: int,
    min_size: int = 1,
) -> dict[int, np.ndarray]:
    """Quantity-skewed split: client sizes are ``Dir(beta)`` shares, labels IID.

    FedNLP's ``niid_quantity_clients=<n>_beta=<beta>`` partition. The indices are
    shuffled with ``seed`` and cut into consecutive chunks whose sizes follow one draw
    of ``Dir(beta * 1)``. Every client first gets ``min_size`` examples; the
    remainder is apportioned by the Dirichlet shares (largest remainder, so the sizes
    sum exactly). There is no retry loop (FedNLP's can spin forever at small beta).
    Small beta gives a few large clients and many tiny ones; large beta near-equal sizes.
    """
    idx = _check_inputs(indices, n_clients)
    if not (np.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a positive finite number, got {beta!r}")
    if int(min_size) != min_size or min_size < 1:
        raise ValueError(f"min_size must be a positive integer, got {min_size!r}")
    if n_clients * min_size > len(idx):
        raise ValueError(
            f"cannot give {n_clients} clients at least {min_size} of {len(idx)} indices each"
        )
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(idx)
    uniform = np.full(n_clients, 1.0 / n_clients)
    q = _draw_proportions(rng, np.full(n_clients, float(beta)), uniform)
    sizes = int(min_size) + _apportion(len(idx) - n_clients * int(min_size), q)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return {c: np.sort(shuffled[bounds[c] : bounds[c + 1]]) for c in range(n_clients)}


def natural_partition(indices: np.ndarray, groups: np.ndarray) -> dict[int, np.ndarray]:
    """One client per distinct value of ``groups`` (e.g. author or user id).

    ``groups[i]`` is the group of ``indices[i]``; client ``k`` holds the examples of
    the ``k``-th distinct group value in sorted order. Needs no seed.
    """
    idx = np.asarray(indices)
    grp = np.asarray(groups)
    if grp.shape != idx.shape:
        raise ValueError(f"groups shape {grp.shape} does not match indices shape {idx.shape}")
    if idx.size == 0:
        raise ValueError("natural_partition needs at least one index")
    idx = _check_inputs(idx, 1)
    _, inverse = np.unique(grp, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    cuts = np.flatnonzero(np.diff(inverse[order])) + 1
    return {c: np.sort(part) for c, part in enumerate(np.split(idx[order], cuts))}


def _kmeans_pp_init(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding; when all remaining points coincide with centres, pick uniformly."""
    n = len(x)
    centres = np.empty((k, x.shape[1]), dtype=np.float64)
    centres[0] = x[rng.integers(n)]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for j in range(1, k):
        total = d2.sum()
        pick = rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)
        centres[j] = x[pick]
        d2 = np.minimum(d2, ((x - centres[j]) ** 2).sum(1))
    return centres


def _sq_dists(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    d = (x * x).sum(1)[:, None] - 2.0 * x @ centres.T + (centres * centres).sum(1)[None, :]
    return np.maximum(d, 0.0)


def kmeans_partition(
    embeddings: np.ndarray,
    indices: np.ndarray,
    n_clients: int,
    seed: int,
    max_iter: int = 100,
) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Label-free split: k-means on L2-normalised embeddings; client = cluster.

    FedNLP's ``kmeans_clusters=<n>`` partition. ``embeddings[i]`` is the sentence
    embedding of ``indices[i]``. Lloyd's algorithm with k-means++ initialisation, all
    randomness from ``seed``. Returns ``(clients, assignment)`` where
    ``assignment[i]`` is the cluster (= client id) of ``indices[i]`` (FedNLP's
    ``client_assignment``).

    Empty clusters: during the iterations an empty cluster is re-seeded with the point
    farthest from its current centre; after the last iteration any cluster still empty
    (possible with duplicate points) takes the point farthest from its centre among
    clusters holding more than one point. So no client is ever empty (this needs
    ``n_clients <= len(indices)``, checked).
    """
    idx = _check_inputs(indices, n_clients)
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(idx):
        raise ValueError(f"embeddings shape {x.shape} does not match {len(idx)} indices")
    if not np.all(np.isfinite(x)):
        raise ValueError("embeddings contain NaN or inf")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms > 0, norms, 1.0)
    k = int(n_clients)
    rng = np.random.default_rng(seed)
    centres = _kmeans_pp_init(x, k, rng)
    assign = np.full(len(x), -1, dtype=np.int64)
    for _ in range(max_iter):
        d = _sq_dists(x, centres)
        new = d.argmin(1)
        counts = np.bincount(new, minlength=k)
        taken: set[int] = set()
        for c in np.flatnonzero(counts == 0):
            own = d[np.arange(len(x)), new].copy()
            if taken:
                own[list(taken)] = -1.0
            far = int(own.argmax())
            taken.add(far)
            centres[c] = x[far]
        if (counts == 0).any():
            continue
        if np.array_equal(new, assign):
            break
        assign = new
        for c in range(k):
            centres[c] = x[assign == c].mean(0)
    assign = _sq_dists(x, centres).argmin(1)
    # Final guarantee: no empty cluster.
    for c in range(k):
        counts = np.bincount(assign, minlength=k)
        if counts[c] > 0:
            continue
        own = ((x - centres[assign]) ** 2).sum(1)
        own[counts[assign] <= 1] = -1.0
        assign[int(own.argmax())] = c
    assign = assign.astype(np.int64)
    clients = {c: np.sort(idx[assign == c]) for c in range(k)}
    return clients, assign
