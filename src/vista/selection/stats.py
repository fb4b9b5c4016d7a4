"""Additive sufficient statistics of (features, labels) for exact federated scoring.

Every client reduces its frozen-encoder features ``F_k`` (n_k x D) and integer labels
``y_k`` to a :class:`SufficientStats`; the server sums them (``+``) and a metric in
:mod:`vista.selection.metrics` is a pure function of the sum, so the federated score equals
the score of the pooled data up to float64 rounding (see ``shared/design/SELECTION.md``).

All accumulation is in float64, one batch at a time (a batch is cast to float64 on its own,
the full feature matrix never is).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = ["SufficientStats", "from_triu"]


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


@dataclass(eq=False)
class SufficientStats:
    """Additive statistics of features (N x D) with labels in ``[0, num_classes)``.

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

    # ------------------------------------------------------------------ building
    @classmethod
    def empty(
        cls, num_classes: int, dim: int, per_class: bool = False
    ) -> SufficientStats:
        """All-zero statistics (the neutral element of ``+``)."""
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
        )

    @property
    def per_class(self) -> bool:
        return self.Gc is not None

    def accumulate(self, features, labels) -> SufficientStats:
        """Add one batch (n x D features, n integer labels) in place; returns ``self``."""
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
    ) -> SufficientStats:
        """Stream an iterable of ``(features, labels)`` batches (one held at a time)."""
        out = cls.empty(num_classes, dim, per_class)
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
        out = cls.empty(num_classes, f.shape[1], per_class)
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
        )

    def __radd__(self, other):
        # lets sum(list_of_stats) work (sum starts from 0)
        if isinstance(other, int) and other == 0:
            return self
        return NotImplemented

    # ------------------------------------------------------------------ wire format
    def to_wire(self) -> dict:
        """A dict of plain arrays/numbers; symmetric Grams are sent as upper triangles."""
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
