"""Privacy guard for federated model selection (pure numpy + scipy).

Three independent layers, all configured by one :class:`PrivacySpec`:

* **Admission** (:func:`admit`): a client contributes only if it has at least
  ``min_examples`` admitted examples, and withholds every class it holds fewer than
  ``min_per_class`` examples of (dropped from *all* its statistics, so they stay
  consistent). An ineligible client still uploads, with all-zero statistics, so the
  pairwise masks of secure aggregation still cancel.
* **Differential privacy** (distributed Gaussian mechanism, add/remove-one-example
  adjacency): features are clipped to L2 norm ``clip_norm``, and each of the ``m`` cohort
  members adds ``N(0, (z * sens_b)^2 / m)`` to every block ``b`` of its wire statistics, so
  the *sum* carries noise multiplier ``z`` per block. The ``k`` blocks compose into one
  Gaussian mechanism of multiplier ``z / sqrt(k)``, calibrated with the analytic Gaussian
  mechanism (Balle & Wang 2018) to ``(dp_epsilon, dp_delta)`` for the released sum. This
  relies on secure aggregation: a single upload seen in the clear carries only ``1/m`` of
  the noise variance, i.e. multiplier ``z / sqrt(k m)`` (``local_epsilon`` in
  :func:`privacy_report`).
* **Secure aggregation** (simulated): uploads are fixed-point encoded in the ring
  ``Z_2^64`` and masked with pairwise PRG streams that cancel exactly in the sum; masks
  shared with clients that drop out after masking are removed with :func:`recover_dropped`
  (what SecAgg's recovery phase does with the revealed pair seeds). Self-masks and the
  key agreement are not simulated: ``seed`` stands for the agreed pair keys.

Caveat: the DP guarantee holds for a fixed admission decision. The admission rule itself is
data-dependent (adding one example can admit a whole class or client), so the thresholds
are a k-anonymity-style safeguard, not part of the (epsilon, delta) accounting.

Client side: :func:`prepare_stats` then :func:`client_upload`; server side:
:func:`merge_uploads`; :func:`privacy_report` describes the guarantee.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

from vista.selection.stats import SufficientStats, from_triu

__all__ = [
    "Admission",
    "Layout",
    "PrivacySpec",
    "admit",
    "client_upload",
    "clip_rows",
    "epsilon_for",
    "from_ring",
    "mask_upload",
    "merge_uploads",
    "noise_multiplier_for",
    "noise_stds",
    "pairwise_mask",
    "prepare_stats",
    "privacy_report",
    "recover_dropped",
    "repair",
    "sensitivities",
    "to_ring",
]

# numeric wire blocks, in the order they are laid out in the ring vector
_BLOCKS = ("n", "counts", "s", "B", "G_triu", "Gc_triu", "sq4", "q")
_META = ("num_classes", "dim")


# =========================================================================== spec
@dataclass(frozen=True)
class PrivacySpec:
    """What the privacy guard does; the default does nothing (plain exact aggregation).

    ``min_examples``: a client contributes only with at least this many admitted examples.
    ``min_per_class``: a client's examples of a class it holds fewer than this many of are
    withheld (from all its statistics). ``secure_agg``: mask uploads so the server only sees
    the sum. ``frac_bits``: fixed-point precision of the ring encoding. ``dp_epsilon``:
    target epsilon of the whole released sum (``None``: no DP), with ``dp_delta``.
    ``clip_norm``: per-example feature L2 clip, applied only when DP is on.
    """

    min_examples: int = 0
    min_per_class: int = 0
    secure_agg: bool = False
    frac_bits: int = 16  # the high limb; the low limb adds LO_BITS more (see to_ring)
    dp_epsilon: float | None = None
    dp_delta: float = 1e-5
    clip_norm: float = 1.0

    def __post_init__(self) -> None:
        for name in ("min_examples", "min_per_class"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        if not isinstance(self.secure_agg, (bool, np.bool_)):
            raise TypeError(f"secure_agg must be a bool, got {self.secure_agg!r}")
        fb = self.frac_bits
        if (
            isinstance(fb, bool)
            or not isinstance(fb, (int, np.integer))
            or not 0 <= fb <= 52
        ):
            raise ValueError(
                f"frac_bits must be an integer in [0, 52] (fixed-point bits of a float64), "
                f"got {fb!r}"
            )
        eps = self.dp_epsilon
        if eps is not None and not (_is_real(eps) and 0 < eps < math.inf):
            raise ValueError(
                f"dp_epsilon must be None or a finite number > 0, got {eps!r}"
            )
        if not (_is_real(self.dp_delta) and 0 < self.dp_delta < 1):
            raise ValueError(f"dp_delta must lie in (0, 1), got {self.dp_delta!r}")
        if not (_is_real(self.clip_norm) and 0 < self.clip_norm < math.inf):
            raise ValueError(
                f"clip_norm must be a finite number > 0, got {self.clip_norm!r}"
            )

    @property
    def dp(self) -> bool:
        return self.dp_epsilon is not None


def _is_real(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(
        x, bool
    )


# =========================================================================== admission
@dataclass(frozen=True)
class Admission:
    """Which of a client's examples may be used.

    ``keep``: boolean mask over its examples (all False when not ``eligible``);
    ``withheld_classes``: classes it holds 1..min_per_class-1 examples of;
    ``reason``: why it is not eligible (``None`` when it is).
    """

    keep: np.ndarray
    withheld_classes: list[int]
    eligible: bool
    reason: str | None


def _check_labels(labels, num_classes: int) -> np.ndarray:
    y = np.asarray(labels).reshape(-1)
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError("labels must be integers")
        y = y.astype(np.int64)
    y = y.astype(np.int64, copy=False)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got [{y.min()}, {y.max()}]: "
            "pass the global number of classes"
        )
    return y


def admit(labels, num_classes: int, spec: PrivacySpec) -> Admission:
    """Apply the spec's thresholds to one client's labels.

    Rare classes go first (so that a small class cannot be singled out), then the client is
    eligible only if what remains has ``min_examples`` examples.
    """
    y = _check_labels(labels, num_classes)
    counts = np.bincount(y, minlength=num_classes)
    withheld = np.flatnonzero((counts > 0) & (counts < spec.min_per_class))
    keep = ~np.isin(y, withheld)
    admitted = int(keep.sum())
    if admitted < spec.min_examples:
        reason = f"{admitted} admitted examples < min_examples={spec.min_examples}"
        if withheld.size:
            reason += (
                f" ({y.size - admitted} withheld in classes {withheld.tolist()} held "
                f"< min_per_class={spec.min_per_class} times)"
            )
        return Admission(np.zeros(y.size, dtype=bool), withheld.tolist(), False, reason)
    return Admission(keep, withheld.tolist(), True, None)


def clip_rows(features, clip_norm: float) -> np.ndarray:
    """Rows scaled down to L2 norm ``clip_norm`` where longer (float64): bounds sensitivity."""
    if not (_is_real(clip_norm) and 0 < clip_norm < math.inf):
        raise ValueError(f"clip_norm must be a finite number > 0, got {clip_norm!r}")
    f = np.array(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"features must be 2-D (n, D), got shape {f.shape}")
    norms = np.sqrt(np.einsum("ij,ij->i", f, f))
    big = norms > clip_norm
    f[big] *= (clip_norm / norms[big])[:, None]
    return f


def prepare_stats(
    features, labels, num_classes: int, spec: PrivacySpec, per_class: bool = False
) -> tuple[SufficientStats, Admission]:
    """A client's statistics under ``spec``: admitted rows only, clipped when DP is on.

    An ineligible client gets all-zero statistics (it still uploads, see module doc).
    """
    f = np.asarray(features)
    if f.ndim != 2:
        raise ValueError(f"features must be 2-D (n, D), got shape {f.shape}")
    adm = admit(labels, num_classes, spec)
    if adm.keep.shape[0] != f.shape[0]:
        raise ValueError(f"{f.shape[0]} feature rows but {adm.keep.shape[0]} labels")
    if not adm.eligible:
        return SufficientStats.empty(num_classes, f.shape[1], per_class), adm
    f = f[adm.keep]
    if spec.dp:
        f = clip_rows(f, spec.clip_norm)
    y = _check_labels(labels, num_classes)[adm.keep]
    return SufficientStats.from_features(f, y, num_classes, per_class=per_class), adm


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


def _check_cohort_size(m) -> int:
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"cohort_size must be an integer >= 1, got {m!r}")
    return int(m)


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


# =========================================================================== ring encoding
@dataclass(frozen=True)
class Layout:
    """Where each numeric block sits in a flat ring vector; metadata travels in the clear."""

    num_classes: int
    dim: int
    blocks: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def size(self) -> int:
        return sum(math.prod(shape) for _, shape in self.blocks)

    @property
    def per_class(self) -> bool:
        return any(name == "Gc_triu" for name, _ in self.blocks)


def _layout(wire: dict) -> Layout:
    missing = [
        k for k in (*_META, *(b for b in _BLOCKS if b != "Gc_triu")) if k not in wire
    ]
    if missing:
        raise ValueError(f"wire dict lacks {missing}: pass SufficientStats.to_wire()")
    blocks = tuple((b, tuple(np.shape(wire[b]))) for b in _BLOCKS if b in wire)
    return Layout(int(wire["num_classes"]), int(wire["dim"]), blocks)


LO_BITS = 40  # the low limb's extra fractional bits


def to_ring(
    wire: dict, frac_bits: int, max_clients: int = 1024
) -> tuple[np.ndarray, Layout]:
    """Fixed-point encode every numeric block in two uint64 limbs, ``[hi..., lo...]``.

    ``hi = round(x 2^frac_bits)`` carries the range; ``lo = round((x - hi 2^-frac_bits)
    2^(frac_bits + LO_BITS))`` the precision the first limb rounded off. Each limb is summed
    mod 2^64 on its own (no carries), so the decoded sum is exact to ``2^-(frac_bits +
    LO_BITS + 1)`` per entry: scores stay equal to the float path even where a metric
    amplifies tiny Gram errors (TransRate's eps = 1e-4 does, by ~D / (N eps^2)). One limb
    was not enough: centring a low-variance Gram matrix lost the signal to rounding.
    Each value must satisfy ``|x| * 2^frac_bits <= 2^62 / max_clients``.
    """
    layout = _layout(wire)
    m = _check_cohort_size(max_clients)
    parts = [
        np.asarray(wire[b], dtype=np.float64).reshape(-1) for b, _ in layout.blocks
    ]
    flat = np.concatenate(parts)
    if not np.all(np.isfinite(flat)):
        bad = [
            b for (b, _), p in zip(layout.blocks, parts) if not np.all(np.isfinite(p))
        ]
        raise ValueError(f"non-finite values in wire blocks {bad}")
    limit = 2.0**62 / m
    scaled = flat * 2.0**frac_bits
    if flat.size and np.max(np.abs(scaled)) > limit:
        worst = max(
            zip(layout.blocks, parts), key=lambda bp: np.max(np.abs(bp[1]), initial=0)
        )
        xmax = float(np.max(np.abs(worst[1])))
        fit = math.floor(math.log2(limit / xmax)) if xmax > 0 else 0
        raise ValueError(
            f"fixed-point overflow: block {worst[0][0]!r} holds |x| = {xmax:.3g}, and "
            f"|x| * 2^{frac_bits} exceeds 2^62 / {m} clients. Lower frac_bits (at most "
            f"{fit} fits) or turn on DP clipping (dp_epsilon with a clip_norm) to bound the "
            "feature norms"
        )
    hi = np.rint(scaled)
    lo = np.rint((flat - hi / 2.0**frac_bits) * 2.0 ** (frac_bits + LO_BITS))
    vec = np.concatenate([hi.astype(np.int64), lo.astype(np.int64)]).view(np.uint64)
    return vec, layout


def from_ring(vec: np.ndarray, layout: Layout, frac_bits: int) -> dict:
    """Inverse of :func:`to_ring` (for a single encoding or a sum of them)."""
    v = np.asarray(vec)
    if v.dtype != np.uint64 or v.shape != (2 * layout.size,):
        raise ValueError(
            f"ring vector must be uint64 of shape ({2 * layout.size},), got {v.dtype} {v.shape}"
        )
    signed = v.view(np.int64)
    hi, lo = signed[: layout.size], signed[layout.size :]
    x = hi.astype(np.float64) / 2.0**frac_bits + lo.astype(np.float64) / 2.0 ** (
        frac_bits + LO_BITS
    )
    out: dict = {"num_classes": layout.num_classes, "dim": layout.dim}
    pos = 0
    for name, shape in layout.blocks:
        size = math.prod(shape)
        block = x[pos : pos + size].reshape(shape)
        pos += size
        if name == "n":
            out[name] = int(np.rint(block))
        elif name == "counts":
            out[name] = np.rint(block).astype(np.int64)
        elif name == "sq4":
            out[name] = float(block)
        else:
            out[name] = block
    return out


def _pair_stream(seed: int, a: int, b: int, length: int) -> np.ndarray:
    """The PRG stream clients a and b share (stands for their agreed pair key)."""
    ss = np.random.SeedSequence([int(seed), min(a, b), max(a, b)])
    return np.random.PCG64(ss).random_raw(length).astype(np.uint64, copy=False)


def _check_cohort(client: int, cohort: Sequence[int]) -> list[int]:
    members = [int(c) for c in cohort]
    if len(set(members)) != len(members) or any(c < 0 for c in members):
        raise ValueError(
            f"cohort must hold distinct client ids >= 0, got {list(cohort)}"
        )
    if int(client) not in members:
        raise ValueError(f"client {client} is not in the cohort {members}")
    return members


def pairwise_mask(
    client: int, cohort: Sequence[int], seed: int, length: int
) -> np.ndarray:
    """Sum over the other members j of +PRG(i, j) if i < j else -PRG(i, j), mod 2^64.

    Summed over the whole cohort every pair appears once with each sign, so it is 0.
    """
    i = int(client)
    mask = np.zeros(int(length), dtype=np.uint64)
    for j in _check_cohort(i, cohort):
        if j == i:
            continue
        stream = _pair_stream(seed, i, j, length)
        if i < j:
            mask += stream
        else:
            mask -= stream
    return mask


def mask_upload(
    vec: np.ndarray, client: int, cohort: Sequence[int], seed: int
) -> np.ndarray:
    """A ring vector plus the client's pairwise mask: uniformly random on its own."""
    v = np.asarray(vec)
    if v.dtype != np.uint64 or v.ndim != 1:
        raise ValueError(
            f"mask_upload needs a flat uint64 ring vector, got {v.dtype} {v.shape}"
        )
    return v + pairwise_mask(client, cohort, seed, v.size)


def recover_dropped(
    masked_sum: np.ndarray,
    survivors: Sequence[int],
    dropped: Sequence[int],
    seed: int,
    length: int,
) -> np.ndarray:
    """Remove from a sum of survivors' uploads the masks they shared with dropped clients."""
    out = np.array(masked_sum, dtype=np.uint64)
    if out.shape != (int(length),):
        raise ValueError(f"masked_sum must have shape ({length},), got {out.shape}")
    surv, drop = [int(c) for c in survivors], [int(c) for c in dropped]
    if set(surv) & set(drop):
        raise ValueError(
            f"clients {sorted(set(surv) & set(drop))} both survived and dropped"
        )
    for i in surv:
        for j in drop:
            stream = _pair_stream(seed, i, j, length)
            if i < j:
                out -= stream
            else:
                out += stream
    return out


# =========================================================================== pipeline API
def client_upload(
    stats: SufficientStats,
    client: int,
    cohort: Sequence[int],
    spec: PrivacySpec,
    seed: int,
    rng_seed: int,
) -> dict:
    """What one client sends: ``{"kind", "client", "payload", "layout"}`` (picklable).

    ``stats`` must already be admitted and clipped (see :func:`prepare_stats`). With DP the
    client adds its ``1/len(cohort)`` share of the noise (``rng_seed`` seeds it; keep it
    secret). With ``secure_agg`` the payload is a masked uint64 vector (``seed``: the
    cohort's shared mask seed); otherwise it is the (noisy) wire dict in the clear.
    """
    members = _check_cohort(client, cohort)
    wire = stats.to_wire()
    if spec.dp:
        if stats.sq4 > stats.n * spec.clip_norm**4 * (1 + 1e-9):
            raise ValueError(
                f"features are not clipped to clip_norm={spec.clip_norm} (sum ||f||^4 = "
                f"{stats.sq4:.4g} > n C^4): build the statistics with prepare_stats or "
                "clip_rows before client_upload"
            )
        rng = np.random.default_rng(rng_seed)
        for b, std in noise_stds(spec, stats.per_class, len(members)).items():
            x = np.asarray(wire[b], dtype=np.float64)
            noisy = x + rng.normal(0.0, std, size=x.shape)
            wire[b] = float(noisy) if x.ndim == 0 else noisy
    layout = _layout(wire)
    if spec.secure_agg:
        vec, layout = to_ring(wire, spec.frac_bits, max_clients=len(members))
        payload = mask_upload(vec, client, members, seed)
        return {
            "kind": "ring",
            "client": int(client),
            "payload": payload,
            "layout": layout,
        }
    payload = {b: wire[b] for b, _ in layout.blocks}
    return {
        "kind": "plain",
        "client": int(client),
        "payload": payload,
        "layout": layout,
    }


def merge_uploads(
    uploads: Sequence[dict],
    spec: PrivacySpec,
    *,
    seed: int | None = None,
    cohort: Sequence[int] | None = None,
    dropped: Sequence[int] = (),
) -> SufficientStats:
    """The server's merged statistics from the uploads that arrived.

    Ring uploads are summed mod 2^64, the masks of ``dropped`` clients (by default: the
    ``cohort`` members with no upload) removed with ``seed``, then decoded; plain ones are
    summed as floats. With DP the sum is post-processed by :func:`repair` (eigenvalue
    floor: one noise std of a Gram entry). If clients dropped, their noise shares are
    missing and the sum's epsilon is larger (warned).
    """
    uploads = list(uploads)
    if not uploads:
        raise ValueError("merge_uploads needs at least one upload")
    kind = "ring" if spec.secure_agg else "plain"
    layout = uploads[0]["layout"]
    for u in uploads:
        if u["kind"] != kind:
            raise ValueError(
                f"upload of client {u.get('client')} is {u['kind']!r} but the spec expects "
                f"{kind!r} (secure_agg={spec.secure_agg}): use one spec on both sides"
            )
        if u["layout"] != layout:
            raise ValueError(
                f"upload of client {u.get('client')} has a different layout: build every "
                "client's statistics with the same num_classes, dim and per_class"
            )
    survivors = [int(u["client"]) for u in uploads]
    if len(set(survivors)) != len(survivors):
        raise ValueError(f"duplicate uploads from clients {survivors}")
    dropped = [int(c) for c in dropped]
    if cohort is not None:
        members = [int(c) for c in cohort]
        stray = sorted(set(survivors) - set(members))
        if stray:
            raise ValueError(
                f"uploads from clients {stray} outside the cohort {members}"
            )
        missing = sorted(set(members) - set(survivors))
        if dropped and sorted(dropped) != missing:
            raise ValueError(
                f"dropped={sorted(dropped)} but cohort members {missing} did not upload"
            )
        dropped = missing
    if spec.dp and dropped:
        m = len(survivors) + len(dropped)
        z_eff = noise_multiplier_for(spec.dp_epsilon, spec.dp_delta)
        eps = epsilon_for(z_eff * math.sqrt(len(survivors) / m), spec.dp_delta)
        warnings.warn(
            f"{len(dropped)} of {m} clients dropped: the sum lacks their noise shares, "
            f"so its epsilon is {eps:.4g}, not {spec.dp_epsilon:g}",
            RuntimeWarning,
            stacklevel=2,
        )

    if kind == "ring":
        total = np.zeros(2 * layout.size, dtype=np.uint64)
        for u in uploads:
            total += np.asarray(u["payload"], dtype=np.uint64)
        if dropped:
            if seed is None:
                raise ValueError(
                    f"clients {dropped} dropped after masking: pass the cohort's mask seed "
                    "to remove their masks"
                )
            total = recover_dropped(total, survivors, dropped, seed, 2 * layout.size)
        wire = from_ring(total, layout, spec.frac_bits)
    else:
        wire = {"num_classes": layout.num_classes, "dim": layout.dim}
        for b, _ in layout.blocks:
            acc = uploads[0]["payload"][b]
            for u in uploads[1:]:
                acc = acc + u["payload"][b]
            wire[b] = acc
    if spec.dp:
        sens = sensitivities(spec.clip_norm, layout.per_class)
        # regularise the Gram directions the noise swamps (one noise std of a Gram entry)
        wire = repair(
            wire, noise_floor=_block_multiplier(spec, len(sens)) * sens["G_triu"]
        )
    return SufficientStats.from_wire(wire)


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
    if per_class:
        gc = np.zeros((c, d, d))
        for k, bb in zip(present, between):
            gc[k] = _psd(from_triu(gc_tri[k], d) - bb, eig_floor, noise_floor) + bb
        out["Gc_triu"] = gc[:, iu[0], iu[1]]
    return out
