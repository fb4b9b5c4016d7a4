"""Admission: which of a client's examples may contribute, and its statistics under a spec.

* **Admission** (:func:`admit`): a client contributes only if it has at least
  ``min_examples`` admitted examples, and withholds every class it holds fewer than
  ``min_per_class`` examples of (dropped from *all* its statistics, so they stay
  consistent). An ineligible client still uploads, with all-zero statistics, so the
  pairwise masks of secure aggregation still cancel.
* When DP is on, the admitted features are clipped to L2 norm ``clip_norm``
  (:func:`clip_rows`), which bounds the sensitivities the DP noise is calibrated to.

Caveat: the DP guarantee holds for a fixed admission decision. The admission rule itself is
data-dependent (adding one example can admit a whole class or client), so the thresholds
are a k-anonymity-style safeguard, not part of the (epsilon, delta) accounting.

Client side, first step: :func:`prepare_stats` (then ``client_upload``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vista.errors import UserError
from vista.selection.privacy.spec import PrivacySpec, _is_real
from vista.selection.stats import SufficientStats

__all__ = ["Admission", "admit", "clip_rows", "prepare_stats", "require_admitted"]


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


def require_admitted(rows: list[dict], spec: PrivacySpec, max_texts: int | None) -> None:
    """Stop with a user error when the statistics round admitted no client: every score would be
    undefined (GBC's PCA round could not even start). ``rows``: the clients' ``eligible`` and
    ``reason`` as ``selection.json`` records them."""
    if rows and not any(r["eligible"] for r in rows):
        cap = (f"; each client encodes at most {max_texts} texts (selection.max_texts_per_client, or "
               "selection.min_texts_per_round over the clients scored)") if max_texts else ""
        raise UserError(f"selection: the privacy guard admitted none of the {len(rows)} clients (first: "
                        f"{rows[0]['reason']}){cap}: lower selection.privacy.min_examples / min_per_class"
                        f"{' or raise the cap (null: every text)' if max_texts else ''}")


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
    features, labels, num_classes: int, spec: PrivacySpec, per_class: bool = False, shift=None
) -> tuple[SufficientStats, Admission]:
    """A client's statistics under ``spec``: admitted rows only, clipped when DP is on.

    ``shift``: the public point the statistics are taken around (what is clipped, and what
    the sensitivities bound, is ``f - shift``). An ineligible client gets all-zero
    statistics (it still uploads, see module doc).
    """
    f = np.asarray(features)
    if f.ndim != 2:
        raise ValueError(f"features must be 2-D (n, D), got shape {f.shape}")
    adm = admit(labels, num_classes, spec)
    if adm.keep.shape[0] != f.shape[0]:
        raise ValueError(f"{f.shape[0]} feature rows but {adm.keep.shape[0]} labels")
    if not adm.eligible:
        return SufficientStats.empty(num_classes, f.shape[1], per_class, shift), adm
    out = SufficientStats.empty(num_classes, f.shape[1], per_class, shift)
    g = np.asarray(f[adm.keep], dtype=np.float64)
    if out.shift is not None:
        g = g - out.shift
    if spec.dp:
        g = clip_rows(g, spec.clip_norm)
    y = _check_labels(labels, num_classes)[adm.keep]
    return out.accumulate(g, y, shifted=True), adm
