"""Differential privacy: sensitivities, calibration and accounting, and the free repair.

**Differential privacy** (distributed Gaussian mechanism, add/remove-one-example
adjacency): features are clipped to L2 norm ``clip_norm``, and each of the ``m`` cohort
members adds ``N(0, (z * sens_b)^2 / m)`` to every block ``b`` of its wire statistics, so
the *sum* carries noise multiplier ``z`` per block. The ``k`` blocks compose into one
Gaussian mechanism of multiplier ``z / sqrt(k)``, calibrated with the analytic Gaussian
mechanism (Balle & Wang 2018) to ``(dp_epsilon, dp_delta)`` for the released sum. This
relies on secure aggregation: a single upload seen in the clear carries only ``1/m`` of
the noise variance, i.e. multiplier ``z / sqrt(k m)`` (``local_epsilon`` in
:func:`privacy_report`).

The guarantee holds for a fixed admission decision (see ``admission``).
:func:`repair` post-processes a noisy merged sum back into valid statistics (free under
DP). This module knows nothing of the ring encoding or the masks.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

from vista.selection.privacy.spec import PrivacySpec, _check_cohort_size, _is_real
from vista.selection.stats import from_triu

__all__ = [
    "epsilon_for",
    "noise_multiplier_for",
    "noise_stds",
    "privacy_report",
    "repair",
    "sensitivities",
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


def noise_multiplier_for(epsilon: float, delta: float) -> float:
    """Smallest noise multiplier (std / sensitivity) giving (epsilon, delta)-DP (analytic)."""
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


def _block_multiplier(spec: PrivacySpec, num_blocks: int) -> float:
    """Per-block multiplier z of the sum: the k blocks compose to multiplier z / sqrt(k)."""
    return noise_multiplier_for(spec.dp_epsilon, spec.dp_delta) * math.sqrt(num_blocks)


def noise_stds(
    spec: PrivacySpec, per_class: bool, cohort_size: int
) -> dict[str, float]:
    """Std of the noise each of ``cohort_size`` clients adds to each block (sum: x sqrt(m))."""
    if not spec.dp:
        raise ValueError("noise_stds needs a spec with dp_epsilon set")
    m = _check_cohort_size(cohort_size)
    sens = sensitivities(spec.clip_norm, per_class)
    z = _block_multiplier(spec, len(sens))
    return {b: z * v / math.sqrt(m) for b, v in sens.items()}


def privacy_report(spec: PrivacySpec, cohort_size: int, per_class: bool) -> dict:
    """A json-serialisable description of the guarantee ``spec`` gives a cohort of this size.

    ``epsilon``: of the released sum (all ``cohort_size`` noise shares present).
    ``local_epsilon``: of one client's upload on its own (what the server learns from it
    without secure aggregation, or a coalition of the server with all other clients).
    """
    m = _check_cohort_size(cohort_size)
    rep: dict = {
        "secure_agg": bool(spec.secure_agg),
        "frac_bits": int(spec.frac_bits) if spec.secure_agg else None,
        "min_examples": int(spec.min_examples),
        "min_per_class": int(spec.min_per_class),
        "cohort_size": m,
        "dp": spec.dp,
        "epsilon": None,
        "local_epsilon": None,
        "delta": None,
        "noise_multiplier": None,
        "effective_noise_multiplier": None,
        "clip_norm": None,
        "sigma": None,
        "sigma_per_client": None,
    }
    if not spec.dp:
        return rep
    sens = sensitivities(spec.clip_norm, per_class)
    k = len(sens)
    z = _block_multiplier(spec, k)
    z_eff = z / math.sqrt(k)
    rep.update(
        epsilon=epsilon_for(z_eff, spec.dp_delta),
        local_epsilon=epsilon_for(z_eff / math.sqrt(m), spec.dp_delta),
        delta=float(spec.dp_delta),
        noise_multiplier=z,
        effective_noise_multiplier=z_eff,
        clip_norm=float(spec.clip_norm),
        sigma={b: z * v for b, v in sens.items()},
        sigma_per_client={b: z * v / math.sqrt(m) for b, v in sens.items()},
    )
    return rep


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
