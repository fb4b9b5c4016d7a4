"""StatisticsRuntime: the client side of a selection round, inside one worker process.

A job ``client_stats`` with key ``(candidate, client)`` runs the candidate's frozen encoder
over the client's train texts and returns the client's upload: its additive statistics
around the shift the server sent, passed through the privacy guard (withheld rare classes,
too-small clients contributing zeros, DP clipping and noise, pairwise masks), and, for the
client scores, its own LogME and example count (with DP clipped and noised:
``privacy.guard_client_score``). A job
``probe`` with key ``(candidate, -1)`` is the server's: the candidate's mean feature of
:data:`PROBE_TEXTS` (public), the shift every client's statistics are taken around. Jobs are
planned candidate-major, so a worker loads each candidate once in a row; one encoder is held
at a time. A client encodes at most ``max_texts`` of its texts (a seeded sample, the same for
every candidate and round), and with a second round its round-1 features are kept
(:mod:`vista.selection.feature_cache`), so the PCA round loads no model and encodes nothing.
A job ``head_train`` with key ``(candidate, client, probe)`` is one round of the federated head probe
(:mod:`vista.selection.head_probe`) on those same cached features: it scores the layer the
server sent on the client's held-out rows and, but in the probe's last (evaluation) round,
trains it locally; with ``secure_agg`` both come back masked, as the statistics do.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from vista.data.fednlp import FederatedDataSpec, FedNLPData, FedNLPPartition
from vista.models.hub import ModelSpec
from vista.pipeline.protocol import WorkerEnv
from vista.selection.feature_cache import (
    CachedEncoder,
    FeatureCache,
    RecordingEncoder,
    feature_key,
)
from vista.selection.features import FrozenEncoder, client_statistics
from vista.selection.head_dp import client_blocks, head_noise_stds, noised, zero_blocks
from vista.selection.head_probe import HeadSpec, centred, client_round, contribution, evaluate, split_rows
from vista.selection.metrics import local_logme
from vista.selection.privacy import (
    PrivacySpec,
    admit,
    client_upload,
    guard_client_score,
    masked_blocks,
)
from vista.selection.sampling import capped
from vista.selection.stats import SufficientStats

log = logging.getLogger(__name__)

# Public texts whose mean feature is the shift of a candidate's statistics. Any input works:
# features whose norm dwarfs their spread share a large common part, which every input has,
# so subtracting one input's features leaves the spread (see vista.selection.stats).
PROBE_TEXTS = (
    "The committee will publish its report on the new rules next week.",
    "She said the results were better than expected this year.",
    "A short note about the weather, the market and the match.",
    "Researchers described the method and its limits in detail.",
)


@dataclass(frozen=True)
class StatsArgs:
    candidates: tuple[ModelSpec, ...]
    data: FederatedDataSpec
    num_labels: int
    pooling: str
    batch_size: int
    max_seq_len: int
    per_class: bool
    local_logme: bool  # per-client LogME, for the client scores (avg_logme, borda; not masked, noised with DP)
    privacy: PrivacySpec
    releases: int = 1  # the DP releases dp_epsilon is split over (vista.selection.privacy.plan)
    seed: int = 0  # the text cap's sample
    max_texts: int | None = None  # texts a client encodes at most (a seeded sample); None: all
    feature_cache: str | None = None  # where round-1 features are kept for the PCA round; None: re-encode
    feature_cache_mb: int = 0
    keep_features: bool = False  # the cache is a feature store: round 1 reads it too, nothing is deleted
    project_dim: int | None = None  # features on a public random basis of this many dims first (public_basis)
    head: HeadSpec | None = None  # the head probe's training (head scores wanted), else None
    moments: bool = True  # upload the moments; False: the counts alone (no score reads them, SufficientStats.counts_only)


class StatisticsRuntime:
    JOBS = ("client_stats", "probe", "head_train")

    def __init__(self, args: StatsArgs, env: WorkerEnv) -> None:
        self.args, self.device = args, env.device
        self.data = FedNLPData(args.data.data_file)
        self._partition: FedNLPPartition | None = None
        self._samples: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, Any]] = {}  # _sample's, per client
        self._encoder: tuple[int, FrozenEncoder] | None = None
        self.cache = FeatureCache(args.feature_cache, args.feature_cache_mb * 2**20)

    @classmethod
    def create(cls, args: StatsArgs, env: WorkerEnv) -> StatisticsRuntime:
        return cls(args, env)

    def run(self, fn: str, key: Any, payload: dict[str, Any], shared: Any) -> Any:
        if fn not in self.JOBS:
            raise ValueError(f"unknown job function {fn!r}; this runtime runs {self.JOBS}")
        return getattr(self, fn)(key, payload, shared)

    def encoder(self, candidate: int) -> FrozenEncoder:
        if self._encoder is None or self._encoder[0] != candidate:
            self._encoder = None  # free the previous model first
            spec = self.args.candidates[candidate]
            enc = FrozenEncoder(spec.resolve(), device=self.device, pooling=self.args.pooling,
                                trust_remote_code=spec.trust_remote_code, share_weights=spec.share_weights)
            self._encoder = (candidate, enc)
            log.info("encoder %s ready (dim %d, pooling %s)", spec.name, enc.dim, enc.pooling)
        return self._encoder[1]

    def probe(self, key: tuple[int, int], payload: dict[str, Any], shared: Any) -> dict[str, Any]:
        """The server's shift for a candidate: its mean feature of the public probe texts,
        rounded to float32 (a short, exact number every client receives as is). A feature store
        keeps the probe's features too (as client -1), so a study's re-scoring loads no model."""
        a, candidate = self.args, key[0]
        store_key = feature_key(a.candidates[candidate].name, -1, a.pooling, a.max_seq_len,
                                np.arange(len(PROBE_TEXTS)))
        cached = self.cache.get(store_key) if a.keep_features else None
        base: Any = CachedEncoder(cached) if cached is not None else self.encoder(candidate)
        recording = RecordingEncoder(base) if a.keep_features and cached is None else None
        enc = self._public_projection(recording or base, candidate)  # the store keeps the model's own features
        f = np.concatenate(list(enc.features(list(PROBE_TEXTS), len(PROBE_TEXTS), a.max_seq_len)))
        if recording is not None:
            self.cache.put(store_key, recording.recorded())
        return {"shift": np.asarray(f, dtype=np.float64).mean(axis=0).astype(np.float32).astype(np.float64),
                "forward_passes": 0 if cached is not None else len(PROBE_TEXTS)}

    def _public_projection(self, enc: Any, candidate: int) -> Any:
        """``enc`` whose features go through the public random basis first (``project_dim``), or
        ``enc`` itself (no projection asked, no encoder, or a model no wider than asked)."""
        k = self.args.project_dim
        if k is None or enc is None or enc.dim <= k:
            return enc
        basis = public_basis(enc.dim, k, self.args.seed, self.args.candidates[candidate].name)
        return _Projected(enc, basis, np.zeros(enc.dim))

    def client_stats(self, key: tuple[int, int], payload: dict[str, Any], shared: Any) -> dict[str, Any]:
        candidate, client = key
        a = self.args
        second = payload.get("basis") is not None  # the PCA round: centred features on the pooled PCA basis
        every, idx, labels, adm = self._sample(client)
        kept = idx[adm.keep]  # what client_statistics encodes
        cache_key = feature_key(a.candidates[candidate].name, client, a.pooling, a.max_seq_len, kept)
        # round 1 encodes unless a feature store keeps what an earlier run encoded
        cached = (self._stored_rows(cache_key, candidate, client, every, idx, kept)
                  if (second or a.keep_features) and adm.eligible else None)
        enc: Any = CachedEncoder(cached) if cached is not None else None  # a hit loads no model
        if enc is None and (adm.eligible or not second):
            enc = self.encoder(candidate)
        recording = (RecordingEncoder(enc) if self.cache.enabled and not second and adm.eligible and cached is None
                     else None)
        enc = self._public_projection(recording or enc, candidate)  # the cache keeps the model's own features
        per_class, shift = a.per_class, payload.get("shift")
        if second:
            basis = np.asarray(payload["basis"], dtype=np.float64)
            enc = _Projected(enc, basis, np.asarray(payload["centre"], dtype=np.float64))
            per_class, shift = True, None
        passes = 0
        if adm.eligible:
            stats, passes = client_statistics(
                enc, self.data.texts(idx), labels, a.num_labels, per_class=per_class, batch_size=a.batch_size,
                max_seq_len=a.max_seq_len, clip_norm=a.privacy.clip_norm if a.privacy.dp else None, keep=adm.keep,
                shift=shift)
            if recording is not None:
                self.cache.put(cache_key, recording.recorded())
            if cached is not None:
                passes = 0  # read back, not encoded
        else:  # contributes zeros, so the other clients' pairwise masks still cancel
            stats = SufficientStats.empty(a.num_labels, enc.dim, per_class, shift)
        if not a.moments:  # a head-only run: the features are cached for the probe, only the counts go up
            stats = stats.counts_only()
        local, weight = None, None
        # a client of >= 2 admitted classes votes (a label-only decision, like admission)
        if a.local_logme and adm.eligible and not second and np.count_nonzero(stats.counts) >= 2:
            local, weight = guard_client_score(local_logme(stats), stats.n, a.privacy, releases=a.releases,
                                               score_seed=payload["score_seed"], weight_seed=payload["weight_seed"])
        upload = client_upload(stats, client, payload["cohort"], a.privacy, seed=payload["mask_seed"],
                               rng_seed=payload["noise_seed"], releases=a.releases)
        return {"upload": upload, "examples": int(stats.n), "forward_passes": int(passes),
                "eligible": bool(adm.eligible), "reason": adm.reason,
                "withheld_classes": list(adm.withheld_classes), "local_logme": local, "local_weight": weight,
                "dim": int(enc.dim), "pooling": getattr(enc, "pooling", None), "cached": cached is not None}

    def _sample(self, client: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
        """A client's train indices, the seeded sample it encodes (``max_texts``), that sample's
        labels and its admission by the privacy guard: the same in every round and job."""
        if client in self._samples:  # every candidate's job and every round of a client reads the same
            return self._samples[client]
        a = self.args
        if self._partition is None:
            self._partition = FedNLPPartition(a.data.partition_file, a.data.method, lazy=True)
        every = np.asarray(self._partition.clients[client].train, dtype=np.int64)
        idx = capped(every, a.max_texts, a.seed, client)
        labels = np.asarray(self.data.labels(idx), dtype=np.int64)
        self._samples[client] = every, idx, labels, admit(labels, a.num_labels, a.privacy)
        return self._samples[client]

    def head_train(self, key: tuple[int, int, int], payload: dict[str, Any], shared: Any) -> dict[str, Any]:
        """One round of the head probe on this client: ``report`` scores the layer the server sent
        (``payload["head"]``) on the held-out rows; with ``payload["train"]`` the layer trained on
        the other rows comes back as ``head``, with ``n`` those rows (FedAvg's weight). With
        ``secure_agg`` only ``upload`` comes back: both, as masked sums (:func:`contribution`).
        The rows are the statistics round's (same sample, same admission), read from its feature
        cache; with ``payload["centre"]`` (``HeadSpec.centre``) less that pooled mean."""
        candidate, client = key[:2]  # (candidate, client, probe): the probe is the server's business
        a, spec = self.args, self.args.head
        if spec is None:
            raise ValueError("head_train needs StatsArgs.head (a head score wanted)")
        every, idx, labels, adm = self._sample(client)
        head, train = payload["head"], payload["train"]
        new, n, passes = None, 0, 0
        report = evaluate(head, np.zeros((0, 1)), np.zeros(0))
        if a.privacy.dp and not adm.eligible:  # under DP it still adds its noise share
            return self._head_upload(zero_blocks(head, train), train, client, payload, passes)
        if adm.eligible:  # as in the statistics round, a client too small to admit contributes nothing
            kept, y = idx[adm.keep], labels[adm.keep]
            cache_key = feature_key(a.candidates[candidate].name, client, a.pooling, a.max_seq_len, kept)
            f = self._stored_rows(cache_key, candidate, client, every, idx, kept)
            if f is None:  # not cached (no cache, or another host): encode again, and keep it for the next round
                # the model's own features, as the cache keeps them: the probe reads what the classifier reads
                enc = self.encoder(candidate)
                f = np.concatenate(list(enc.features(self.data.texts(kept), a.batch_size, a.max_seq_len)))
                passes = len(kept)
                self.cache.put(cache_key, f)
            if a.privacy.dp:  # the DP rule (head_dp): clipped rows, a gradient sum or the report, noised
                blocks = client_blocks(head, f, y, kept, spec, a.privacy, a.seed, client, train, payload.get("centre"))
                return self._head_upload(blocks, train, client, payload, passes)
            f = centred(f, payload.get("centre"))
            new, n, report = client_round(head, f, y, split_rows(kept, spec.val_fraction, a.seed, client), spec,
                                          a.seed, payload["round"], client, train)
        if a.privacy.secure_agg:  # masked: zeros from a client that adds nothing, so the masks cancel
            upload = masked_blocks(contribution(head, new, n, report, train), client, payload["cohort"],
                                   a.privacy.frac_bits, payload["mask_seed"])
            return {"upload": upload, "forward_passes": passes}
        return {"head": new, "n": n, "report": report, "forward_passes": passes}

    def _head_upload(self, blocks: dict[str, np.ndarray], train: bool, client: int, payload: dict[str, Any],
                     passes: int) -> dict[str, Any]:
        """A DP head round's upload: the blocks plus this client's noise share, masked with ``secure_agg``."""
        a = self.args
        stds = head_noise_stds(a.privacy, len(payload["cohort"]), a.releases, train)
        blocks = noised(blocks, stds, payload["noise_seed"])
        if a.privacy.secure_agg:
            return {"upload": masked_blocks(blocks, client, payload["cohort"], a.privacy.frac_bits,
                                            payload["mask_seed"]), "forward_passes": passes}
        return {"blocks": blocks, "forward_passes": passes}

    def _stored_rows(self, key: str, candidate: int, client: int, every: np.ndarray, idx: np.ndarray,
                     kept: np.ndarray) -> np.ndarray | None:
        """A client's kept rows from the cache under ``key``, or, a feature store's capped re-score
        (``idx`` a sample of ``every``), sliced out of its uncapped entry (:meth:`_rows_of_uncapped`);
        None when neither has them. Every reader of a round's features (the statistics' rounds, the
        head probe) looks them up here."""
        rows = self.cache.get(key)
        if rows is None and self.args.keep_features and len(idx) < len(every):
            rows = self._rows_of_uncapped(candidate, client, every, kept)
        return rows

    def _rows_of_uncapped(self, candidate: int, client: int, every: np.ndarray, kept: np.ndarray) -> np.ndarray | None:
        """A capped client's features sliced from a kept store entry of all its texts, or None.

        A study re-scoring its clients at a text cap (``sampling_cost.py``) then encodes nothing:
        capping only lowers class counts, so the admitted capped texts are a subset of the
        admitted uncapped ones, whose features are the same rows (same model, pooling, length)."""
        a = self.args
        full_adm = admit(np.asarray(self.data.labels(every), dtype=np.int64), a.num_labels, a.privacy)
        full = every[full_adm.keep]
        rows = self.cache.get(feature_key(a.candidates[candidate].name, client, a.pooling, a.max_seq_len, full))
        if rows is None or rows.shape[0] != len(full):
            return None
        position = {int(t): i for i, t in enumerate(full)}
        if any(int(t) not in position for t in kept):
            return None
        return rows[[position[int(t)] for t in kept]]

    def close(self) -> None:
        if not self.args.keep_features:
            self.cache.clear()
        self.data.close()


@functools.lru_cache(maxsize=4)
def public_basis(dim: int, k: int, seed: int, candidate: str) -> np.ndarray:
    """A (dim, k) matrix with orthonormal columns, the same on the server and every client: drawn
    from the run seed and the candidate's name (public), so nothing about the data is in it.
    Orthonormal, so a projected row is never longer than the row: the DP clip and sensitivities
    hold as they are, and the noise now sits on k x k moments instead of dim x dim ones. Cached:
    a worker runs one job per client of the same candidate in a row (read-only, never written)."""
    h = hashlib.blake2b(repr((int(seed), candidate, int(dim), int(k))).encode(), digest_size=8)
    rng = np.random.default_rng(int.from_bytes(h.digest(), "little"))
    q, r = np.linalg.qr(rng.standard_normal((dim, k)))
    basis = q * np.sign(np.diag(r))  # a unique Q (positive R diagonal): the same on every BLAS
    basis.flags.writeable = False  # shared by the cache
    return basis


class _Projected:
    """An encoder whose features are centred on ``centre`` (the pooled mean of round 1) and
    projected onto ``basis`` (D, k): the server's PCA basis. ``encoder`` None: an ineligible
    client's, which encodes nothing."""

    def __init__(self, encoder: Any, basis: np.ndarray, centre: np.ndarray) -> None:
        self.encoder, self.basis, self.centre, self.dim = encoder, basis, centre, basis.shape[1]
        self.pooling = getattr(encoder, "pooling", None)

    def features(self, texts: Any, batch_size: int, max_seq_len: int) -> Any:
        for f in self.encoder.features(texts, batch_size, max_seq_len):
            yield (np.asarray(f, dtype=np.float64) - self.centre) @ self.basis
