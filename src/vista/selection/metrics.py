"""Transferability scores as pure functions of merged :class:`SufficientStats`.

Each score here depends on the data only through the additive statistics, so scoring the
server's sum of client statistics gives the score of the pooled data (up to float64
rounding, ~1e-10 relative). Higher is better for every score.

Conventions shared by all scores: ``mu = s / N`` is the pooled mean; covariances are the
population (1/N) ones unless said otherwise; classes with no example (``n_c = 0``) are
skipped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vista.selection.stats import SufficientStats

__all__ = [
    "avg_logme",
    "gbc",
    "hscore",
    "ledoit_wolf",
    "logme",
    "reg_hscore",
    "transrate",
]

_LOGME_MAX_ITER = 11
_LOGME_TOL = 1e-3


# --------------------------------------------------------------------------- helpers
def _mean(stats: SufficientStats) -> np.ndarray:
    if stats.n < 1:
        raise ValueError("statistics of zero examples cannot be scored")
    return stats.s / stats.n


def _centred_gram(stats: SufficientStats) -> np.ndarray:
    """``sum_i (f_i - mu)(f_i - mu)^T = G - N mu mu^T``."""
    mu = _mean(stats)
    return stats.G - stats.n * np.outer(mu, mu)


def _class_means(stats: SufficientStats) -> tuple[np.ndarray, np.ndarray]:
    """(present class indices, D x C' matrix of their means)."""
    present = np.flatnonzero(stats.counts > 0)
    return present, stats.B[:, present] / stats.counts[present]


def _require_per_class(stats: SufficientStats, name: str) -> None:
    if stats.Gc is None:
        raise ValueError(
            f"{name} needs per-class Gram matrices: build the statistics with per_class=True"
        )


# --------------------------------------------------------------------------- LogME
def _logme_class(sig2, sig, z, r0, n, d) -> float:
    """Maximum evidence / N of one binary target (You et al. 2021, Algorithm 1).

    ``sig2``: the nonzero eigenvalues of G, ``z = V^T F^T t / sigma``, ``r0 = t^T t -
    ||z||^2``. As in the authors' code, the evidence uses the final ``alpha, beta`` with the
    ``m^2`` and ``res`` of the last iteration.
    """
    alpha, beta = 1.0, 1.0
    lam = alpha / beta
    for _ in range(_LOGME_MAX_ITER):
        denom = alpha + beta * sig2
        gamma = float(np.sum(beta * sig2 / denom))
        m2 = float(np.sum((beta * sig * z / denom) ** 2))
        res = float(np.sum((alpha * z / denom) ** 2) + r0)
        if m2 <= 0.0 or res <= 0.0:  # the target is fit exactly (or not at all): no finite evidence
            return float("nan")
        alpha = gamma / m2
        beta = (n - gamma) / res
        if not (alpha > 0.0 and beta > 0.0):  # gamma = N: as many effective dims as examples
            return float("nan")
        new_lam = alpha / beta
        if abs(new_lam - lam) / lam < _LOGME_TOL:
            break
        lam = new_lam
    log_det = float(np.sum(np.log(alpha + beta * sig2))) + (d - sig2.size) * np.log(
        alpha
    )
    evidence = (
        n / 2.0 * np.log(beta)
        + d / 2.0 * np.log(alpha)
        - n / 2.0 * np.log(2.0 * np.pi)
        - beta / 2.0 * res
        - alpha / 2.0 * m2
        - 0.5 * log_det
    )
    return float(evidence / n)


def logme(stats: SufficientStats) -> float:
    """LogME (You et al., ICML 2021) from ``G, B, n_c, N`` exactly as SELECTION.md specifies.

    ``G = V diag(sigma^2) V^T`` (eigenvalues below ``max * D * eps`` count as zero);
    per class ``c`` with target ``t = 1[y = c]``: ``z = V^T B[:, c] / sigma``, ``r0 = n_c -
    ||z||^2``, then the fixed-point iteration on ``alpha, beta`` (at most 11 steps, stop when
    ``alpha/beta`` moves < 1e-3 relative) and the evidence / N. The score is the mean over
    the classes present. Features are not centred (as in the paper).
    """
    n, d = stats.n, stats.dim
    if n < 1:
        raise ValueError("statistics of zero examples cannot be scored")
    evals, vecs = np.linalg.eigh(stats.G)
    evals = np.clip(evals, 0.0, None)
    keep = evals > evals.max() * d * np.finfo(np.float64).eps
    sig2 = evals[keep]
    sig = np.sqrt(sig2)
    vk = vecs[:, keep]
    scores = []
    for c in np.flatnonzero(stats.counts > 0):
        z = (vk.T @ stats.B[:, c]) / sig
        r0 = max(float(stats.counts[c]) - float(z @ z), 0.0)  # a residual: >= 0 but for rounding
        scores.append(_logme_class(sig2, sig, z, r0, n, d))
    return float(np.mean(scores))


def avg_logme(client_stats: Sequence[SufficientStats]) -> float:
    """Naive federated baseline: example-weighted mean of per-client LogME (not exact)."""
    client_stats = [s for s in client_stats if s.n > 0]
    if not client_stats:
        raise ValueError("avg_logme needs at least one client with examples")
    weights = np.array([s.n for s in client_stats], dtype=np.float64)
    scores = np.array([logme(s) for s in client_stats])
    return float(weights @ scores / weights.sum())


# --------------------------------------------------------------------------- H-scores
def _between_class_cov(stats: SufficientStats) -> np.ndarray:
    """``sum_c n_c (mu_c - mu)(mu_c - mu)^T`` (unnormalised scatter of the class means)."""
    mu = _mean(stats)
    present, means = _class_means(stats)
    diff = means - mu[:, None]
    return (diff * stats.counts[present]) @ diff.T


def hscore(stats: SufficientStats) -> float:
    """H-score (Bao et al. 2019): ``tr(pinv(cov f) cov(E[f | y]))``.

    ``cov f = (G - N mu mu^T) / N``, ``cov(E[f|y]) = sum_c n_c (mu_c - mu)(mu_c - mu)^T / N``
    with ``mu_c = B[:, c] / n_c``; pinv with ``rcond = 1e-15`` as in the reference code.
    The normalisation (1/N or 1/(N-1)) cancels in the ratio.
    """
    n = stats.n
    cov_f = _centred_gram(stats) / n
    cov_g = _between_class_cov(stats) / n
    return float(np.trace(np.linalg.pinv(cov_f, rcond=1e-15) @ cov_g))


def ledoit_wolf(stats: SufficientStats) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf shrunk covariance and shrinkage of the pooled features, from statistics.

    Reproduces ``sklearn.covariance.LedoitWolf(assume_centered=False)``: with ``S`` the
    centred Gram, ``emp = S / N``, ``m = tr(emp) / D``, the shrinkage needs the centred
    fourth moment ``sum_i ||f_i - mu||^4``, which expands into ``sq4, q, G, s``:
    ``sq4 - 4 q.mu + 4 mu^T G mu + 2 |mu|^2 tr G - 4 |mu|^2 s.mu + N |mu|^4``.
    Returns ``((1 - a) emp + a m I, a)``.
    """
    n, d = stats.n, stats.dim
    mu = _mean(stats)
    S = _centred_gram(stats)
    emp = S / n
    c = float(mu @ mu)
    fourth = (
        stats.sq4
        - 4.0 * float(stats.q @ mu)
        + 4.0 * float(mu @ stats.G @ mu)
        + 2.0 * c * float(np.trace(stats.G))
        - 4.0 * c * float(stats.s @ mu)
        + n * c * c
    )
    trace = float(np.trace(emp))
    m = trace / d
    if d == 1:
        shrink = 0.0
    else:
        delta_ = float(np.sum(S * S)) / n**2
        beta = (fourth / n - delta_) / (d * n)
        delta = (delta_ - 2.0 * m * trace + d * m * m) / d
        beta = min(beta, delta)
        shrink = 0.0 if beta == 0 else beta / delta
    return (1.0 - shrink) * emp + shrink * m * np.eye(d), float(shrink)


def reg_hscore(stats: SufficientStats) -> float:
    """Regularised H-score (Ibrahim et al. 2022), as in the authors' code:

    ``tr(pinv(cov_LW) (1 - a) cov_g)`` with ``cov_LW, a`` the Ledoit-Wolf shrunk covariance
    and shrinkage of the features (1/N normalisation, sklearn's) and ``cov_g`` the
    ``np.cov`` (1/(N-1)) covariance of the per-example class means
    ``sum_c n_c (mu_c - mu)(mu_c - mu)^T / (N - 1)``.
    """
    n = stats.n
    if n < 2:
        raise ValueError("reg_hscore needs at least 2 examples")
    cov_lw, shrink = ledoit_wolf(stats)
    cov_g = _between_class_cov(stats) / (n - 1)
    return float(
        np.trace(np.linalg.pinv(cov_lw, rcond=1e-15) @ ((1.0 - shrink) * cov_g))
    )


# --------------------------------------------------------------------------- TransRate
def _coding_rate(gram: np.ndarray, n: float, eps: float) -> float:
    """``R(Z) = 1/2 logdet(I + D / (n eps^2) Z^T Z)`` for a Z of n rows with ``Z^T Z = gram``."""
    d = gram.shape[0]
    sign, logdet = np.linalg.slogdet(np.eye(d) + d / (n * eps * eps) * gram)
    if sign <= 0:
        raise ValueError(
            "coding rate: non-positive determinant (numerically broken Gram)"
        )
    return 0.5 * float(logdet)


def transrate(stats: SufficientStats, eps: float = 1e-4) -> float:
    """TransRate (Huang et al., ICML 2022): ``R(Z) - sum_c (n_c / N) R(Z_c)``.

    Form used (the paper's, eq. for the coding rate of Ma et al. 2007):
    ``R(Z) = 1/2 logdet(I_D + D / (n eps^2) Z^T Z)`` with n the rows of Z; ``Z`` is the
    features centred by the *pooled* mean ``mu`` (the class subsets ``Z_c`` too: they are
    not re-centred on their own mean, as in the authors' code). The centred Grams are
    ``G - N mu mu^T`` and ``G_c - B_c mu^T - mu B_c^T + n_c mu mu^T``. The authors' released
    code differs: it uses ``1 / (n eps)`` in place of ``D / (n eps^2)`` and averages the
    class rates uniformly (1/C) instead of with ``n_c / N``. Needs ``per_class=True``.
    """
    _require_per_class(stats, "transrate")
    n = stats.n
    mu = _mean(stats)
    rate = _coding_rate(_centred_gram(stats), n, eps)
    mm = np.outer(mu, mu)
    for c in np.flatnonzero(stats.counts > 0):
        nc = float(stats.counts[c])
        bm = np.outer(stats.B[:, c], mu)
        gram_c = stats.Gc[c] - bm - bm.T + nc * mm
        rate -= nc / n * _coding_rate(gram_c, nc, eps)
    return float(rate)


# --------------------------------------------------------------------------- GBC
def gbc(stats: SufficientStats, gaussian_type: str = "diagonal") -> float:
    """Gaussian Bhattacharyya Coefficient (Pandy et al., CVPR 2022).

    Each present class is a Gaussian with mean ``mu_c = B[:, c] / n_c`` and *diagonal*
    covariance ``var_c = diag(G_c) / n_c - mu_c^2`` (population variance, as
    ``tf.math.reduce_variance`` in the authors' code), or with ``gaussian_type="spherical"``
    ``var_c`` replaced by its mean over dimensions. For each ordered pair ``c != c'``,
    ``D_B = 1/8 sum (mu_c - mu_c')^2 / v + 1/2 (sum log v - 1/2 sum log var_c - 1/2 sum log
    var_c')`` with ``v = (var_c + var_c') / 2``; ``GBC = -sum_{c != c'} exp(-D_B)``.

    The paper first projects the features onto a global PCA basis: federated, that is two
    rounds (:func:`pca_basis` of the merged round-1 statistics, then every client's statistics
    of its projected features, scored here). Variances are floored at 1e-10 of the largest
    mean class variance, so a constant dimension does not make the score NaN.
    Needs ``per_class=True`` (only the diagonals of ``G_c`` are read).
    """
    if gaussian_type not in ("diagonal", "spherical"):
        raise ValueError(
            f"gaussian_type must be 'diagonal' or 'spherical', got {gaussian_type!r}"
        )
    _require_per_class(stats, "gbc")
    present, means = _class_means(stats)
    nc = stats.counts[present].astype(np.float64)
    diag = np.einsum("cii->ci", stats.Gc[present])  # (C', D)
    var = diag / nc[:, None] - (means.T) ** 2
    if gaussian_type == "spherical":
        var = np.repeat(var.mean(axis=1, keepdims=True), stats.dim, axis=1)
    var = np.maximum(var, 1e-10 * max(float(var.mean(axis=1).max()), np.finfo(float).tiny))
    logvar = np.log(var)
    total = 0.0
    k = present.size
    for i in range(k):
        for j in range(k):
            if i == j:
                continue
            v = 0.5 * (var[i] + var[j])
            first = float(np.sum((means[:, i] - means[:, j]) ** 2 / v)) / 8.0
            second = (
                float(np.sum(np.log(v)))
                - 0.5 * float(np.sum(logvar[i]))
                - 0.5 * float(np.sum(logvar[j]))
            )
            total += float(np.exp(-(first + 0.5 * second)))
    return -total


GBC_PCA_DIM = 64  # the paper's PCA dimension


def pca_basis(stats: SufficientStats, k: int = GBC_PCA_DIM) -> np.ndarray:
    """(D, min(k, D)) orthonormal top-k principal directions of the pooled features, from the
    merged statistics (round 1 of federated GBC). Each direction's sign is fixed (largest
    component positive) so every client projects alike; GBC does not depend on the signs."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    cov = _centred_gram(stats) / max(stats.n, 1)
    w, v = np.linalg.eigh((cov + cov.T) / 2)
    order = np.argsort(w)[::-1][: min(k, stats.dim)]
    basis = v[:, order]
    flip = np.sign(basis[np.argmax(np.abs(basis), axis=0), np.arange(basis.shape[1])])
    return basis * np.where(flip == 0, 1.0, flip)
