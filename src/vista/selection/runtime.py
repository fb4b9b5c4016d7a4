"""StatisticsRuntime: the client side of a selection round, inside one worker process.

A job ``client_stats`` with key ``(candidate, client)`` runs the candidate's frozen encoder
over the client's train texts and returns the client's upload: its additive statistics,
passed through the privacy guard (withheld rare classes, too-small clients contributing
zeros, DP clipping and noise, pairwise masks). Jobs are planned candidate-major, so a worker
loads each candidate once in a row; one encoder is held at a time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from vista.data.fednlp import FedNLPData, FedNLPPartition, FederatedDataSpec
from vista.models.hub import ModelSpec
from vista.pipeline.protocol import WorkerEnv
from vista.selection.features import FrozenEncoder, client_statistics
from vista.selection.metrics import logme
from vista.selection.privacy import PrivacySpec, admit, client_upload
from vista.selection.stats import SufficientStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StatsArgs:
    candidates: tuple[ModelSpec, ...]
    data: FederatedDataSpec
    num_labels: int
    pooling: str
    batch_size: int
    max_seq_len: int
    per_class: bool
    local_logme: bool  # per-client LogME, for the avg_logme and borda baselines (sent in the clear)
    privacy: PrivacySpec


class StatisticsRuntime:
    JOBS = ("client_stats",)

    def __init__(self, args: StatsArgs, env: WorkerEnv) -> None:
        self.args, self.device = args, env.device
        self.data = FedNLPData(args.data.data_file)
        self._partition: FedNLPPartition | None = None
        self._encoder: tuple[int, FrozenEncoder] | None = None

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
                                trust_remote_code=spec.trust_remote_code)
            self._encoder = (candidate, enc)
            log.info("encoder %s ready (dim %d, pooling %s)", spec.name, enc.dim, enc.pooling)
        return self._encoder[1]

    def client_stats(self, key: tuple[int, int], payload: dict[str, Any], shared: Any) -> dict[str, Any]:
        candidate, client = key
        a = self.args
        enc: Any = self.encoder(candidate)
        per_class = a.per_class
        if payload.get("basis") is not None:  # GBC's round 2: features on the pooled PCA basis
            enc, per_class = _Projected(enc, np.asarray(payload["basis"], dtype=np.float64)), True
        if self._partition is None:
            self._partition = FedNLPPartition(a.data.partition_file, a.data.method)
        idx = np.asarray(self._partition.clients[client].train, dtype=np.int64)
        labels = np.asarray(self.data.labels(idx), dtype=np.int64)
        adm = admit(labels, a.num_labels, a.privacy)
        passes = 0
        if adm.eligible:
            stats, passes = client_statistics(
                enc, self.data.texts(idx), labels, a.num_labels, per_class=per_class, batch_size=a.batch_size,
                max_seq_len=a.max_seq_len, clip_norm=a.privacy.clip_norm if a.privacy.dp else None, keep=adm.keep)
        else:  # contributes zeros, so the other clients' pairwise masks still cancel
            stats = SufficientStats.empty(a.num_labels, enc.dim, per_class)
        local = None
        if a.local_logme and adm.eligible and stats.n > 0 and "basis" not in payload:
            try:
                with np.errstate(all="ignore"):
                    local = float(logme(stats))
            except (ArithmeticError, np.linalg.LinAlgError):
                local = float("nan")
            local = local if np.isfinite(local) else None  # a tiny or one-class client: LogME degenerates
        upload = client_upload(stats, client, payload["cohort"], a.privacy, seed=payload["mask_seed"],
                               rng_seed=payload["noise_seed"])
        return {"upload": upload, "examples": int(stats.n), "forward_passes": int(passes),
                "eligible": bool(adm.eligible), "reason": adm.reason,
                "withheld_classes": list(adm.withheld_classes), "local_logme": local,
                "dim": int(enc.dim), "pooling": getattr(enc, "pooling", None)}

    def close(self) -> None:
        self.data.close()


class _Projected:
    """An encoder whose features are projected onto a basis (D, k): the server's PCA basis."""

    def __init__(self, encoder: FrozenEncoder, basis: np.ndarray) -> None:
        self.encoder, self.basis, self.dim = encoder, basis, basis.shape[1]
        self.pooling = encoder.pooling

    def features(self, texts: Any, batch_size: int, max_seq_len: int) -> Any:
        for f in self.encoder.features(texts, batch_size, max_seq_len):
            yield np.asarray(f, dtype=np.float64) @ self.basis
