"""The feature cache: keyed by everything that decides a client's features, bounded, cleaned up."""

from __future__ import annotations

import numpy as np

from vista.selection.feature_cache import (
    CachedEncoder,
    FeatureCache,
    RecordingEncoder,
    feature_key,
)


def test_the_key_changes_with_every_part():
    idx = np.array([3, 5, 8])
    base = feature_key("minilm", 2, "auto", 64, idx)
    others = {feature_key("mpnet", 2, "auto", 64, idx), feature_key("minilm", 3, "auto", 64, idx),
              feature_key("minilm", 2, "mean", 64, idx), feature_key("minilm", 2, "auto", 32, idx),
              feature_key("minilm", 2, "auto", 64, idx[:2])}  # another text cap or admission
    assert base == feature_key("minilm", 2, "auto", 64, idx.astype(np.int32)) and base not in others
    assert len(others) == 5


def test_put_get_budget_and_clear(tmp_path):
    f = np.arange(12, dtype=np.float32).reshape(3, 4)  # 48 bytes
    cache = FeatureCache(tmp_path / "c", max_bytes=2 * (48 + 128))
    assert cache.enabled and cache.get("k1") is None
    assert cache.put("k1", f) and np.array_equal(cache.get("k1"), f) and cache.get("k1").dtype == np.float32
    other = FeatureCache(tmp_path / "c", max_bytes=2 * (48 + 128))  # another worker on the host reads it
    assert np.array_equal(other.get("k1"), f)
    assert cache.put("k2", f)
    assert not cache.put("k3", f) and cache.get("k3") is None  # over the budget: not kept (re-encoded later)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["k1.npy", "k2.npy"]  # no temporary left
    cache.clear()
    assert list((tmp_path / "c").iterdir()) == []
    off = FeatureCache(tmp_path / "d", max_bytes=0)
    assert not off.enabled and not off.put("k", f) and off.get("k") is None and not (tmp_path / "d").exists()


class _Enc:
    dim, pooling = 2, "cls"

    def __init__(self):
        self.encoded = 0

    def features(self, texts, batch_size, max_seq_len):
        for s in range(0, len(texts), batch_size):
            chunk = texts[s : s + batch_size]
            self.encoded += len(chunk)
            yield np.array([[float(t), -float(t)] for t in chunk], dtype=np.float32)


def test_recorded_features_come_back_in_the_same_batches_without_encoding():
    enc = _Enc()
    rec = RecordingEncoder(enc)
    first = list(rec.features(["1", "2", "3"], 2, 8))
    assert enc.encoded == 3 and rec.recorded().shape == (3, 2)
    again = list(CachedEncoder(rec.recorded(), "cls").features(["1", "2", "3"], 2, 8))
    assert enc.encoded == 3 and [a.tolist() for a in again] == [a.tolist() for a in first]
