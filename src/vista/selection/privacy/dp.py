"""Differential privacy: sensitivities, calibration, the client-score guard, and the repair.

**Differential privacy** (distributed Gaussian mechanism, add/remove-one-example
adjacency): features are clipped to L2 norm ``clip_norm``, and each of the ``m`` cohort
members adds ``N(0, (z * sens_b)^2 / m)`` to every block ``b`` of its wire statistics, so
the *sum* carries noise multiplier ``z`` per block. The ``k`` blocks compose into one
Gaussian mechanism of multiplier ``z_r = z / sqrt(k)``: one *release*. A selection run makes
``R`` releases (``accounting``), and ``dp_epsilon`` is the budget of all of them: each gets
``z_r = z_1 sqrt(R)`` (:func:`release_multiplier`), ``z_1`` the analytic Gaussian
mechanism's (Balle & Wang 2018) multiplier for ``(dp_epsilon, dp_delta)``. That is exact:
``R`` Gaussian mechanisms of multiplier ``z_r`` compose into one of multiplier
``z_r / sqrt(R)`` (Dong, Roth & Su 2019), which ``accounting`` checks with dp-accounting's
PLD accountant. This relies on secure aggregation: a single upload seen in the clear
carries only ``1/m`` of the noise variance, i.e. multiplier ``z_r / sqrt(m)``.

A client's own score (avg_logme, borda) cannot be summed under masks (borda ranks each
client's values), so with DP it is clipped to ``[score_min, score_max]`` and noised to that
width on the client, and its example count (the score's weight) is noised with
sensitivity 1 (:func:`guard_client_score`): two more kinds of release.

The guarantee holds for a fixed admission decision (see ``admission``).
:func:`repair` post-processes a noisy merged sum back into valid statistics (free under
DP). This module knows nothing of the ring encoding or the masks.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import numpy as np

from vista.selection.privacy.spec import PrivacySpec, _check_cohort_size, _is_real
from vista.selection.stats import from_triu

__all__ = [
    "check_budget",
    "check_fixed_point",
    "epsilon_for",
    "guard_client_score",
    "noise_multiplier_for",
    "noise_stds",
    "release_multiplier",
    "repair",
    "sensitivities",
    "share_stds",
]


# =========================================================================== DP accounting
def sensitivities(clip_norm: float, per_class: bool) -> dict[str, float]:
    """L2 sensitivity of each numeric wire block to adding/removing one example, ||f|| <= C.

    ``n``, ``counts`` (a one-hot): 1. ``s``, ``B`` (f in one column): C. ``G_triu``,
    ``Gc_triu``: the upper triangle (with diagonal) of f f^T has squared norm
    ``(||f||^4 + sum_i f_i^4) / 2 <= C^4``, equality for an axis-aligned f, so C^2 (sending
    only the triangle does not lower the worst case). ``q = ||f||^2 f``: C^3.
    ``sq4 = ||f||^4``: C^4.
    """
    c = float(clip_norm)
    if not 0 < c < math.inf:
        raise ValueError(f"clip_norm must be a finite number > 0, got {clip_norm!r}")
    out = {"n": 1.0, "counts": 1.0, "s": c, "B": c, "G_triu": c**2}
    if per_class:
        out["Gc_triu"] = c**2
    out.update({"sq4": c**4, "q": c**3})
    return out


def _log_delta(eps: float, z: float) -> float:
    """log delta(eps) of the Gaussian mechanism, sensitivity 1, noise std z (Balle & Wang).

    ``delta = Phi(1/(2z) - eps z) - e^eps Phi(-1/(2z) - eps z)``, evaluated in logs so
    that neither e^eps nor the tails overflow or underflow.
    """
    from scipy.stats import norm  # here, not at the top: validating a config imports this module

    a = float(norm.logcdf(0.5 / z - eps * z))
    b = eps + float(norm.logcdf(-0.5 / z - eps * z))
    with np.errstate(divide="ignore"):
        out = a + math.log(-math.expm1(b - a)) if b < a else -math.inf
    return max(out, -1e4)  # delta < e^-10000: below any target, keeps brentq finite


def _check_delta(delta: float) -> None:
    if not (_is_real(delta) and 0 < delta < 1):
        raise ValueError(f"delta must lie in (0, 1), got {delta!r}")


def epsilon_for(noise_multiplier: float, delta: float) -> float:
    """Smallest epsilon of the Gaussian mechanism with std ``noise_multiplier`` x sensitivity."""
    from scipy.optimize import brentq

    _check_delta(delta)
    z = float(noise_multiplier)
    if not 0 < z < math.inf:
        raise ValueError(
            f"noise_multiplier must be a finite number > 0, got {noise_multiplier!r}"
        )
    target = math.log(delta)
    if _log_delta(0.0, z) <= target:
        return 0.0
    hi = 1.0
    while _log_delta(hi, z) > target:
        hi *= 2.0
    return float(
        brentq(lambda e: _log_delta(e, z) - target, 0.0, hi, xtol=1e-13, rtol=1e-14)
    )


@functools.lru_cache(maxsize=256)  # every upload asks: the same few (epsilon, delta) each run
def noise_multiplier_for(epsilon: float, delta: float) -> float:
    """Smallest noise multiplier (std / sensitivity) giving (epsilon, delta)-DP (analytic)."""
    from scipy.optimize import brentq

    _check_delta(delta)
    eps = float(epsilon)
    if not 0 < eps < math.inf:
        raise ValueError(f"epsilon must be a finite number > 0, got {epsilon!r}")
    target = math.log(delta)

    def f(z: float) -> float:
        return _log_delta(eps, z) - target

    lo, hi = 1.0, 1.0
    while f(lo) < 0:
        lo /= 2.0
    while f(hi) > 0:
        hi *= 2.0
    if lo == hi:
        return lo
    return float(brentq(f, lo, hi, xtol=1e-15, rtol=1e-14))


def _check_releases(releases) -> int:
    if isinstance(releases, bool) or not isinstance(releases, (int, np.integer)) or releases < 1:
        raise ValueError(f"releases must be an integer >= 1, got {releases!r}")
    return int(releases)


def release_multiplier(spec: PrivacySpec, releases: int = 1) -> float:
    """Noise multiplier (std / L2 sensitivity) of each of ``releases`` Gaussian releases that
    share the ``(dp_epsilon, dp_delta)`` budget equally: ``z_1 sqrt(releases)`` (module doc)."""
    if not spec.dp:
        raise ValueError("release_multiplier needs a spec with dp_epsilon set")
    return noise_multiplier_for(spec.dp_epsilon, spec.dp_delta) * math.sqrt(_check_releases(releases))


def _block_multiplier(spec: PrivacySpec, num_blocks: int, releases: int = 1) -> float:
    """Per-block multiplier z of the sum: the k blocks compose to the release's z / sqrt(k)."""
    return release_multiplier(spec, releases) * math.sqrt(num_blocks)


