"""A client's features of a candidate, computed once per run and reused by later statistics rounds.

Round 1 reduces a client's features to statistics that every round-1 score reads (LogME,
H-scores, TransRate and the rest share one encode). GBC's PCA round needs the same features
again, centred and projected: without this cache the client re-encodes its texts. The cache
keeps the pooled float32 features of round 1 in ``<run dir>/feature_cache/``, one ``.npy`` per
key, read back by whichever worker runs the PCA round's job: the scheduler sends a job to any
idle worker, so a cache in one worker's memory would mostly miss. A worker on another host
(Ray) misses and re-encodes: results are the same, only the cost differs.

Keys (:func:`feature_key`) hold the candidate, the client, the pooling, ``max_seq_len`` and a
digest of the indices of the texts encoded (after the text cap and the privacy admission), so
a different text set never reads stale features. ``max_bytes`` bounds the directory: a put
that would pass it is skipped (that job re-encodes later); workers putting at the same moment
may pass it by one client's features each. Features are derived from a
client's private texts: the driver deletes the directory when the statistics round ends, and
each worker deletes what it wrote when it closes; in a deployment the cache is the client's
own storage.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CachedEncoder", "FeatureCache", "RecordingEncoder", "feature_key"]


def feature_key(candidate: str, client: int, pooling: str, max_seq_len: int, indices: np.ndarray) -> str:
    """A file name for one client's features of one candidate (a hex digest of the parts)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((candidate, int(client), pooling, int(max_seq_len))).encode())
    h.update(np.ascontiguousarray(indices, dtype=np.int64).tobytes())
    return h.hexdigest()


class FeatureCache:
    """Features on the host's disk under ``root``, at most ``max_bytes`` in all (0: off)."""

    def __init__(self, root: str | Path | None, max_bytes: int) -> None:
        self.root = Path(root) if root is not None and max_bytes > 0 else None
        self.max_bytes = int(max_bytes)
        self._mine: list[Path] = []

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def get(self, key: str) -> np.ndarray | None:
        if self.root is None:
            return None
        try:
            return np.load(self.root / f"{key}.npy")
        except (OSError, ValueError):  # absent, or half-written by a worker that died
            return None

    def put(self, key: str, features: np.ndarray) -> bool:
        """Store ``features`` unless that would pass ``max_bytes``; True when stored."""
        if self.root is None:
            return False
        self.root.mkdir(parents=True, exist_ok=True)
        used = sum(e.stat().st_size for e in os.scandir(self.root) if e.name.endswith(".npy"))
        if used + features.nbytes + 128 > self.max_bytes:
            return False
        path = self.root / f"{key}.npy"
        tmp = self.root / f".{key}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(features, dtype=np.float32))
        os.replace(tmp, path)  # readers see the whole file or none
        self._mine.append(path)
        return True

    def clear(self) -> None:
        """Delete the files this process wrote."""
        for path in self._mine:
            path.unlink(missing_ok=True)
        self._mine.clear()


class RecordingEncoder:
    """An encoder that keeps a copy of every batch of features it yields (``recorded()``)."""

    def __init__(self, encoder: Any) -> None:
        self.encoder, self.dim, self.pooling = encoder, encoder.dim, encoder.pooling
        self._batches: list[np.ndarray] = []

    def features(self, texts: Sequence[str], batch_size: int, max_seq_len: int) -> Iterator[np.ndarray]:
        for f in self.encoder.features(texts, batch_size, max_seq_len):
            self._batches.append(np.asarray(f, dtype=np.float32))
            yield f

    def recorded(self) -> np.ndarray:
        return np.concatenate(self._batches) if self._batches else np.zeros((0, self.dim), np.float32)


class CachedEncoder:
    """Features read from the cache, yielded in batches as the encoder would (no forward pass)."""

    def __init__(self, features: np.ndarray, pooling: str | None = None) -> None:
        self._f, self.dim, self.pooling = features, int(features.shape[1]), pooling

    def features(self, texts: Sequence[str], batch_size: int, max_seq_len: int) -> Iterator[np.ndarray]:
        if len(texts) != self._f.shape[0]:
            raise ValueError(f"cached features of {self._f.shape[0]} texts asked for {len(texts)}")
        for start in range(0, len(texts), batch_size):
            yield self._f[start : start + batch_size]
