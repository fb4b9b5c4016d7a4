"""Transferability scores as pure functions of merged :class:`SufficientStats`.

Each score here depends on the data only through the additive statistics, so scoring the
server's sum of client statistics gives the score of the pooled data (to ~1e-10 relative).
Higher is better for every score; each is registered in :data:`vista.selection.scores.SCORES`
with the statistics it needs.

Conventions shared by all scores: ``mu`` is the pooled mean; covariances are the population
(1/N) ones unless said otherwise; classes with no example (``n_c = 0``) are skipped.

Numerical robustness (every score is finite for N >= 2 examples of >= 2 classes: N < D,
duplicate or constant features, an exact fit, one-class clients, features of norm ~1e4):

* centred quantities come from the shifted sums (:meth:`SufficientStats.centred`), never
  from ``G - N mu mu^T`` of raw features (see :mod:`vista.selection.stats`);
* a symmetric matrix's eigenvalues at or below its rounding noise (``4 D eps`` times
  ``sum ||f||^2``, :func:`spectrum`; shift-independent, and above the float32 rounding of
  the encoders' features) count as exactly zero: a null direction (N < D, a duplicate
  column) is then null in the federated and in the pooled sum alike, instead of a +-1e-17
  that the scores' inverses and logarithms blow up differently;
* each score keeps its paper's own regularisation: LogME's ``epsilon = 1e-5`` in its fixed
  point (You et al.'s code), TransRate's ``eps`` in the coding rate, Ledoit-Wolf shrinkage in
  the regularised H-score; GBC's per-class variances are floored.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vista.selection.scores import score
from vista.selection.stats import SufficientStats

__all__ = ["GBC_PCA_DIM", "LOGME_EPSILON", "avg_logme", "gbc", "hscore", "hscore_caveat", "hscore_chance", "ledoit_wolf", "local_logme", "logme",
           "pca_basis", "reg_hscore", "spectrum", "transrate"]

_EPS = np.finfo(np.float64).eps
_NOISE = 4.0  # eigenvalues <= _NOISE * D * eps * (trace of what was summed) are rounding noise
_LOGME_MAX_ITER = 11
_LOGME_TOL = 1e-3
LOGME_EPSILON = 1e-5  # You et al.'s code: added to m^2 and to the residual (fixed point and evidence)
GBC_PCA_DIM = 64  # the paper's PCA dimension


# --------------------------------------------------------------------------- helpers
def _check(stats: SufficientStats) -> None:
    if stats.n < 1:
        raise ValueError("statistics of zero examples cannot be scored")


def spectrum(m: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """``eigh`` of a symmetric PSD matrix of features whose ``sum ||f||^2`` is ``scale``:
    eigenvalues at or below the rounding noise ``4 D eps max(scale, |w|_max)`` are set to
    exactly 0 (negative ones included)."""
    w, v = np.linalg.eigh((m + m.T) * 0.5)
    top = float(np.max(np.abs(w), initial=0.0))
    floor = _NOISE * m.shape[0] * _EPS * max(float(scale), top)
    return np.where(w > floor, w, 0.0), v


def _between(stats: SufficientStats) -> np.ndarray:
    """``sum_c n_c (mu_c - mu)(mu_c - mu)^T`` (unnormalised scatter of the class means), from
    the shifted sums: ``mu_c - mu = B_c / n_c - s / N`` whatever the shift."""
    present = np.flatnonzero(stats.counts > 0)
    diff = stats.B[:, present] / stats.counts[present] - stats.offset()[:, None]
    return (diff * stats.counts[present]) @ diff.T


def _trace_ratio(cov: np.ndarray, scale: float, between: np.ndarray) -> float:
    """``tr(pinv(cov) between)`` over the numerically nonzero spectrum of ``cov``."""
    w, v = spectrum(cov, scale)
    keep = w > 0
    proj = np.einsum("ij,jk,ki->i", v[:, keep].T, between, v[:, keep])
    return float(np.sum(proj / w[keep]))


def _require_per_class(stats: SufficientStats, name: str) -> None:
    if stats.Gc is None:
        raise ValueError(f"{name} needs per-class Gram matrices: build the statistics with per_class=True")


# --------------------------------------------------------------------------- LogME
def _logme_class(sig2: np.ndarray, z: np.ndarray, r0: float, n: int) -> float:
    """Maximum evidence / N of one binary target (You et al. 2021, Algorithm 1, with the
    ``epsilon`` of their code), in a form without cancellations.

    ``sig2``: the r nonzero eigenvalues of ``F^T F``; ``z = V^T F^T t / sigma``; ``r0 = t^T t
    - ||z||^2``. Every quantity depends on ``lam = alpha / beta`` only through ``sig2 + lam``;
    ``N - gamma`` is summed as ``(N - r) + sum lam / (sig2 + lam)`` (no cancellation when the
    features fit the target, r = N), and ``D/2 log alpha - 1/2 sum_D log(alpha + beta
    sigma^2)`` as ``-1/2 sum_r log1p(sigma^2 / lam)`` (the zero eigenvalues cancel exactly).
    As in the authors' code, the evidence uses the final ``alpha, beta`` with the ``m^2`` and
    residual of the last iteration.
    """
    eps = LOGME_EPSILON
    r = sig2.size
    alpha, beta, m2, res = 0.0, n / (r0 + eps), 0.0, r0
    if r:
        lam = 1.0
        for _ in range(_LOGME_MAX_ITER):
            denom = sig2 + lam
            gamma = float(np.sum(sig2 / denom))
            rest = float(n - r) + float(np.sum(lam / denom))  # N - gamma
            m2 = float(np.sum(sig2 * (z / denom) ** 2))
            res = float(np.sum((lam * z / denom) ** 2)) + r0
            alpha, beta = gamma / (m2 + eps), rest / (res + eps)
            new_lam = alpha / beta
            converged = abs(new_lam - lam) < _LOGME_TOL * lam
            lam = new_lam
            if converged:
                break
    log_det = float(np.sum(np.log1p(sig2 / (alpha / beta)))) if r else 0.0
    evidence = (n / 2.0 * np.log(beta) - n / 2.0 * np.log(2.0 * np.pi) - beta / 2.0 * (res + eps)
                - alpha / 2.0 * (m2 + eps) - 0.5 * log_det)
    return float(evidence / n)


@score("logme")
def logme(stats: SufficientStats) -> float:
    """LogME (You et al., ICML 2021) of the uncentred features, from ``G, s, B, n_c, N``.

    ``F^T F = S + N mu mu^T`` (``S`` the centred scatter) is factored as ``R^T R`` with
    ``R = [sqrt(N) mu^T; Lambda^1/2 W^T]`` (``S = W Lambda W^T``, noise eigenvalues zeroed),
    and the singular values and right vectors of ``R`` give ``sigma`` and ``V``: halving the
    dynamic range keeps the small ``sigma`` accurate when ``|mu|`` dwarfs the spread. The
    ``sigma^2`` at or below :func:`spectrum`'s noise floor count as zero (a mean inside the
    span of the spread leaves one). Per
    class ``c`` with target ``t = 1[y = c]``: ``z = V^T F^T t / sigma``, ``r0 = n_c - ||z||^2``,
    then :func:`_logme_class`. The score is the mean over the classes present.
    """
    _check(stats)
    n = stats.n
    mu, bf = stats.uncentred()
    power = stats.power()
    lam, w = spectrum(stats.centred(), power)
    keep = lam > 0
    r = np.vstack([np.sqrt(float(n)) * mu[None, :], np.sqrt(lam[keep])[:, None] * w[:, keep].T])
    _, sig, vt = np.linalg.svd(r, full_matrices=False)
    # the same noise floor as spectrum's, on the eigenvalues sigma^2 of F^T F
    floor = _NOISE * stats.dim * _EPS * max(power, float(np.max(sig, initial=0.0)) ** 2)
    ok = sig * sig > floor
    sig, vt = sig[ok][:n], vt[ok][:n]  # rank(F) <= N
    scores = []
    for c in np.flatnonzero(stats.counts > 0):
        z = (vt @ bf[:, c]) / sig
        r0 = max(float(stats.counts[c]) - float(z @ z), 0.0)  # a residual: >= 0 but for rounding
        scores.append(_logme_class(sig * sig, z, r0, n))
    return float(np.mean(scores))


def local_logme(stats: SufficientStats) -> float | None:
    """A client's own LogME (the naive baselines' vote): ``None`` when it holds fewer than 2
    classes (one-class LogME says nothing about the classification task) or no finite value."""
    if stats.n < 2 or np.count_nonzero(stats.counts) < 2:
        return None
    with np.errstate(all="ignore"):
        v = logme(stats)
    return v if np.isfinite(v) else None


def avg_logme(client_stats: Sequence[SufficientStats]) -> float:
    """Naive federated baseline: example-weighted mean of per-client LogME (not exact), over
    the clients with a LogME (:func:`local_logme`)."""
    votes = [(v, s.n) for s in client_stats if (v := local_logme(s)) is not None]
    if not votes:
        raise ValueError("avg_logme needs at least one client with examples of 2 classes")
    w = np.array([n for _, n in votes], dtype=np.float64)
    return float(w @ np.array([v for v, _ in votes]) / w.sum())


# --------------------------------------------------------------------------- H-scores
HSCORE_WIDTH_WARNING = 0.5  # a caveat once random labels would reach this share of H-score's maximum C - 1


def _rank_and_classes(stats: SufficientStats) -> tuple[int, int]:
    """The numerical rank of the centred features (:func:`spectrum`) and the classes present."""
    w, _ = spectrum(stats.centred(), stats.power())
    return int(np.count_nonzero(w)), int(np.count_nonzero(stats.counts > 0))


def hscore_chance(stats: SufficientStats) -> float:
    """The H-score that labels drawn at random get on average: ``(C - 1) r / (N - 1)``, with
    ``r`` the numerical rank of the centred features and ``C`` the classes present (the same
    class counts, every assignment of them to the examples equally likely).

    Why: whitened, the centred features ``z_i`` have ``sum_i z_i z_i^T = N P`` (``P`` the
    projection on their r-dim span), and ``H = sum_c ||sum_{i in c} z_i||^2 / (N n_c)``. A
    random class is a sample of ``n_c`` of the ``z_i`` without replacement, so ``E ||sum||^2 =
    n_c (N - n_c) r / (N - 1)``; summed over the classes, ``r (C - 1) / (N - 1)``. At ``r = N - 1``
    (N <= D, features in general position) *every* labelling scores ``C - 1`` exactly: the
    score is saturated and ranks candidates by feature width, not by what they know.
    """
    _check(stats)
    if stats.n < 2:
        return float("nan")
    return _chance(*_rank_and_classes(stats), stats.n)


def _chance(rank: int, classes: int, n: int) -> float:
    return (classes - 1) * rank / (n - 1)


def hscore_caveat(stats: SufficientStats) -> str | None:
    """H-score's caveat (:data:`HSCORE_WIDTH_WARNING`): saturated, or mostly feature width."""
    if stats.n < 2:
        return None
    r, c = _rank_and_classes(stats)
    if c < 2 or r < HSCORE_WIDTH_WARNING * (stats.n - 1):
        return None
    if r >= stats.n - 1:
        return (f"saturated: the features' rank {r} reaches N - 1 = {stats.n - 1} (no more texts than "
                f"feature dimensions), so any labels score C - 1 = {c - 1}: the value says nothing about "
                "this candidate; score on more texts than dimensions, or set selection.project_dim")
    return (f"random labels would score {_chance(r, c, stats.n):.3f} of at most {c - 1} (feature rank {r} "
            f"of N - 1 = {stats.n - 1}): the value is mostly the feature width; score on more texts than "
            "dimensions, or set selection.project_dim")