def share_stds(
    spec: PrivacySpec, sens: Mapping[str, float], cohort_size: int, releases: int = 1
) -> dict[str, float]:
    """Std of the noise each of ``cohort_size`` clients adds to each block of one release whose
    blocks have L2 sensitivities ``sens`` (the sum: x sqrt(m)), one of ``releases`` releases
    sharing the budget. The statistics' blocks (:func:`noise_stds`) and the head probe's
    (``head_dp``) are both calibrated here."""
    if not spec.dp:
        raise ValueError("noise_stds needs a spec with dp_epsilon set")
    m = _check_cohort_size(cohort_size)
    z = _block_multiplier(spec, len(sens), releases)
    return {b: z * v / math.sqrt(m) for b, v in sens.items()}


def noise_stds(
    spec: PrivacySpec, per_class: bool, cohort_size: int, releases: int = 1
) -> dict[str, float]:
    """Std of the noise each of ``cohort_size`` clients adds to each statistics block (sum:
    x sqrt(m)), for one of ``releases`` releases sharing the budget."""
    return share_stds(spec, sensitivities(spec.clip_norm, per_class), cohort_size, releases)


def check_fixed_point(spec: PrivacySpec, worst: float, cohort_size: int, releases: int, what: str,
                      remedy: str) -> None:
    """Fail when a noise share of std ``worst`` would pass secure aggregation's fixed point (a
    10-sigma share past ``2^62 / m``); ``what`` names the noise, ``remedy`` what else to lower."""
    if not (spec.dp and spec.secure_agg):
        return
    m = _check_cohort_size(cohort_size)
    limit = 2.0 ** (62 - spec.frac_bits) / m
    if not 10 * worst <= limit:
        raise ValueError(
            f"dp_epsilon={spec.dp_epsilon:g} split over {releases} releases needs {what} of std {worst:.3g} "
            f"per upload, past secure aggregation's fixed point (its range {limit / 10:.3g} at "
            f"frac_bits={spec.frac_bits}, {m} clients): raise dp_epsilon, lower frac_bits, or {remedy}"
        )


def check_budget(spec: PrivacySpec, per_class: bool, cohort_size: int, releases: int = 1) -> None:
    """Fail before any client work when the budget, split over ``releases``, asks for noise
    that secure aggregation's fixed point cannot carry (:func:`check_fixed_point`)."""
    if not (spec.dp and spec.secure_agg):
        return
    worst = max(noise_stds(spec, per_class, cohort_size, releases).values())
    check_fixed_point(spec, worst, cohort_size, releases, "noise", "score fewer candidates")


