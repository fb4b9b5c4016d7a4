"""The one configuration of the privacy guard: :class:`PrivacySpec`, and the checks of it.

Also the small validation helpers the other modules share (``_is_real``,
``_check_cohort_size``), kept here so that every module depends on this one and on no
sibling it does not need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vista.checks import FieldError

__all__ = ["GUARDED", "PrivacySpec"]


# =========================================================================== spec
@dataclass(frozen=True)
class PrivacySpec:
    """What the privacy guard does; the default does nothing (plain exact aggregation).

    ``min_examples``: a client contributes only with at least this many admitted examples.
    ``min_per_class``: a client's examples of a class it holds fewer than this many of are
    withheld (from all its statistics). ``secure_agg``: mask uploads so the server only sees
    the sum. ``frac_bits``: fixed-point precision of the ring encoding. ``dp_epsilon``:
    the (epsilon, delta) budget of everything a run releases, composed (``None``: no DP; see
    ``accounting``). ``clip_norm``: per-example feature L2 clip, applied only when DP is on.
    ``score_min``, ``score_max``: with DP, the range a client's own score (its LogME, which
    avg_logme and borda read) is clipped to before noise calibrated to the range's width is
    added (a useless feature scores about -0.87; values above 2 mean well separated classes).
    """

    min_examples: int = 0
    min_per_class: int = 0
    secure_agg: bool = False
    frac_bits: int = 16  # the high limb; the low limb adds LO_BITS more (see to_ring)
    dp_epsilon: float | None = None
    dp_delta: float = 1e-5
    clip_norm: float = 1.0
    score_min: float = -1.0
    score_max: float = 2.0

    def __post_init__(self) -> None:
        for name in ("min_examples", "min_per_class"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise FieldError(name, f"must be an integer >= 0, got {v!r}")
        if not isinstance(self.secure_agg, (bool, np.bool_)):
            raise TypeError(f"secure_agg must be a bool, got {self.secure_agg!r}")
        fb = self.frac_bits
        if isinstance(fb, bool) or not isinstance(fb, (int, np.integer)) or not 0 <= fb <= 52:
            raise FieldError("frac_bits", f"must be an integer in [0, 52] (fixed-point bits of a float64), got {fb!r}")
        eps = self.dp_epsilon
        if eps is not None and not (_is_real(eps) and 0 < eps < math.inf):
            raise FieldError("dp_epsilon", f"must be None or a finite number > 0, got {eps!r}")
        if not (_is_real(self.dp_delta) and 0 < self.dp_delta < 1):
            raise FieldError("dp_delta", f"must lie in (0, 1), got {self.dp_delta!r}")
        if not (_is_real(self.clip_norm) and 0 < self.clip_norm < math.inf):
            raise FieldError("clip_norm", f"must be a finite number > 0, got {self.clip_norm!r}")
        for name in ("score_min", "score_max"):
            v = getattr(self, name)
            if not (_is_real(v) and math.isfinite(v)):
                raise FieldError(name, f"must be a finite number, got {v!r}")
        if not self.score_min < self.score_max:
            raise FieldError("score_max", f"must be > score_min={self.score_min}, got {self.score_max}")

    @property
    def dp(self) -> bool:
        return self.dp_epsilon is not None


def _is_real(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(
        x, bool
    )


def _check_cohort_size(m) -> int:
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"cohort_size must be an integer >= 1, got {m!r}")
    return int(m)


# The guard a selection run gets unless told otherwise (``selection.privacy``): small clients
# and rare classes withheld, uploads masked so the server sees only the sum; no DP noise.
GUARDED = PrivacySpec(min_examples=8, min_per_class=2, secure_agg=True)