@score("hscore", caveat=hscore_caveat)
def hscore(stats: SufficientStats) -> float:
    """H-score (Bao et al. 2019): ``tr(pinv(cov f) cov(E[f | y]))``.

    ``cov f`` is the centred scatter / N, ``cov(E[f|y]) = sum_c n_c (mu_c - mu)(mu_c - mu)^T
    / N``; the pseudo-inverse is over the numerically nonzero spectrum (:func:`spectrum`).
    The normalisation (1/N or 1/(N-1)) cancels in the ratio.
    """
    _check(stats)
    return _trace_ratio(stats.centred(), stats.power(), _between(stats))


def ledoit_wolf(stats: SufficientStats) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf shrunk covariance and shrinkage of the pooled features, from statistics.

    Reproduces ``sklearn.covariance.LedoitWolf(assume_centered=False)``: with ``S`` the
    centred scatter, ``emp = S / N``, ``m = tr(emp) / D``, the shrinkage needs the centred
    fourth moment ``sum_i ||f_i - mu||^4``, which expands (with ``d = mu - shift`` and the
    shifted ``sq4, q, G, s``) into ``sq4 - 4 q.d + 4 d^T G d + 2 |d|^2 tr G - 4 |d|^2 s.d +
    N |d|^4``. Returns ``((1 - a) emp + a m I, a)``; ``a = 0`` when ``emp`` is already
    isotropic (sklearn would divide by zero there).
    """
    _check(stats)
    n, d = stats.n, stats.dim
    off = stats.offset()
    S = stats.centred()
    emp = S / n
    c = float(off @ off)
    fourth = (stats.sq4 - 4.0 * float(stats.q @ off) + 4.0 * float(off @ stats.G @ off)
              + 2.0 * c * float(np.trace(stats.G)) - 4.0 * c * float(stats.s @ off) + n * c * c)
    trace = float(np.trace(emp))
    m = trace / d
    shrink = 0.0
    if d > 1:
        delta_ = float(np.sum(S * S)) / n**2
        beta = (fourth / n - delta_) / (d * n)
        delta = (delta_ - 2.0 * m * trace + d * m * m) / d
        beta = min(beta, delta)
        shrink = 0.0 if beta == 0 or delta <= 0 else beta / delta
    return (1.0 - shrink) * emp + shrink * m * np.eye(d), float(shrink)


@score("reg_hscore", needs=("moments", "fourth_moments"))
def reg_hscore(stats: SufficientStats) -> float:
    """Regularised H-score (Ibrahim et al. 2022), as in the authors' code:

    ``tr(pinv(cov_LW) (1 - a) cov_g)`` with ``cov_LW, a`` the Ledoit-Wolf shrunk covariance
    and shrinkage of the features (1/N normalisation, sklearn's) and ``cov_g`` the
    ``np.cov`` (1/(N-1)) covariance of the per-example class means
    ``sum_c n_c (mu_c - mu)(mu_c - mu)^T / (N - 1)``. NaN (no score) for N < 2.
    """
    _check(stats)
    n = stats.n
    if n < 2:
        return float("nan")
    cov_lw, shrink = ledoit_wolf(stats)
    return _trace_ratio(cov_lw, stats.power() / n, (1.0 - shrink) * _between(stats) / (n - 1))


# --------------------------------------------------------------------------- TransRate
def _coding_rate(gram: np.ndarray, n: float, eps: float, scale: float) -> float:
    """``R(Z) = 1/2 logdet(I + D / (n eps^2) Z^T Z)`` for a Z of n rows with ``Z^T Z = gram``,
    as ``1/2 sum log1p(D / (n eps^2) lambda)`` over the eigenvalues (noise ones are 0)."""
    w, _ = spectrum(gram, scale)
    return 0.5 * float(np.sum(np.log1p(gram.shape[0] / (n * eps * eps) * w)))


@score("transrate", needs=("moments", "class_grams"))
def transrate(stats: SufficientStats, eps: float = 1e-4) -> float:
    """TransRate (Huang et al., ICML 2022): ``R(Z) - sum_c (n_c / N) R(Z_c)``.

    Form used (the paper's, eq. for the coding rate of Ma et al. 2007):
    ``R(Z) = 1/2 logdet(I_D + D / (n eps^2) Z^T Z)`` with n the rows of Z; ``Z`` is the
    features centred by the *pooled* mean ``mu`` (the class subsets ``Z_c`` too: they are
    not re-centred on their own mean, as in the authors' code). With ``d = mu - shift`` the
    centred Grams are ``G - N d d^T`` and ``G_c - B_c d^T - d B_c^T + n_c d d^T``. The
    authors' released code differs: it uses ``1 / (n eps)`` in place of ``D / (n eps^2)`` and
    averages the class rates uniformly (1/C) instead of with ``n_c / N``. Needs
    ``per_class=True``.
    """
    _require_per_class(stats, "transrate")
    _check(stats)
    n = stats.n
    off = stats.offset()
    rate = _coding_rate(stats.centred(), n, eps, stats.power())
    mm = np.outer(off, off)
    for c in np.flatnonzero(stats.counts > 0):
        nc = float(stats.counts[c])
        bm = np.outer(stats.B[:, c], off)
        gram_c = stats.Gc[c] - bm - bm.T + nc * mm
        rate -= nc / n * _coding_rate(gram_c, nc, eps, stats.power(int(c)))
    return float(rate)


# --------------------------------------------------------------------------- GBC
@score("gbc", needs=("moments", "class_grams"), rounds=2)
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
    of its centred, projected features, scored here). Variances are floored at 1e-10 of the
    largest mean class variance and at their own rounding noise, so a constant dimension or a
    one-example class does not make the score NaN. Needs ``per_class=True`` (only the
    diagonals of ``G_c`` are read).
    """
    if gaussian_type not in ("diagonal", "spherical"):
        raise ValueError(f"gaussian_type must be 'diagonal' or 'spherical', got {gaussian_type!r}")
    _require_per_class(stats, "gbc")
    _check(stats)
    present = np.flatnonzero(stats.counts > 0)
    nc = stats.counts[present].astype(np.float64)
    means = stats.B[:, present] / nc  # (D, C') offsets from the shift: their differences are the paper's
    second = np.einsum("cii->ci", stats.Gc[present]) / nc[:, None]  # (C', D)
    var = second - means.T ** 2
    noise = _NOISE * _EPS * second
    if gaussian_type == "spherical":
        var = np.repeat(var.mean(axis=1, keepdims=True), stats.dim, axis=1)
        noise = np.repeat(noise.mean(axis=1, keepdims=True), stats.dim, axis=1)
    var = np.maximum(np.maximum(var, noise),
                     1e-10 * max(float(var.mean(axis=1).max()), np.finfo(float).tiny))
    logvar = np.log(var)
    total = 0.0
    k = present.size
    for i in range(k):
        for j in range(k):
            if i == j:
                continue
            v = 0.5 * (var[i] + var[j])
            first = float(np.sum((means[:, i] - means[:, j]) ** 2 / v)) / 8.0
            second_term = float(np.sum(np.log(v))) - 0.5 * float(np.sum(logvar[i])) - 0.5 * float(np.sum(logvar[j]))
            total += float(np.exp(-(first + 0.5 * second_term)))
    return -total


def pca_basis(stats: SufficientStats, k: int = GBC_PCA_DIM) -> np.ndarray:
    """(D, k') orthonormal top principal directions of the pooled features, from the merged
    statistics (round 1 of federated GBC): ``k' = min(k, rank)`` (at least 1), the rank
    counting only eigenvalues above rounding noise, so that no direction of a null space
    (N < D, duplicate features), which rounding would pick at random, is used. Each
    direction's sign is fixed (largest component positive) so every client projects alike;
    GBC does not depend on the signs. Clients project ``(f - mu) @ basis``."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    _check(stats)
    w, v = spectrum(stats.centred() / stats.n, stats.power() / stats.n)
    keep = max(1, min(k, int(np.count_nonzero(w > 0))))
    order = np.argsort(w, kind="stable")[::-1][:keep]
    basis = v[:, order]
    flip = np.sign(basis[np.argmax(np.abs(basis), axis=0), np.arange(basis.shape[1])])
    return basis * np.where(flip == 0, 1.0, flip)