def guard_client_score(
    score: float | None, examples: int, spec: PrivacySpec, *, releases: int = 1,
    score_seed: int, weight_seed: int,
) -> tuple[float | None, float]:
    """A voting client's own score and weight (its example count) as they leave it.

    Without DP: as they are (in the clear; ``None``, an undefined score, stays ``None``).
    With DP: the score (``None``: ``score_min``, it ranks last) clipped to
    ``[score_min, score_max]`` plus ``N(0, (z (score_max - score_min))^2)`` (one example can
    move it anywhere in the range), the count plus ``N(0, z^2)`` floored at 1 (free
    post-processing), ``z`` the per-release multiplier. ``weight_seed`` must be the same for
    all of a client's candidates: the one noisy count is then released once, not once each.
    """
    if not spec.dp:
        return score, float(examples)
    z = release_multiplier(spec, releases)
    v = spec.score_min if score is None or not math.isfinite(score) else float(score)
    v = min(max(v, spec.score_min), spec.score_max)
    v += float(np.random.default_rng(score_seed).normal(0.0, z * (spec.score_max - spec.score_min)))
    w = float(examples) + float(np.random.default_rng(weight_seed).normal(0.0, z))
    return v, max(w, 1.0)


# =========================================================================== post-processing
def _psd(m: np.ndarray, rel_floor: float, abs_floor: float = 0.0) -> np.ndarray:
    """Eigenvalues raised to ``max(rel_floor x largest |eigenvalue|, abs_floor)`` (> 0)."""
    w, v = np.linalg.eigh((m + m.T) * 0.5)
    scale = max(float(np.max(np.abs(w), initial=0.0)), np.finfo(np.float64).tiny)
    out = (v * np.maximum(w, max(rel_floor * scale, abs_floor))) @ v.T
    return (out + out.T) * 0.5


def repair(wire: dict, eig_floor: float = 1e-9, noise_floor: float = 0.0) -> dict:
    """Make a noisy summed wire dict look like real statistics (DP post-processing, free).

    Real statistics satisfy ``n = sum counts``, ``s = B 1``, ``G = sum Gc``, counts >= 0
    and ``G = W + sum_c B_c B_c^T / n_c`` with the within-class scatter ``W`` (and each
    class's own ``Gc - B_c B_c^T / n_c``) PSD. Noise breaks all of these, and e.g. makes the
    H-score's covariance indefinite or LogME's residual negative. So: the linear
    constraints are imposed by least squares (exact for the equal noise within each pair),
    counts are rounded and clipped to >= 0 (a class with count 0 is emptied), and ``W`` and
    the per-class scatters get eigenvalues >= ``max(eig_floor x largest, noise_floor)``:
    positive definite, so every score stays finite (``noise_floor``, e.g. the noise std of
    a Gram entry, regularises directions the noise swamps). Finally
    ``sq4 >= (tr G)^2 / n`` (Cauchy-Schwarz).
    """
    c, d = int(wire["num_classes"]), int(wire["dim"])
    per_class = "Gc_triu" in wire
    counts = np.asarray(wire["counts"], dtype=np.float64).copy()
    counts += (float(wire["n"]) - counts.sum()) / (c + 1)
    counts = np.clip(np.rint(counts), 0, None).astype(np.int64)
    n = int(counts.sum())
    present = np.flatnonzero(counts > 0)

    B = np.asarray(wire["B"], dtype=np.float64).reshape(d, c).copy()
    s = np.asarray(wire["s"], dtype=np.float64)
    B += ((s - B.sum(axis=1)) / (c + 1))[:, None]
    B[:, counts == 0] = 0.0
    s = B.sum(axis=1)  # = the least-squares s, less the emptied classes

    g_tri = np.asarray(wire["G_triu"], dtype=np.float64).copy()
    if per_class:
        gc_tri = np.asarray(wire["Gc_triu"], dtype=np.float64).reshape(c, -1).copy()
        r = (g_tri - gc_tri.sum(axis=0)) / (c + 1)
        gc_tri += r
        g_tri -= r

    between = [np.outer(B[:, k], B[:, k]) / counts[k] for k in present]
    sum_between = np.sum(between, axis=0) if between else np.zeros((d, d))
    G = _psd(from_triu(g_tri, d) - sum_between, eig_floor, noise_floor) + sum_between

    iu = np.triu_indices(d)
    out = {
        "num_classes": c,
        "dim": d,
        "n": n,
        "counts": counts,
        "s": s,
        "B": B,
        "G_triu": G[iu],
        "sq4": max(float(wire["sq4"]), float(np.trace(G)) ** 2 / n if n else 0.0),
        "q": np.asarray(wire["q"], dtype=np.float64).copy(),
    }
    if "shift" in wire:  # public metadata: passes through
        out["shift"] = np.asarray(wire["shift"], dtype=np.float64).copy()
    if per_class:
        gc = np.zeros((c, d, d))
        for k, bb in zip(present, between):
            gc[k] = _psd(from_triu(gc_tri[k], d) - bb, eig_floor, noise_floor) + bb
        out["Gc_triu"] = gc[:, iu[0], iu[1]]
    return out
