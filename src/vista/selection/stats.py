"""Additive sufficient statistics of (features, labels) for exact federated scoring.

Every client reduces its frozen-encoder features ``F_k`` (n_k x D) and integer labels
``y_k`` to a :class:`SufficientStats`; the server sums them (``+``) and a metric in
:mod:`vista.selection.metrics` is a pure function of the sum, so the federated score equals
the score of the pooled data up to float64 rounding (see ``shared/design/SELECTION.md``).

All accumulation is in float64, one batch at a time (a batch is cast to float64 on its own,
the full feature matrix never is), of the features minus a public ``shift`` (a point the
server chose and every client uses: e.g. the features of a public probe text). Shifting does
not change what the statistics determine, but it keeps them at the scale of the features'
spread: features whose norm dwarfs their spread (a decoder's last token) would otherwise
lose the spread to cancellation in ``G - N mu mu^T`` (see :meth:`SufficientStats.centred`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = ["SufficientStats", "check_shift", "from_triu"]


def _sym_gram(x: np.ndarray) -> np.ndarray:
    """``x^T x`` made bitwise symmetric (so the upper triangle rebuilds it exactly)."""
    g = x.T @ x
    return (g + g.T) * 0.5


def from_triu(tri: np.ndarray, dim: int) -> np.ndarray:
    """Symmetric (..., dim, dim) matrices rebuilt bitwise from their upper triangles (the
    wire format of Gram matrices; leading axes, e.g. classes, are kept)."""
    tri = np.asarray(tri, dtype=np.float64)
    iu = np.triu_indices(dim)
    out = np.zeros((*tri.shape[:-1], dim, dim))
    out[..., iu[0], iu[1]] = tri
    out[..., iu[1], iu[0]] = tri
    return out


def check_shift(shift, dim: int) -> np.ndarray | None:
    """A shift as stored: ``None``, or a read-only float64 (dim,) array of finite numbers."""
    if shift is None:
        return None
    c = np.array(shift, dtype=np.float64).reshape(-1)
    if c.shape != (dim,) or not np.all(np.isfinite(c)):
        raise ValueError(f"shift must be {dim} finite numbers, got shape {np.shape(shift)}")
    c.setflags(write=False)
    return c


def _same_shift(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(np.array_equal(a, b))


@dataclass(eq=False)
class SufficientStats:
    """Additive statistics of features (N x D) with labels in ``[0, num_classes)``.

    Every sum is of ``g_i = f_i - shift`` (``shift`` = 0 when ``None``); the attributes
    below name them after ``f`` as the design table does, and the scores account for the
    shift (:meth:`mean`, :meth:`centred`, :meth:`uncentred`).

    Attributes
    ----------
    num_classes, dim : C and D.
    n : N, the number of examples.
    counts : (C,) per-class counts ``n_c``.
    s : (D,) feature sum ``sum_i f_i``.
    B : (D, C) per-class feature sums, ``B[:, c] = sum_{y_i = c} f_i``.
    G : (D, D) Gram matrix ``sum_i f_i f_i^T``.
    Gc : (C, D, D) per-class Gram matrices, or ``None`` unless built with ``per_class=True``.
    sq4 : scalar ``sum_i ||f_i||^4``.
    q : (D,) ``sum_i ||f_i||^2 f_i``. Not in the design table, but needed together with
        ``sq4, G, s`` to get the *centred* fourth moment ``sum_i ||f_i - mean||^4`` that the
        Ledoit-Wolf shrinkage intensity uses (``sq4`` alone is not enough).

    shift : (D,) the public point the features are taken relative to, or ``None``. Only
        statistics with bitwise the same shift merge.

    Treat it as frozen: ``+`` returns a new object; only :meth:`accumulate` updates in
    place (it is how a client builds its own statistics, batch by batch).
    """

    num_classes: int
    dim: int
    n: int
    counts: np.ndarray
    s: np.ndarray
    B: np.ndarray
    G: np.ndarray
    Gc: np.ndarray | None
    sq4: float
    q: np.ndarray
    shift: np.ndarray | None = None

    # ------------------------------------------------------------------ building
    @classmethod
    def empty(
        cls, num_classes: int, dim: int, per_class: bool = False, shift=None
    ) -> SufficientStats:
        """All-zero statistics (the neutral element of ``+``) around ``shift``."""
        c, d = int(num_classes), int(dim)
        if c < 1 or d < 1:
            raise ValueError(f"need num_classes >= 1 and dim >= 1, got {c}, {d}")
        return cls(
            num_classes=c,
            dim=d,
            n=0,
            counts=np.zeros(c, dtype=np.int64),
            s=np.zeros(d),
            B=np.zeros((d, c)),
            G=np.zeros((d, d)),
            Gc=np.zeros((c, d, d)) if per_class else None,
            sq4=0.0,
            q=np.zeros(d),
            shift=check_shift(shift, d),
        )

    def counts_only(self) -> SufficientStats:
        """The example and class counts alone, every moment dropped (width 1, zeros): what a client
        uploads when no score reads its moments (a run of head scores only), so it sends C numbers
        instead of D^2. Summed like any statistics; the server reads only ``n`` and ``counts``."""
        return dataclasses.replace(SufficientStats.empty(self.num_classes, 1), n=self.n, counts=self.counts.copy())

    @property
    def per_class(self) -> bool:
        return self.Gc is not None

    # ------------------------------------------------------------------ what the scores read
    def mean(self) -> np.ndarray:
        """The pooled mean ``mu`` of the features (shift added back)."""
        if self.n < 1:
            raise ValueError("statistics of zero examples cannot be scored")
        d = self.s / self.n
        return d if self.shift is None else self.shift + d

    def offset(self) -> np.ndarray:
        """``mu - shift``: the mean of the accumulated ``g``, small when the shift is good."""
        if self.n < 1:
            raise ValueError("statistics of zero examples cannot be scored")
        return self.s / self.n

    def centred(self) -> np.ndarray:
        """The scatter ``sum_i (f_i - mu)(f_i - mu)^T``, computed from the shifted sums (so
        the cancellation is only of ``N |mu - shift|^2``), made exactly symmetric."""
        d = self.offset()
        out = self.G - self.n * np.outer(d, d)
        return (out + out.T) * 0.5

    def power(self, c: int | None = None) -> float:
        """``sum_i ||f_i||^2`` of the features themselves (of class ``c``'s), whatever the shift:
        the scale of the rounding the features and raw float64 sums carry, below which a
        direction's variance is noise (the scores' eigenvalue floor). Shift-independent, so
        the shift never changes what counts as noise."""
        if c is None:
            tr, s, n = float(np.trace(self.G)), self.s, self.n
        else:
            if self.Gc is None:
                raise ValueError("per-class power needs per-class Gram matrices")
            tr, s, n = float(np.trace(self.Gc[c])), self.B[:, c], int(self.counts[c])
        if self.shift is None:
            return tr
        return max(tr + 2.0 * float(self.shift @ s) + n * float(self.shift @ self.shift), 0.0)

    def uncentred(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mu, B_f)``: the mean and the per-class sums of the features themselves (the
        uncentred LogME reads ``F^T F = centred + N mu mu^T`` and ``F^T t_c = B_f[:, c]``)."""
        B = self.B if self.shift is None else self.B + np.outer(self.shift, self.counts)
        return self.mean(), B

    def accumulate(self, features, labels, *, shifted: bool = False) -> SufficientStats:
        """Add one batch (n x D features, n integer labels) in place; returns ``self``.
        ``shifted``: the rows are already ``f - shift`` (e.g. clipped around the shift)."""
        f = np.asarray(features, dtype=np.float64)
        y = np.asarray(labels)
        if f.ndim != 2 or f.shape[1] != self.dim:
            raise ValueError(f"features must be (n, {self.dim}), got shape {f.shape}")
        y = y.reshape(-1)
        if y.shape[0] != f.shape[0]:
            raise ValueError(f"{f.shape[0]} feature rows but {y.shape[0]} labels")
        if y.size == 0:
            return self
        if not np.issubdtype(y.dtype, np.integer):
            if not np.all(np.equal(np.mod(y, 1), 0)):
                raise ValueError("labels must be integers")
            y = y.astype(np.int64)
        if y.min() < 0 or y.max() >= self.num_classes:
            raise ValueError(
                f"labels must lie in [0, {self.num_classes}), got [{y.min()}, {y.max()}]"
            )
        if self.shift is not None and not shifted:
            f = f - self.shift
        onehot = np.zeros((f.shape[0], self.num_classes))
        onehot[np.arange(f.shape[0]), y] = 1.0
        sq = np.einsum("ij,ij->i", f, f)
        self.n += int(f.shape[0])
        self.counts += np.bincount(y, minlength=self.num_classes).astype(np.int64)
        self.s += f.sum(axis=0)
        self.B += f.T @ onehot
        self.G += _sym_gram(f)
        if self.Gc is not None:
            for c in np.unique(y):
                self.Gc[c] += _sym_gram(f[y == c])
        self.sq4 += float(np.sum(sq * sq))
        self.q += sq @ f
        return self

    @classmethod
    def from_batches(
        cls,
        batches: Iterable[tuple[np.ndarray, np.ndarray]],
        num_classes: int,
        dim: int,
        per_class: bool = False,
        shift=None,
    ) -> SufficientStats:
        """Stream an iterable of ``(features, labels)`` batches (one held at a time)."""
        out = cls.empty(num_classes, dim, per_class, shift)
        for f, y in batches:
            out.accumulate(f, y)
        return out

    @classmethod
    def from_features(
        cls,
        features,
        labels,
        num_classes: int,
        per_class: bool = False,
        batch_size: int = 1024,
        shift=None,
    ) -> SufficientStats:
        """Statistics of a whole (n x D) feature array, accumulated ``batch_size`` rows at a time."""
        f = np.asarray(features)
        y = np.asarray(labels).reshape(-1)
        if f.ndim != 2:
            raise ValueError(f"features must be 2-D (n, D), got shape {f.shape}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if y.shape[0] != f.shape[0]:
            raise ValueError(f"{f.shape[0]} feature rows but {y.shape[0]} labels")
        out = cls.empty(num_classes, f.shape[1], per_class, shift)
        for i in range(0, f.shape[0], batch_size):
            out.accumulate(f[i : i + batch_size], y[i : i + batch_size])
        return out

    # ------------------------------------------------------------------ merging
    def _check_compatible(self, other: SufficientStats) -> None:
        if not isinstance(other, SufficientStats):
            raise TypeError(f"cannot merge SufficientStats with {type(other).__name__}")
        if self.num_classes != other.num_classes:
            raise ValueError(
                f"cannot merge statistics with num_classes {self.num_classes} and "
                f"{other.num_classes}: compute every client's statistics with the global "
                "number of classes"
            )
        if self.dim != other.dim:
            raise ValueError(
                f"cannot merge statistics of feature dimension {self.dim} and {other.dim}"
            )
        if self.per_class != other.per_class:
            raise ValueError(
                "cannot merge statistics with and without per-class Gram matrices "
                "(build all of them with the same per_class)"
            )
        if not _same_shift(self.shift, other.shift):
            raise ValueError(
                "cannot merge statistics accumulated around different shifts: every client "
                "must use the shift the server sent"
            )

    def __add__(self, other: SufficientStats) -> SufficientStats:
        self._check_compatible(other)
        return SufficientStats(
            num_classes=self.num_classes,
            dim=self.dim,
            n=self.n + other.n,
            counts=self.counts + other.counts,
            s=self.s + other.s,
            B=self.B + other.B,
            G=self.G + other.G,
            Gc=None if self.Gc is None else self.Gc + other.Gc,
            sq4=self.sq4 + other.sq4,
            q=self.q + other.q,
            shift=self.shift,
        )

    def __radd__(self, other):
        # lets sum(list_of_stats) work (sum starts from 0)
        if isinstance(other, int) and other == 0:
            return self
        return NotImplemented

    # ------------------------------------------------------------------ wire format
    def to_wire(self) -> dict:
        """A dict of plain arrays/numbers; symmetric Grams are sent as upper triangles. The
        shift, when there is one, is public metadata (the server chose it): it is not summed."""
        iu = np.triu_indices(self.dim)
        wire = {
            "num_classes": self.num_classes,
            "dim": self.dim,
            "n": self.n,
            "counts": self.counts.copy(),
            "s": self.s.copy(),
            "B": self.B.copy(),
            "G_triu": self.G[iu],
            "sq4": self.sq4,
            "q": self.q.copy(),
        }
        if self.Gc is not None:
            wire["Gc_triu"] = self.Gc[:, iu[0], iu[1]]
        if self.shift is not None:
            wire["shift"] = self.shift.copy()
        return wire

    @classmethod
    def from_wire(cls, wire: dict) -> SufficientStats:
        """Inverse of :meth:`to_wire` (exact: the triangles are copied back bitwise)."""
        c, d = int(wire["num_classes"]), int(wire["dim"])
        G = from_triu(wire["G_triu"], d)
        Gc = from_triu(wire["Gc_triu"], d) if "Gc_triu" in wire else None
        return cls(
            num_classes=c,
            dim=d,
            n=int(wire["n"]),
            counts=np.asarray(wire["counts"], dtype=np.int64).copy(),
            s=np.asarray(wire["s"], dtype=np.float64).copy(),
            B=np.asarray(wire["B"], dtype=np.float64).reshape(d, c).copy(),
            G=G,
            Gc=Gc,
            sq4=float(wire["sq4"]),
            q=np.asarray(wire["q"], dtype=np.float64).copy(),
            shift=check_shift(wire.get("shift"), d),
        )

    @staticmethod
    def wire_floats(num_classes: int, dim: int, per_class: bool) -> int:
        """How many numbers :meth:`to_wire` sends for this shape (a communication-cost
        figure, known before any data is seen): n, counts, s, B, G's triangle, sum ||f||^4,
        q, and the per-class triangles."""
        tri = dim * (dim + 1) // 2
        return 1 + num_classes + dim + dim * num_classes + tri + 1 + dim + (num_classes * tri if per_class else 0)

    def num_floats(self) -> int:
        return self.wire_floats(self.num_classes, self.dim, self.per_class)
