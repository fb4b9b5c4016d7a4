"""Plain reference implementations of the exact scores, written on the raw features (no
sufficient statistics): what the federated scores are checked against, in the ordinary
cases (test_selection_metrics) and the ones that broke them (test_selection_robust)."""

from __future__ import annotations

import numpy as np
from sklearn.covariance import LedoitWolf

from vista.selection import metrics as M

RCOND = 1e-10  # the references' rank cut (eigenvalues relative to the largest): far from both the
# real eigenvalues and the rounding noise in every case of the tests


def _eig(m):
    w, v = np.linalg.eigh(m)
    return np.where(w > RCOND * max(w.max(), 0.0), w, 0.0), v


def ref_logme(f, y, eps=M.LOGME_EPSILON):
    """You et al.'s code on F itself (SVD of F, their epsilon), with a plain rank cut."""
    f = np.asarray(f, dtype=np.float64)
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    keep = s**2 > RCOND * s.max() ** 2
    u, s2 = u[:, keep], s[keep] ** 2
    out = []
    for c in np.unique(y):
        t = (y == c).astype(float)
        ut = u.T @ t
        alpha, beta = 1.0, 1.0
        for _ in range(11):
            lam = alpha / beta
            gamma = np.sum(s2 / (s2 + lam))
            m2 = np.sum(s2 * (ut / (s2 + lam)) ** 2)
            res = np.sum((t - u @ (s2 * ut / (s2 + lam))) ** 2)
            alpha, beta = gamma / (m2 + eps), (n - gamma) / (res + eps)
            if abs(alpha / beta - lam) < 1e-3 * lam:
                break
        log_det = np.sum(np.log(alpha + beta * s2)) + (d - s2.size) * np.log(alpha)  # all D eigenvalues
        ev = (n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi) - beta / 2 * (res + eps)
              - alpha / 2 * (m2 + eps) - log_det / 2)
        out.append(ev / n)
    return float(np.mean(out))


def _class_mean_rows(f, y):
    g = np.zeros_like(f)
    for c in np.unique(y):
        g[y == c] = f[y == c].mean(axis=0)
    return g


def ref_hscore(f, y):
    f = np.asarray(f, dtype=np.float64)
    w, v = _eig(np.cov(f, rowvar=False))
    keep = w > 0
    between = np.cov(_class_mean_rows(f, y), rowvar=False)
    return float(np.sum(np.diag(v[:, keep].T @ between @ v[:, keep]) / w[keep]))


def ref_reg_hscore(f, y):
    f = np.asarray(f, dtype=np.float64)
    lw = LedoitWolf(assume_centered=False).fit(f)
    a = lw.shrinkage_
    cov_g = np.cov(_class_mean_rows(f, y), rowvar=False)
    return float(np.trace(np.linalg.pinv(lw.covariance_, rcond=RCOND, hermitian=True) @ ((1 - a) * cov_g)))


def ref_transrate(f, y, eps=1e-4):
    f = np.asarray(f, dtype=np.float64)
    z = f - f.mean(axis=0)

    def rate(zz):
        s = np.linalg.svd(zz, compute_uv=False)
        s2 = s[s**2 > RCOND * s.max() ** 2] ** 2 if s.max() > 0 else s[:0]
        return 0.5 * np.sum(np.log1p(zz.shape[1] / (zz.shape[0] * eps**2) * s2))

    return float(rate(z) - sum((y == c).mean() * rate(z[y == c]) for c in np.unique(y)))


def ref_gbc(f, y, k=64):
    """PCA of the pooled features (SVD, the numerically nonzero directions, at most k), then the
    paper's diagonal class Gaussians (variances floored at 1e-10 of the largest mean one)."""
    f = np.asarray(f, dtype=np.float64)
    z = f - f.mean(axis=0)
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    rank = max(1, int(np.sum(s**2 > RCOND * s.max() ** 2)))
    p = z @ vt[: min(k, rank)].T
    classes = np.unique(y)
    mu = np.array([p[y == c].mean(axis=0) for c in classes])
    var = np.array([p[y == c].var(axis=0) for c in classes])
    var = np.maximum(var, 1e-10 * max(var.mean(axis=1).max(), np.finfo(float).tiny))
    total = 0.0
    for i in range(len(classes)):
        for j in range(len(classes)):
            if i != j:
                v = (var[i] + var[j]) / 2
                db = np.sum((mu[i] - mu[j]) ** 2 / v) / 8 + 0.5 * (
                    np.sum(np.log(v)) - 0.5 * np.sum(np.log(var[i])) - 0.5 * np.sum(np.log(var[j])))
                total += np.exp(-db)
    return -float(total)


REFS = {"logme": ref_logme, "hscore": ref_hscore, "reg_hscore": ref_reg_hscore, "transrate": ref_transrate,
        "gbc": ref_gbc}
